use crate::followup::FollowupHandler;
use crate::route::RouteHandler;
use lapor_shared::amqp::consume::PerMessage;
use lapor_shared::amqp::topology;
use lapor_shared::clock::SharedClock;
use lapor_shared::config::Settings;
use lapor_shared::service::Context;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub struct Distributor {
    ctx: Context,
    ops: TcpListener,
}

impl Distributor {
    pub async fn build(settings: Settings, clock: SharedClock) -> anyhow::Result<Self> {
        let ctx = Context::start("distributor", settings, clock).await?;
        let ops = TcpListener::bind(&ctx.settings.ops.distributor).await?;
        Ok(Self { ctx, ops })
    }

    pub fn ops_port(&self) -> u16 {
        self.ops.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let route = self.ctx.spawn_consumer(
            topology::DISTRIBUTOR_VERIFIED,
            Arc::new(RouteHandler {
                ctx: self.ctx.clone(),
            }),
            stop.clone(),
        );
        let followups = self.ctx.spawn_consumer(
            topology::DISTRIBUTOR_FOLLOWUPS,
            Arc::new(PerMessage(FollowupHandler {
                ctx: self.ctx.clone(),
            })),
            stop.clone(),
        );
        let ops = self.ctx.ops(self.ops);
        self.ctx
            .run(ops, vec![route, followups], stop, shutdown)
            .await
    }
}
