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

/// [`claim`] for many ids in one statement. Returns the ids claimed now; the others were
/// handled before. The ids are inserted in sorted order, so two batches that share ids wait
/// for each other instead of deadlocking.
pub async fn claim_many(
    conn: &mut PgConnection,
    consumer: &str,
    message_ids: &[Uuid],
) -> sqlx::Result<std::collections::HashSet<Uuid>> {
    let mut ids = message_ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let claimed: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO inbox (consumer, message_id) SELECT $1, m FROM UNNEST($2::uuid[]) AS t(m)
         ON CONFLICT DO NOTHING RETURNING message_id",
    )
    .bind(consumer)
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    Ok(claimed.into_iter().collect())
}

/// Takes claims back inside the claiming transaction: a message parked there has not been
/// handled, and must be handled when an operator re-drives it.
pub async fn release(
    conn: &mut PgConnection,
    consumer: &str,
    message_ids: &[Uuid],
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM inbox WHERE consumer = $1 AND message_id = ANY($2)")
        .bind(consumer)
        .bind(message_ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Forgets ids older than `days`. Brokers redeliver within minutes; a week is a wide margin.
pub async fn prune(pool: &sqlx::PgPool, days: i32) -> sqlx::Result<u64> {
    let r = sqlx::query("DELETE FROM inbox WHERE handled_at < now() - make_interval(days => $1)")
        .bind(days)
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}
