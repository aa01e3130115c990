use futures::future::join_all;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use tonic::Code;

use crate::helpers::spawn_app;

#[sqlx::test(migrations = false)]
async fn a_sell_deducts_every_goods_of_the_order(_: MySqlPoolOptions, db: MySqlConnectOptions) {
    let app = spawn_app(db).await;
    app.set_stock(1, 10).await;
    app.set_stock(2, 5).await;

    let reply = app.sell("sn-1", &[(2, 2), (1, 3)]).await.expect("sell");

    assert!(!reply.already_deducted);
    assert_eq!(app.stock(1).await, 7);
    assert_eq!(app.stock(2).await, 3);
    app.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_retried_sell_with_the_same_order_sn_deducts_once(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let app = spawn_app(db).await;
    app.set_stock(1, 10).await;

    app.sell("sn-1", &[(1, 4)]).await.expect("first sell");
    let retry = app.sell("sn-1", &[(1, 4)]).await.expect("retried sell");

    assert!(retry.already_deducted);
    assert_eq!(app.stock(1).await, 6);
    assert_eq!(app.detail_rows().await, 1);
}

#[sqlx::test(migrations = false)]
async fn a_sell_reusing_an_order_sn_with_other_items_is_refused(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let app = spawn_app(db).await;
    app.set_stock(1, 10).await;
    app.sell("sn-1", &[(1, 4)]).await.expect("first sell");

    let err = app.sell("sn-1", &[(1, 5)]).await.expect_err("conflict");

    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(app.stock(1).await, 6);
}

#[sqlx::test(migrations = false)]
async fn insufficient_stock_is_refused_naming_the_goods_and_changes_nothing(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let app = spawn_app(db).await;
    app.set_stock(1, 10).await;
    app.set_stock(2, 1).await;

    let err = app
        .sell("sn-1", &[(1, 3), (2, 2)])
        .await
        .expect_err("insufficient");

    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("goods 2"), "{}", err.message());
    assert_eq!(app.stock(1).await, 10, "the earlier line is rolled back");
    assert_eq!(app.stock(2).await, 1);
    assert_eq!(app.detail_rows().await, 0);
}

#[sqlx::test(migrations = false)]
async fn unknown_goods_is_not_found_and_changes_nothing(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let app = spawn_app(db).await;
    app.set_stock(1, 10).await;

    let err = app
        .sell("sn-1", &[(1, 1), (99, 1)])
        .await
        .expect_err("unknown");

    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("99"), "{}", err.message());
    assert_eq!(app.stock(1).await, 10);
    assert_eq!(app.detail_rows().await, 0);
}

#[sqlx::test(migrations = false)]
async fn a_sell_after_a_tombstone_is_refused(_: MySqlPoolOptions, db: MySqlConnectOptions) {
    let app = spawn_app(db).await;
    app.set_stock(1, 10).await;
    app.reback("sn-1").await.expect("reback before sell");

    let err = app.sell("sn-1", &[(1, 2)]).await.expect_err("late sell");

    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("already returned"),
        "{}",
        err.message()
    );
    assert_eq!(app.stock(1).await, 10);
}

#[sqlx::test(migrations = false)]
async fn fifty_concurrent_sells_on_twenty_in_stock_sell_exactly_twenty(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let app = spawn_app(db).await;
    app.set_stock(7, 20).await;

    let results = join_all((0..50).map(|i| {
        let app = &app;
        async move { app.sell(&format!("sn-{i}"), &[(7, 1)]).await }
    }))
    .await;

    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::FailedPrecondition))
        .count();
    assert_eq!((ok, refused), (20, 30), "{results:?}");
    assert_eq!(app.stock(7).await, 0);
    let min: i64 = sqlx::query_scalar("SELECT MIN(stocks) FROM inventory")
        .fetch_one(&app.pool)
        .await
        .expect("min");
    assert!(min >= 0);
}

#[sqlx::test(migrations = false)]
async fn sells_on_overlapping_goods_in_opposite_orders_never_deadlock(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let app = spawn_app(db).await;
    app.set_stock(1, 1000).await;
    app.set_stock(2, 1000).await;

    let results = join_all((0..60).map(|i| {
        let app = &app;
        let items = if i % 2 == 0 {
            [(1, 1), (2, 1)]
        } else {
            [(2, 1), (1, 1)]
        };
        async move { app.sell(&format!("sn-{i}"), &items).await }
    }))
    .await;

    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(app.stock(1).await, 940);
    assert_eq!(app.stock(2).await, 940);
}

#[sqlx::test(migrations = false)]
async fn invalid_sells_are_rejected_and_write_nothing(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let app = spawn_app(db).await;
    app.set_stock(1, 10).await;
    let long_sn = "x".repeat(65);
    let cases: Vec<(&str, Vec<(i32, i32)>)> = vec![
        ("sn-empty-items", vec![]),
        ("sn-zero", vec![(1, 0)]),
        ("sn-negative", vec![(1, -3)]),
        ("sn-dup", vec![(1, 1), (1, 2)]),
        ("sn-bad-goods", vec![(0, 1)]),
        ("", vec![(1, 1)]),
        (long_sn.as_str(), vec![(1, 1)]),
    ];
    for (sn, items) in cases {
        let err = app.sell(sn, &items).await.expect_err("invalid");
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{sn:?} {items:?}: {err:?}"
        );
    }
    assert_eq!(app.stock(1).await, 10);
    assert_eq!(app.detail_rows().await, 0);
}
