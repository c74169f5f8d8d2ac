//! Messages that can never be processed are parked with their reason, and the flow around
//! them continues.

use lapor_shared::messages::exchange;
use lapor_tests::{TestApp, complaint};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_on_each_queue_is_parked_and_good_ones_keep_flowing() {
    let app = TestApp::spawn().await;
    let bad_schema = json!({"schema": "lapor.case_event.v9", "message_id": uuid::Uuid::new_v4(), "case_id": uuid::Uuid::new_v4()});
    let no_case = json!({
        "schema": "lapor.case_event.v1", "message_id": uuid::Uuid::new_v4(), "case_id": uuid::Uuid::new_v4(),
        "tracking_id": "0000-0000-0000", "occurred_at": "2026-12-04T10:00:00Z", "event": "verified", "status": "verified"
    });
    app.publish_raw(exchange::EVENTS, "case.received", b"{this is not json")
        .await;
    app.publish_raw(
        exchange::EVENTS,
        "case.supplemented",
        serde_json::to_vec(&bad_schema).unwrap().as_slice(),
    )
    .await;
    app.publish_raw(
        exchange::EVENTS,
        "case.verified",
        serde_json::to_vec(&no_case).unwrap().as_slice(),
    )
    .await;
    app.publish_raw(
        exchange::FOLLOWUP,
        "LINJAMSOS.followup",
        br#"{"schema":"lapor.followup.v1","message_id":"not-a-uuid"}"#,
    )
    .await;

    // A good complaint flows past all of them.
    let tid = app
        .submit(&complaint(
            "Bantuan PKH kami tidak cair, mohon ditindaklanjuti.",
        ))
        .await;
    let case = app.next_for_unit("LINJAMSOS").await;
    assert_eq!(case.body["tracking_id"], tid);

    // case.received and case.supplemented → verifier; case.verified → distributor; the
    // follow-up → distributor.
    app.wait_count("SELECT count(*) FROM parked_messages", 4)
        .await;
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT queue, reason FROM parked_messages ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let has =
        |queue: &str, reason: &str| rows.iter().any(|(q, r)| q == queue && r.contains(reason));
    assert!(has("verifier.cases", "not JSON"), "{rows:#?}");
    assert!(has("verifier.cases", "lapor.case_event.v9"), "{rows:#?}");
    assert!(has("distributor.verified", "does not exist"), "{rows:#?}");
    assert!(has("distributor.followups", "message_id"), "{rows:#?}");
    // Parked, not retried: nothing is left unacknowledged.
    app.settle().await;
    for q in [
        "verifier.cases",
        "distributor.verified",
        "distributor.followups",
    ] {
        assert_eq!(lapor_tests::queue_len(&app.channel, q).await, 0, "{q}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_nobody_is_bound_for_is_caught_and_parked() {
    let app = TestApp::spawn().await;
    app.publish_raw(
        exchange::UNITS,
        "NO_SUCH_UNIT.case",
        br#"{"schema":"lapor.unit_case.v1"}"#,
    )
    .await;
    app.wait_count(
        "SELECT count(*) FROM parked_messages WHERE reason LIKE 'unroutable%'",
        1,
    )
    .await;
    let (exchange, key): (String, String) =
        sqlx::query_as("SELECT exchange, routing_key FROM parked_messages")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (exchange.as_str(), key.as_str()),
        ("lapor.units", "NO_SUCH_UNIT.case")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_redrives_a_parked_message_once_its_cause_is_gone() {
    use lapor_shared::config::Secret;
    use lapor_shared::db::parked;
    let app = lapor_tests::TestApp::spawn_with(lapor_tests::Options {
        configure: Some(Box::new(|s| {
            s.review
                .officers
                .insert("rina".into(), Secret::new("rina-review-token-0123456789"));
        })),
        ..Default::default()
    })
    .await;
    let tid = app
        .submit(&complaint(
            "Bantuan PKH kami dihentikan tanpa pemberitahuan.",
        ))
        .await;
    app.wait_status(&tid, "routed").await;
    app.followup(
        "LINJAMSOS",
        &tid,
        "returned",
        Some("Perlu ditelaah ulang."),
        None,
    )
    .await;
    app.wait_status(&tid, "in_review").await;
    // The unit's next follow-up crosses the return: it no longer holds the case.
    app.followup(
        "LINJAMSOS",
        &tid,
        "resolved",
        Some("Dana telah disalurkan kembali."),
        None,
    )
    .await;
    app.wait_count("SELECT count(*) FROM parked_messages", 1)
        .await;
    let listed = parked::list(&app.pool, false, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].reason.contains("does not hold"),
        "{}",
        listed[0].reason
    );

    // The officer sends it back to the same unit; the operator re-drives the follow-up.
    let r = app
        .http
        .post(format!("{}/v1/reviews/{tid}/decision", app.base))
        .bearer_auth("rina-review-token-0123456789")
        .json(
            &json!({"kind": "aduan", "in_scope": true, "category": "pkh", "needs_followup": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    app.wait_status(&tid, "routed").await;
    parked::redrive(&app.pool, listed[0].id).await.unwrap();
    let status = app.wait_status(&tid, "resolved").await;
    assert_eq!(status["message"], "Dana telah disalurkan kembali.");
    assert!(matches!(
        parked::redrive(&app.pool, listed[0].id).await,
        Err(parked::RedriveError::AlreadyRedriven(_))
    ));
    assert!(
        parked::list(&app.pool, false, 10).await.unwrap().is_empty(),
        "a re-driven message leaves the list"
    );
    assert_eq!(parked::list(&app.pool, true, 10).await.unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_failing_reaches_the_delivery_limit_and_is_parked() {
    use lapin::options::{BasicGetOptions, BasicNackOptions};
    let app = lapor_tests::TestApp::spawn_with(lapor_tests::Options {
        configure: Some(Box::new(|s| s.amqp.delivery_limit = 3)),
        ..Default::default()
    })
    .await;
    // A unit's system that crashes on this message every time: it is returned to the queue
    // again and again until the broker dead-letters it.
    app.publish_raw(
        exchange::UNITS,
        "PUSDATIN.case",
        br#"{"schema":"lapor.unit_case.v1","message_id":"00000000-0000-0000-0000-000000000001"}"#,
    )
    .await;
    let ch = app.amqp.create_channel().await.unwrap();
    let mut returned = 0;
    for _ in 0..50 {
        match ch
            .basic_get("units.PUSDATIN".into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            Some(m) => {
                m.delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                returned += 1;
            }
            None => {
                if returned > 3 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    assert!((3..=5).contains(&returned), "returned {returned} times");
    app.wait_count(
        "SELECT count(*) FROM parked_messages WHERE reason LIKE 'delivery limit reached%'",
        1,
    )
    .await;
    let (queue, exchange, key): (String, String, String) =
        sqlx::query_as("SELECT queue, exchange, routing_key FROM parked_messages")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (queue.as_str(), exchange.as_str(), key.as_str()),
        ("units.PUSDATIN", "lapor.units", "PUSDATIN.case")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_member_of_a_batch_is_handled_alone_and_a_bad_one_is_parked_alone() {
    use lapor_shared::messages::batch;
    let app = TestApp::spawn().await;
    let tid = app
        .submit(&complaint(
            "Bantuan PKH kami tidak cair, mohon ditindaklanjuti.",
        ))
        .await;
    assert_eq!(
        app.next_for_unit("LINJAMSOS").await.body["tracking_id"],
        tid
    );
    app.settle().await;
    // The case.received this complaint was handed over with, alone or in a batch.
    let original = app
        .tapped()
        .await
        .iter()
        .flat_map(lapor_tests::members)
        .find(|m| m.routing_key == "case.received" && m.body["tracking_id"] == tid.as_str())
        .expect("the complaint's case.received was published");

    let missing = uuid::Uuid::new_v4();
    let no_case = serde_json::to_vec(&json!({
        "schema": "lapor.case_event.v1", "message_id": missing, "case_id": uuid::Uuid::new_v4(),
        "tracking_id": "0000-0000-0000", "occurred_at": "2026-12-04T10:00:00Z", "event": "received", "status": "received"
    }))
    .unwrap();
    let no_id = br#"{"schema":"lapor.case_event.v1","event":"received"}"#.to_vec();
    let none = std::collections::HashMap::new();
    let members: Vec<(&std::collections::HashMap<String, String>, &[u8])> = vec![
        // Already handled: a redelivery, whatever carried it the first time.
        (&original.headers, original.raw.as_slice()),
        (&none, no_case.as_slice()),
        (&none, no_id.as_slice()),
        (&none, b"42"),
    ];
    let envelope = batch::encode(uuid::Uuid::now_v7(), members);
    app.publish_raw(exchange::EVENTS, "case.received", &envelope)
        .await;
    let broken = br#"{"schema":"lapor.batch.v1","message_id":"0190f5a8-6c1e-7cc2-9a0b-5b7d8e1f2a3b","messages":{}}"#;
    app.publish_raw(exchange::EVENTS, "case.received", broken)
        .await;

    app.wait_count("SELECT count(*) FROM parked_messages", 4)
        .await;
    let rows: Vec<(Option<String>, String, Vec<u8>)> =
        sqlx::query_as("SELECT message_id, reason, payload FROM parked_messages ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let parked = |payload: &[u8]| {
        rows.iter()
            .find(|(_, _, p)| p == payload)
            .unwrap_or_else(|| {
                panic!(
                    "{} was not parked alone: {rows:#?}",
                    String::from_utf8_lossy(payload)
                )
            })
    };
    // Each bad member alone, with its own bytes and id, not the batch around it.
    let (id, reason, _) = parked(&no_case);
    assert_eq!(id.as_deref(), Some(missing.to_string().as_str()));
    assert!(reason.contains("does not exist"), "{reason}");
    assert!(parked(&no_id).1.contains("message_id"));
    assert!(parked(b"42").1.contains("message_id"));
    // A batch that cannot be read at all is parked whole.
    assert!(parked(broken).1.starts_with("batch: "));
    assert!(!rows.iter().any(|(_, _, p)| *p == envelope));

    // The member already handled changed nothing: no second verification, no second delivery.
    app.settle().await;
    let case_id = app.case_id(&tid).await;
    let verified: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM case_events WHERE case_id = $1 AND event = 'verified'",
    )
    .bind(case_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(verified, 1);
    assert!(app.drain_unit("LINJAMSOS").await.is_empty());
    // Everything acknowledged.
    assert_eq!(
        lapor_tests::queue_len(&app.channel, "verifier.cases").await,
        0
    );
    // Operators see how many messages the broker took for the rows the relays published.
    let metrics = app.metrics().await;
    let counter = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} is not in /metrics:\n{metrics}"))
    };
    let (rows, messages) = (
        counter("lapor_outbox_published_total"),
        counter("lapor_amqp_published_messages_total"),
    );
    assert!(
        messages >= 1.0 && messages <= rows,
        "{messages} messages for {rows} rows"
    );
    app.stop().await;
}
