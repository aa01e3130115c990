use futures::future::join_all;
use proto::inventory::RebackOutcome;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use tonic::Code;

use crate::helpers::spawn_app;

#[sqlx::test(migrations = false)]
async fn a_reback_returns_the_stock_of_a_sold_order(_: MySqlPoolOptions, db: MySqlConnectOptions) {
    let app = spawn_app(db).await;
    app.set_stock(1, 10).await;
    app.set_stock(2, 10).await;
    app.sell("sn-1", &[(1, 3), (2, 4)]).await.expect("sell");

    assert_eq!(
        app.reback("sn-1").await.expect("reback"),
        RebackOutcome::Returned
    );

    assert_eq!(app.stock(1).await, 10);
    assert_eq!(app.stock(2).await, 10);
}

#[sqlx::test(migrations = false)]
async fn a_reback_twice_returns_once(_: MySqlPoolOptions, db: MySqlConnectOptions) {
    let app = spawn_app(db).await;
    app.set_stock(1, 10).await;
    app.sell("sn-1", &[(1, 3)]).await.expect("sell");

    assert_eq!(
        app.reback("sn-1").await.expect("first"),
        RebackOutcome::Returned
    );
    assert_eq!(
        app.reback("sn-1").await.expect("second"),
        RebackOutcome::AlreadyReturned
    );

    assert_eq!(app.stock(1).await, 10);
}

#[sqlx::test(migrations = false)]
async fn concurrent_rebacks_of_one_order_return_it_once(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let app = spawn_app(db).await;
    app.set_stock(1, 10).await;
    app.sell("sn-1", &[(1, 3)]).await.expect("sell");

    let outcomes = join_all((0..20).map(|_| app.reback("sn-1"))).await;

    let returned = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(RebackOutcome::Returned)))
        .count();
    assert_eq!(returned, 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| o.is_ok()), "{outcomes:?}");
    assert_eq!(app.stock(1).await, 10);
}

#[sqlx::test(migrations = false)]
async fn concurrent_rebacks_of_an_unknown_order_leave_one_tombstone(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let app = spawn_app(db).await;

    let outcomes = join_all((0..20).map(|_| app.reback("sn-ghost"))).await;

    assert!(outcomes.iter().all(|o| o.is_ok()), "{outcomes:?}");
    let tombstoned = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(RebackOutcome::Tombstoned)))
        .count();
    assert_eq!(tombstoned, 1, "{outcomes:?}");
    assert_eq!(app.detail_rows().await, 1);
}

#[sqlx::test(migrations = false)]
async fn a_reback_racing_its_sell_leaves_stock_consistent(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let app = spawn_app(db).await;
    app.set_stock(1, 1000).await;

    for i in 0..30 {
        let sn = format!("sn-{i}");
        let (sold, returned) = tokio::join!(app.sell(&sn, &[(1, 1)]), app.reback(&sn));
        let returned = returned.expect("reback never fails");
        match sold {
            // Sell first, then the reback gave it back.
            Ok(_) => assert_eq!(returned, RebackOutcome::Returned, "{sn}"),
            // Reback first: the tombstone refused the sell.
            Err(s) => {
                assert_eq!(s.code(), Code::FailedPrecondition, "{sn}: {s:?}");
                assert_eq!(returned, RebackOutcome::Tombstoned, "{sn}");
            }
        }
    }
    assert_eq!(app.stock(1).await, 1000);
}

#[sqlx::test(migrations = false)]
async fn a_reback_with_an_invalid_order_sn_is_rejected(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let app = spawn_app(db).await;

    for sn in ["", "has space", &"x".repeat(65)] {
        let err = app.reback(sn).await.expect_err("invalid");
        assert_eq!(err.code(), Code::InvalidArgument);
    }
    assert_eq!(app.detail_rows().await, 0);
}

/// SetInv near the 32-bit limit while an order holds a deduction: its reback must still
/// return the stock (it used to fail with "Out of range" and retry into the DLQ).
#[sqlx::test(migrations = false)]
async fn a_reback_after_set_inv_near_the_limit_returns_the_stock(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let app = spawn_app(db).await;
    app.set_stock(1, i32::MAX).await;
    app.sell("sn-1", &[(1, 5)]).await.expect("sell");
    app.set_stock(1, i32::MAX).await;

    assert_eq!(
        app.reback("sn-1").await.expect("the reback succeeds"),
        RebackOutcome::Returned
    );

    assert_eq!(app.stock(1).await, i64::from(i32::MAX) + 5);
    // And the stock above the old limit sells as usual.
    app.sell("sn-2", &[(1, i32::MAX)])
        .await
        .expect("sell a lot");
    assert_eq!(app.stock(1).await, 5);
}
