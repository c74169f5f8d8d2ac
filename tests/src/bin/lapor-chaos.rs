//! `make chaos`: proves that no accepted complaint is lost and no unit receives a case twice
//! under different message ids, while processes are killed and the broker and database fail.
//!
//! - every service runs as its own process: intake, and two replicas each of verifier,
//!   distributor and sla-monitor, supervised (restarted when they die, as Kubernetes would);
//! - complaints are submitted over HTTP the way a channel does: each with its own
//!   Idempotency-Key, retried with the same key until an answer comes;
//! - meanwhile: SIGKILL of random processes; aborts injected between a commit and its ack and
//!   between a publish and its confirm (LAPOR_FAULTS); RabbitMQ restarted (twice by default);
//!   a memory alarm; PostgreSQL frozen with SIGSTOP for 20 s;
//! - then it drains and checks a ledger: every accepted tracking id against what reached the
//!   unit queues (as a unit would consume them), and prints
//!   `accepted N, lost L, unexpected U, duplicated D, redelivered R, parked P`.
//!
//! Exit status 1 when L, U or D is above zero. Settings: CHAOS_N (20000), CHAOS_CONCURRENCY
//! (24), CHAOS_BROKER_RESTARTS (2), CHAOS_PG_PAUSE_SECS (20), CHAOS_FAULTS
//! (after_commit:0.003,before_confirm:0.003), CHAOS_BIN_DIR (next to this binary).

#![allow(clippy::unwrap_used)]

use anyhow::{Context as _, bail};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapor_shared::broker_admin::{self, BrokerAdmin};
use lapor_shared::config::Settings;
use lapor_tests::{env_num, free_port};
use rand::Rng;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

struct Proc {
    name: String,
    bin: &'static str,
    env: Vec<(String, String)>,
    ops_port: u16,
    child: Option<Child>,
}

struct Fleet {
    bin_dir: PathBuf,
    log_dir: PathBuf,
    procs: Vec<Proc>,
    kills: usize,
    restarts: usize,
}

impl Fleet {
    fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let p = &mut self.procs[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir.join(format!("{}.log", p.name)))?;
        let child = Command::new(self.bin_dir.join(p.bin))
            .envs(p.env.iter().cloned())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} from {}", p.bin, self.bin_dir.display()))?;
        p.child = Some(child);
        Ok(())
    }

    async fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].child.take() {
            c.kill().await.ok();
            self.kills += 1;
        }
    }

    /// Restarts whatever died (killed, or aborted by an injected fault).
    fn revive(&mut self) -> anyhow::Result<()> {
        for i in 0..self.procs.len() {
            let dead = match &mut self.procs[i].child {
                None => true,
                Some(c) => c.try_wait()?.is_some(),
            };
            if dead {
                self.restarts += 1;
                self.start(i)?;
            }
        }
        Ok(())
    }

    async fn terminate(&mut self) {
        for p in &mut self.procs {
            if let Some(c) = &p.child
                && let Some(pid) = c.id()
            {
                // SIGTERM: the graceful path.
                if std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status()
                    .is_err()
                {
                    eprintln!("could not signal {}", p.name);
                }
            }
        }
        for p in &mut self.procs {
            if let Some(mut c) = p.child.take()
                && tokio::time::timeout(Duration::from_secs(30), c.wait())
                    .await
                    .is_err()
            {
                c.kill().await.ok();
            }
        }
    }
}

async fn all_ready(http: &reqwest::Client, ports: &[u16]) -> bool {
    for p in ports {
        match http
            .get(format!("http://127.0.0.1:{p}/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {}
            _ => return false,
        }
    }
    true
}

fn sh(cmd: &str) -> anyhow::Result<()> {
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()?;
    if !st.success() {
        bail!("`{cmd}` failed");
    }
    Ok(())
}

fn postgres_pids() -> Vec<String> {
    let out = std::process::Command::new("pgrep")
        .args(["-x", "postgres"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.split_whitespace().map(str::to_owned).collect()
}

#[derive(Default)]
struct Observed {
    /// (unit, role, tracking_id) → message ids seen, with repetitions.
    deliveries: HashMap<(String, String, String), Vec<String>>,
}

/// A unit's system: drains the unit queues, acknowledging after recording, reconnecting after
/// broker restarts.
async fn observe(
    url: String,
    queues: Vec<String>,
    seen: Arc<Mutex<Observed>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let Ok(conn) = lapin::Connection::connect(&url, Default::default()).await else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let Ok(ch) = conn.create_channel().await else {
            continue;
        };
        'poll: while !stop.load(Ordering::SeqCst) {
            let mut idle = true;
            for q in &queues {
                match ch
                    .basic_get(q.as_str().into(), BasicGetOptions::default())
                    .await
                {
                    Ok(Some(m)) => {
                        idle = false;
                        let body: Value =
                            serde_json::from_slice(&m.delivery.data).unwrap_or(Value::Null);
                        let key = (
                            body["unit"].as_str().unwrap_or("").to_owned(),
                            body["role"]
                                .as_str()
                                .unwrap_or(m.delivery.routing_key.as_str())
                                .to_owned(),
                            body["tracking_id"].as_str().unwrap_or("").to_owned(),
                        );
                        let id = body["message_id"].as_str().unwrap_or("").to_owned();
                        seen.lock()
                            .unwrap()
                            .deliveries
                            .entry(key)
                            .or_default()
                            .push(id);
                        if m.delivery
                            .acker
                            .ack(BasicAckOptions::default())
                            .await
                            .is_err()
                        {
                            break 'poll;
                        }
                    }
                    Ok(None) => {}
                    Err(_) => break 'poll,
                }
            }
            if idle {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        conn.close(200, "bye".into()).await.ok();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = env_num("CHAOS_N", 20_000);
    let concurrency: usize = env_num("CHAOS_CONCURRENCY", 24);
    let broker_restarts: usize = env_num("CHAOS_BROKER_RESTARTS", 2);
    let pg_pause: u64 = env_num("CHAOS_PG_PAUSE_SECS", 20);
    let faults = std::env::var("CHAOS_FAULTS")
        .unwrap_or_else(|_| "after_commit:0.003,before_confirm:0.003".into());
    let bin_dir = lapor_tests::bin_dir("CHAOS_BIN_DIR");
    if std::process::Command::new("rabbitmqctl")
        .args(["-q", "status"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        bail!(
            "chaos needs rabbitmqctl on this machine (to restart the broker and raise a memory alarm)"
        );
    }

    let base = Settings::defaults();
    let admin = BrokerAdmin::detect(&base.amqp).await?;
    let run = lapor_tests::unique();
    let vhost = format!("lapor-test-chaos-{run}");
    let db = format!("lapor_test_chaos_{run}");
    admin.create_vhost(&vhost).await?;
    admin
        .set_permissions(&vhost, "guest", ".*", ".*", ".*")
        .await?;
    let amqp_url =
        broker_admin::amqp_url(&admin.amqp_host, admin.amqp_port, "guest", "guest", &vhost);
    let db_url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let log_dir = PathBuf::from("target/chaos").join(&run);
    std::fs::create_dir_all(&log_dir)?;
    eprintln!("chaos {run}: {n} complaints, logs in {}", log_dir.display());

    let http_port = free_port();
    let common = |extra: Vec<(String, String)>| {
        let mut e = vec![
            ("LAPOR__AMQP__URL".to_owned(), amqp_url.clone()),
            ("LAPOR__DATABASE__URL".into(), db_url.clone()),
            ("LAPOR__DATABASE__MAX_CONNECTIONS".into(), "8".into()),
            ("LAPOR__AMQP__PUBLISH_TIMEOUT_MS".into(), "3000".into()),
            ("LAPOR__HTTP__BIND".into(), format!("127.0.0.1:{http_port}")),
            ("LAPOR__SHUTDOWN__GRACE_PERIOD_SECS".into(), "15".into()),
            (
                "LAPOR__TELEMETRY__LOG_FILTER".into(),
                "info,sqlx=warn,lapin=error".into(),
            ),
            ("LAPOR_FAULTS".into(), faults.clone()),
            ("NO_COLOR".into(), "1".into()),
        ];
        e.extend(extra);
        e
    };
    let mut procs = vec![Proc {
        name: "intake".into(),
        bin: "intake",
        env: common(vec![]),
        ops_port: http_port,
        child: None,
    }];
    for (bin, key) in [
        ("verifier", "LAPOR__OPS__VERIFIER"),
        ("distributor", "LAPOR__OPS__DISTRIBUTOR"),
        ("sla-monitor", "LAPOR__OPS__SLA_MONITOR"),
    ] {
        for r in 1..=2 {
            let port = free_port();
            procs.push(Proc {
                name: format!("{bin}-{r}"),
                bin,
                env: common(vec![(key.into(), format!("127.0.0.1:{port}"))]),
                ops_port: port,
                child: None,
            });
        }
    }
    let ports: Vec<u16> = procs.iter().map(|p| p.ops_port).collect();
    let fleet = Arc::new(tokio::sync::Mutex::new(Fleet {
        bin_dir,
        log_dir: log_dir.clone(),
        procs,
        kills: 0,
        restarts: 0,
    }));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    {
        let mut f = fleet.lock().await;
        f.start(0)?;
        let t = Instant::now();
        while !all_ready(&http, &[http_port]).await {
            if t.elapsed() > Duration::from_secs(60) {
                bail!("intake did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for i in 1..f.procs.len() {
            f.start(i)?;
        }
    }
    let t = Instant::now();
    while !all_ready(&http, &ports).await {
        if t.elapsed() > Duration::from_secs(60) {
            bail!("the services did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let seen = Arc::new(Mutex::new(Observed::default()));
    let stop_observer = Arc::new(AtomicBool::new(false));
    let observer = tokio::spawn(observe(
        amqp_url.clone(),
        vec!["units.LINJAMSOS".into(), "units.SENTRA_WYATA_GUNA".into()],
        seen.clone(),
        stop_observer.clone(),
    ));

    // Supervisor and killer: restarts the dead, kills at random.
    let stop_kills = Arc::new(AtomicBool::new(false));
    let supervisor = {
        let (fleet, stop_kills) = (fleet.clone(), stop_kills.clone());
        tokio::spawn(async move {
            let mut next_kill = Instant::now() + Duration::from_secs(2);
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let mut f = fleet.lock().await;
                if !stop_kills.load(Ordering::SeqCst) && Instant::now() >= next_kill {
                    let i = rand::rng().random_range(0..f.procs.len());
                    f.kill(i).await;
                    next_kill =
                        Instant::now() + Duration::from_millis(rand::rng().random_range(800..2500));
                }
                // Restarting the dead goes on after the kills stop, until the end of the run.
                if let Err(e) = f.revive() {
                    eprintln!("supervisor: {e:#}");
                }
            }
        })
    };

    // Submitters.
    let accepted = Arc::new(Mutex::new(HashSet::<String>::new()));
    let submitted = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut submitters = Vec::new();
    for _ in 0..concurrency {
        let (http, accepted, submitted, retries, next, run) = (
            http.clone(),
            accepted.clone(),
            submitted.clone(),
            retries.clone(),
            next.clone(),
            run.clone(),
        );
        submitters.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    return;
                }
                let body = lapor_tests::complaint(&format!("Bantuan PKH keluarga kami belum cair sejak {} bulan, mohon dicek (laporan {i}).", 2 + i % 9));
                let key = format!("chaos-{run}-{i}");
                let mut backoff = Duration::from_millis(100);
                loop {
                    let r = http.post(format!("http://127.0.0.1:{http_port}/v1/complaints")).header("Idempotency-Key", &key).json(&body).send().await;
                    match r {
                        Ok(r) if r.status() == 202 => {
                            let v: Value = r.json().await.unwrap_or(Value::Null);
                            if let Some(t) = v["tracking_id"].as_str() {
                                accepted.lock().unwrap().insert(t.to_owned());
                                submitted.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                        }
                        Ok(r) if r.status().is_client_error() && r.status() != 408 && r.status() != 429 => {
                            panic!("complaint {i} refused: {} {}", r.status(), r.text().await.unwrap_or_default());
                        }
                        _ => {}
                    }
                    retries.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }));
    }

    // Faults at fractions of the progress, one after the other.
    let mut resume_ms: Vec<u128> = Vec::new();
    let progress = |s: &AtomicUsize| s.load(Ordering::SeqCst) as f64 / n as f64;
    let mut plan: Vec<(f64, &str)> = Vec::new();
    for k in 0..broker_restarts {
        plan.push((
            (k as f64 + 1.0) / (broker_restarts as f64 + 1.0) * 0.8,
            "broker",
        ));
    }
    plan.push((0.45, "memory"));
    if pg_pause > 0 {
        plan.push((0.55, "postgres"));
    }
    plan.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut broker_done = 0;
    for (at, fault) in plan {
        while progress(&submitted) < at && submitters.iter().any(|s| !s.is_finished()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match fault {
            "broker" => {
                eprintln!(
                    "[{:>5.1}s] restarting RabbitMQ",
                    started.elapsed().as_secs_f64()
                );
                sh("rabbitmqctl -q stop_app && rabbitmqctl -q start_app")?;
                broker_done += 1;
                let t = Instant::now();
                while !all_ready(&http, &ports).await {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if t.elapsed() > Duration::from_secs(120) {
                        break;
                    }
                }
                resume_ms.push(t.elapsed().as_millis());
                eprintln!(
                    "[{:>5.1}s] consumers resumed {} ms after the broker came back",
                    started.elapsed().as_secs_f64(),
                    t.elapsed().as_millis()
                );
            }
            "memory" => {
                eprintln!(
                    "[{:>5.1}s] memory alarm for 8 s",
                    started.elapsed().as_secs_f64()
                );
                sh("rabbitmqctl -q set_vm_memory_high_watermark absolute 10MB")?;
                tokio::time::sleep(Duration::from_secs(8)).await;
                sh("rabbitmqctl -q set_vm_memory_high_watermark 0.4")?;
            }
            _ => {
                let pids = postgres_pids();
                eprintln!(
                    "[{:>5.1}s] freezing PostgreSQL ({} processes) for {pg_pause} s",
                    started.elapsed().as_secs_f64(),
                    pids.len()
                );
                sh(&format!("kill -STOP {}", pids.join(" ")))?;
                tokio::time::sleep(Duration::from_secs(pg_pause)).await;
                sh(&format!("kill -CONT {}", pids.join(" ")))?;
            }
        }
    }
    for s in submitters {
        s.await?;
    }
    let submit_secs = started.elapsed().as_secs_f64();
    eprintln!("[{submit_secs:>5.1}s] all {n} accepted; draining");
    stop_kills.store(true, Ordering::SeqCst);

    // Drain: every accepted case delivered to its unit, nothing left to publish.
    let accepted: HashSet<String> = accepted.lock().unwrap().clone();
    let pool = sqlx::PgPool::connect(&db_url).await?;
    let drain_start = Instant::now();
    loop {
        let delivered: HashSet<String> = seen
            .lock()
            .unwrap()
            .deliveries
            .keys()
            .filter(|(u, r, _)| u == "LINJAMSOS" && r == "assignee")
            .map(|(_, _, t)| t.clone())
            .collect();
        let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap_or(1);
        if accepted.is_subset(&delivered) && outbox == 0 {
            break;
        }
        if drain_start.elapsed() > Duration::from_secs(300) {
            eprintln!(
                "drain timed out: {} of {} delivered, outbox {outbox}",
                accepted.intersection(&delivered).count(),
                accepted.len()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Late duplicates would show up now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    supervisor.abort();
    fleet.lock().await.terminate().await;
    stop_observer.store(true, Ordering::SeqCst);
    observer.await.ok();

    // The ledger.
    let obs = std::mem::take(&mut *seen.lock().unwrap());
    let in_db: HashSet<String> = sqlx::query_scalar::<_, String>("SELECT tracking_id FROM cases")
        .fetch_all(&pool)
        .await?
        .into_iter()
        .collect();
    let assignee: HashSet<&String> = obs
        .deliveries
        .keys()
        .filter(|(u, r, _)| u == "LINJAMSOS" && r == "assignee")
        .map(|(_, _, t)| t)
        .collect();
    let lost = accepted.iter().filter(|t| !assignee.contains(t)).count();
    let unexpected = obs
        .deliveries
        .keys()
        .filter(|(_, _, t)| !accepted.contains(t))
        .count()
        + in_db.difference(&accepted).count();
    let duplicated = obs
        .deliveries
        .values()
        .filter(|ids| ids.iter().collect::<HashSet<_>>().len() > 1)
        .count();
    let total: usize = obs.deliveries.values().map(Vec::len).sum();
    let distinct: usize = obs
        .deliveries
        .values()
        .map(|ids| ids.iter().collect::<HashSet<_>>().len())
        .sum();
    let redelivered = total - distinct;
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM parked_messages")
        .fetch_one(&pool)
        .await?;
    let copies = obs
        .deliveries
        .keys()
        .filter(|(u, r, _)| u == "SENTRA_WYATA_GUNA" && r == "tembusan")
        .count();
    let f = fleet.lock().await;
    let line = format!(
        "accepted {}, lost {lost}, unexpected {unexpected}, duplicated {duplicated}, redelivered {redelivered}, parked {parked}",
        accepted.len()
    );
    println!("{line}");
    let result = serde_json::json!({
        "accepted": accepted.len(), "lost": lost, "unexpected": unexpected, "duplicated": duplicated,
        "redelivered": redelivered, "parked": parked, "copies_delivered": copies,
        "kills": f.kills, "process_restarts": f.restarts, "broker_restarts": broker_done, "pg_pause_secs": pg_pause,
        "consumer_resume_ms": resume_ms, "http_retries": retries.load(Ordering::SeqCst),
        "submit_seconds": submit_secs, "drain_seconds": drain_start.elapsed().as_secs_f64(),
    });
    eprintln!("{}", serde_json::to_string_pretty(&result)?);
    std::fs::write(
        log_dir.join("result.json"),
        serde_json::to_vec_pretty(&result)?,
    )?;
    pool.close().await;

    lapor_tests::remove_run(&admin, &vhost, &db).await;
    if lost + unexpected + duplicated > 0 || copies < accepted.len() {
        eprintln!(
            "FAILED: {line}; copies delivered {copies} of {}",
            accepted.len()
        );
        std::process::exit(1);
    }
    Ok(())
}
