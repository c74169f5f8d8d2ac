//! The HTTP contract of intake: validation, problem documents, idempotency.

use lapor_tests::{TestApp, complaint};
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
