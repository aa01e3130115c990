//! The MySQL connection pool of both services.
//!
//! Every connection runs READ COMMITTED: the stock and barrier logic relies on
//! conditional `UPDATE`s and unique keys, never on a snapshot, and READ COMMITTED takes no
//! gap locks, so concurrent orders for different goods don't block each other.
//!
//! sqlx checks a connection with a `ping` (one round trip to MySQL) on every acquire by
//! default, and again on every release. Under load that doubled the round trips of a
//! short transaction. This pool pings on acquire only a connection that sat idle for
//! longer than [`PING_IF_IDLE_FOR`] (one that may have been dropped by the server or a
//! restart); a connection that was just used by another request is known to be alive.
//! The release ping is sqlx's own and stays.

use std::time::Duration;

use sqlx::{
    Connection, Executor, MySqlPool,
    mysql::{MySqlConnectOptions, MySqlPoolOptions},
};

/// A connection idle for longer than this is pinged before it is handed out.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Opens the pool; `what` names the database in the error ("the order database").
pub async fn connect(
    options: MySqlConnectOptions,
    max_connections: u32,
    what: &str,
) -> anyhow::Result<MySqlPool> {
    use anyhow::Context as _;
    MySqlPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .await?;
                Ok(())
            })
        })
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .with_context(|| format!("connecting to {what}"))
}
