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
    let mut conn = connect(server, variable).await?;
    for name in names {
        conn.execute(format!("DROP DATABASE IF EXISTS `{name}`").as_str())
            .await?;
        conn.execute(format!("CREATE DATABASE `{name}`").as_str())
            .await?;
    }
    conn.close().await?;
    Ok(())
}

/// Drops each database if it exists.
pub async fn drop_databases(
    server: &MySqlConnectOptions,
    names: &[&str],
    variable: &str,
) -> anyhow::Result<()> {
    let mut conn = connect(server, variable).await?;
    for name in names {
        conn.execute(format!("DROP DATABASE IF EXISTS `{name}`").as_str())
            .await?;
    }
    conn.close().await?;
    Ok(())
}

async fn connect(server: &MySqlConnectOptions, variable: &str) -> anyhow::Result<MySqlConnection> {
    MySqlConnection::connect_with(&server.clone().database(""))
        .await
        .with_context(|| {
            format!("cannot reach MySQL: start it on 127.0.0.1:3306 or set {variable}")
        })
}
