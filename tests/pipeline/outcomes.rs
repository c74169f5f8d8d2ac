//! Each outcome of the procedure, seen on the unit's queue and on the tracking answer.

use lapor_tests::{TestApp, complaint};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complaint_reaches_its_unit_with_a_copy_to_the_field_office() {
    let app = TestApp::spawn().await;
    let tid = app
        .submit(&complaint(
            "Bantuan PKH keluarga kami tidak cair sejak tiga bulan, padahal masih terdaftar.",
        ))
        .await;

    let case = app.next_for_unit("LINJAMSOS").await;
    assert_eq!(case.routing_key, "LINJAMSOS.case");
    assert_eq!(case.body["schema"], "lapor.unit_case.v1");
    assert_eq!(case.body["tracking_id"], tid);
    assert_eq!(case.body["role"], "assignee");
    assert_eq!(case.body["category"], "pkh");
    assert_eq!(case.body["reporter"]["name"], "Siti Rahmawati");
    assert_eq!(case.body["kk_number"], "3273011203150007");
    assert!(
        case.headers
            .get("traceparent")
            .is_some_and(|t| t.starts_with("00-")),
        "{:?}",
        case.headers
    );
    assert_eq!(case.message_id.as_deref(), case.body["message_id"].as_str());

    let copy = app.next_for_unit("SENTRA_WYATA_GUNA").await;
    assert_eq!(copy.routing_key, "SENTRA_WYATA_GUNA.tembusan");
    assert_eq!(copy.body["role"], "tembusan");
    assert_eq!(copy.body["assignee"], "LINJAMSOS");
    for absent in ["reporter", "kk_number"] {
        assert!(
            copy.body.get(absent).is_none(),
            "copy carries {absent}: {}",
            copy.body
        );
    }
    assert!(
        copy.body["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["kind"] != "kk_copy")
    );

    let status = app.wait_status(&tid, "routed").await;
    assert_eq!(status["unit"]["code"], "LINJAMSOS");
    let events: Vec<&str> = status["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["received", "verified", "routed"]);
    assert!(status["due_at"].is_string(), "{status}");
    // One trace from the HTTP request to the unit's delivery.
    let trace = |h: &str| h.split('-').nth(1).unwrap().to_owned();
    assert_eq!(
        trace(&case.headers["traceparent"]),
        trace(&copy.headers["traceparent"])
    );
    let http_trace = lapor_tests::telemetry()
        .spans
        .spans()
        .into_iter()
        .find(|s| s.name == "POST /v1/complaints")
        .map(|s| s.trace_id)
        .unwrap();
    assert_eq!(http_trace, trace(&case.headers["traceparent"]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_information_request_gets_the_normative_answer_and_no_unit_is_bothered() {
    let app = TestApp::spawn().await;
    let mut body = complaint("Bagaimana cara mendaftar sebagai penerima PKH dan apa syaratnya?");
    body.as_object_mut().unwrap().remove("kk_number");
    body["attachments"] = json!([]);
    let tid = app.submit(&body).await;
    let status = app.wait_status(&tid, "answered").await;
    assert_eq!(status["kind"], "permintaan_informasi");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("Program Keluarga Harapan"),
        "{status}"
    );
    app.settle().await;
    assert!(app.drain_unit("LINJAMSOS").await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matter_for_another_agency_is_closed_with_where_to_go() {
    let app = TestApp::spawn().await;
    let tid = app
        .submit(&complaint(
            "Tagihan listrik rumah saya naik tiga kali lipat, meteran listrik sepertinya rusak.",
        ))
        .await;
    let status = app.wait_status(&tid, "out_of_scope").await;
    assert_eq!(status["in_scope"], false);
    assert!(
        status["message"].as_str().unwrap().contains("PLN"),
        "{status}"
    );
    app.settle().await;
    assert!(app.drain_unit("LINJAMSOS").await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complaint_without_the_family_card_waits_for_it() {
    let app = TestApp::spawn().await;
    let mut body = complaint("Kakek saya 85 tahun hidup sebatang kara dan tidak ada yang merawat.");
    body.as_object_mut().unwrap().remove("kk_number");
    body["attachments"] = json!([]);
    let tid = app.submit(&body).await;
    let status = app.wait_status(&tid, "needs_info").await;
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("nomor Kartu Keluarga") && message.contains("salinan Kartu Keluarga"),
        "{message}"
    );
    assert!(message.contains(&tid));
    app.settle().await;
    assert!(app.drain_unit("REHSOS").await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_report_reaches_its_unit_without_identity() {
    let app = TestApp::spawn().await;
    let mut body = complaint(
        "Ketua kelompok memotong bantuan PKH warga Rp50.000, hubungi saya di 081298765432.",
    );
    body["anonymous"] = json!(true);
    let nik = body["reporter"]["nik"].as_str().unwrap().to_owned();
    let tid = app.submit(&body).await;
    let case = app.next_for_unit("ITJEN").await;
    assert_eq!(case.body["tracking_id"], tid);
    assert_eq!(case.body["anonymous"], true);
    let raw = String::from_utf8(case.raw.clone()).unwrap();
    for secret in [
        nik.as_str(),
        "Siti",
        "081234567890",
        "3273011203150007",
        "081298765432",
        "Cempaka",
        "Sukajadi",
        "kk.jpg",
    ] {
        assert!(!raw.contains(secret), "{secret} reached the unit: {raw}");
    }
    assert!(
        case.body["text"]
            .as_str()
            .unwrap()
            .contains("memotong bantuan PKH")
    );
    app.stop().await;
}
