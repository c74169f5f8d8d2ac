//! Connections that a hot loop keeps from one transaction to the next.
//!
//! sqlx's pool checks every connection it hands out with a round trip to the server, and
//! every connection given back with another (the second cannot be turned off). A consumer's
//! batch, an intake group or a relay's deletion would pay two round trips besides its own
//! statements, each waking the server and the service once more. [`Kept`] holds the
//! connections of such loops between their transactions, so that the checks are paid once,
//! when a connection first comes from the pool.
//!
//! The connections are taken out of the pool (detached): the pool opens others as it needs
//! them, and closing the pool at shutdown does not wait for the kept ones. So a service may
//! hold, besides `database.max_connections`, one connection per user of a `Kept` that ran
//! at the same time (a consumer channel, an intake writer, a relay).
//!
//! A connection is kept only after its work succeeded ([`KeptConn::keep`]): it is then
//! outside any transaction and known to work. After any failure it is closed, and the next
//! user gets a fresh one from the pool. So a connection the server dropped (a restart) costs
//! the one attempt that finds it. A connection left unused for [`MAX_IDLE`] (a quiet night,
//! when a firewall may have cut it), or older than [`MAX_AGE`] (as the pool's own
//! `max_lifetime`), is closed instead of being handed out, and a fresh one is taken.

use sqlx::{Connection, PgConnection, PgPool};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A kept connection unused for longer is closed rather than handed out.
pub const MAX_IDLE: Duration = Duration::from_secs(60);
/// A kept connection older than this is closed rather than handed out.
pub const MAX_AGE: Duration = Duration::from_secs(30 * 60);

/// A connection waiting to be used again: when it came from the pool, when it was kept.
struct Waiting {
    conn: PgConnection,
    born: Instant,
    kept: Instant,
}

type Idle = Arc<Mutex<Vec<Waiting>>>;

/// A pool in front of the pool, without the checks: as many connections as its users ever
/// needed at once. Cloning shares the connections.
#[derive(Clone)]
pub struct Kept {
    pool: PgPool,
    idle: Idle,
    max_idle: Duration,
    max_age: Duration,
}

impl Kept {
    /// With the limits [`MAX_IDLE`] and [`MAX_AGE`].
    pub fn new(pool: PgPool) -> Self {
        Self::with_limits(pool, MAX_IDLE, MAX_AGE)
    }

    /// A connection is handed out again only while unused for less than `max_idle` and
    /// younger than `max_age`.
    pub fn with_limits(pool: PgPool, max_idle: Duration, max_age: Duration) -> Self {
        Self {
            pool,
            idle: Arc::default(),
            max_idle,
            max_age,
        }
    }

    /// A kept connection if there is one fit to use, otherwise one from the pool.
    pub async fn acquire(&self) -> sqlx::Result<KeptConn> {
        loop {
            let waiting = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let Some(w) = waiting else { break };
            if w.kept.elapsed() < self.max_idle && w.born.elapsed() < self.max_age {
                return Ok(KeptConn {
                    conn: Some(w.conn),
                    born: w.born,
                    home: self.idle.clone(),
                });
            }
            close_later(w.conn);
        }
        let conn = self.pool.acquire().await?.detach();
        Ok(KeptConn {
            conn: Some(conn),
            born: Instant::now(),
            home: self.idle.clone(),
        })
    }

    /// How many connections wait to be used again.
    pub fn idle(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// A connection from [`Kept`]. Dropped without [`KeptConn::keep`], it is closed.
pub struct KeptConn {
    conn: Option<PgConnection>,
    born: Instant,
    home: Idle,
}

impl KeptConn {
    /// Keeps the connection for the next user. Call only after the work on it succeeded: a
    /// committed or rolled-back transaction, or a statement outside any.
    pub fn keep(mut self) {
        if let Some(conn) = self.conn.take() {
            self.home
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Waiting {
                    conn,
                    born: self.born,
                    kept: Instant::now(),
                });
        }
    }
}

impl Drop for KeptConn {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            close_later(c);
        }
    }
}

/// Closes a connection politely where there is a runtime to do it; otherwise the server sees
/// the socket close, and rolls back whatever was open.
fn close_later(conn: PgConnection) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move { conn.close().await.ok() });
    }
}

impl Deref for KeptConn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.conn
            .as_ref()
            .expect("a KeptConn holds its connection until kept")
    }
}

impl DerefMut for KeptConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("a KeptConn holds its connection until kept")
    }
}
