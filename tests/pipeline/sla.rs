//! Deadlines on the working-day calendar, driven by a hand-moved clock: no sleeping through
//! deadlines.

use chrono::{DateTime, Utc};
use lapor_shared::clock::ManualClock;
use lapor_tests::{Options, TestApp, complaint};
use serde_json::{Value, json};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn manual(at: &str) -> (ManualClock, Options) {
    let clock = ManualClock::at(t(at));
    (
        clock.clone(),
        Options {
            clock: Some(clock),
            ..Default::default()
        },
    )
}

async fn notices(app: &TestApp, unit: &str) -> Vec<Value> {
    app.settle().await;
    app.drain_unit(unit)
        .await
        .into_iter()
        .filter(|m| m.routing_key.ends_with(".sla"))
        .map(|m| m.body)
        .collect()
}

/// A complaint for LINJAMSOS submitted on Monday 7 December 2026, 09:00 WIB, by a hand-moved
/// clock: the app, the clock, its tracking id and the unit's delivery.
async fn routed_on_monday() -> (TestApp, ManualClock, String, lapor_tests::Received) {
    let (clock, options) = manual("2026-12-07T09:00:00+07:00");
    let app = TestApp::spawn_with(options).await;
    let tid = app
        .submit(&complaint(
            "Bantuan PKH kami belum cair sejak tiga bulan, mohon ditindaklanjuti.",
        ))
        .await;
    let case = app.next_for_unit("LINJAMSOS").await;
    (app, clock, tid, case)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_breach_and_escalation_reach_the_right_units_once() {
    let (app, clock, tid, case) = routed_on_monday().await;
    // Five working days after Monday's date: Tue, Wed, Thu, Fri, Mon 14 December.
    assert_eq!(
        t(case.body["due_at"].as_str().unwrap()),
        t("2026-12-14T23:59:59+07:00")
    );
    app.settle().await;
    assert_eq!(app.status(&tid).await["due_at"], case.body["due_at"]);

    // Nothing is due on Tuesday.
    clock.set(t("2026-12-08T12:00:00+07:00"));
    assert_eq!(app.sweep().await.notices, 0);

    // Half the time is used on Thursday 04:30 (budget: 15 h on Monday + 5 × 24 h).
    clock.set(t("2026-12-10T12:00:00+07:00"));
    let (a, b) = tokio::join!(app.sweep(), app.sweep());
    assert_eq!(
        a.notices + b.notices,
        1,
        "two monitors sweeping at once send one notice"
    );
    assert_eq!(app.sweep().await.notices, 0, "a notice is sent once");
    let n = notices(&app, "LINJAMSOS").await;
    assert_eq!(n.len(), 1);
    assert_eq!(
        (
            n[0]["schema"].as_str(),
            n[0]["notice"].as_str(),
            n[0]["elapsed"].as_f64()
        ),
        (Some("lapor.unit_sla.v1"), Some("reminder"), Some(0.5))
    );

    // Tuesday 15 December: 80 % and the breach.
    clock.set(t("2026-12-15T10:00:00+07:00"));
    assert_eq!(app.sweep().await.notices, 2);
    let n = notices(&app, "LINJAMSOS").await;
    let kinds: Vec<&str> = n.iter().map(|x| x["notice"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["reminder", "breach"]);

    // One working day after the breach, the complaint desk (above a directorate general) hears.
    clock.set(t("2026-12-16T08:00:00+07:00"));
    assert_eq!(app.sweep().await.notices, 1);
    let n = notices(&app, "HUMAS").await;
    assert_eq!(
        (
            n.len(),
            n[0]["notice"].as_str(),
            n[0]["level"].as_u64(),
            n[0]["holder"].as_str()
        ),
        (1, Some("escalation"), Some(1), Some("LINJAMSOS"))
    );
    // The chain above LINJAMSOS ends there: no further escalation, however long it waits.
    clock.set(t("2027-01-20T08:00:00+07:00"));
    assert_eq!(app.sweep().await.notices, 0);

    let status = app.status(&tid).await;
    let events: Vec<&str> = status["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "received",
            "verified",
            "routed",
            "sla_reminder",
            "sla_reminder",
            "sla_breach",
            "sla_escalation"
        ]
    );

    let summary: Value = app
        .http
        .get(format!(
            "http://127.0.0.1:{}/v1/sla/summary",
            app.ops_ports["sla-monitor"]
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = summary["open"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["holder_unit"] == "LINJAMSOS")
        .unwrap();
    assert_eq!(
        (
            row["clock"].as_str(),
            row["open"].as_i64(),
            row["breached"].as_i64()
        ),
        (Some("followup"), Some(1), Some(1))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_stops_while_the_case_waits_on_the_reporter() {
    let (clock, options) = manual("2026-12-07T09:00:00+07:00");
    let app = TestApp::spawn_with(options).await;
    let mut body =
        complaint("Adik saya tunanetra belum menerima tongkat yang diajukan tahun lalu.");
    body.as_object_mut().unwrap().remove("kk_number");
    body["attachments"] = json!([]);
    let nik = body["reporter"]["nik"].clone();
    let tid = app.submit(&body).await;
    app.wait_status(&tid, "needs_info").await;
    app.settle().await;
    let (running, used): (bool, i64) =
        sqlx::query_as("SELECT running, used_secs FROM case_deadlines")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(!running);
    assert_eq!(used, 0);

    // A week later the ministry's 3 days would long be over, had the clock kept running.
    clock.set(t("2026-12-14T09:00:00+07:00"));
    assert_eq!(app.sweep().await.notices, 0);
    assert!(app.drain_unit("HUMAS").await.is_empty());

    // Documents arrive on Monday 14th: verification resumes and the unit gets five working days
    // from then.
    let r = app
        .http
        .post(format!("{}/v1/complaints/{tid}/supplement", app.base))
        .json(&json!({"nik": nik, "kk_number": "3273011203150007",
                      "attachments": [{"kind": "kk_copy", "url": "https://files.example/kk.jpg", "sha256": "ab".repeat(32)}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let case = app.next_for_unit("REHSOS").await;
    assert_eq!(
        t(case.body["due_at"].as_str().unwrap()),
        t("2026-12-21T23:59:59+07:00")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_holiday_moves_the_open_deadlines_once() {
    let (_clock, options) = manual("2026-12-07T09:00:00+07:00");
    let app = TestApp::spawn_with(options).await;
    let tid = app
        .submit(&complaint("Bantuan PKH kami belum cair sejak tiga bulan."))
        .await;
    app.wait_status(&tid, "routed").await;
    let due = || async { app.status(&tid).await["due_at"].as_str().map(t) };
    assert_eq!(due().await, Some(t("2026-12-14T23:59:59+07:00")));
    // Nothing changed since the monitor started: nothing to recompute.
    assert_eq!(
        sla_monitor::deadlines::recompute_if_rules_changed(&app.monitor)
            .await
            .unwrap(),
        0
    );

    // The ministry adds a day off on Thursday 10 December (a data file, no code change).
    let mut ctx = app.monitor.clone();
    let mut reference = (*ctx.reference).clone();
    let mut files = vec![];
    for (name, text) in lapor_shared::data::DataSource::built_in()
        .calendar_files()
        .unwrap()
    {
        let text = if name.ends_with("2026.toml") {
            format!(
                "{text}\n[[day]]\ndate = \"2026-12-10\"\nkind = \"cuti_bersama\"\nname = \"Libur tambahan\"\n"
            )
        } else {
            text.into_owned()
        };
        files.push((name, text));
    }
    reference.calendar = lapor_shared::data::WorkingCalendar::from_files(&files).unwrap();
    ctx.reference = std::sync::Arc::new(reference);
    assert_eq!(
        sla_monitor::deadlines::recompute_if_rules_changed(&ctx)
            .await
            .unwrap(),
        1
    );
    assert_eq!(due().await, Some(t("2026-12-15T23:59:59+07:00")));
    // Once: the next start sees the same rules.
    assert_eq!(
        sla_monitor::deadlines::recompute_if_rules_changed(&ctx)
            .await
            .unwrap(),
        0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transition_after_a_reminder_knows_the_reminder_was_sent() {
    // A consumer that records a transition rewrites the case's deadline row, reading in the
    // same statement the notices already sent. Were they missed, the next check would fall on
    // the reminder already sent, in the past.
    let (app, clock, tid, _) = routed_on_monday().await;
    app.settle().await;
    let now = t("2026-12-10T12:00:00+07:00");
    clock.set(now);
    assert_eq!(app.sweep().await.notices, 1);
    let case_id = app.case_id(&tid).await;
    let next_check = || async {
        sqlx::query_scalar::<_, DateTime<Utc>>(
            "SELECT next_check_at FROM case_deadlines WHERE case_id = $1",
        )
        .bind(case_id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    let after_sweep = next_check().await;
    assert!(
        after_sweep > now,
        "the sweep set the next check to the next notice"
    );

    app.followup("LINJAMSOS", &tid, "acknowledged", None, None)
        .await;
    app.wait_count(
        "SELECT count(*) FROM case_events WHERE event = 'acknowledged'",
        1,
    )
    .await;
    assert_eq!(
        next_check().await,
        after_sweep,
        "the acknowledgement keeps the next check after the reminder it knows was sent"
    );
    assert_eq!(app.sweep().await.notices, 0);
    app.stop().await;
}
