//! The test harness: the whole pipeline in-process, on a fresh vhost and a fresh database,
//! observed from outside (HTTP, unit queues, rows). Modelled on zero2prod's `TestApp`.

#![allow(clippy::unwrap_used)]

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapor_shared::broker_admin::{self, BrokerAdmin};
use lapor_shared::clock::{self, ManualClock, SharedClock};
use lapor_shared::config::Settings;
use lapor_shared::messages::exchange;
use lapor_shared::service::Context;
use lapor_shared::sla::Policy;
use lapor_shared::telemetry::SpanRecorder;
use rand::Rng;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Everything the process logged, for searching.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

pub struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("LAPOR_TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LogWriter(self.0.clone())
    }
}

pub struct Telemetry {
    pub logs: LogBuffer,
    pub spans: SpanRecorder,
}

static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();

/// Logs and spans of this test process (each test runs in its own process under nextest).
pub fn telemetry() -> &'static Telemetry {
    TELEMETRY.get_or_init(|| {
        let logs = LogBuffer::default();
        let spans = SpanRecorder::default();
        let mut settings = Settings::defaults().telemetry;
        settings.log_format = lapor_shared::config::LogFormat::Json;
        settings.log_filter = "debug,sqlx=warn,lapin=warn,hyper=warn,reqwest=warn,h2=warn".into();
        let t = lapor_shared::telemetry::init_with(
            "lapor-test",
            &settings,
            logs.clone(),
            Some(spans.clone()),
        )
        .unwrap();
        // The provider must live as long as the process.
        std::mem::forget(t);
        Telemetry { logs, spans }
    })
}

/// Changes a test makes to the settings every service gets.
pub type Configure = Box<dyn Fn(&mut Settings)>;

#[derive(Default)]
pub struct Options {
    /// A hand-moved clock for all services (the sweeper then runs only when asked).
    pub clock: Option<ManualClock>,
    pub configure: Option<Configure>,
}

/// What a test leaves behind on the broker and the database server, removed by
/// [`TestApp::stop`] or, if the test panicked, when the `TestApp` is dropped.
struct Leftovers {
    admin: BrokerAdmin,
    vhost: String,
    db_name: String,
}

impl Leftovers {
    /// Drops the database, whatever is still connected to it, and deletes the vhost. Failures
    /// are ignored: a run ends either way, and `make clean-test` removes what is left.
    async fn remove(&self) {
        let Ok(admin_pool) = PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres").await
        else {
            self.admin.delete_vhost(&self.vhost).await.ok();
            return;
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.db_name
        )))
        .execute(&admin_pool)
        .await
        .ok();
        with_vhost_lock(&admin_pool, self.admin.delete_vhost(&self.vhost))
            .await
            .ok();
        admin_pool.close().await;
    }
}

/// Serialises vhost creation and deletion across test processes (RabbitMQ handles concurrent
/// vhost life-cycle operations poorly), with a PostgreSQL advisory lock.
async fn with_vhost_lock<T>(pool: &PgPool, f: impl std::future::Future<Output = T>) -> T {
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(727001)")
        .execute(&mut *conn)
        .await
        .unwrap();
    let out = f.await;
    sqlx::query("SELECT pg_advisory_unlock(727001)")
        .execute(&mut *conn)
        .await
        .ok();
    out
}

/// A fresh vhost (the pipeline's permissions for `guest`) and the settings that point at it
/// and at a fresh database, for tests that drive parts of the pipeline themselves. Removed by
/// [`Scratch::remove`] or, if the test panicked, on drop.
pub struct Scratch {
    pub settings: Settings,
    pub admin: BrokerAdmin,
    pub vhost: String,
    pub db_name: String,
    id: String,
    armed: bool,
}

impl Scratch {
    pub async fn create() -> Self {
        telemetry();
        let id = unique();
        let mut settings = Settings::defaults();
        let admin = BrokerAdmin::detect(&settings.amqp)
            .await
            .expect("RabbitMQ administration (management API or rabbitmqctl)");
        let vhost = format!("lapor-test-{id}");
        let admin_pool = PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres")
            .await
            .unwrap();
        with_vhost_lock(&admin_pool, async {
            admin.create_vhost(&vhost).await.unwrap();
            admin
                .set_permissions(&vhost, "guest", ".*", ".*", ".*")
                .await
                .unwrap();
        })
        .await;
        admin_pool.close().await;
        let db_name = format!("lapor_test_{id}");
        settings.amqp.url =
            broker_admin::amqp_url(&admin.amqp_host, admin.amqp_port, "guest", "guest", &vhost);
        settings.database.url = format!("postgres://postgres@127.0.0.1:5432/{db_name}");
        settings.database.max_connections = 5;
        Self {
            settings,
            admin,
            vhost,
            db_name,
            id,
            armed: true,
        }
    }

    fn leftovers(&self) -> Leftovers {
        Leftovers {
            admin: self.admin.clone(),
            vhost: self.vhost.clone(),
            db_name: self.db_name.clone(),
        }
    }

    pub async fn remove(mut self) {
        self.armed = false;
        self.leftovers().remove().await;
    }

    /// Leaves the clean-up to the caller.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let l = self.leftovers();
        block_on_cleanup(async move { l.remove().await });
    }
}

/// Runs clean-up from a destructor: on the multi-threaded runtime in place, otherwise on a
/// thread of its own.
fn block_on_cleanup(cleanup: impl std::future::Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(cleanup));
        }
        _ => {
            let cleaner = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(cleanup);
                }
            });
            if cleaner.join().is_err() {
                eprintln!("test clean-up panicked; `make clean-test` removes what is left");
            }
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub pool: PgPool,
    pub settings: Settings,
    pub admin: BrokerAdmin,
    pub vhost: String,
    pub db_name: String,
    pub amqp: lapin::Connection,
    pub channel: lapin::Channel,
    pub clock: Option<ManualClock>,
    pub monitor: Context,
    pub ops_ports: HashMap<&'static str, u16>,
    tap: String,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    leftovers: Option<Leftovers>,
}

impl Drop for TestApp {
    /// A test that panicked never reaches `stop()`: stop the services and remove the vhost and
    /// database here. Tests run on the multi-threaded runtime so that the services can still
    /// finish while this blocks.
    fn drop(&mut self) {
        let Some(l) = self.leftovers.take() else {
            return;
        };
        self.shutdown.cancel();
        let tasks = std::mem::take(&mut self.tasks);
        let cleanup = async move {
            for t in tasks {
                tokio::time::timeout(Duration::from_secs(10), t).await.ok();
            }
            l.remove().await;
        };
        block_on_cleanup(cleanup);
    }
}

/// Where the binaries under test are: the folder named by `var`, or the one this binary
/// runs from.
pub fn bin_dir(var: &str) -> std::path::PathBuf {
    std::env::var(var)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::current_exe()
                .unwrap()
                .parent()
                .unwrap()
                .to_owned()
        })
}

/// Removes a run's database and vhost (the bench's and the crash test's) as a test's are
/// removed, under the same vhost lock.
pub async fn remove_run(admin: &BrokerAdmin, vhost: &str, db: &str) {
    Leftovers {
        admin: admin.clone(),
        vhost: vhost.to_owned(),
        db_name: db.to_owned(),
    }
    .remove()
    .await;
}

/// Declares `queue` durable and of the quorum type, as the pipeline's own queues are, for
/// tests and benches that bring queues of their own.
pub async fn declare_quorum(ch: &lapin::Channel, queue: &str) -> lapin::Result<()> {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    Ok(())
}

/// How many messages `queue` holds that nobody has taken (a passive declare).
pub async fn queue_len(ch: &lapin::Channel, queue: &str) -> u32 {
    ch.queue_declare(
        queue.into(),
        lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap()
    .message_count()
}

/// Publishes each body as a persistent message straight to `queue`, waiting for the broker's
/// confirm of each: when this returns, they are all queued.
pub async fn queue_json(ch: &lapin::Channel, queue: &str, bodies: &[Value]) {
    ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    for body in bodies {
        ch.basic_publish(
            "".into(),
            queue.into(),
            lapin::options::BasicPublishOptions::default(),
            &serde_json::to_vec(body).unwrap(),
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
}

/// A numeric setting from the environment, or its default (for the bench and chaos runners).
pub fn env_num<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// A random, structurally valid NIK (Jawa Barat), so that tests never look like one reporter
/// writing again.
pub fn nik() -> String {
    let mut r = rand::rng();
    let female = r.random_bool(0.5);
    let day = r.random_range(1..=28) + if female { 40 } else { 0 };
    format!(
        "32{:02}{:02}{:02}{:02}{:02}{:04}",
        r.random_range(1..=18),
        r.random_range(1..=30),
        day,
        r.random_range(1..=12),
        r.random_range(50..=99),
        r.random_range(1..=9999)
    )
}

/// A valid complaint body about PKH from Kota Bandung, with a KK number and a KK copy.
pub fn complaint(text: &str) -> Value {
    json!({
        "channel": "web",
        "text": text,
        "reporter": {"name": "Siti Rahmawati", "nik": nik(), "phone": "081234567890", "address": "Jl. Cempaka 7, Bandung"},
        "kk_number": "3273011203150007",
        "location": {"province_code": "32", "regency_code": "3273", "address": "RT 03 RW 05 Kel. Sukajadi"},
        "anonymous": false,
        "confidential": false,
        "attachments": [{"kind": "kk_copy", "url": "https://files.example/kk.jpg", "sha256": "ab".repeat(32)}]
    })
}

/// The members of a `lapor.batch.v1` message, each as the message it would be alone (its
/// own headers and message id); any other message as itself.
pub fn members(m: &Received) -> Vec<Received> {
    match lapor_shared::messages::batch::decode(&m.raw) {
        Ok(members) if m.body["schema"] == "lapor.batch.v1" => members
            .into_iter()
            .map(|b| {
                let raw = b.message.get().as_bytes().to_vec();
                let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
                Received {
                    routing_key: m.routing_key.clone(),
                    exchange: m.exchange.clone(),
                    message_id: body["message_id"].as_str().map(str::to_owned),
                    body,
                    raw,
                    headers: b.headers,
                }
            })
            .collect(),
        _ => vec![m.clone()],
    }
}

/// A delivery taken from a queue.
#[derive(Debug, Clone)]
pub struct Received {
    pub routing_key: String,
    pub exchange: String,
    pub body: Value,
    pub raw: Vec<u8>,
    pub headers: HashMap<String, String>,
    pub message_id: Option<String>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> Self {
        let scratch = Scratch::create().await;
        let mut settings = scratch.settings.clone();
        let (admin, vhost, db_name) = (
            scratch.admin.clone(),
            scratch.vhost.clone(),
            scratch.db_name.clone(),
        );
        let u = scratch.id.clone();
        // From here on, TestApp's own drop removes the vhost and database.
        scratch.disarm();
        settings.http.bind = "127.0.0.1:0".into();
        settings.ops.verifier = "127.0.0.1:0".into();
        settings.ops.distributor = "127.0.0.1:0".into();
        settings.ops.sla_monitor = "127.0.0.1:0".into();
        settings.shutdown.grace_period_secs = 10;
        settings.outbox.poll_interval_ms = 200;
        if let Some(f) = &options.configure {
            f(&mut settings);
        }
        let shared: SharedClock = match &options.clock {
            Some(c) => Arc::new(c.clone()),
            None => clock::system(),
        };
        let shutdown = CancellationToken::new();
        let intake = intake::Application::build(settings.clone(), shared.clone())
            .await
            .unwrap();
        let verifier = verifier::Verifier::build(settings.clone(), shared.clone())
            .await
            .unwrap();
        let distributor = distributor::Distributor::build(settings.clone(), shared.clone())
            .await
            .unwrap();
        let monitor = sla_monitor::Monitor::build(settings.clone(), shared.clone())
            .await
            .unwrap();
        let port = intake.port();
        let ops_ports = HashMap::from([
            ("verifier", verifier.ops_port()),
            ("distributor", distributor.ops_port()),
            ("sla-monitor", monitor.ops_port()),
        ]);
        let monitor_ctx = monitor.context().clone();
        let sweep = options.clock.is_none();
        let tasks = vec![
            tokio::spawn(intake.run_until_stopped(shutdown.clone())),
            tokio::spawn(verifier.run_until_stopped(shutdown.clone())),
            tokio::spawn(distributor.run_until_stopped(shutdown.clone())),
            tokio::spawn(monitor.run(shutdown.clone(), sweep)),
        ];
        let pool = PgPool::connect(&settings.database.url).await.unwrap();
        let amqp =
            lapin::Connection::connect(&settings.amqp.url, lapin::ConnectionProperties::default())
                .await
                .unwrap();
        let channel = amqp.create_channel().await.unwrap();
        // A tap on every exchange, to check every message the run produced.
        let tap = format!("test.tap.{u}");
        channel
            .queue_declare(
                tap.as_str().into(),
                QueueDeclareOptions {
                    durable: false,
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let app = Self {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            pool,
            settings,
            admin,
            vhost,
            db_name,
            amqp,
            channel,
            clock: options.clock,
            monitor: monitor_ctx,
            ops_ports,
            tap,
            shutdown,
            tasks,
            leftovers: None,
        };
        let mut app = app;
        app.leftovers = Some(Leftovers {
            admin: app.admin.clone(),
            vhost: app.vhost.clone(),
            db_name: app.db_name.clone(),
        });
        app.wait_ready().await;
        // Bound to what the pipeline publishes, not to `#`: a catch-all binding would make
        // every message routable and hide the alternate exchange.
        let mut keys = vec![
            (exchange::EVENTS, "case.#".to_owned()),
            (exchange::FOLLOWUP, "*.followup".to_owned()),
        ];
        keys.extend(
            app.monitor
                .reference
                .units
                .iter()
                .map(|u| (exchange::UNITS, u.code.key("#"))),
        );
        for (ex, key) in keys {
            app.channel
                .queue_bind(
                    app.tap.as_str().into(),
                    ex.into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
        }
        app
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut urls = vec![format!("{}/readyz", self.base)];
        urls.extend(
            self.ops_ports
                .values()
                .map(|p| format!("http://127.0.0.1:{p}/readyz")),
        );
        for url in urls {
            loop {
                if let Ok(r) = self.http.get(&url).send().await
                    && r.status().is_success()
                {
                    break;
                }
                assert!(Instant::now() < deadline, "{url} never became ready");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    pub async fn post(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/complaints", self.base))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_with_key(&self, body: &Value, key: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/complaints", self.base))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Posts and returns the tracking id, asserting 202.
    pub async fn submit(&self, body: &Value) -> String {
        let r = self.post(body).await;
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, 202, "{v}");
        v["tracking_id"].as_str().unwrap().to_owned()
    }

    /// Intake's `/metrics` page, as Prometheus would read it.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn status(&self, tracking_id: &str) -> Value {
        self.http
            .get(format!("{}/v1/complaints/{tracking_id}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls the tracking answer until the case reaches `status`.
    pub async fn wait_status(&self, tracking_id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v = self.status(tracking_id).await;
            if v["status"] == status {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{tracking_id} never reached {status}: {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn get(&self, queue: &str) -> Option<Received> {
        let m = self
            .channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .unwrap()?;
        m.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
        let d = &m.delivery;
        Some(Received {
            routing_key: d.routing_key.to_string(),
            exchange: d.exchange.to_string(),
            body: serde_json::from_slice(&d.data).unwrap_or(Value::Null),
            raw: d.data.clone(),
            headers: lapor_shared::amqp::headers::from_table(d.properties.headers().as_ref()),
            message_id: d.properties.message_id().as_ref().map(|m| m.to_string()),
        })
    }

    /// The next message on a unit's queue, waiting up to 15 s.
    pub async fn next_for_unit(&self, unit: &str) -> Received {
        let queue = format!("units.{unit}");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(m) = self.get(&queue).await {
                return m;
            }
            assert!(Instant::now() < deadline, "nothing arrived on {queue}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything on a unit's queue right now.
    pub async fn drain_unit(&self, unit: &str) -> Vec<Received> {
        let mut out = Vec::new();
        while let Some(m) = self.get(&format!("units.{unit}")).await {
            out.push(m);
        }
        out
    }

    /// Every message published on the pipeline's exchanges so far.
    pub async fn tapped(&self) -> Vec<Received> {
        let mut out = Vec::new();
        while let Some(m) = self.get(&self.tap).await {
            out.push(m);
        }
        out
    }

    /// Publishes raw bytes, as a misbehaving producer would.
    pub async fn publish_raw(&self, exchange: &str, routing_key: &str, body: &[u8]) {
        let ch = self.amqp.create_channel().await.unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        ch.basic_publish(
            exchange.into(),
            routing_key.into(),
            Default::default(),
            body,
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }

    pub async fn case_id(&self, tracking_id: &str) -> uuid::Uuid {
        sqlx::query_scalar("SELECT id FROM cases WHERE tracking_id = $1")
            .bind(tracking_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Publishes a unit's follow-up (as the unit's system would, here with the test's rights).
    pub async fn followup(
        &self,
        unit: &str,
        tracking_id: &str,
        status: &str,
        note: Option<&str>,
        delegate_to: Option<&str>,
    ) -> uuid::Uuid {
        let message_id = uuid::Uuid::now_v7();
        let mut body = json!({
            "schema": "lapor.followup.v1",
            "message_id": message_id,
            "case_id": self.case_id(tracking_id).await,
            "tracking_id": tracking_id,
            "occurred_at": chrono::Utc::now(),
            "unit": unit,
            "status": status,
        });
        if let Some(n) = note {
            body["note"] = json!(n);
        }
        if let Some(d) = delegate_to {
            body["delegate_to"] = json!(d);
        }
        self.publish_raw(
            exchange::FOLLOWUP,
            &format!("{unit}.followup"),
            &serde_json::to_vec(&body).unwrap(),
        )
        .await;
        message_id
    }

    /// Polls a SQL count until it reaches `expected`.
    pub async fn wait_count(&self, sql: &'static str, expected: i64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let n: i64 = sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap();
            if n >= expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{sql}` stayed at {n}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the pipeline has nothing left to publish or consume.
    pub async fn settle(&self) {
        self.wait_count(
            "SELECT CASE WHEN count(*) = 0 THEN 1 ELSE 0 END::bigint FROM outbox",
            1,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.wait_count(
            "SELECT CASE WHEN count(*) = 0 THEN 1 ELSE 0 END::bigint FROM outbox",
            1,
        )
        .await;
    }

    /// One SLA sweep at the (manual) clock's time.
    pub async fn sweep(&self) -> sla_monitor::sweep::SweepOutcome {
        let policy = Policy::from_settings(&self.monitor.settings.sla);
        sla_monitor::sweep::sweep_once(&self.monitor, &policy, self.monitor.clock.now())
            .await
            .unwrap()
    }

    /// Stops every service (asserting each stops cleanly) and removes the vhost and database.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let mut failures = Vec::new();
        for t in std::mem::take(&mut self.tasks) {
            match tokio::time::timeout(Duration::from_secs(20), t).await {
                Ok(Ok(Ok(()))) => {}
                other => failures.push(format!("{other:?}")),
            }
        }
        self.amqp.close(200, "done".into()).await.ok();
        self.pool.close().await;
        if let Some(l) = self.leftovers.take() {
            l.remove().await;
        }
        assert!(
            failures.is_empty(),
            "services did not stop cleanly: {failures:?}"
        );
    }
}
