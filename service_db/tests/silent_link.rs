//! MySQL gone silent (packets dropped, no reset): the pool's waits are bounded, a
//! connection cut in the middle of a statement is closed instead of being returned, and
//! after the heal the pool is whole and answers at once.

use std::time::{Duration, Instant};

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use testkit::link::Link;

/// A pool of `size` reaching `db` through a link that can go silent.
async fn pool_through(db: &MySqlConnectOptions, size: u32) -> (Link, sqlx::MySqlPool) {
    let (link, through) = Link::to_mysql(db).await.expect("link");
    let pool = service_db::connect(through, size)
        .await
        .expect("MariaDB must be running on DATABASE_URL (scripts/test starts it)");
    (link, pool)
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[sqlx::test(migrations = false)]
async fn a_statement_cut_by_a_silent_link_does_not_hold_its_pool_slot(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let (link, pool) = pool_through(&db, 2).await;
    sqlx::query("SELECT 1")
        .execute(&pool)
        .await
        .expect("through the link");
    // Released in the background: cut once it is back in the pool, not during sqlx's own
    // release ping (which has no deadline: service_db's module comment).
    wait_until("the connection is idle", || pool.num_idle() == 1).await;

    link.cut();
    // Two units of work cut by their deadline while MySQL is silent: a statement, and a
    // transaction whose COMMIT never got an answer.
    let statement = tokio::time::timeout(
        Duration::from_millis(300),
        sqlx::query("SELECT 1").execute(&pool),
    );
    assert!(statement.await.is_err(), "the link is cut: no answer");
    let transaction = tokio::time::timeout(Duration::from_millis(300), async {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT 1").execute(&mut *tx).await?;
        tx.commit().await
    });
    assert!(transaction.await.is_err(), "the link is cut: no answer");

    // sqlx would ping each cut connection on its release, forever (the link stays cut):
    // the pool closes them instead, so both slots come free.
    wait_until("the cut connections are closed", || pool.size() == 0).await;

    // While the cut lasts, acquiring gives up within its bound.
    let started = Instant::now();
    let acquired = sqlx::query("SELECT 1").execute(&pool).await;
    assert!(
        matches!(acquired, Err(sqlx::Error::PoolTimedOut)),
        "{acquired:?}"
    );
    assert!(
        started.elapsed() < service_db::ACQUIRE_WITHIN + Duration::from_secs(2),
        "acquire took {:?}",
        started.elapsed()
    );

    link.heal();
    let started = Instant::now();
    for _ in 0..4 {
        sqlx::query("SELECT 1")
            .execute(&pool)
            .await
            .expect("the pool answers after the heal");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "first answers after the heal took {:?}",
        started.elapsed()
    );
    pool.close().await;
}

#[sqlx::test(migrations = false)]
async fn every_session_carries_the_server_side_limits(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let pool = service_db::connect(db, 1)
        .await
        .expect("MariaDB must be running on DATABASE_URL (scripts/test starts it)");
    let (lock_wait, statement, idle): (u64, f64, u64) = sqlx::query_as(
        "SELECT @@innodb_lock_wait_timeout, @@max_statement_time, @@idle_transaction_timeout",
    )
    .fetch_one(&pool)
    .await
    .expect("session limits");
    assert_eq!(lock_wait, service_db::LOCK_WAIT_WITHIN.as_secs());
    assert_eq!(idle, service_db::IDLE_TRANSACTION_WITHIN.as_secs());
    assert!((statement - service_db::STATEMENT_WITHIN.as_secs_f64()).abs() < 1e-9);
    // The server enforces it: a statement longer than the limit is killed (error 1969).
    let started = Instant::now();
    let slept = sqlx::query("SELECT SLEEP(60)").execute(&pool).await;
    assert!(
        started.elapsed() < service_db::STATEMENT_WITHIN + Duration::from_secs(5),
        "{slept:?} after {:?}",
        started.elapsed()
    );
    pool.close().await;
}

/// A client cut off in the middle of a transaction closes its side, but a silent network
/// never tells the server: the server itself ends the transaction once it has waited
/// `IDLE_TRANSACTION_WITHIN` for its next statement, and its row locks go with it.
#[sqlx::test(migrations = false)]
async fn a_transaction_whose_client_went_silent_releases_its_locks(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let direct = service_db::connect(db.clone(), 2)
        .await
        .expect("MariaDB must be running on DATABASE_URL (scripts/test starts it)");
    sqlx::query("CREATE TABLE stock (id INT PRIMARY KEY, n INT NOT NULL)")
        .execute(&direct)
        .await
        .expect("table");
    sqlx::query("INSERT INTO stock VALUES (1, 10)")
        .execute(&direct)
        .await
        .expect("row");
    let (link, cut_off) = pool_through(&db, 1).await;

    let mut tx = cut_off.begin().await.expect("begin");
    sqlx::query("UPDATE stock SET n = n - 1 WHERE id = 1")
        .execute(&mut *tx)
        .await
        .expect("the row is locked");
    link.cut();
    // The client gives up on its transaction (a deadline), and with the link cut the
    // server hears nothing of it.
    let commit = tokio::time::timeout(Duration::from_millis(300), tx.commit());
    assert!(commit.await.is_err(), "the link is cut: no answer");

    let started = Instant::now();
    let limit = service_db::IDLE_TRANSACTION_WITHIN + Duration::from_secs(15);
    loop {
        let locked = sqlx::query("UPDATE stock SET n = n - 1 WHERE id = 1")
            .execute(&direct)
            .await;
        match locked {
            Ok(_) => break,
            Err(e) if service_db::errors::is_lock_not_granted(&e) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(
            started.elapsed() < limit,
            "the row is still locked after {:?}",
            started.elapsed()
        );
    }
    // The cut transaction was rolled back: only the second decrement stands.
    let n: i32 = sqlx::query_scalar("SELECT n FROM stock WHERE id = 1")
        .fetch_one(&direct)
        .await
        .expect("row");
    assert_eq!(n, 9);
    drop(link);
    direct.close().await;
}
