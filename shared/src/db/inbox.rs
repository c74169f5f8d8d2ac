//! The inbox: a consumer records each message id it handles in the same transaction as the
//! effect, so a redelivered message is recognised and acknowledged without a second effect.

use sqlx::PgConnection;
use uuid::Uuid;

/// Records `message_id` for `consumer`. Returns `false` when it was already handled. A
/// concurrent duplicate blocks on the unique key until the first transaction ends, so two
/// replicas can never both apply it.
pub async fn claim(
    conn: &mut PgConnection,
    consumer: &str,
    message_id: Uuid,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "INSERT INTO inbox (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(message_id)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Forgets ids older than `days`. Brokers redeliver within minutes; a week is a wide margin.
pub async fn prune(pool: &sqlx::PgPool, days: i32) -> sqlx::Result<u64> {
    let r = sqlx::query("DELETE FROM inbox WHERE handled_at < now() - make_interval(days => $1)")
        .bind(days)
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}
