//! Keeping open deadlines right when the rules change. Every transition already updates its
//! case's deadline row in its own transaction (`lapor_shared::deadlines`); what can change
//! under all of them at once is the calendar (a new SKB, a year of data added) or the SLA
//! policy. At start-up the monitor compares a fingerprint of both with the one the deadlines
//! were computed with, and if they differ recomputes every open deadline from its timeline,
//! keeping paused time and time already used.

use chrono::Utc;
use lapor_shared::deadlines;
use lapor_shared::service::Context;
use sqlx::Row;
use uuid::Uuid;

const KEY: &str = "deadline_rules";
const LOCK: i64 = 727_002;

pub fn fingerprint(ctx: &Context) -> String {
    format!("{}|{:?}", ctx.reference.calendar.fingerprint(), ctx.policy)
}

/// Recomputes every open deadline if the calendar or policy changed since they were computed.
/// Returns how many were recomputed. One monitor does it; the others skip.
pub async fn recompute_if_rules_changed(ctx: &Context) -> anyhow::Result<usize> {
    let mut lock = ctx.pool.acquire().await?;
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK)
        .fetch_one(&mut *lock)
        .await?;
    if !got {
        return Ok(0);
    }
    let result = async {
        let current = fingerprint(ctx);
        let stored: Option<String> = sqlx::query_scalar("SELECT value FROM lapor_state WHERE key = $1").bind(KEY).fetch_optional(&ctx.pool).await?;
        if stored.as_deref() == Some(current.as_str()) {
            return Ok(0);
        }
        let mut done = 0;
        let mut after = Uuid::nil();
        loop {
            let mut tx = ctx.pool.begin().await?;
            // Lock the cases (as every writer does) so no transition interleaves.
            let ids: Vec<Uuid> = sqlx::query(
                "SELECT c.id FROM case_deadlines d JOIN cases c ON c.id = d.case_id WHERE d.case_id > $1
                 ORDER BY d.case_id LIMIT 500 FOR UPDATE OF c",
            )
            .bind(after)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
            let Some(last) = ids.last().copied() else {
                tx.commit().await?;
                break;
            };
            for id in &ids {
                deadlines::refresh(&mut tx, *id, &ctx.reference, &ctx.policy, ctx.clock.now()).await?;
            }
            tx.commit().await?;
            done += ids.len();
            after = last;
        }
        sqlx::query(
            "INSERT INTO lapor_state (key, value, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET value = $2, updated_at = $3",
        )
        .bind(KEY)
        .bind(&current)
        .bind(Utc::now())
        .execute(&ctx.pool)
        .await?;
        if done > 0 {
            tracing::info!(deadlines = done, "calendar or SLA policy changed: open deadlines recomputed");
        }
        Ok::<usize, anyhow::Error>(done)
    }
    .await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(LOCK)
        .execute(&mut *lock)
        .await
        .ok();
    result
}
