//! The audit catches each kind of inconsistency it claims to check.

use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use testkit::audit::{AuditInput, audit, report};

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
    };

    let verdicts = audit(&stack.order_pool, &stack.inventory_pool, &input)
        .await
        .expect("audit");
    let failed: Vec<&str> = verdicts
        .iter()
        .filter(|v| !v.passed())
        .map(|v| v.name)
        .collect();
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
    let failed: Vec<&str> = verdicts
        .iter()
        .filter(|v| !v.passed())
        .map(|v| v.name)
        .collect();
    assert_eq!(
        failed,
        ["I1 conservation", "I2 agreement", "I4 durability"],
        "{}",
        report(&verdicts)
    );
    assert!(report(&verdicts).contains(&order.order_sn));
    stack.stop().await;
}
