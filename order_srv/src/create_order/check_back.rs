//! The broker's question "did order X commit?", answered from durable state (DESIGN.md §5).
//!
//! `INSERT IGNORE ... 'aborted'` first: if the local transaction of that order is still
//! running, the insert waits on its uncommitted 'committed' row and then finds it; if
//! the local transaction has not reached its barrier insert yet, the check-back's row
//! wins and that insert later fails with a duplicate key, so the order is never written.
//! Either way exactly one outcome is recorded, and the answer follows it.

use rocketmq_client_rust::LocalTransactionState;
use sqlx::MySqlPool;

use crate::db::{self, BarrierOutcome};

#[tracing::instrument(skip(pool))]
pub async fn answer(pool: &MySqlPool, order_sn: &str) -> LocalTransactionState {
    match outcome(pool, order_sn).await {
        Ok(Some(BarrierOutcome::Committed)) => {
            tracing::info!("check-back: committed, keep the stock deducted");
            LocalTransactionState::RollbackMessage
        }
        Ok(Some(BarrierOutcome::Aborted)) => {
            tracing::info!("check-back: not committed, return the stock");
            LocalTransactionState::CommitMessage
        }
        Ok(None) => {
            tracing::error!("check-back: no barrier row after inserting one");
            LocalTransactionState::Unknown
        }
        Err(e) => {
            // The broker asks again later; guessing either way could be wrong.
            tracing::warn!(error = %e, "check-back: database error, answering unknown");
            LocalTransactionState::Unknown
        }
    }
}

async fn outcome(pool: &MySqlPool, order_sn: &str) -> sqlx::Result<Option<BarrierOutcome>> {
    let mut conn = pool.acquire().await?;
    db::insert_aborted_barrier_if_absent(&mut conn, order_sn).await?;
    db::barrier_outcome(&mut conn, order_sn).await
}
