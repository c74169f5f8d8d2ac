//! Figures for dashboards: `GET /v1/sla/summary` on the monitor's ops port. Open cases per
//! stage and holder, how many are at risk (past their last reminder) or breached, and the
//! median time each stage took over the last 30 days. Aggregates only: no case is listed.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use lapor_shared::service::Context;
use serde::Serialize;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct OpenRow {
    pub clock: String,
    pub holder_unit: String,
    pub open: i64,
    pub paused: i64,
    pub at_risk: i64,
    pub breached: i64,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct StageTime {
    pub stage: String,
    pub cases: i64,
    pub median_hours: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub at: DateTime<Utc>,
    pub open: Vec<OpenRow>,
    pub stage_times_30d: Vec<StageTime>,
}

pub async fn summary(ctx: &Context) -> sqlx::Result<Summary> {
    let now = ctx.clock.now();
    let open = sqlx::query_as::<_, OpenRow>(
        "SELECT d.clock, d.holder_unit, count(*) AS open,
                count(*) FILTER (WHERE NOT d.running) AS paused,
                count(*) FILTER (WHERE d.running AND d.due_at > $1 AND EXISTS (
                    SELECT 1 FROM sla_notices n WHERE n.case_id = d.case_id AND n.clock = d.clock AND n.cycle = d.cycle
                      AND n.notice LIKE 'reminder_%')) AS at_risk,
                count(*) FILTER (WHERE d.running AND d.due_at <= $1) AS breached
         FROM case_deadlines d WHERE d.clock <> 'autoclose'
         GROUP BY d.clock, d.holder_unit ORDER BY d.clock, d.holder_unit",
    )
    .bind(now)
    .fetch_all(&ctx.pool)
    .await?;
    // Time from receipt to distribution, and from distribution to resolution, of cases that
    // reached the end of the stage in the last 30 days.
    let stage_times_30d = sqlx::query_as::<_, StageTime>(
        "WITH ends AS (
             SELECT e.case_id, e.event, min(e.at) AS at FROM case_events e
             WHERE e.event IN ('received', 'routed', 'answered', 'resolved') GROUP BY e.case_id, e.event
         )
         SELECT 'handling' AS stage, count(*) AS cases,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM d.at - r.at) / 3600)::float8 AS median_hours
         FROM ends r JOIN ends d ON d.case_id = r.case_id AND d.event IN ('routed', 'answered')
         WHERE r.event = 'received' AND d.at >= $1 - interval '30 days'
         UNION ALL
         SELECT 'followup', count(*),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM s.at - r.at) / 3600)::float8
         FROM ends r JOIN ends s ON s.case_id = r.case_id AND s.event = 'resolved'
         WHERE r.event = 'routed' AND s.at >= $1 - interval '30 days'",
    )
    .bind(now)
    .fetch_all(&ctx.pool)
    .await?;
    Ok(Summary {
        at: now,
        open,
        stage_times_30d,
    })
}

async fn handler(
    State(ctx): State<Context>,
) -> Result<Json<Summary>, (axum::http::StatusCode, String)> {
    summary(&ctx).await.map(Json).map_err(|e| {
        tracing::warn!(error = %lapor_shared::privacy::scrub(&e.to_string()), "summary failed");
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "summary unavailable".to_owned(),
        )
    })
}

pub fn router(ctx: Context) -> Router {
    Router::new()
        .route("/v1/sla/summary", get(handler))
        .with_state(ctx)
}
