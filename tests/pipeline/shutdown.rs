//! Graceful shutdown of a real service process: SIGTERM turns /readyz unready first, in-flight
//! work finishes and is published, and the process exits 0 within its grace period.

use lapor_tests::{TestApp, complaint};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn binary(name: &str) -> std::path::PathBuf {
    // Test executables live in target/<profile>/deps; the services next to deps.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().to_owned();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (make test does)",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_unready_finishes_in_flight_work_and_exits_cleanly() {
    // The pipeline's other services run in-process; a second intake runs as a real process.
    let app = TestApp::spawn().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(binary("intake"))
        .env("LAPOR__AMQP__URL", &app.settings.amqp.url)
        .env("LAPOR__DATABASE__URL", &app.settings.database.url)
        .env("LAPOR__HTTP__BIND", format!("127.0.0.1:{port}"))
        .env("LAPOR__SHUTDOWN__DRAIN_DELAY_MS", "1500")
        .env("LAPOR__SHUTDOWN__GRACE_PERIOD_SECS", "10")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !app
        .http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            Instant::now() < deadline,
            "the intake process never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = app
        .http
        .post(format!("{base}/v1/complaints"))
        .json(&complaint("Bantuan PKH belum cair, mohon dicek."))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let tid = r.json::<serde_json::Value>().await.unwrap()["tracking_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let pid = child.id().unwrap();
    let sent = Instant::now();
    assert!(
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success()
    );
    // Unready first, while still alive and answering.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        app.http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits within the grace period")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(
        sent.elapsed() >= Duration::from_millis(1500),
        "it waited out the drain delay"
    );
    // What it accepted went on through the pipeline.
    app.wait_status(&tid, "routed").await;
    app.stop().await;
}
