//! Connections kept between a hot loop's transactions (`db::kept`), on a real server.

use lapor_shared::db::kept::Kept;
use lapor_tests::Scratch;
use sqlx::{Connection, PgConnection};
use std::time::Duration;

async fn backend(conn: &mut PgConnection) -> sqlx::Result<i32> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
}

#[tokio::test]
async fn a_kept_connection_serves_again_and_a_failed_or_dropped_one_does_not() {
    let scratch = Scratch::create().await;
    let pool = lapor_shared::db::connect(&scratch.settings.database, "kept-test")
        .await
        .unwrap();
    let kept = Kept::new(pool.clone());

    // Kept after a committed transaction: the next user gets the same server process.
    let mut conn = kept.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let first = backend(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    conn.keep();
    assert_eq!(kept.idle(), 1);
    let mut conn = kept.acquire().await.unwrap();
    assert_eq!(kept.idle(), 0);
    assert_eq!(backend(&mut conn).await.unwrap(), first);

    // Dropped in the middle of a transaction (an error, a cancelled future): not kept, and
    // what it wrote is rolled back.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("CREATE TABLE kept_probe (x int)")
        .execute(&mut *tx)
        .await
        .unwrap();
    drop(tx);
    drop(conn);
    assert_eq!(kept.idle(), 0);
    let mut gone = false;
    for _ in 0..100 {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = $1")
            .bind(first)
            .fetch_one(&pool)
            .await
            .unwrap();
        if open == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "a connection that was not kept is closed");
    let probe: Option<String> = sqlx::query_scalar("SELECT to_regclass('kept_probe')::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(probe, None, "the unfinished transaction was rolled back");

    // A kept connection that the server has dropped fails its first use and is not kept
    // again; the next user gets a working one.
    let mut conn = kept.acquire().await.unwrap();
    let victim = backend(&mut conn).await.unwrap();
    assert_ne!(victim, first);
    conn.keep();
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
        .bind(victim)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(terminated);
    let mut conn = kept.acquire().await.unwrap();
    assert!(backend(&mut conn).await.is_err());
    drop(conn);
    assert_eq!(kept.idle(), 0);
    let mut conn = kept.acquire().await.unwrap();
    let fresh = backend(&mut conn).await.unwrap();
    assert_ne!(fresh, victim);
    conn.keep();

    // One unused for too long (here: at all) is closed instead of handed out again.
    let stale = Kept::with_limits(pool.clone(), Duration::ZERO, Duration::from_secs(3600));
    let mut conn = stale.acquire().await.unwrap();
    let idle_one = backend(&mut conn).await.unwrap();
    conn.keep();
    assert_eq!(stale.idle(), 1);
    let mut conn = stale.acquire().await.unwrap();
    assert_eq!(stale.idle(), 0);
    assert_ne!(backend(&mut conn).await.unwrap(), idle_one);
    drop(conn);
    drop(stale);

    // Kept connections are outside the pool: closing it does not wait for them.
    tokio::time::timeout(Duration::from_secs(5), pool.close())
        .await
        .expect("closing the pool does not wait for kept connections");
    drop(kept);
    scratch.remove().await;
}
