//! The database plumbing both services share: how they open their MySQL pool, the
//! periodic purge of rows that have served their purpose, and the `dead_message` table
//! each database has for messages that can never be processed.
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
//!
//! Every wait on MySQL has a bound (the time-budget table in docs/time-budgets.md):
//! - acquiring a connection (connecting, or the idle ping) gives up after [`ACQUIRE_WITHIN`];
//! - each session carries server-side limits, set when it connects: a statement is
//!   killed after [`STATEMENT_WITHIN`] (MariaDB's `max_statement_time`, any statement;
//!   MySQL's `max_execution_time` covers only `SELECT`) and a row lock is waited for at
//!   most [`LOCK_WAIT_WITHIN`] (`innodb_lock_wait_timeout`, both servers);
//! - on the client side every unit of work (a gRPC handler, a CreateOrder, a consumer
//!   callback, a check-back, a background round) runs under its own deadline, which drops
//!   the work, and with it the statement, BEGIN or COMMIT in flight, when MySQL goes silent;
//! - a connection dropped in the middle of a statement (or with a ROLLBACK queued by a
//!   dropped transaction) has unfinished business on its socket. Before sqlx's release
//!   ping, [`drain_within`] gives it [`RELEASE_WITHIN`] to finish; one that does not is
//!   closed, never returned to the pool, so a silent MySQL cannot strand pool slots.
//!   sqlx's own release ping has no deadline (sqlx issue #4349, fixes not released in
//!   0.8.6): a connection whose work finished waits in it only if the link goes silent
//!   in the instant between its last answer and that ping; it is freed when the link
//!   heals (or TCP gives up).

use std::time::Duration;

use anyhow::{Context as _, bail};
use sqlx::{
    ConnectOptions as _, Connection, Executor, MySql, MySqlConnection, MySqlPool,
    migrate::{MigrateDatabase, Migrator},
    mysql::{MySqlConnectOptions, MySqlPoolOptions},
};

pub mod errors;

pub use errors::ResultExt;
use tokio::{sync::watch, task::JoinHandle};

/// MySQL as this process sees it: one WARN when it stops answering, one INFO when it is
/// back ([`observe::outage`]).
pub static MYSQL: observe::outage::Outage = observe::outage::Outage::new("MySQL");

/// Whether `err` says MySQL did not answer (no connection within the acquire bound, a
/// connection lost or cut, the pool closed) rather than refused a statement.
pub fn is_unreachable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
    )
}

/// Logs a database error of a request: an unreachable MySQL once per outage
/// ([`MYSQL`]), anything else as an ERROR of its own.
pub fn log_error(err: &sqlx::Error) {
    if is_unreachable(err) {
        MYSQL.failed(err);
    } else {
        tracing::error!(error = %err, "database error");
    }
}

/// The gRPC status a request's database error answers with: UNAVAILABLE when MySQL does
/// not answer (logged once per outage) or one of the server's time limits ended the
/// statement (a lock waited for longer than `LOCK_WAIT_WITHIN`, a deadlock, a statement
/// past `STATEMENT_WITHIN`: worth a retry, logged at INFO), INTERNAL otherwise (an ERROR
/// line; the message never carries the error).
pub fn status_of(err: &sqlx::Error) -> tonic::Status {
    if errors::is_lock_not_granted(err)
        || errors::is_deadlock(err)
        || errors::is_statement_timeout(err)
    {
        tracing::info!(error = %err, "database busy; answering UNAVAILABLE");
        return tonic::Status::unavailable("database busy; retry");
    }
    log_error(err);
    if is_unreachable(err) {
        tonic::Status::unavailable("database unavailable")
    } else {
        tonic::Status::internal("internal error")
    }
}

/// A connection idle for longer than this is pinged before it is handed out.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// The longest wait for a pooled connection: a free slot, a new connection or the ping
/// of an idle one.
pub const ACQUIRE_WITHIN: Duration = Duration::from_secs(5);

/// The longest a released connection may take to finish what a dropped statement or
/// transaction left on it; one that takes longer is closed.
pub const RELEASE_WITHIN: Duration = Duration::from_secs(1);

/// The server kills a statement that runs longer (MariaDB: any statement).
pub const STATEMENT_WITHIN: Duration = Duration::from_secs(10);

/// The server gives up waiting for a row lock after this long (error 1205).
pub const LOCK_WAIT_WITHIN: Duration = Duration::from_secs(5);

/// The server ends a session whose transaction waits this long for its next statement,
/// rolling it back. A client cut off by a silent network closes its side, but the server
/// never hears of it: without this its session kept the transaction, and the rows it
/// locked, open for hours (`wait_timeout`), and every order touching them waited (seen in
/// `devstack chaos --partitions`). The longest a transaction of ours idles normally is a
/// CreateOrder's waiting for Sell and its sends before COMMIT, which its work bound ends
/// well before this (`create_order::WORK_GRACE`).
pub const IDLE_TRANSACTION_WITHIN: Duration = Duration::from_secs(20);

/// The longest a starting service waits for its database (a silent one must not hang
/// the start: the process exits with the reason and its supervisor retries).
pub const OPEN_WITHIN: Duration = Duration::from_secs(60);

/// How long a starting instance waits for another one that is migrating the same database.
pub const MIGRATION_LOCK_WAIT_SECS: i64 = 300;

/// Opens the service's database from `url`, creating the database when it is missing.
/// `variable` names the setting in errors ("ORDER_DATABASE_URL: cannot reach MySQL").
///
/// Replicas start together: another instance may create the database between our check
/// and our `CREATE DATABASE` (sqlx's is a plain one), which is fine.
pub async fn open(url: &str, max_connections: u32, variable: &str) -> anyhow::Result<MySqlPool> {
    tokio::time::timeout(OPEN_WITHIN, open_unbounded(url, max_connections, variable))
        .await
        .with_context(|| format!("{variable}: MySQL did not answer within {OPEN_WITHIN:?}"))?
}

async fn open_unbounded(
    url: &str,
    max_connections: u32,
    variable: &str,
) -> anyhow::Result<MySqlPool> {
    if !MySql::database_exists(url)
        .await
        .with_context(|| format!("{variable}: cannot reach MySQL"))?
    {
        match MySql::create_database(url).await {
            Err(e) if errors::is_database_exists(&e) => {}
            created => {
                created.with_context(|| format!("{variable}: cannot create the database"))?
            }
        }
    }
    let options: MySqlConnectOptions = url
        .parse()
        .with_context(|| format!("{variable} is not a valid MySQL URL"))?;
    connect(options, max_connections).await
}

/// Runs `migrator` on the pool's database, one instance at a time.
///
/// sqlx 0.8.6 locks with `SELECT GET_LOCK(?, -1)` and ignores the result; MariaDB rejects
/// a negative timeout (NULL, warning 1411) and takes no lock, so two instances starting
/// together both applied the first migration and one failed on `_sqlx_migrations`. This
/// takes a named lock of its own with a positive timeout, checks that it was granted, and
/// migrates on the same session. The name differs from sqlx's (a number derived from the
/// database name), so sqlx's own lock on this session never waits for ours. The
/// connection is not pooled: closing it releases every named lock of the session, even
/// when a failed migration skipped sqlx's release.
pub async fn migrate(pool: &MySqlPool, migrator: &Migrator) -> anyhow::Result<()> {
    let options = pool.connect_options();
    let database = options.get_database().unwrap_or_default().to_owned();
    let mut conn = MySqlConnection::connect_with(&options)
        .await
        .with_context(|| format!("connecting to the database {database:?} to migrate it"))?;
    // Lock names stop at 64 characters.
    let lock: String = format!("migrate:{database}").chars().take(64).collect();
    let granted: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
        .bind(&lock)
        .bind(MIGRATION_LOCK_WAIT_SECS)
        .fetch_one(&mut conn)
        .await
        .with_context(|| format!("taking the migration lock {lock:?}"))?;
    if granted != Some(1) {
        let _ = conn.close().await;
        bail!(
            "migration lock {lock:?} not granted within {MIGRATION_LOCK_WAIT_SECS} s \
             (GET_LOCK returned {granted:?}); is another instance stuck migrating {database:?}?"
        );
    }
    let migrated = migrator
        .run(&mut conn)
        .await
        .with_context(|| format!("migrating the database {database:?}"));
    // Ending the session releases our lock (and sqlx's, if a failure left it held).
    let _ = conn.close().await;
    migrated
}

/// The pool on an existing database.
pub async fn connect(
    options: MySqlConnectOptions,
    max_connections: u32,
) -> anyhow::Result<MySqlPool> {
    let database = options.get_database().unwrap_or_default().to_owned();
    // A statement slower than a second is worth a line, not a warning: during an outage
    // every statement that finishes after it is one (the latency histograms and the
    // outage's own WARN say more).
    let options = options.log_slow_statements(log::LevelFilter::Info, Duration::from_secs(1));
    MySqlPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_WITHIN)
        // A slow acquire (a busy pool, or MySQL away: then the outage has its WARN) is a
        // line per call; INFO, like the slow statements.
        .acquire_slow_level(log::LevelFilter::Info)
        .after_connect(|conn, _meta| Box::pin(set_session_limits(conn)))
        .after_release(|conn, _meta| Box::pin(drain_within(conn, RELEASE_WITHIN)))
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
        .with_context(|| format!("connecting to the database {database:?}"))
}

/// The session settings of every pooled connection: READ COMMITTED and the server-side
/// limits. MariaDB has `max_statement_time` (seconds, every statement) and
/// `idle_transaction_timeout`; MySQL has neither (error 1193) and gets
/// `max_execution_time` (milliseconds, `SELECT` only) and a `wait_timeout` of
/// [`IDLE_TRANSACTION_WITHIN`] instead (which also ends pooled connections idle that long:
/// the pool's ping on acquire replaces them).
async fn set_session_limits(conn: &mut MySqlConnection) -> sqlx::Result<()> {
    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await?;
    let lock_wait = LOCK_WAIT_WITHIN.as_secs();
    let (statement, idle) = (
        STATEMENT_WITHIN.as_secs(),
        IDLE_TRANSACTION_WITHIN.as_secs(),
    );
    let mariadb = format!(
        "SET SESSION innodb_lock_wait_timeout = {lock_wait}, max_statement_time = {statement}, \
         idle_transaction_timeout = {idle}"
    );
    if let Err(e) = conn.execute(mariadb.as_str()).await {
        if !errors::is_unknown_variable(&e) {
            return Err(e);
        }
        let mysql = format!(
            "SET SESSION innodb_lock_wait_timeout = {lock_wait}, max_execution_time = {}, \
             wait_timeout = {idle}",
            STATEMENT_WITHIN.as_millis()
        );
        conn.execute(mysql.as_str()).await?;
    }
    Ok(())
}

/// sqlx's `after_release` hook: finishes what a dropped statement or transaction left on
/// the connection (reads the rest of its answer, sends a queued ROLLBACK) within
/// `within`. On a connection whose work finished this does nothing and costs nothing.
/// An error (or the deadline) makes sqlx close the connection instead of pinging it.
pub async fn drain_within(conn: &mut MySqlConnection, within: Duration) -> sqlx::Result<bool> {
    // `flush` is sqlx's (hidden) "wait until ready": the first half of its release ping,
    // without the round trip.
    match tokio::time::timeout(within, conn.flush()).await {
        Ok(Ok(())) => {
            MYSQL.answered();
            Ok(true)
        }
        Ok(Err(e)) => {
            MYSQL.failed(&e);
            Err(e)
        }
        Err(_) => {
            MYSQL.failed(&"a released connection did not answer in time; closed");
            Err(sqlx::Error::PoolTimedOut)
        }
    }
}

/// Rows that can go once they are older than a retention: what they are (for the log)
/// and the statement that deletes a batch of them. The statement takes two parameters,
/// the retention in seconds and the batch size, and measures age with the database's
/// clock (`NOW(6) - INTERVAL ? SECOND`), the one that stamped the rows.
#[derive(Debug, Clone, Copy)]
pub struct Expiry {
    pub what: &'static str,
    pub delete_batch: &'static str,
}

const PURGE_BATCH: u32 = 1_000;

/// The longest one purge round may take; what is left waits for the next round.
const PURGE_WITHIN: Duration = Duration::from_secs(600);

/// Deletes the expired rows now, in batches (so no statement holds many locks); returns
/// how many.
pub async fn purge_once(
    pool: &MySqlPool,
    expiry: Expiry,
    retention: Duration,
) -> sqlx::Result<u64> {
    purge_counting(pool, expiry, retention, |_| {}).await
}

/// [`purge_once`], telling `deleted` each batch as it commits (a round cut short still
/// counts what it deleted).
async fn purge_counting(
    pool: &MySqlPool,
    expiry: Expiry,
    retention: Duration,
    mut deleted: impl FnMut(u64),
) -> sqlx::Result<u64> {
    let mut total = 0u64;
    loop {
        let batch = sqlx::query(expiry.delete_batch)
            .bind(retention.as_secs())
            .bind(PURGE_BATCH)
            .execute(pool)
            .await?
            .rows_affected();
        deleted(batch);
        total = total.saturating_add(batch);
        if batch < u64::from(PURGE_BATCH) {
            return Ok(total);
        }
    }
}

/// Purges every `every` (the first time one interval after start) until `stop` turns true;
/// `purged` counts the rows deleted.
pub fn spawn_purge(
    pool: MySqlPool,
    expiry: Expiry,
    retention: Duration,
    every: Duration,
    purged: observe::IntCounter,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    spawn_periodic("purge", every, PURGE_WITHIN, stop, move || {
        let (pool, purged) = (pool.clone(), purged.clone());
        async move {
            match purge_counting(&pool, expiry, retention, |n| purged.inc_by(n)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "purged expired {}", expiry.what),
                Err(e) if is_unreachable(&e) => {
                    MYSQL.failed(&e);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "purging expired {} failed; will retry", expiry.what);
                }
            }
        }
    })
}

/// Runs `round` every `every` (the first one interval after start) until `stop` turns
/// true: a service's background work (purge, overdue sweep, reconciler), each round
/// resumable. A round that takes longer than `within` (a database or a peer gone silent)
/// is dropped there, with one WARN, and the next round starts on time: an open
/// transaction rolls back when dropped. A round in progress when `stop` turns true is
/// finished first (within `within`).
pub fn spawn_periodic<F, Fut>(
    what: &'static str,
    every: Duration,
    within: Duration,
    mut stop: watch::Receiver<bool>,
    mut round: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            if tokio::time::timeout(within, round()).await.is_err() {
                tracing::warn!(
                    what,
                    ?within,
                    "background round did not finish in time; the rest waits for the next round"
                );
            }
        }
    })
}

/// Keeps a delivery that can never be processed for an operator: the `bury` of every
/// service's [`mq::Handler`]. An error (as text) asks the skeleton for redelivery.
pub async fn bury(pool: &MySqlPool, delivery: &mq::Delivery, reason: &str) -> Result<(), String> {
    record_dead_message(
        pool,
        &delivery.topic,
        &delivery.msg_id,
        &delivery.body,
        reason,
    )
    .await
    .map_err(|e| e.to_string())
}

/// Keeps a message that can never be processed for an operator (idempotent per msg_id).
pub async fn record_dead_message(
    pool: &MySqlPool,
    topic: &str,
    msg_id: &str,
    body: &[u8],
    reason: &str,
) -> sqlx::Result<()> {
    let reason: String = reason.chars().take(512).collect();
    sqlx::query(
        "INSERT IGNORE INTO dead_message (topic, msg_id, body, reason) VALUES (?, ?, ?, ?)",
    )
    .bind(topic)
    .bind(msg_id)
    .bind(body)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    use std::time::Duration;

    use super::spawn_periodic;

    /// A round that never ends (a silent database) is cut at its deadline and the next
    /// rounds still run.
    #[tokio::test]
    async fn a_round_that_hangs_is_cut_at_its_deadline_and_the_next_ones_run() {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let started = Arc::new(AtomicUsize::new(0));
        let counted = started.clone();
        let task = spawn_periodic(
            "test",
            Duration::from_millis(10),
            Duration::from_millis(50),
            stopped,
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>()
            },
        );
        // Without the deadline the first round would hang forever.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while started.load(Ordering::SeqCst) < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "rounds stuck at {}",
                started.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("stops")
            .expect("no panic");
    }

    #[test]
    fn an_unreachable_database_is_unavailable_and_anything_else_internal_without_its_text() {
        let unreachable = super::status_of(&sqlx::Error::PoolTimedOut);
        assert_eq!(unreachable.code(), tonic::Code::Unavailable);
        let ours = super::status_of(&sqlx::Error::Protocol("secret detail".into()));
        assert_eq!(ours.code(), tonic::Code::Internal);
        assert_eq!(ours.message(), "internal error");
    }
}
