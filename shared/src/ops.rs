//! What operators and Kubernetes see of a service: `/healthz` (the process is alive),
//! `/readyz` (its connections are up, the database answers, and it is not shutting down) and
//! `/metrics` (Prometheus text). Metric labels never carry personal data: only queue names,
//! unit codes, outcomes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Named parts that must all be up for the service to take traffic.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    parts: Mutex<BTreeMap<String, bool>>,
    stopping: AtomicBool,
}

impl Readiness {
    pub fn set(&self, part: &str, ready: bool) {
        self.0
            .parts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(part.to_owned(), ready);
    }

    /// Turns the service unready for good: the first step of a graceful shutdown, so that
    /// load balancers stop sending work before consumers stop.
    pub fn stop(&self) {
        self.0.stopping.store(true, Ordering::SeqCst);
    }

    pub fn is_stopping(&self) -> bool {
        self.0.stopping.load(Ordering::SeqCst)
    }

    pub fn parts(&self) -> BTreeMap<String, bool> {
        self.0
            .parts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// All parts up, the database answering, and not stopping.
    pub async fn check(&self, pool: &PgPool) -> (bool, serde_json::Value) {
        let parts = self.parts();
        let db = tokio::time::timeout(
            Duration::from_secs(1),
            sqlx::query("SELECT 1").execute(pool),
        )
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
        let stopping = self.is_stopping();
        let ready = db && !stopping && parts.values().all(|v| *v);
        (
            ready,
            serde_json::json!({ "ready": ready, "database": db, "stopping": stopping, "parts": parts }),
        )
    }
}

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once; later calls return the same handle.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    METRICS
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        })
        .clone()
}

#[derive(Clone)]
struct OpsState {
    pool: PgPool,
    readiness: Readiness,
}

/// `/healthz`, `/readyz` and `/metrics`; intake merges these into its API router.
pub fn router(pool: PgPool, readiness: Readiness) -> Router {
    metrics_handle();
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(OpsState { pool, readiness })
}

async fn readyz(State(s): State<OpsState>) -> impl IntoResponse {
    let (ready, body) = s.readiness.check(&s.pool).await;
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
    )
}

async fn render_metrics() -> impl IntoResponse {
    match metrics_handle() {
        Some(h) => (StatusCode::OK, h.render()),
        None => (StatusCode::NOT_FOUND, String::new()),
    }
}

/// Serves the ops router of a worker until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}
