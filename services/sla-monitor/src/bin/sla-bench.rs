//! Benchmark of the SLA sweep (issue: "the monitor's cost grows with what is due, not with
//! what is open"). Seeds N open cases (default 1,000,000; `BENCH_SLA_N`) routed to units, with
//! timelines and deadline rows, a share of them (`BENCH_SLA_DUE`, default 1 %) due now; then
//! times a sweep with nothing due, and the sweeps that send the due notices.
//! Writes `target/bench/sla.json`.

use chrono::{Duration, Utc};
use lapor_shared::clock::{Clock, ManualClock};
use lapor_shared::config::Settings;
use lapor_shared::service::Context;
use lapor_shared::sla::Policy;
use std::sync::Arc;
use std::time::Instant;

fn env_num(key: &str, default: i64) -> i64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = env_num("BENCH_SLA_N", 1_000_000);
    let due_pct = env_num("BENCH_SLA_DUE", 1);
    let mut settings = Settings::load()?;
    let db = format!("lapor_bench_sla_{}", std::process::id());
    let base = settings
        .database
        .url
        .rsplit_once('/')
        .map(|(b, _)| b.to_owned())
        .unwrap_or_default();
    settings.database.url = format!("{base}/{db}");
    settings.database.max_connections = 4;
    let now = Utc::now();
    let clock = ManualClock::at(now);
    let ctx = Context::start("sla-bench", settings, Arc::new(clock.clone())).await?;
    let pool = ctx.pool.clone();

    eprintln!("seeding {n} open cases ({due_pct}% due now)...");
    let t = Instant::now();
    // Cases routed at staggered times in the last few days; every 100/due_pct-th one routed long
    // enough ago to be past its first reminder.
    let step = if due_pct > 0 { 100 / due_pct } else { i64::MAX };
    // Tracking ids carry a check character, so they are made here, 50,000 at a time.
    let mut first = 1i64;
    while first <= n {
        let last = (first + 49_999).min(n);
        let ids: Vec<String> = (first..=last)
            .map(|_| lapor_shared::domain::TrackingId::generate().to_string())
            .collect();
        sqlx::query(
            "INSERT INTO cases (id, tracking_id, status, channel, body, province_code, anonymous, confidential, reporter_ref,
                                received_at, updated_at, kind, in_scope, category, needs_followup, holder_unit)
             SELECT md5('c' || g)::uuid, t, 'routed', 'web', 'seeded case', '32', false, false,
                    '\\x00'::bytea, $1 - make_interval(secs => (g % 86400)), $1, 'aduan', true, 'pkh', true, 'LINJAMSOS'
             FROM UNNEST($2::text[]) WITH ORDINALITY AS u(t, o), LATERAL (SELECT $3 + o - 1 AS g) x",
        )
        .bind(now)
        .bind(&ids)
        .bind(first)
        .execute(&pool)
        .await?;
        first = last + 1;
    }
    sqlx::query(
        "INSERT INTO case_events (case_id, at, event, status, unit, actor, note)
         SELECT md5('c' || g)::uuid, CASE WHEN g % $3 = 0 THEN $1 - interval '10 days' ELSE $1 - interval '1 hour' END,
                'routed', 'routed', 'LINJAMSOS', 'bench', NULL
         FROM generate_series(1, $2) g",
    )
    .bind(now)
    .bind(n)
    .bind(step)
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO case_deadlines (case_id, clock, cycle, holder_unit, zone, started_at, budget_secs, used_secs, running,
                                     due_at, next_check_at, updated_at)
         SELECT md5('c' || g)::uuid, 'followup', 1, 'LINJAMSOS', 'Asia/Jakarta', $1, 432000, 0, true, $1 + interval '5 days',
                CASE WHEN g % $3 = 0 THEN $1 - interval '1 minute' ELSE $1 + make_interval(secs => 3600 + (g % 400000)) END, $1
         FROM generate_series(1, $2) g",
    )
    .bind(now)
    .bind(n)
    .bind(step)
    .execute(&pool)
    .await?;
    sqlx::query("ANALYZE").execute(&pool).await?;
    let seed_secs = t.elapsed().as_secs_f64();
    let due: i64 =
        sqlx::query_scalar("SELECT count(*) FROM case_deadlines WHERE next_check_at <= $1")
            .bind(now)
            .fetch_one(&pool)
            .await?;
    eprintln!("seeded in {seed_secs:.1} s; {due} cases due");

    let policy = Policy::from_settings(&ctx.settings.sla);
    // Nothing due (clock set before every next_check_at): the cost of a sweep over 1M open cases.
    clock.set(now - Duration::hours(1));
    let mut idle = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let o = sla_monitor::sweep::sweep_once(&ctx, &policy, clock.now()).await?;
        assert_eq!(o.cases, 0);
        idle.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    idle.sort_by(f64::total_cmp);
    let idle_ms = idle[idle.len() / 2];

    // Everything due: sweep until done.
    clock.set(now);
    let t = Instant::now();
    let (mut sweeps, mut notices, mut cases) = (0, 0, 0);
    // Production runs autovacuum, whose ANALYZE also makes the services' cached generic
    // plans be made again. On a server without it (the CI machine), stand in for it by its
    // default thresholds, or the plans made while sla_notices was empty stay for the run.
    let autovacuum: String = sqlx::query_scalar("SHOW autovacuum")
        .fetch_one(&pool)
        .await?;
    loop {
        let o = sla_monitor::sweep::sweep_once(&ctx, &policy, clock.now()).await?;
        if o.cases == 0 {
            break;
        }
        if autovacuum != "on" {
            let stale: Vec<String> = sqlx::query_scalar(
                "SELECT s.relname::text FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
                 WHERE s.n_mod_since_analyze > 50 + 0.1 * greatest(c.reltuples, 0)",
            )
            .fetch_all(&pool)
            .await?;
            for table in stale {
                sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE \"{table}\"")))
                    .execute(&pool)
                    .await?;
            }
        }
        sweeps += 1;
        notices += o.notices;
        cases += o.cases;
    }
    let busy = t.elapsed().as_secs_f64();
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await?;
    let result = serde_json::json!({
        "open_cases": n,
        "due_cases": due,
        "seed_seconds": seed_secs,
        "idle_sweep_ms_median": idle_ms,
        "due_sweeps": sweeps,
        "due_cases_processed": cases,
        "notices": notices,
        "notices_in_outbox": outbox,
        "due_seconds": busy,
        "notices_per_second": notices as f64 / busy,
        "ms_per_due_sweep": busy * 1000.0 / sweeps.max(1) as f64,
        "sweep_batch": ctx.settings.sla.sweep_batch,
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    std::fs::create_dir_all("target/bench").ok();
    std::fs::write("target/bench/sla.json", serde_json::to_vec_pretty(&result)?)?;
    ctx.pool.close().await;
    let admin = sqlx::PgPool::connect(&format!("{base}/postgres")).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
    )))
    .execute(&admin)
    .await?;
    Ok(())
}
