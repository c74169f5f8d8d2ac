use crate::classify::Classifier;
use crate::handler::VerifyHandler;
use lapor_shared::amqp::topology;
use lapor_shared::clock::SharedClock;
use lapor_shared::config::Settings;
use lapor_shared::data::DataSource;
use lapor_shared::service::Context;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub struct Verifier {
    ctx: Context,
    ops: TcpListener,
    classifier: Arc<Classifier>,
}

impl Verifier {
    pub async fn build(settings: Settings, clock: SharedClock) -> anyhow::Result<Self> {
        let classifier = Classifier::load(
            &DataSource::new(settings.data.dir()),
            settings.verifier.review_threshold,
        )?;
        tracing::info!(lexicon = %classifier.version, "classifier loaded");
        let ctx = Context::start("verifier", settings, clock).await?;
        let ops = TcpListener::bind(&ctx.settings.ops.verifier).await?;
        Ok(Self {
            ctx,
            ops,
            classifier: Arc::new(classifier),
        })
    }

    pub fn ops_port(&self) -> u16 {
        self.ops.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let handler = Arc::new(VerifyHandler {
            ctx: self.ctx.clone(),
            classifier: self.classifier,
        });
        let consumer = self
            .ctx
            .spawn_consumer(topology::VERIFIER, handler, stop.clone());
        let ops = self.ctx.ops(self.ops);
        self.ctx.run(ops, vec![consumer], stop, shutdown).await
    }
}
