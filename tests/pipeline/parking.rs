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

    // case.received → verifier and sla-monitor; case.supplemented → verifier and sla-monitor;
    // case.verified → distributor and sla-monitor; the follow-up → distributor.
    app.wait_count("SELECT count(*) FROM parked_messages", 7)
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
    assert!(has("sla-monitor.events", "not JSON"), "{rows:#?}");
    assert!(has("distributor.followups", "message_id"), "{rows:#?}");
    // Parked, not retried: nothing is left unacknowledged.
    app.settle().await;
    for q in [
        "verifier.cases",
        "distributor.verified",
        "distributor.followups",
        "sla-monitor.events",
    ] {
        let n = app
            .channel
            .queue_declare(
                q.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(n.message_count(), 0, "{q}");
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
