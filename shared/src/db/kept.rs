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
//! the one attempt that finds it.

use sqlx::{Connection, PgConnection, PgPool};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};

type Idle = Arc<Mutex<Vec<PgConnection>>>;

/// A pool in front of the pool, without the checks: as many connections as its users ever
/// needed at once. Cloning shares the connections.
#[derive(Clone)]
pub struct Kept {
    pool: PgPool,
    idle: Idle,
}

impl Kept {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            idle: Arc::default(),
        }
    }

    /// A kept connection if there is one, otherwise one from the pool.
    pub async fn acquire(&self) -> sqlx::Result<KeptConn> {
        let kept = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match kept {
            Some(c) => c,
            None => self.pool.acquire().await?.detach(),
        };
        Ok(KeptConn {
            conn: Some(conn),
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
    home: Idle,
}

impl KeptConn {
    /// Keeps the connection for the next user. Call only after the work on it succeeded: a
    /// committed or rolled-back transaction, or a statement outside any.
    pub fn keep(mut self) {
        if let Some(c) = self.conn.take() {
            self.home
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(c);
        }
    }
}

impl Drop for KeptConn {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            // Say goodbye where there is a runtime to do it; otherwise the server sees the
            // socket close, and rolls back whatever was open.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { c.close().await.ok() });
            }
        }
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
