//! The MySQL error conditions the services react to, recognised in one place.

use sqlx::mysql::MySqlDatabaseError;

const ER_DB_CREATE_EXISTS: u16 = 1007;
const ER_DUP_ENTRY: u16 = 1062;
/// `SET` of a variable this server does not have.
const ER_UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;
/// MariaDB's answer to a `NOWAIT` locking read that meets a lock (and to a lock wait that
/// timed out).
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
const ER_LOCK_DEADLOCK: u16 = 1213;
/// MariaDB's `max_statement_time` killed the statement.
const ER_STATEMENT_TIMEOUT: u16 = 1969;
/// MySQL's `max_execution_time` killed the statement.
const ER_QUERY_TIMEOUT: u16 = 3024;
/// MySQL 8's answer to a `NOWAIT` locking read that meets a lock.
const ER_LOCK_NOWAIT: u16 = 3572;

fn error_number(err: &sqlx::Error) -> Option<u16> {
    match err {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(|e| e.number()),
        _ => None,
    }
}

/// `CREATE DATABASE` of a database that exists.
pub fn is_database_exists(err: &sqlx::Error) -> bool {
    error_number(err) == Some(ER_DB_CREATE_EXISTS)
}

/// A `SET` of a system variable this server does not have (MySQL vs MariaDB).
pub fn is_unknown_variable(err: &sqlx::Error) -> bool {
    error_number(err) == Some(ER_UNKNOWN_SYSTEM_VARIABLE)
}

/// A deadlock rolled the whole transaction back; running it again is the documented fix.
pub fn is_deadlock(err: &sqlx::Error) -> bool {
    error_number(err) == Some(ER_LOCK_DEADLOCK)
}

/// A row another transaction holds: a `NOWAIT` read gave up (or a lock wait timed out).
pub fn is_lock_not_granted(err: &sqlx::Error) -> bool {
    matches!(
        error_number(err),
        Some(ER_LOCK_WAIT_TIMEOUT | ER_LOCK_NOWAIT)
    )
}

/// The server's own statement time limit ended the statement (`STATEMENT_WITHIN`).
pub fn is_statement_timeout(err: &sqlx::Error) -> bool {
    matches!(
        error_number(err),
        Some(ER_STATEMENT_TIMEOUT | ER_QUERY_TIMEOUT)
    )
}

/// Turns a duplicate key into a value instead of an error.
pub trait ResultExt<T> {
    /// `Ok(None)` when the statement hit a unique key that another row holds; any other
    /// error stays an error.
    fn on_duplicate_key(self) -> sqlx::Result<Option<T>>;
}

impl<T> ResultExt<T> for sqlx::Result<T> {
    fn on_duplicate_key(self) -> sqlx::Result<Option<T>> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(err) if error_number(&err) == Some(ER_DUP_ENTRY) => Ok(None),
            Err(err) => Err(err),
        }
    }
}
