//! PostgreSQL: the pool, database creation and migrations, the connections hot loops keep
//! between transactions, and the three tables of the delivery machinery (outbox, inbox,
//! parked messages).

pub mod inbox;
pub mod kept;
pub mod outbox;
pub mod parked;

use crate::config::DatabaseSettings;
use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};
use std::str::FromStr;
use std::time::Duration;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connects, creating the database and running migrations first when configured to. Several
/// services may do this at once: creation tolerates the race and the migrator takes an
/// advisory lock.
pub async fn connect(settings: &DatabaseSettings, app_id: &str) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(&settings.url)
        .context("database.url")?
        // Names the outbox rows this service writes (see outbox::claim).
        .application_name(app_id)
        // Every hot statement is prepared once per connection and executed with arrays of a
        // batch's values. Left to itself, PostgreSQL plans such a statement again on every
        // execution (a custom plan per array looks cheaper than the generic one), which was a
        // quarter of its CPU under load. No query here depends on its values for its plan.
        // A generic plan is made again when ANALYZE changes a table's statistics: production
        // needs autovacuum (PostgreSQL's default), or plans made on empty tables stay.
        .options([("plan_cache_mode", "force_generic_plan")])
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
    if settings.create_if_missing {
        ensure_database(&options).await?;
    }
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_with(options)
        .await
        .context("connecting to PostgreSQL")?;
    if settings.migrate {
        MIGRATOR
            .run(&pool)
            .await
            .context("running database migrations")?;
    }
    Ok(pool)
}

/// Creates the database named in `options` if it does not exist.
pub async fn ensure_database(options: &PgConnectOptions) -> anyhow::Result<()> {
    let name = options.get_database().unwrap_or("postgres").to_owned();
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        anyhow::bail!("database name {name:?} may contain only letters, digits, '_' and '-'");
    }
    let mut conn = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .context("connecting to the PostgreSQL server (maintenance database `postgres`)")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let sql = format!("CREATE DATABASE \"{name}\"");
        match sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another service created it between our check and our CREATE: 42P04, or 23505
            // when both CREATEs ran at the same moment.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(e) => return Err(e).context("creating the database"),
        }
    }
    conn.close().await.ok();
    Ok(())
}

/// Whether an error is worth retrying: the database is unreachable, overloaded or asked us to
/// retry. Anything else (a constraint the data violates) will fail the same way again.
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // 40: transaction rollback (serialization, deadlock); 53: insufficient resources;
            // 57: operator intervention (shutdown, cancel); 08: connection exceptions.
            ["40", "53", "57", "08"].iter().any(|p| code.starts_with(p))
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_) => true,
        _ => false,
    }
}
