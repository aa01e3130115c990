//! Throwaway databases for tests and the dev tools.

use anyhow::Context;
use sqlx::{Connection, Executor, MySqlConnection, mysql::MySqlConnectOptions};

/// Drops each database if it exists and creates it empty, on the server `server` points
/// at (its own database, if any, is not touched). `variable` names where the address came
/// from, for the error when nothing answers.
pub async fn recreate_databases(
    server: &MySqlConnectOptions,
    names: &[&str],
    variable: &str,
) -> anyhow::Result<()> {
    for_each(
        server,
        names,
        variable,
        &["DROP DATABASE IF EXISTS", "CREATE DATABASE"],
    )
    .await
}

/// Drops each database if it exists.
pub async fn drop_databases(
    server: &MySqlConnectOptions,
    names: &[&str],
    variable: &str,
) -> anyhow::Result<()> {
    for_each(server, names, variable, &["DROP DATABASE IF EXISTS"]).await
}

/// Runs `<statement> `name`` for every name and statement, in order.
async fn for_each(
    server: &MySqlConnectOptions,
    names: &[&str],
    variable: &str,
    statements: &[&str],
) -> anyhow::Result<()> {
    let mut conn = MySqlConnection::connect_with(&server.clone().database(""))
        .await
        .with_context(|| {
            format!("cannot reach MySQL: start it on 127.0.0.1:3306 or set {variable}")
        })?;
    for name in names {
        // A session left on the database by a process that was cut off from MySQL and
        // then killed (a chaos run's partition) may still hold an open transaction, and
        // DROP DATABASE would wait for it: these databases belong to the tool, so their
        // sessions go first.
        let sessions: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()",
        )
        .bind(name)
        .fetch_all(&mut conn)
        .await?;
        for id in sessions {
            // Gone already is fine.
            let _ = conn.execute(format!("KILL {id}").as_str()).await;
        }
        for statement in statements {
            conn.execute(format!("{statement} `{name}`").as_str())
                .await?;
        }
    }
    conn.close().await?;
    Ok(())
}
