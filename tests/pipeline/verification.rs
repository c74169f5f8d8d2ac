//! Step 3 in depth: officers' reviews, completing missing documents, duplicates.

use lapor_shared::config::Secret;
use lapor_tests::{Options, TestApp, complaint};
use serde_json::{Value, json};

const TOKEN: &str = "siti-review-token-0123456789";

fn with_officer() -> Options {
    Options {
        configure: Some(Box::new(|s| {
            s.review.officers.insert("siti".into(), Secret::new(TOKEN));
        })),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclear_case_waits_for_an_officer_whose_decision_moves_it_on() {
    let app = TestApp::spawn_with(with_officer()).await;
    let tid = app
        .submit(&complaint(
            "Selamat siang, saya ingin menyampaikan sesuatu tentang keadaan di kampung.",
        ))
        .await;
    let status = app.wait_status(&tid, "in_review").await;
    assert!(status["message"].as_str().unwrap().contains("ditelaah"));

    let url = format!("{}/v1/reviews", app.base);
    let r = app.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = app
        .http
        .get(&url)
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let list: Value = app
        .http
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let item = list["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["tracking_id"] == tid.as_str())
        .expect("listed");
    assert!(item["suggestion"]["reasons"].is_string(), "{item}");

    let decide = format!("{}/v1/reviews/{tid}/decision", app.base);
    let bad = app
        .http
        .post(&decide)
        .bearer_auth(TOKEN)
        .json(&json!({"kind": "aduan", "in_scope": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["errors"][0]["field"],
        "category"
    );
    let ok = app
        .http
        .post(&decide)
        .bearer_auth(TOKEN)
        .json(&json!({"kind": "aduan", "in_scope": true, "category": "lansia", "needs_followup": true, "note": "lansia terlantar"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 202);
    // The decision takes the case out of the queue, in the transaction that records it.
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM review_queue")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(queued, 0);
    let case = app.next_for_unit("REHSOS").await;
    assert_eq!(case.body["tracking_id"], tid);
    assert_eq!(case.body["category"], "lansia");
    let status = app.wait_status(&tid, "routed").await;
    let events: Vec<&str> = status["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["received", "in_review", "reviewed", "verified", "routed"]
    );
    let actors: Vec<String> = sqlx::query_scalar("SELECT actor FROM case_decisions ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(
        actors[0].starts_with("classifier:") && actors[1] == "officer:siti",
        "{actors:?}"
    );
    // A second decision on the same case is refused: it is no longer in review.
    let again = app
        .http
        .post(&decide)
        .bearer_auth(TOKEN)
        .json(&json!({"kind": "aduan", "in_scope": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_sent_later_resume_verification() {
    let app = TestApp::spawn().await;
    let mut body = complaint(
        "Kursi roda untuk adik saya yang tunadaksa belum diterima padahal sudah diajukan setahun.",
    );
    body.as_object_mut().unwrap().remove("kk_number");
    body["attachments"] = json!([]);
    let nik = body["reporter"]["nik"].as_str().unwrap().to_owned();
    let tid = app.submit(&body).await;
    app.wait_status(&tid, "needs_info").await;

    let url = format!("{}/v1/complaints/{tid}/supplement", app.base);
    let stranger = app
        .http
        .post(&url)
        .json(&json!({"nik": lapor_tests::nik(), "kk_number": "3273011203150007"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        stranger.status(),
        404,
        "someone else's NIK must not reveal or change the case"
    );
    let empty = app
        .http
        .post(&url)
        .json(&json!({"nik": nik}))
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 422);
    let r = app
        .http
        .post(&url)
        .json(&json!({"nik": nik, "kk_number": "3273011203150007",
                      "attachments": [{"kind": "kk_copy", "url": "https://files.example/kk2.jpg", "sha256": "cd".repeat(32)}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let case = app.next_for_unit("REHSOS").await;
    assert_eq!(case.body["kk_number"], "3273011203150007");
    assert_eq!(case.body["category"], "disabilitas");
    let status = app.wait_status(&tid, "routed").await;
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
            "needs_info",
            "supplemented",
            "verified",
            "routed"
        ]
    );
    let again = app
        .http
        .post(&url)
        .json(&json!({"nik": nik, "kk_number": "3273011203150007"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_problem_sent_twice_links_to_the_first_case() {
    let app = TestApp::spawn().await;
    let first = complaint("Bantuan PKH ibu saya tidak cair sejak bulan Agustus, mohon dicek.");
    let tid1 = app.submit(&first).await;
    app.wait_status(&tid1, "routed").await;
    // The same reporter writes again by SMS, in shorthand.
    let mut again = first.clone();
    again["channel"] = json!("sms");
    again["text"] = json!("bantuan pkh ibu sy tdk cair sejak bln agustus, mhn dicek");
    let tid2 = app.submit(&again).await;
    let status = app.wait_status(&tid2, "duplicate").await;
    assert_eq!(status["duplicate_of"], tid1.as_str());
    assert!(status["message"].as_str().unwrap().contains(&tid1));
    // A different complaint from the same reporter is a case of its own.
    let mut other = first.clone();
    other["text"] =
        json!("Anak tetangga kami putus sekolah dan dipekerjakan di bengkel sampai malam.");
    let tid3 = app.submit(&other).await;
    app.wait_status(&tid3, "routed").await;
    // The same LAPOR! report arriving from another channel, even from another reporter.
    let mut imported = complaint("Laporan dari LAPOR: bantuan sembako tidak sampai ke desa kami.");
    imported["lapor_tracking_id"] = json!("LAP-2026-7788");
    imported["channel"] = json!("lapor");
    let tid4 = app.submit(&imported).await;
    app.wait_status(&tid4, "routed").await;
    let mut copy = complaint("Bantuan sembako di desa kami tidak pernah sampai.");
    copy["lapor_tracking_id"] = json!("LAP-2026-7788");
    let tid5 = app.submit(&copy).await;
    assert_eq!(
        app.wait_status(&tid5, "duplicate").await["duplicate_of"],
        tid4.as_str()
    );

    app.settle().await;
    let linjamsos: Vec<_> = app
        .drain_unit("LINJAMSOS")
        .await
        .into_iter()
        .map(|m| m.body["tracking_id"].clone())
        .collect();
    assert_eq!(
        linjamsos,
        [json!(tid1), json!(tid4)],
        "duplicates must not reach the unit"
    );
    app.stop().await;
}

/// The columns a case's transitions write (status, holder, decision, message, times) are in no
/// index of `cases`, not even in a partial index's predicate: otherwise no transition can be a
/// HOT update, and each one writes a new entry into every index of the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_write_no_indexed_column_of_cases() {
    let app = TestApp::spawn().await;
    let indexed: Vec<(String, String)> = sqlx::query_as(
        "SELECT i.indexrelid::regclass::text, a.attname::text
         FROM pg_index i
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE i.indrelid = 'cases'::regclass
           AND (a.attnum = ANY (i.indkey::int2[])
                OR pg_get_expr(i.indpred, i.indrelid) ~ ('\\m' || a.attname || '\\M')
                OR pg_get_expr(i.indexprs, i.indrelid) ~ ('\\m' || a.attname || '\\M'))",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(
        indexed.iter().any(|(_, c)| c == "tracking_id"),
        "the query sees the table's indexes: {indexed:?}"
    );
    let written = [
        "status",
        "updated_at",
        "kind",
        "in_scope",
        "category",
        "needs_followup",
        "holder_unit",
        "duplicate_of",
        "reporter_message",
    ];
    let blocking: Vec<_> = indexed
        .iter()
        .filter(|(_, c)| written.contains(&c.as_str()))
        .collect();
    assert!(
        blocking.is_empty(),
        "indexes on transition columns: {blocking:?}"
    );
    app.stop().await;
}
