//! Keeps `stock_sell_detail` small: a RETURNED row (tombstone or returned order) is needed
//! only while a late Sell or a redelivered reback may still arrive (hours at most).

use std::time::Duration;

use sqlx::MySqlPool;
use tokio::{sync::watch, task::JoinHandle};

use crate::db;

const BATCH: u32 = 1_000;

/// Deletes expired RETURNED rows now, in batches; returns how many.
pub async fn purge_once(pool: &MySqlPool, retention: Duration) -> sqlx::Result<u64> {
    let mut total = 0;
    loop {
        let mut conn = pool.acquire().await?;
        let deleted = db::purge_returned(&mut conn, retention, BATCH).await?;
        total += deleted;
        if deleted < u64::from(BATCH) {
            return Ok(total);
        }
    }
}

/// Purges every `every` (the first time one interval after start) until `stop` turns true.
pub fn spawn(
    pool: MySqlPool,
    retention: Duration,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            match purge_once(&pool, retention).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "purged expired RETURNED details"),
                Err(e) => tracing::warn!(error = %e, "purging RETURNED details failed; will retry"),
            }
        }
    })
}
