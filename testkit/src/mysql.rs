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
        for statement in statements {
            conn.execute(format!("{statement} `{name}`").as_str())
                .await?;
        }
    }
    conn.close().await?;
    Ok(())
}
