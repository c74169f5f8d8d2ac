//! The life of a service process, shared by the four services so they all start and stop the
//! same way: connect to PostgreSQL (creating and migrating the database when configured),
//! warn about gaps in the calendar, run consumers and the outbox relay, and on shutdown:
//! turn unready, let consumers finish and acknowledge their in-flight messages, then let the
//! relay publish what they wrote, then stop, all within the grace period.

use crate::amqp::consume::{self, BatchHandler, Declare};
use crate::amqp::{relay, topology};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::data::{DataSource, ReferenceData};
use crate::ops::{self, Readiness};
use anyhow::Context as _;
use futures::FutureExt;
use sqlx::PgPool;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What every service holds.
#[derive(Clone)]
pub struct Context {
    pub app_id: &'static str,
    pub settings: Settings,
    pub pool: PgPool,
    pub readiness: Readiness,
    pub clock: SharedClock,
    pub reference: Arc<ReferenceData>,
    pub topology: Arc<topology::Topology>,
    pub policy: crate::sla::Policy,
    /// Hands committed outbox rows to this service's relay (`outbox.handoff`).
    pub handoff: Option<crate::db::outbox::Handoff>,
}

impl Context {
    pub async fn start(
        app_id: &'static str,
        settings: Settings,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        crate::fault::announce();
        let reference = ReferenceData::load(&DataSource::new(settings.data.dir()))
            .context("loading reference data (data.dir)")?;
        for w in reference
            .calendar
            .coverage_warnings(clock.now().date_naive())
        {
            tracing::warn!(calendar = %w, "WORKING-DAY CALENDAR INCOMPLETE");
        }
        let pool = crate::db::connect(&settings.database, app_id).await?;
        let policy = crate::sla::Policy::from_settings(&settings.sla);
        let topology = Arc::new(topology::Topology::pipeline(
            &reference.units,
            settings.amqp.delivery_limit,
        ));
        let handoff = settings.outbox.handoff.then(|| {
            crate::db::outbox::Handoff::new(
                settings.amqp.publish_timeout() + std::time::Duration::from_secs(1),
                1024,
            )
        });
        Ok(Self {
            app_id,
            handoff,
            settings,
            pool,
            readiness: Readiness::default(),
            clock,
            reference: Arc::new(reference),
            topology,
            policy,
        })
    }

    /// Records a transition (status, timeline entry, hand-off event) and, in the same
    /// transaction, the case's deadline row. Returns the clock now running.
    pub async fn record(
        &self,
        conn: &mut sqlx::PgConnection,
        case: &crate::store::CaseRow,
        t: &crate::store::Transition<'_>,
    ) -> anyhow::Result<Option<crate::sla::Clock>> {
        let steps = crate::store::record(conn, case, t).await?;
        let mut clocks = crate::deadlines::refresh_from(
            conn,
            &[case.id],
            steps,
            &self.reference,
            &self.policy,
            t.at,
        )
        .await?;
        Ok(clocks.remove(&case.id).flatten())
    }

    /// Like [`Context::record`] for a case whose row already has the new status.
    pub async fn log(
        &self,
        conn: &mut sqlx::PgConnection,
        case_id: uuid::Uuid,
        tracking_id: crate::domain::TrackingId,
        t: &crate::store::Transition<'_>,
    ) -> anyhow::Result<Option<crate::sla::Clock>> {
        let entry = crate::store::Entry::new(case_id, tracking_id, t.clone());
        let mut clocks = self.log_many(conn, std::slice::from_ref(&entry)).await?;
        Ok(clocks.remove(&case_id).flatten())
    }

    /// [`Context::log`] for many cases at once, with a fixed number of statements: the
    /// timeline entries, the events, and the deadline rows of every case named.
    pub async fn log_many(
        &self,
        conn: &mut sqlx::PgConnection,
        entries: &[crate::store::Entry<'_>],
    ) -> anyhow::Result<std::collections::HashMap<uuid::Uuid, Option<crate::sla::Clock>>> {
        let steps = crate::store::log_many_reading(conn, entries).await?;
        let ids: Vec<uuid::Uuid> = entries.iter().map(|e| e.case_id).collect();
        let now = entries
            .iter()
            .map(|e| e.t.at)
            .max()
            .unwrap_or_else(|| self.clock.now());
        Ok(
            crate::deadlines::refresh_from(conn, &ids, steps, &self.reference, &self.policy, now)
                .await?,
        )
    }

    /// The standard ops endpoints (`/healthz`, `/readyz`, `/metrics`) on `listener`.
    pub fn ops(
        &self,
        listener: tokio::net::TcpListener,
    ) -> Option<(tokio::net::TcpListener, axum::Router)> {
        Some((
            listener,
            ops::router(self.pool.clone(), self.readiness.clone()),
        ))
    }

    /// Declares the whole topology on a channel (see [`topology::Topology`]).
    pub fn declare(&self) -> Declare {
        let t = self.topology.clone();
        Arc::new(move |ch| {
            let t = t.clone();
            async move { t.declare(&ch).await }.boxed()
        })
    }

    /// Starts a consumer of `queue` (one of the topology's queues).
    pub fn spawn_consumer<H: BatchHandler>(
        &self,
        queue: &str,
        handler: Arc<H>,
        stop: CancellationToken,
    ) -> JoinHandle<anyhow::Result<()>> {
        tokio::spawn(consume::run(
            self.settings.clone(),
            self.pool.clone(),
            queue.to_owned(),
            self.declare(),
            handler,
            self.handoff.clone(),
            self.readiness.clone(),
            stop,
        ))
    }

    /// Runs until `shutdown`: the workers (started with `workers_stop`), the outbox relay and,
    /// when given, the ops HTTP server. Then stops them in order.
    pub async fn run(
        self,
        ops: Option<(tokio::net::TcpListener, axum::Router)>,
        workers: Vec<JoinHandle<anyhow::Result<()>>>,
        workers_stop: CancellationToken,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let relay_stop = CancellationToken::new();
        let relay = tokio::spawn(relay::run(
            self.settings.clone(),
            self.pool.clone(),
            self.topology.clone(),
            self.app_id,
            self.handoff.clone(),
            self.readiness.clone(),
            relay_stop.clone(),
        ));
        let ops_stop = CancellationToken::new();
        let ops_task = ops.map(|(l, router)| tokio::spawn(ops::serve(l, router, ops_stop.clone())));

        shutdown.cancelled().await;
        tracing::info!(
            service = self.app_id,
            "stopping: unready, finishing in-flight work"
        );
        self.readiness.stop();
        tokio::time::sleep(self.settings.shutdown.drain_delay()).await;
        let grace = self.settings.shutdown.grace_period();
        let stopping = async {
            workers_stop.cancel();
            for w in workers {
                match w.await {
                    Ok(Err(e)) => {
                        tracing::error!(error = %crate::privacy::scrub(&format!("{e:#}")), "worker failed")
                    }
                    Err(e) => tracing::error!(error = %e, "worker panicked"),
                    Ok(Ok(())) => {}
                }
            }
            relay_stop.cancel();
            if let Ok(Err(e)) = relay.await {
                tracing::error!(error = %crate::privacy::scrub(&format!("{e:#}")), "outbox relay failed");
            }
        };
        if tokio::time::timeout(grace, stopping).await.is_err() {
            tracing::warn!(
                ?grace,
                "grace period over; exiting with work unfinished (it will be redelivered)"
            );
        }
        ops_stop.cancel();
        if let Some(t) = ops_task {
            t.await.ok();
        }
        self.pool.close().await;
        tracing::info!(service = self.app_id, "stopped");
        Ok(())
    }
}

/// The whole of a service's `main`: settings (exit 2 with the bad key named), telemetry, run
/// until SIGTERM or Ctrl-C, flush, exit status. `run` builds and runs the service.
///
/// Every service runs it on tokio's current-thread runtime. A service's work is waiting on
/// the database and the broker, and what it computes (a batch's classification, a routing
/// decision) takes well under a millisecond. A pool of worker threads only added hand-offs
/// between them: on one thread the machine made a sixth fewer futex calls at 500
/// complaints/s, and the CPU per complaint fell by 8 % at full load and at half load (`make
/// bench`, BENCHMARKS.md). A service therefore uses at most one core, as its Kubernetes limit
/// says; more throughput comes from more replicas.
pub async fn main<F, Fut>(
    app_id: &'static str,
    settings: Result<Settings, crate::config::ConfigError>,
    run: F,
) -> std::process::ExitCode
where
    F: FnOnce(Settings, SharedClock, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use std::process::ExitCode;
    let settings = match settings {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{app_id}: {e}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match crate::telemetry::init(app_id, &settings.telemetry) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{app_id}: telemetry: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result = run(
        settings,
        crate::clock::system(),
        crate::shutdown::on_signal(),
    )
    .await;
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %crate::privacy::scrub(&format!("{e:#}")), "{app_id} failed");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
