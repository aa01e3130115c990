//! A dead message is kept whole: the broker accepts bodies of up to 4 MiB, and the column
//! once kept only the first 65,535 bytes.

use sqlx::{
    MySqlPool,
    mysql::{MySqlConnectOptions, MySqlPoolOptions},
};

async fn stores_whole(pool: &MySqlPool, migrator: &sqlx::migrate::Migrator) {
    service_db::migrate(pool, migrator).await.expect("migrate");
    let body: Vec<u8> = (0..4 * 1024 * 1024_u32).map(|i| (i % 251) as u8).collect();

    service_db::record_dead_message(pool, "order_reback", "msg-1", &body, "malformed")
        .await
        .expect("recorded");

    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT body FROM dead_message WHERE msg_id = 'msg-1'")
            .fetch_one(pool)
            .await
            .expect("stored");
    assert_eq!(stored.len(), body.len());
    assert!(stored == body, "the body came back changed");
}

#[sqlx::test(migrations = false)]
async fn the_order_database_keeps_a_4_mib_dead_message_whole(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let pool = service_db::connect(db, 2)
        .await
        .expect("MariaDB must be running on DATABASE_URL (scripts/test starts it)");
    stores_whole(&pool, &sqlx::migrate!("../migrations/order")).await;
}

#[sqlx::test(migrations = false)]
async fn the_inventory_database_keeps_a_4_mib_dead_message_whole(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let pool = service_db::connect(db, 2)
        .await
        .expect("MariaDB must be running on DATABASE_URL (scripts/test starts it)");
    stores_whole(&pool, &sqlx::migrate!("../migrations/inventory")).await;
}
