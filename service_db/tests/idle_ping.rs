//! A connection the server dropped while it sat idle in the pool is replaced, not handed
//! out: the pool pings connections idle for longer than `PING_IF_IDLE_FOR`.

use std::time::{Duration, Instant};

use sqlx::{
    Connection, Executor, MySqlConnection,
    mysql::{MySqlConnectOptions, MySqlPoolOptions},
};

#[sqlx::test(migrations = false)]
async fn a_connection_killed_while_idle_is_replaced_on_acquire(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let pool = service_db::connect(db.clone(), 1)
        .await
        .expect("MariaDB must be running on DATABASE_URL (scripts/test starts it)");
    let first: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
        .fetch_one(&pool)
        .await
        .expect("first query");
    // The release runs in the background; wait until the connection is back in the pool.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.num_idle() < 1 {
        assert!(Instant::now() < deadline, "the connection never came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut admin = MySqlConnection::connect_with(&db).await.expect("admin");
    admin
        .execute(format!("KILL {first}").as_str())
        .await
        .expect("kill the pooled connection");
    // Let it sit idle past the threshold: the next acquire must ping it and find it dead.
    tokio::time::sleep(service_db::PING_IF_IDLE_FOR + Duration::from_millis(500)).await;

    let second: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
        .fetch_one(&pool)
        .await
        .expect("the pool replaced the dead connection");
    assert_ne!(first, second);
    let isolation: String = sqlx::query_scalar("SELECT @@tx_isolation")
        .fetch_one(&pool)
        .await
        .expect("isolation level");
    assert_eq!(isolation, "READ-COMMITTED");
    pool.close().await;
}
