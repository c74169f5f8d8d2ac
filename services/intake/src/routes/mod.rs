mod auth;
mod complaints;
mod contracts;
mod reporter;
mod reviews;

use crate::problem::Problem;
use crate::submissions::Writer;
use axum::Router;
use axum::extract::{FromRef, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lapor_shared::service::Context;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

/// What the handlers share: the service's context and the submissions writer.
#[derive(Clone)]
pub struct AppState {
    ctx: Context,
    writer: Writer,
}

impl FromRef<AppState> for Context {
    fn from_ref(s: &AppState) -> Self {
        s.ctx.clone()
    }
}

impl FromRef<AppState> for Writer {
    fn from_ref(s: &AppState) -> Self {
        s.writer.clone()
    }
}

pub fn router(ctx: Context, writer: Writer) -> Router {
    let body_limit = ctx.settings.http.body_limit_bytes;
    let timeout = Duration::from_millis(ctx.settings.http.request_timeout_ms);
    let ops = lapor_shared::ops::router(ctx.pool.clone(), ctx.readiness.clone());
    let admission = Arc::new(Semaphore::new(ctx.settings.http.submit_in_flight_max));
    Router::new()
        .route(
            "/v1/complaints",
            post(complaints::submit).layer(axum::middleware::from_fn_with_state(
                (admission, body_limit),
                admit,
            )),
        )
        .route("/v1/complaints/{tracking_id}", get(complaints::status))
        .route(
            "/v1/complaints/{tracking_id}/supplement",
            post(reporter::supplement),
        )
        .route(
            "/v1/complaints/{tracking_id}/replies",
            post(reporter::reply),
        )
        .route("/v1/reviews", get(reviews::list))
        .route("/v1/openapi.yaml", get(contracts::openapi))
        .route("/v1/asyncapi.yaml", get(contracts::asyncapi))
        .route("/v1/schemas/{*path}", get(contracts::schema))
        .route("/v1/reviews/{tracking_id}/decision", post(reviews::decide))
        .with_state(AppState { ctx, writer })
        .merge(ops)
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "not-found", "No such resource") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed on this resource",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            Problem::internal().into_response()
        }))
        .layer(axum::middleware::from_fn(http_span))
}

/// Admission of submissions: a request holds a permit from before its body is read until it
/// is answered. Without one it is refused at once: its body is read and dropped, never
/// parsed or stored.
/// Shown as `lapor_intake_submissions_in_flight`.
async fn admit(
    State((permits, body_limit)): State<(Arc<Semaphore>, usize)>,
    req: Request,
    next: Next,
) -> Response {
    let Ok(permit) = permits.try_acquire_owned() else {
        metrics::counter!("lapor_intake_refused_at_capacity_total").increment(1);
        // Read (and drop) what was sent, so that the connection stays open for the retry.
        axum::body::to_bytes(req.into_body(), body_limit).await.ok();
        return Problem::at_capacity().into_response();
    };
    let _held = Held::new(permit);
    next.run(req).await
}

/// A submission's permit, counted in the in-flight gauge until it is dropped (also when the
/// request's future is, by the timeout or a client gone).
struct Held {
    _permit: OwnedSemaphorePermit,
    gauge: metrics::Gauge,
}

impl Held {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        let gauge = metrics::gauge!("lapor_intake_submissions_in_flight");
        gauge.increment(1.0);
        Self {
            _permit: permit,
            gauge,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

/// One server span per request, continuing the caller's W3C trace context when it sends one
/// (tower-http's trace layer does not). Only the method, route template and status are
/// recorded: never a body, a query string or a header value.
async fn http_span(matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let route = matched
        .as_ref()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let span = tracing::info_span!(
        "http",
        otel.name = format!("{} {route}", req.method()),
        otel.kind = "server",
        http.request.method = %req.method(),
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    let carrier: HashMap<String, String> = ["traceparent", "tracestate"]
        .iter()
        .filter_map(|k| {
            req.headers()
                .get(*k)
                .and_then(|v| v.to_str().ok())
                .map(|v| (k.to_string(), v.to_owned()))
        })
        .collect();
    lapor_shared::telemetry::extract_into(&span, &carrier);
    let resp = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", resp.status().as_u16());
    resp
}
