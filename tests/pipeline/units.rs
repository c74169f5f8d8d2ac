//! The unit side: least-privilege access, the follow-up loop, and what the reporter sees.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueBindOptions};
use lapin::types::FieldTable;
use lapor_shared::broker_admin::BrokerAdmin;
use lapor_shared::clock::ManualClock;
use lapor_shared::domain::UnitCode;
use lapor_tests::{Options, TestApp, complaint};
use serde_json::{Value, json};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn refused(e: &lapin::Error) -> bool {
    let s = e.to_string();
    s.contains("ACCESS_REFUSED") || s.contains("ACCESS-REFUSED") || s.contains("403")
}

async fn events(app: &TestApp, tid: &str) -> Vec<String> {
    app.status(tid).await["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioned_unit_sees_its_own_cases_and_is_refused_everything_else() {
    let app = TestApp::spawn().await;
    let admin = BrokerAdmin::detect(&app.settings.amqp).await.unwrap();
    let code = UnitCode::parse("LINJAMSOS").unwrap();
    let creds = lapor_shared::units::provision(&app.settings, &admin, &code)
        .await
        .unwrap();
    let tid = app
        .submit(&complaint("Bantuan PKH kami belum cair, mohon dicek."))
        .await;
    app.wait_status(&tid, "routed").await;

    let unit = lapin::Connection::connect(&creds.amqp_url, Default::default())
        .await
        .unwrap();
    // Its own queue: the case arrives.
    let ch = unit.create_channel().await.unwrap();
    let mut own = ch
        .basic_consume(
            "units.LINJAMSOS".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = tokio::time::timeout(std::time::Duration::from_secs(10), own.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let body: Value = serde_json::from_slice(&d.data).unwrap();
    assert_eq!(body["tracking_id"], tid.as_str());
    d.acker.ack(Default::default()).await.unwrap();

    // Another unit's queue: refused.
    let ch = unit.create_channel().await.unwrap();
    let e = ch
        .basic_consume(
            "units.ITJEN".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("refused");
    assert!(refused(&e), "{e}");
    // Binding its queue to see more: refused (no configure, no read on exchanges).
    let ch = unit.create_channel().await.unwrap();
    let e = ch
        .queue_bind(
            "units.LINJAMSOS".into(),
            "lapor.units".into(),
            "ITJEN.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("refused");
    assert!(refused(&e), "{e}");
    // Declaring a queue of its own: refused.
    let ch = unit.create_channel().await.unwrap();
    let e = ch
        .queue_declare("sneaky".into(), Default::default(), FieldTable::default())
        .await
        .expect_err("refused");
    assert!(refused(&e), "{e}");

    // Publishing a follow-up under its own code: accepted and applied.
    let case_id = app.case_id(&tid).await;
    let publish = |key: &'static str, exchange: &'static str| {
        let unit = &unit;
        let tid = tid.clone();
        async move {
            let ch = unit.create_channel().await.unwrap();
            ch.confirm_select(Default::default()).await.unwrap();
            let body = json!({"schema": "lapor.followup.v1", "message_id": uuid::Uuid::now_v7(), "case_id": case_id,
                              "tracking_id": tid, "occurred_at": Utc::now(), "unit": "LINJAMSOS", "status": "acknowledged",
                              "note": "Sedang kami periksa."});
            let r = ch
                .basic_publish(
                    exchange.into(),
                    key.into(),
                    BasicPublishOptions::default(),
                    &serde_json::to_vec(&body).unwrap(),
                    Default::default(),
                )
                .await;
            match r {
                Ok(confirm) => confirm.await.map(|_| ()),
                Err(e) => Err(e),
            }
        }
    };
    publish("LINJAMSOS.followup", "lapor.followup")
        .await
        .unwrap();
    // Under another unit's code, or on another exchange: refused by the broker.
    let e = publish("ITJEN.followup", "lapor.followup")
        .await
        .expect_err("refused");
    assert!(refused(&e), "{e}");
    let e = publish("ITJEN.case", "lapor.units")
        .await
        .expect_err("refused");
    assert!(refused(&e), "{e}");

    app.settle().await;
    let status = app.wait_status(&tid, "routed").await;
    let ack = status["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "acknowledged")
        .expect("on the timeline");
    assert_eq!(ack["note"], "Sedang kami periksa.");
    unit.close(200, "done".into()).await.ok();
    admin.delete_user(&creds.username).await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follow_up_loop_from_routing_to_closure() {
    let clock = ManualClock::at(t("2026-12-07T09:00:00+07:00"));
    let app = TestApp::spawn_with(Options {
        clock: Some(clock.clone()),
        ..Default::default()
    })
    .await;
    let mut body = complaint(
        "Anak penyandang disabilitas intelektual di desa kami tidak mendapat terapi apa pun.",
    );
    body["location"] = json!({"province_code": "73", "regency_code": "7371"});
    let nik = body["reporter"]["nik"].clone();
    let tid = app.submit(&body).await;
    let first = app.next_for_unit("REHSOS").await;
    assert_eq!(first.body["reason"], "routed");
    let copy = app.next_for_unit("SENTRA_WIRAJAYA").await;
    assert_eq!(copy.body["role"], "tembusan");

    app.followup("REHSOS", &tid, "acknowledged", None, None)
        .await;
    clock.set(t("2026-12-08T09:00:00+07:00"));
    app.followup(
        "REHSOS",
        &tid,
        "in_progress",
        Some("Petugas dijadwalkan berkunjung."),
        None,
    )
    .await;
    clock.set(t("2026-12-09T09:00:00+07:00"));
    // Step 7: the directorate general assigns its field office, which becomes the holder.
    app.followup("REHSOS", &tid, "delegated", None, Some("SENTRA_WIRAJAYA"))
        .await;
    let delegated = app.next_for_unit("SENTRA_WIRAJAYA").await;
    assert_eq!(
        (
            delegated.routing_key.as_str(),
            delegated.body["reason"].as_str(),
            delegated.body["role"].as_str()
        ),
        ("SENTRA_WIRAJAYA.case", Some("delegated"), Some("assignee"))
    );
    // The holder keeps the time already used: the deadline does not move with delegation.
    assert_eq!(delegated.body["due_at"], first.body["due_at"]);
    assert_eq!(
        app.wait_status(&tid, "routed").await["unit"]["code"],
        "SENTRA_WIRAJAYA"
    );

    // The directorate no longer holds the case: its follow-up is parked, the case untouched.
    app.followup("REHSOS", &tid, "resolved", Some("Selesai."), None)
        .await;
    app.wait_count(
        "SELECT count(*) FROM parked_messages WHERE reason LIKE '%does not hold%'",
        1,
    )
    .await;
    assert_eq!(app.status(&tid).await["status"], "routed");

    clock.set(t("2026-12-10T09:00:00+07:00"));
    app.followup(
        "SENTRA_WIRAJAYA",
        &tid,
        "resolved",
        Some("Anak telah mendapat asesmen dan jadwal terapi mingguan di Sentra."),
        None,
    )
    .await;
    let status = app.wait_status(&tid, "resolved").await;
    assert_eq!(
        status["message"],
        "Anak telah mendapat asesmen dan jadwal terapi mingguan di Sentra."
    );

    // The reporter replies: the case reopens with the holder, who receives the reply.
    let r = app
        .http
        .post(format!("{}/v1/complaints/{tid}/replies", app.base))
        .json(&json!({"nik": nik, "text": "Jadwal terapinya belum diberikan kepada kami."}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let reply = app.next_for_unit("SENTRA_WIRAJAYA").await;
    assert_eq!(
        (reply.routing_key.as_str(), reply.body["schema"].as_str()),
        ("SENTRA_WIRAJAYA.reply", Some("lapor.unit_reply.v1"))
    );
    assert_eq!(
        app.wait_status(&tid, "routed").await["unit"]["code"],
        "SENTRA_WIRAJAYA"
    );

    clock.set(t("2026-12-11T09:00:00+07:00"));
    app.followup(
        "SENTRA_WIRAJAYA",
        &tid,
        "resolved",
        Some("Jadwal terapi telah diserahkan langsung kepada orang tua."),
        None,
    )
    .await;
    app.wait_status(&tid, "resolved").await;
    app.settle().await;
    // Silence for ten working days closes it. Counted in Sentra Wirajaya's zone (WITA) from
    // Friday 11th: 14-18, 21-23, then (24th cuti bersama, 25th Natal) 28 and 29 December.
    clock.set(t("2026-12-29T23:00:00+08:00"));
    assert_eq!(app.sweep().await.closed, 0);
    clock.set(t("2026-12-30T00:00:01+08:00"));
    assert_eq!(app.sweep().await.closed, 1);
    let status = app.wait_status(&tid, "closed").await;
    assert!(status["due_at"].is_null());
    assert_eq!(
        events(&app, &tid).await,
        [
            "received",
            "verified",
            "routed",
            "acknowledged",
            "in_progress",
            "delegated",
            "resolved",
            "reopened",
            "resolved",
            "closed"
        ]
    );
    // A reply after closure is refused with a reason.
    let r = app
        .http
        .post(format!("{}/v1/complaints/{tid}/replies", app.base))
        .json(&json!({"nik": nik, "text": "Masih belum."}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returned_case_goes_back_to_the_officers_and_a_wrong_delegation_is_parked() {
    let app = TestApp::spawn().await;
    let tid = app
        .submit(&complaint(
            "Bantuan sembako di RT kami tidak dibagikan bulan ini.",
        ))
        .await;
    app.wait_status(&tid, "routed").await;
    app.followup("LINJAMSOS", &tid, "delegated", None, Some("PUSDATIN"))
        .await;
    app.wait_count(
        "SELECT count(*) FROM parked_messages WHERE reason LIKE '%not a field office%'",
        1,
    )
    .await;
    app.followup(
        "LINJAMSOS",
        &tid,
        "returned",
        Some("Bukan kewenangan kami, mohon ditelaah ulang."),
        None,
    )
    .await;
    let status = app.wait_status(&tid, "in_review").await;
    assert!(status["unit"].is_null());
    let last = status["timeline"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["event"], "returned");
    assert!(last["note"].as_str().unwrap().contains("ditelaah ulang"));
    // A returned case waits in the officers' queue like any other.
    let queued: Vec<String> = sqlx::query_scalar(
        "SELECT c.tracking_id FROM review_queue q JOIN cases c ON c.id = q.case_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(queued, std::slice::from_ref(&tid));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confidential_report_reaches_only_the_unit_that_must_act() {
    let app = TestApp::spawn().await;
    let mut body = complaint("Bantuan PKH keluarga kami dihentikan tanpa penjelasan.");
    body["confidential"] = json!(true);
    let tid = app.submit(&body).await;
    assert_eq!(
        app.next_for_unit("LINJAMSOS").await.body["confidential"],
        true
    );
    app.wait_status(&tid, "routed").await;
    app.settle().await;
    assert!(
        app.drain_unit("SENTRA_WYATA_GUNA").await.is_empty(),
        "no copies of a confidential report"
    );
    app.stop().await;
}
