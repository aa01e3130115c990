//! A statement ended by one of the server's time limits (here a lock wait) is worth a
//! retry: `status_of` answers UNAVAILABLE "database busy; retry", not INTERNAL.

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

#[sqlx::test(migrations = false)]
async fn a_lock_waited_for_too_long_answers_unavailable_database_busy(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let pool = service_db::connect(db, 2)
        .await
        .expect("MariaDB must be running on DATABASE_URL (scripts/test starts it)");
    sqlx::query("CREATE TABLE t (id INT PRIMARY KEY)")
        .execute(&pool)
        .await
        .expect("table");
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&pool)
        .await
        .expect("row");
    let mut holder = pool.begin().await.expect("begin");
    sqlx::query("SELECT id FROM t WHERE id = 1 FOR UPDATE")
        .execute(&mut *holder)
        .await
        .expect("locked");
    let mut waiter = pool.acquire().await.expect("a second connection");
    sqlx::query("SET SESSION innodb_lock_wait_timeout = 1")
        .execute(&mut *waiter)
        .await
        .expect("a short wait");
    let err = sqlx::query("SELECT id FROM t WHERE id = 1 FOR UPDATE")
        .execute(&mut *waiter)
        .await
        .expect_err("the lock is held");
    let status = service_db::status_of(&err);
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "database busy; retry");
}
