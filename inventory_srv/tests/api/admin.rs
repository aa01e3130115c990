use proto::inventory as pb;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use tonic::Code;

use crate::helpers::spawn_app;

#[sqlx::test(migrations = false)]
async fn set_inv_creates_and_overwrites_stock(_: MySqlPoolOptions, db: MySqlConnectOptions) {
    let app = spawn_app(db).await;

    app.set_stock(1, 10).await;
    app.set_stock(1, 4).await;

    assert_eq!(app.stock(1).await, 4);
}

#[sqlx::test(migrations = false)]
async fn bad_admin_input_is_rejected_and_writes_nothing(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let app = spawn_app(db).await;
    let mut client = app.client.clone();

    for (goods_id, stocks) in [(1, -1), (0, 5), (-2, 5)] {
        let err = client
            .set_inv(pb::SetInvRequest { goods_id, stocks })
            .await
            .expect_err("invalid");
        assert_eq!(err.code(), Code::InvalidArgument);
    }
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inventory")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(rows, 0);
    let err = client
        .inv_detail(pb::InvDetailRequest { goods_id: 0 })
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[sqlx::test(migrations = false)]
async fn inv_detail_of_unknown_goods_is_not_found(_: MySqlPoolOptions, db: MySqlConnectOptions) {
    let app = spawn_app(db).await;

    let err = app
        .client
        .clone()
        .inv_detail(pb::InvDetailRequest { goods_id: 5 })
        .await
        .expect_err("unknown");

    assert_eq!(err.code(), Code::NotFound);
}

#[sqlx::test(migrations = false)]
async fn batch_inv_detail_lists_known_goods_in_id_order(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let app = spawn_app(db).await;
    app.set_stock(3, 30).await;
    app.set_stock(1, 10).await;

    let reply = app
        .client
        .clone()
        .batch_inv_detail(pb::BatchInvDetailRequest {
            goods_ids: vec![3, 1, 2],
        })
        .await
        .expect("batch")
        .into_inner();

    let got: Vec<_> = reply.items.iter().map(|g| (g.goods_id, g.stocks)).collect();
    assert_eq!(got, [(1, 10), (3, 30)]);
}

#[sqlx::test(migrations = false)]
async fn sell_detail_shows_status_and_items(_: MySqlPoolOptions, db: MySqlConnectOptions) {
    let app = spawn_app(db).await;
    app.set_stock(1, 10).await;
    app.sell("sn-1", &[(1, 2)]).await.expect("sell");

    let detail = app
        .client
        .clone()
        .sell_detail(pb::SellDetailRequest {
            order_sn: "sn-1".into(),
        })
        .await
        .expect("detail")
        .into_inner();

    assert_eq!(detail.status(), pb::SellStatus::Deducted);
    assert_eq!(
        detail.items,
        [pb::GoodsNum {
            goods_id: 1,
            num: 2
        }]
    );
}
