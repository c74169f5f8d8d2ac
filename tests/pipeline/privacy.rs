//! Personal data stays where it belongs: canary values, searched for in every message, log
//! line, span, metric and public answer the run produced, and in the planner's statistics.

use lapor_tests::{TestApp, complaint, telemetry};
use serde_json::json;

const NAME: &str = "Kanari Wulandari";
const PHONE_LOCAL: &str = "081399887766";
const PHONE_INTL: &str = "6281399887766";
const KK: &str = "3273011203159999";
const ADDRESS: &str = "Jalan Kenari Nomor 99";
const EMAIL: &str = "kanari@contoh.id";

fn canaries(nik: &str) -> Vec<String> {
    vec![
        nik.to_owned(),
        NAME.into(),
        "Kanari".into(),
        PHONE_LOCAL.into(),
        PHONE_INTL.into(),
        KK.into(),
        ADDRESS.into(),
        EMAIL.into(),
    ]
}

fn leaks(text: &str, nik: &str) -> Vec<String> {
    canaries(nik)
        .into_iter()
        .filter(|c| text.contains(c.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_reaches_only_the_assignee_of_a_named_report() {
    let app = TestApp::spawn().await;
    let nik = lapor_tests::nik();
    let with_canaries = |text: &str| {
        let mut b = complaint(&format!(
            "{text} Hubungi saya di {PHONE_LOCAL}, NIK {nik}, KK {KK}, email {EMAIL}."
        ));
        b["reporter"] = json!({"name": NAME, "nik": nik, "phone": PHONE_LOCAL, "email": EMAIL, "address": ADDRESS});
        b["kk_number"] = json!(KK);
        b["location"]["address"] = json!(ADDRESS);
        b
    };
    // A named report (assignee plus a copy), an anonymous one, one waiting for documents, and a
    // request the intake refuses.
    let named = app
        .submit(&with_canaries("Bantuan PKH kami tidak cair tiga bulan."))
        .await;
    let mut anon = with_canaries("Pendamping PKH memotong bantuan warga Rp50.000.");
    anon["anonymous"] = json!(true);
    let anonymous = app.submit(&anon).await;
    let mut waiting = with_canaries("Nenek saya 90 tahun hidup sebatang kara tanpa perawatan.");
    waiting.as_object_mut().unwrap().remove("kk_number");
    waiting["attachments"] = json!([]);
    let needs_info = app.submit(&waiting).await;
    let mut refused = with_canaries("x");
    refused["reporter"]["nik"] = json!(format!("{}9", &nik[..15]).replace(&nik[6..8], "99"));
    refused["reporter"]["phone"] = json!(1234);
    assert_eq!(app.post(&refused).await.status(), 422);

    app.wait_status(&named, "routed").await;
    app.wait_status(&anonymous, "routed").await;
    app.wait_status(&needs_info, "needs_info").await;
    app.settle().await;

    // Every message on every exchange.
    let messages = app.tapped().await;
    assert!(messages.len() >= 7, "{} messages", messages.len());
    let mut assignee_of_named = 0;
    for m in &messages {
        let raw = String::from_utf8_lossy(&m.raw).into_owned();
        let headers = format!("{:?} {}", m.headers, m.routing_key);
        assert!(
            leaks(&headers, &nik).is_empty(),
            "personal data in headers or routing key: {headers}"
        );
        let may_identify = m.body["tracking_id"] == named.as_str() && m.body["role"] == "assignee";
        if may_identify {
            assignee_of_named += 1;
            assert!(
                raw.contains(&nik) && raw.contains(NAME) && raw.contains(KK),
                "the assignee needs the identity: {raw}"
            );
        } else {
            assert!(
                leaks(&raw, &nik).is_empty(),
                "{:?} leaked to {} ({}): {raw}",
                leaks(&raw, &nik),
                m.routing_key,
                m.body["role"]
            );
        }
    }
    assert_eq!(assignee_of_named, 1);

    // Every log line and every span (attributes and events) of the whole run.
    let logs = telemetry().logs.text();
    // The services' own lines are in the buffer (they log tracking ids), so a leak would show.
    assert!(
        logs.contains(&named) && logs.contains("case routed"),
        "service logs were captured"
    );
    assert!(
        leaks(&logs, &nik).is_empty(),
        "personal data in the logs: {:?}",
        leaks(&logs, &nik)
    );
    let spans = telemetry().spans.spans();
    assert!(
        spans.iter().any(|s| s.name.starts_with("process")),
        "spans were recorded"
    );
    for s in &spans {
        assert!(
            leaks(&s.text, &nik).is_empty(),
            "personal data in span {}: {}",
            s.name,
            s.text
        );
    }
    // Metric labels.
    let metrics = app.metrics().await;
    assert!(leaks(&metrics, &nik).is_empty());
    // The public tracking answers and the parking reasons.
    for tid in [&named, &anonymous, &needs_info] {
        let status = app.status(tid).await.to_string();
        assert!(leaks(&status, &nik).is_empty(), "{status}");
    }
    let reasons: Vec<String> = sqlx::query_scalar("SELECT reason FROM parked_messages")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(leaks(&reasons.join(" "), &nik).is_empty());
    app.stop().await;
}

/// ANALYZE copies sampled column values into `pg_statistic`, where they outlive the erasure of
/// their case and can be read through `pg_stats`; none of them may be personal data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_planner_statistics_hold_no_personal_data() {
    let app = TestApp::spawn().await;
    let niks: Vec<String> = (0..5).map(|_| lapor_tests::nik()).collect();
    let mut ids = Vec::new();
    for nik in &niks {
        let mut b = complaint(&format!(
            "Bantuan PKH kami tidak cair. Hubungi {PHONE_LOCAL}, NIK {nik}, alamat {ADDRESS}."
        ));
        b["reporter"] = json!({"name": NAME, "nik": nik, "phone": PHONE_LOCAL, "email": EMAIL, "address": ADDRESS});
        b["kk_number"] = json!(KK);
        b["location"]["address"] = json!(ADDRESS);
        ids.push(app.submit(&b).await);
    }
    for id in &ids {
        app.wait_status(id, "routed").await;
    }
    app.settle().await;
    // By now the unit messages have left the outbox. Hold some there (as a delayed publish
    // is held) and park others, both carrying an assignee's identity, so that both tables
    // have rows for ANALYZE to sample.
    for nik in &niks {
        let payload = json!({"role": "assignee", "reporter": {"name": NAME, "nik": nik, "phone": PHONE_LOCAL}});
        let payload = serde_json::to_vec(&payload).unwrap();
        sqlx::query(
            "INSERT INTO outbox (message_id, exchange, routing_key, payload, publish_after)
             VALUES ($1, 'lapor.units', 'LINJAMSOS.case', $2, now() + interval '1 day')",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(&payload)
        .execute(&app.pool)
        .await
        .unwrap();
        let mut conn = app.pool.acquire().await.unwrap();
        lapor_shared::db::parked::park(
            &mut conn,
            &lapor_shared::db::parked::Parked {
                queue: "units.LINJAMSOS".into(),
                exchange: "lapor.units".into(),
                routing_key: "LINJAMSOS.case".into(),
                message_id: None,
                reason: "test".into(),
                headers: Default::default(),
                payload,
            },
        )
        .await
        .unwrap();
    }
    sqlx::query("ANALYZE").execute(&app.pool).await.unwrap();

    let stats: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT tablename::text, attname::text,
                concat_ws(' ', most_common_vals::text, histogram_bounds::text, most_common_elems::text)
         FROM pg_stats WHERE schemaname = current_schema()",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    // The statistics were gathered: the routing columns have theirs.
    assert!(
        stats
            .iter()
            .any(|(t, c, v)| t == "cases" && c == "holder_unit" && v.contains("LINJAMSOS")),
        "no statistics were gathered"
    );
    for nik in &niks {
        // Text columns show their values as they are; bytea ones in hex.
        for canary in canaries(nik) {
            let hex: String = canary.bytes().map(|b| format!("{b:02x}")).collect();
            for (table, column, values) in &stats {
                assert!(
                    !values.contains(&canary) && !values.contains(&hex),
                    "{table}.{column}'s statistics hold {canary:?}"
                );
            }
        }
    }
    app.stop().await;
}
