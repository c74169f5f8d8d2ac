//! The HTTP contract of intake: validation, problem documents, idempotency.

use futures::FutureExt;
use lapor_tests::{Options, TestApp, complaint};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_gives_the_same_answer_and_one_case() {
    let app = TestApp::spawn().await;
    let body = complaint("Bantuan sembako bulan ini tidak diterima keluarga kami.");
    let first = app.post_with_key(&body, "channel-web-0001").await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    // Same body, even formatted differently, answers the same.
    for _ in 0..3 {
        let again = app.post_with_key(&body, "channel-web-0001").await;
        assert_eq!(again.status(), 202);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.json::<Value>().await.unwrap(), first);
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM cases")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);

    let mut other = body.clone();
    other["text"] = json!("Sesuatu yang lain sama sekali.");
    let reused = app.post_with_key(&other, "channel-web-0001").await;
    assert_eq!(reused.status(), 422);
    let p: Value = reused.json().await.unwrap();
    assert_eq!(p["type"], "/problems/idempotency-key-reused");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_with_one_key_make_one_case() {
    let app = TestApp::spawn().await;
    let body = complaint("Kartu KKS saya terblokir sehingga bantuan tidak bisa diambil.");
    let answers =
        futures::future::join_all((0..8).map(|_| app.post_with_key(&body, "retry-storm-7"))).await;
    let mut ids = Vec::new();
    for a in answers {
        assert_eq!(a.status(), 202);
        ids.push(a.json::<Value>().await.unwrap()["tracking_id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM cases")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    app.stop().await;
}

/// Complaints posted together are stored in shared transactions (group commit), and each is
/// still answered with its own case, stored whole, published once. A key already used,
/// arriving inside a group, sends that group down the one-at-a-time path: its neighbours get
/// their own cases, the retries the earlier answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complaints_posted_together_share_transactions_and_keep_their_own_cases() {
    let app = TestApp::spawn_with(Options {
        configure: Some(Box::new(|s| {
            s.http.submit_writers = 1;
            s.http.submit_batch_max = 16;
        })),
        ..Options::default()
    })
    .await;
    let earlier = complaint("Bantuan PKH tahap ini belum masuk ke rekening kami.");
    let first = app.post_with_key(&earlier, "group-retry-1").await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();

    let fresh: Vec<Value> = (0..120)
        .map(|i| {
            complaint(&format!(
                "Bantuan sembako keluarga nomor {i} tidak diterima bulan ini."
            ))
        })
        .collect();
    let app_ref = &app;
    let posts = fresh
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let key = (i % 2 == 0).then(|| format!("group-fresh-{i}"));
            async move {
                match key {
                    Some(k) => app_ref.post_with_key(b, &k).await,
                    None => app_ref.post(b).await,
                }
            }
            .boxed()
        })
        .chain((0..6).map(|_| app.post_with_key(&earlier, "group-retry-1").boxed()));
    let answers = futures::future::join_all(posts).await;
    let mut tracking = std::collections::HashSet::new();
    for (i, a) in answers.into_iter().enumerate() {
        assert_eq!(a.status(), 202, "answer {i}");
        let v: Value = a.json().await.unwrap();
        if i < fresh.len() {
            assert!(tracking.insert(v["tracking_id"].as_str().unwrap().to_owned()));
        } else {
            assert_eq!(v, first, "a retry got another answer");
        }
    }
    assert!(!tracking.contains(first["tracking_id"].as_str().unwrap()));

    // Each case whole: its identity, its attachment, its key, its first timeline entry.
    let (cases, whole, keys, transactions): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE EXISTS (SELECT 1 FROM case_identity i WHERE i.case_id = c.id)
                                   AND EXISTS (SELECT 1 FROM case_attachments a WHERE a.case_id = c.id)
                                   AND (SELECT count(*) FROM case_events e WHERE e.case_id = c.id AND e.event = 'received') = 1),
                (SELECT count(*) FROM idempotency_keys),
                count(DISTINCT c.xmin::text)
         FROM cases c",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(cases, 121);
    assert_eq!(whole, 121);
    assert_eq!(keys, 61);
    assert!(
        transactions < cases - 1,
        "{cases} cases in {transactions} transactions: no group was stored together"
    );
    // Every case.received was published: the verifier took every case.
    app.wait_count("SELECT count(*) FROM cases WHERE status <> 'received'", 121)
        .await;
    app.stop().await;
}

async fn problem(app: &TestApp, body: &Value) -> (u16, Value) {
    let r = app.post(body).await;
    let status = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_field_is_named_with_its_reason() {
    let app = TestApp::spawn().await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("channel", json!("fax"), "channel"),
        ("kind", json!("complaint"), "kind"),
        ("text", json!(""), "text"),
        ("text", json!("x".repeat(4001)), "text"),
        ("title", json!("t".repeat(201)), "title"),
        ("kk_number", json!("1234"), "kk_number"),
        ("anonymous", json!(null), "anonymous"),
        (
            "lapor_tracking_id",
            json!("has spaces in it"),
            "lapor_tracking_id",
        ),
    ];
    for (field, value, named) in cases {
        let mut body = complaint("Bantuan PKH belum cair.");
        body[field] = value;
        let (status, p) = problem(&app, &body).await;
        assert_eq!(status, 422, "{field}: {p}");
        assert!(
            p["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == named),
            "{field}: {p}"
        );
    }
    let nested: Vec<(&str, &str, Value)> = vec![
        ("reporter", "nik", json!("3201013506900001")),
        ("reporter", "nik", json!("123")),
        ("reporter", "phone", json!("12")),
        ("reporter", "name", json!("")),
        ("reporter", "email", json!("not-an-email")),
        ("location", "province_code", json!("99")),
        ("location", "regency_code", json!("1807")),
    ];
    for (outer, inner, value) in nested {
        let mut body = complaint("Bantuan PKH belum cair.");
        body[outer][inner] = value;
        let (status, p) = problem(&app, &body).await;
        assert_eq!(status, 422, "{outer}.{inner}: {p}");
        let field = format!("{outer}.{inner}");
        let err = p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["field"] == field.as_str())
            .unwrap_or_else(|| panic!("{field} not named: {p}"));
        assert!(!err["reason"].as_str().unwrap().is_empty());
    }
    let mut body = complaint("x");
    body["attachments"] = json!([{"kind": "selfie", "url": "ftp://x", "sha256": "zz"}]);
    let (_, p) = problem(&app, &body).await;
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "attachments[0].kind",
            "attachments[0].url",
            "attachments[0].sha256"
        ]
    );
    // Wrong JSON types name the field too.
    let mut body = complaint("x");
    body["anonymous"] = json!("yes");
    let (status, p) = problem(&app, &body).await;
    assert_eq!(status, 422);
    assert_eq!(p["errors"][0]["field"], "anonymous");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_problem_documents_not_errors() {
    let app = TestApp::spawn().await;
    let url = format!("{}/v1/complaints", app.base);
    let send = |ct: &'static str, body: Vec<u8>| {
        app.http
            .post(&url)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let r = send("application/json", b"{not json".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["type"],
        "/problems/malformed-body"
    );
    let r = send("application/json", b"[1,2]".to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = send("text/plain", b"hello".to_vec()).await.unwrap();
    assert_eq!(r.status(), 415);
    let big = serde_json::to_vec(&json!({"text": "x".repeat(200_000)})).unwrap();
    // The server answers 413 without reading the rest and closes the connection: a client of
    // its own, so the pooled connection of the others is not the one closed.
    let r = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = app
        .http
        .get(format!("{}/v1/complaints/NOT-A-REAL-ID", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .http
        .get(format!("{}/v1/complaints/0000-0000-0000", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app.http.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let r = app
        .http
        .get(format!("{}/nowhere", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .header("Idempotency-Key", "")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    let r = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r: Value = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["ready"], true);
    assert_eq!(r["database"], true);
    for port in app.ops_ports.values() {
        let r = app
            .http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    app.stop().await;
}

/// A surge beyond what intake may hold (`http.submit_in_flight_max`) is refused at once with
/// 503, `Retry-After` and nothing stored, while what was admitted is stored; the refused
/// submission, sent again with its key once there is room, is stored like any other. Other
/// routes are not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_beyond_the_admission_limit_are_refused_at_once_with_nothing_stored() {
    let app = TestApp::spawn_with(Options {
        configure: Some(Box::new(|s| s.http.submit_in_flight_max = 1)),
        ..Options::default()
    })
    .await;
    // The writers' inserts wait on this lock, so the first submission keeps its permit.
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE cases IN SHARE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let held = {
        let (http, url) = (app.http.clone(), format!("{}/v1/complaints", app.base));
        let body = complaint("Bantuan PKH kami belum cair tiga bulan.");
        tokio::spawn(async move {
            http.post(url)
                .header("Idempotency-Key", "surge-held")
                .json(&body)
                .send()
                .await
                .unwrap()
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !app
        .metrics()
        .await
        .lines()
        .any(|l| l == "lapor_intake_submissions_in_flight 1")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the first submission never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let refused_body = complaint("Kartu KKS saya terblokir, bantuan tidak bisa diambil.");
    let refused = app.post_with_key(&refused_body, "surge-refused").await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let p: Value = refused.json().await.unwrap();
    assert_eq!(p["type"], "/problems/at-capacity");
    assert!(p["detail"].as_str().unwrap().contains("nothing was stored"));
    assert!(
        app.metrics()
            .await
            .lines()
            .any(|l| l == "lapor_intake_refused_at_capacity_total 1")
    );
    // Reading is not admission-controlled.
    let status = app
        .http
        .get(format!("{}/v1/complaints/LPR-0000-0000", app.base))
        .send()
        .await
        .unwrap();
    assert_ne!(status.status(), 503);

    blocker.commit().await.unwrap();
    let held = held.await.unwrap();
    assert_eq!(held.status(), 202);
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE key = 'surge-refused'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(n, 0, "a refused submission left its key behind");
    let again = app.post_with_key(&refused_body, "surge-refused").await;
    assert_eq!(again.status(), 202);
    assert!(again.headers().get("idempotent-replayed").is_none());
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM cases")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 2);
    app.stop().await;
}
