//! The audit catches each kind of inconsistency it claims to check.

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use testkit::audit::{AuditInput, Liveness, audit, report};

use crate::helpers::spawn_stack;

#[sqlx::test(migrations = false)]
async fn the_audit_passes_a_consistent_stack_and_names_what_breaks_each_invariant(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let stack = spawn_stack(db).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(71, 1, 2).await;
    let order = stack.create_order(71).await.expect("order");
    let input = AuditInput {
        initial_stock: Some([(1, 10)].into_iter().collect()),
        acknowledged: vec![order.order_sn.clone(), "GHOST-1".into()],
        liveness: None,
    };

    let verdicts = audit(&stack.order_pool, &stack.inventory_pool, &input)
        .await
        .expect("audit");
    let failed = testkit::audit::failed(&verdicts);
    assert_eq!(failed, ["I4 durability"], "{}", report(&verdicts));
    assert!(report(&verdicts).contains("GHOST-1"));

    // Stock given back twice, and the order gone while its stock stays deducted.
    sqlx::query("UPDATE inventory SET stocks = stocks + 2 WHERE goods_id = 1")
        .execute(&stack.inventory_pool)
        .await
        .expect("corrupt stock");
    sqlx::query("UPDATE order_info SET status = 'TRADE_CLOSED' WHERE order_sn = ?")
        .bind(&order.order_sn)
        .execute(&stack.order_pool)
        .await
        .expect("close without return");
    let verdicts = audit(&stack.order_pool, &stack.inventory_pool, &input)
        .await
        .expect("audit");
    let failed = testkit::audit::failed(&verdicts);
    assert_eq!(
        failed,
        ["I1 conservation", "I2 agreement", "I4 durability"],
        "{}",
        report(&verdicts)
    );
    assert!(report(&verdicts).contains(&order.order_sn));
    stack.stop().await;
}

/// I6 (liveness): an unpaid order older than its pay timeout plus the slack fails the
/// audit while I1-I5 all pass (it holds its stock without breaking any of them: what the
/// audit missed when pay timeouts stopped under load). Here its pay-timeout message is
/// dropped and the sweep is far away; once its timer works, the same audit passes.
#[sqlx::test(migrations = false)]
async fn i6_fails_while_an_unpaid_order_outlives_its_pay_timeout_and_i1_to_i5_hold(
    _: MySqlPoolOptions,
    db: MySqlConnectOptions,
) {
    let (stuck_user, user) = (72, 73);
    let mut config = crate::helpers::order_config();
    config.pay_timeout = std::time::Duration::from_secs(1);
    config.overdue_sweep_grace = std::time::Duration::from_secs(3600);
    let stack = crate::helpers::spawn_stack_with(db, config).await;
    stack.goods(1, 100, 10).await;
    stack.add_to_cart(stuck_user, 1, 2).await;
    stack.add_to_cart(user, 1, 3).await;
    let liveness = Liveness {
        pay_timeout: std::time::Duration::from_secs(1),
        slack: std::time::Duration::from_secs(2),
        reconcile_horizon: None,
    };

    let dropped =
        crate::helpers::arm("order.drop_pay_timeout", &format!("return({stuck_user})")).await;
    let stuck = stack.create_order(stuck_user).await.expect("order");
    drop(dropped);
    let order = stack.create_order(user).await.expect("order");
    let input = AuditInput {
        initial_stock: Some([(1, 10)].into_iter().collect()),
        acknowledged: vec![stuck.order_sn.clone(), order.order_sn.clone()],
        liveness: Some(liveness),
    };
    // The working timer closes the second order; the first stays unpaid past 1 s + 2 s.
    let verdicts = testkit::eventually(testkit::PATIENCE, "I6 to fail", || async {
        let verdicts = audit(&stack.order_pool, &stack.inventory_pool, &input)
            .await
            .expect("audit");
        let i6 = verdicts.iter().find(|v| v.name == "I6 liveness")?;
        let closed = stack.order_status(&order.order_sn).await.as_deref() == Some("TRADE_CLOSED");
        let returned = stack.stock(1).await == 8;
        (!i6.passed() && closed && returned).then_some(verdicts)
    })
    .await;
    let failed = testkit::audit::failed(&verdicts);
    assert_eq!(failed, ["I6 liveness"], "{}", report(&verdicts));
    assert!(report(&verdicts).contains(&stuck.order_sn));
    assert!(
        report(&verdicts).contains("closed by pay timeout 1, by cancel 0, by the overdue sweep 0"),
        "{}",
        report(&verdicts)
    );

    // Its pay timeout, late: closed, stock back, and I6 holds.
    stack
        .closer
        .cancel(&stuck.order_sn, stuck_user)
        .await
        .expect("closed");
    testkit::eventually(testkit::PATIENCE, "the stock back", || async {
        (stack.stock(1).await == 10).then_some(())
    })
    .await;
    let verdicts = audit(&stack.order_pool, &stack.inventory_pool, &input)
        .await
        .expect("audit");
    assert!(verdicts.iter().all(|v| v.passed()), "{}", report(&verdicts));
    stack.stop().await;
}
