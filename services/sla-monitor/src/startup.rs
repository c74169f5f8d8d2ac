use crate::sweep::{self, SweepOutcome};
use lapor_shared::clock::SharedClock;
use lapor_shared::config::Settings;
use lapor_shared::service::Context;
use lapor_shared::sla::Policy;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub struct Monitor {
    ctx: Context,
    ops: TcpListener,
    policy: Policy,
}

impl Monitor {
    pub async fn build(settings: Settings, clock: SharedClock) -> anyhow::Result<Self> {
        let ctx = Context::start("sla-monitor", settings, clock).await?;
        let ops = TcpListener::bind(&ctx.settings.ops.sla_monitor).await?;
        let policy = Policy::from_settings(&ctx.settings.sla);
        Ok(Self { ctx, ops, policy })
    }

    pub fn ops_port(&self) -> u16 {
        self.ops.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// One sweep at the clock's current time.
    pub async fn sweep_once(&self) -> anyhow::Result<SweepOutcome> {
        sweep::sweep_once(&self.ctx, &self.policy, self.ctx.clock.now()).await
    }

    /// Runs until `shutdown`. With `sweep` false the sweeper does not run on its own (tests
    /// call [`Monitor::sweep_once`] with a hand-moved clock instead).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.run(shutdown, true).await
    }

    pub async fn run(self, shutdown: CancellationToken, sweep: bool) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        // Before any sweep: open deadlines computed under an older calendar or policy are
        // brought up to date.
        crate::deadlines::recompute_if_rules_changed(&self.ctx).await?;
        let mut workers = crate::archiver::spawn(&self.ctx, stop.clone());
        let ctx = self.ctx.clone();
        let policy = self.policy.clone();
        let s = stop.clone();
        if sweep {
            workers.push(tokio::spawn(async move { sweeper(ctx, policy, s).await }));
        }
        let ctx = self.ctx.clone();
        let s = stop.clone();
        workers.push(tokio::spawn(async move { housekeeping(ctx, s).await }));
        let router = lapor_shared::ops::router(self.ctx.pool.clone(), self.ctx.readiness.clone())
            .merge(crate::stats::router(self.ctx.clone()));
        self.ctx
            .clone()
            .run(Some((self.ops, router)), workers, stop, shutdown)
            .await
    }
}

async fn sweeper(ctx: Context, policy: Policy, stop: CancellationToken) -> anyhow::Result<()> {
    let interval = Duration::from_millis(ctx.settings.sla.sweep_interval_ms);
    let batch = ctx.settings.sla.sweep_batch as usize;
    ctx.readiness.set("sweeper", true);
    while !stop.is_cancelled() {
        let full = match sweep::sweep_once(&ctx, &policy, ctx.clock.now()).await {
            Ok(o) => {
                if o.notices > 0 || o.closed > 0 {
                    tracing::info!(
                        cases = o.cases,
                        notices = o.notices,
                        closed = o.closed,
                        "sla sweep"
                    );
                }
                o.cases >= batch
            }
            Err(e) => {
                tracing::warn!(error = %lapor_shared::privacy::scrub(&format!("{e:#}")), "sla sweep failed; will retry");
                false
            }
        };
        if !full {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.cancelled() => {}
            }
        }
    }
    Ok(())
}

/// Forgets inbox entries older than a week, hourly.
async fn housekeeping(ctx: Context, stop: CancellationToken) -> anyhow::Result<()> {
    loop {
        match lapor_shared::db::inbox::prune(&ctx.pool, 7).await {
            Ok(n) if n > 0 => tracing::info!(removed = n, "inbox pruned"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %lapor_shared::privacy::scrub(&e.to_string()), "inbox pruning failed")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stop.cancelled() => return Ok(()),
        }
    }
}
