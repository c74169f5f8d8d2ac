use crate::routes;
use lapor_shared::clock::SharedClock;
use lapor_shared::config::Settings;
use lapor_shared::service;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Intake, built and bound but not yet serving: tests build it on port 0 and read the port.
pub struct Application {
    ctx: service::Context,
    listener: TcpListener,
    port: u16,
}

impl Application {
    pub async fn build(settings: Settings, clock: SharedClock) -> anyhow::Result<Self> {
        let ctx = service::Context::start("intake", settings, clock).await?;
        let listener = TcpListener::bind(&ctx.settings.http.bind).await?;
        let port = listener.local_addr()?.port();
        tracing::info!(address = %listener.local_addr()?, "intake listening");
        Ok(Self {
            ctx,
            listener,
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn context(&self) -> &service::Context {
        &self.ctx
    }

    /// Serves until `shutdown`; then turns unready, finishes in-flight requests and publishes
    /// what they stored.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        // The writers stop once the server has dropped the router (and with it every handle
        // on them) and they have stored what was handed over.
        let (writer, mut tasks) = crate::submissions::Writer::start(&self.ctx);
        let router = routes::router(self.ctx.clone(), writer);
        let http_stop = CancellationToken::new();
        let stop = http_stop.clone();
        let listener = self.listener;
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await?;
            Ok(())
        });
        tasks.insert(0, server);
        self.ctx.readiness.set("http", true);
        self.ctx.run(None, tasks, http_stop, shutdown).await
    }
}
