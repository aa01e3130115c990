//! The broker's question "did order X commit?", answered from durable state (DESIGN.md §5).
//!
//! `INSERT IGNORE ... 'aborted'` first: if the local transaction of that order is still
//! running, the insert waits on its uncommitted 'committed' row and then finds it; if
//! the local transaction has not reached its barrier insert yet, the check-back's row
//! wins and that insert later fails with a duplicate key, so the order is never written.
//! Either way exactly one outcome is recorded, and the answer follows it.

use rocketmq_client_rust::LocalTransactionState;
use sqlx::{MySqlConnection, MySqlPool};

use crate::db::{self, BarrierOutcome};

/// The longest a check-back's answer may take; past it the answer is UNKNOWN and the
/// broker asks again later (the claim's transaction, if any, rolls back).
pub const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

#[tracing::instrument(skip(pool))]
pub async fn answer(pool: &MySqlPool, order_sn: &str) -> LocalTransactionState {
    let Ok(outcome) = tokio::time::timeout(ANSWER_WITHIN, outcome(pool, order_sn)).await else {
        service_db::MYSQL.failed(&"a check-back's statements did not finish in time");
        tracing::info!(within = ?ANSWER_WITHIN, "check-back: no answer from the database in time, answering unknown");
        return LocalTransactionState::Unknown;
    };
    match outcome {
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
            // The broker asks again later; guessing either way could be wrong. A lock the
            // order's own transaction holds (a deadlock, a lock wait) is expected here.
            if !(service_db::errors::is_deadlock(&e) || service_db::errors::is_lock_not_granted(&e))
            {
                service_db::log_error(&e);
            }
            tracing::info!(error = %e, "check-back: database error, answering unknown");
            LocalTransactionState::Unknown
        }
    }
}

async fn outcome(pool: &MySqlPool, order_sn: &str) -> sqlx::Result<Option<BarrierOutcome>> {
    claim_barrier(&mut *pool.acquire().await?, order_sn).await
}

/// Claims "aborted" for `order_sn` unless its barrier row is there (waiting for a local
/// transaction that holds it uncommitted), then reads the one outcome recorded. Also what
/// a pay timeout that finds no order does (`timeout::close_unpaid_order`).
pub async fn claim_barrier(
    conn: &mut MySqlConnection,
    order_sn: &str,
) -> sqlx::Result<Option<BarrierOutcome>> {
    db::insert_aborted_barrier_if_absent(conn, order_sn).await?;
    db::barrier_outcome(conn, order_sn).await
}
