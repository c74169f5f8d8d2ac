//! The documents cannot drift from the code: every message this run produces, and every HTTP
//! answer, is validated against the published JSON Schemas; the served documents are the ones
//! in the repository (which `make test` also checks with the AsyncAPI and OpenAPI parsers).

use chrono::{DateTime, Utc};
use lapor_shared::clock::ManualClock;
use lapor_shared::config::Secret;
use lapor_tests::{Options, TestApp, complaint};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn contracts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/contracts")
}

pub(crate) fn validator(file: &str) -> jsonschema::Validator {
    let path = contracts()
        .join("schemas")
        .join(file)
        .canonicalize()
        .unwrap();
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    jsonschema::meta::validate(&schema)
        .unwrap_or_else(|e| panic!("{file} is not a valid schema: {e}"));
    jsonschema::options()
        .with_base_uri(format!("file://{}", path.display()))
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn check(v: &jsonschema::Validator, what: &str, instance: &Value) {
    let errors: Vec<String> = v
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not match its schema: {errors:#?}\n{instance:#}"
    );
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_and_answer_matches_the_published_schemas() {
    let messages: BTreeMap<&str, jsonschema::Validator> = [
        ("lapor.case_event.v1", "case_event.v1.schema.json"),
        ("lapor.unit_case.v1", "unit_case.v1.schema.json"),
        ("lapor.unit_reply.v1", "unit_reply.v1.schema.json"),
        ("lapor.unit_sla.v1", "unit_sla.v1.schema.json"),
        ("lapor.followup.v1", "followup.v1.schema.json"),
    ]
    .into_iter()
    .map(|(s, f)| (s, validator(f)))
    .collect();
    let http = |f: &str| validator(&format!("http/{f}"));

    let clock = ManualClock::at(t("2026-12-07T09:00:00+07:00"));
    let app = TestApp::spawn_with(Options {
        clock: Some(clock.clone()),
        configure: Some(Box::new(|s| {
            s.review
                .officers
                .insert("dewi".into(), Secret::new("dewi-review-token-0123456789"));
        })),
    })
    .await;

    // A complaint, its copy, a follow-up, a resolution, a reply, deadline notices.
    let body = complaint("Bantuan PKH kami tidak cair tiga bulan, mohon dibantu.");
    check(
        &http("complaint.v1.schema.json"),
        "the test's own request",
        &body,
    );
    let r = app.post(&body).await;
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    check(&http("accepted.schema.json"), "202", &accepted);
    let tid = accepted["tracking_id"].as_str().unwrap().to_owned();
    app.wait_status(&tid, "routed").await;
    app.followup("LINJAMSOS", &tid, "acknowledged", Some("Diterima."), None)
        .await;
    clock.set(t("2026-12-10T12:00:00+07:00"));
    app.settle().await;
    assert!(app.sweep().await.notices > 0);
    app.followup(
        "LINJAMSOS",
        &tid,
        "resolved",
        Some("Dana telah disalurkan."),
        None,
    )
    .await;
    app.wait_status(&tid, "resolved").await;
    let reply = json!({"nik": body["reporter"]["nik"], "text": "Belum masuk ke rekening."});
    check(
        &http("reply.v1.schema.json"),
        "the test's own reply",
        &reply,
    );
    assert_eq!(
        app.http
            .post(format!("{}/v1/complaints/{tid}/replies", app.base))
            .json(&reply)
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    // One for the officers.
    let unclear = app
        .submit(&complaint(
            "Selamat pagi, ada hal yang ingin saya sampaikan.",
        ))
        .await;
    app.wait_status(&unclear, "in_review").await;
    app.settle().await;

    let batch = validator("batch.v1.schema.json");
    let mut tapped = Vec::new();
    for m in app.tapped().await {
        if m.body["schema"] == "lapor.batch.v1" {
            // Validated as a whole, then each member as the message it carries.
            check(&batch, &format!("a batch on {}", m.routing_key), &m.body);
            tapped.extend(lapor_tests::members(&m));
        } else {
            tapped.push(m);
        }
    }
    // The batch the relay would write of this run's case events matches its schema too, so
    // the check holds even when every event of the run happened to travel alone.
    let events: Vec<&lapor_tests::Received> = tapped
        .iter()
        .filter(|m| m.body["schema"] == "lapor.case_event.v1")
        .collect();
    assert!(!events.is_empty());
    let encoded = lapor_shared::messages::batch::encode(
        uuid::Uuid::now_v7(),
        events.iter().map(|m| (&m.headers, m.raw.as_slice())),
    );
    check(
        &batch,
        "a batch of this run's case events",
        &serde_json::from_slice(&encoded).unwrap(),
    );
    let mut seen = BTreeMap::<String, usize>::new();
    for m in &tapped {
        let schema = m.body["schema"]
            .as_str()
            .unwrap_or_else(|| panic!("message without schema on {}", m.routing_key));
        let v = messages
            .get(schema)
            .unwrap_or_else(|| panic!("{schema} has no published schema"));
        check(v, &format!("{schema} on {}", m.routing_key), &m.body);
        // Everything the pipeline publishes continues a trace; units' follow-ups may (optional).
        if schema != "lapor.followup.v1" {
            assert!(
                m.headers.contains_key("traceparent"),
                "{schema} on {} has no traceparent",
                m.routing_key
            );
        }
        *seen
            .entry(format!(
                "{schema} {}",
                m.routing_key.split('.').next_back().unwrap_or("")
            ))
            .or_default() += 1;
    }
    for expected in [
        "lapor.case_event.v1 received",
        "lapor.unit_case.v1 case",
        "lapor.unit_case.v1 tembusan",
        "lapor.unit_reply.v1 reply",
        "lapor.unit_sla.v1 sla",
        "lapor.followup.v1 followup",
    ] {
        assert!(
            seen.contains_key(expected),
            "the run produced no {expected}: {seen:?}"
        );
    }

    // HTTP answers.
    check(
        &http("status.v1.schema.json"),
        "status",
        &app.status(&tid).await,
    );
    check(
        &http("status.v1.schema.json"),
        "status",
        &app.status(&unclear).await,
    );
    let reviews: Value = app
        .http
        .get(format!("{}/v1/reviews", app.base))
        .bearer_auth("dewi-review-token-0123456789")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!reviews["reviews"].as_array().unwrap().is_empty());
    check(&http("reviews.v1.schema.json"), "reviews", &reviews);
    check(
        &http("decision.v1.schema.json"),
        "a decision",
        &json!({"kind": "aduan", "in_scope": true, "category": "lansia", "needs_followup": true}),
    );
    let mut bad = complaint("x");
    bad["channel"] = json!("fax");
    for (url, body) in [
        (format!("{}/v1/complaints", app.base), bad),
        (
            format!("{}/v1/complaints/{tid}/supplement", app.base),
            json!({}),
        ),
    ] {
        let r = app.http.post(&url).json(&body).send().await.unwrap();
        assert!(r.status().is_client_error());
        check(
            &http("problem.schema.json"),
            "a problem document",
            &r.json().await.unwrap(),
        );
    }

    // The served documents are the committed ones.
    for (path, file) in [
        ("openapi.yaml", "openapi.yaml"),
        ("asyncapi.yaml", "asyncapi.yaml"),
        (
            "schemas/http/status.v1.schema.json",
            "schemas/http/status.v1.schema.json",
        ),
    ] {
        let served = app
            .http
            .get(format!("{}/v1/{path}", app.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            served,
            std::fs::read_to_string(contracts().join(file)).unwrap(),
            "{path}"
        );
    }
    app.stop().await;
}
