//! gRPC contracts of the two services: `inventory.v1` and `order.v1`.
//!
//! The generated code lives here so both services, the devstack tools and the tests
//! speak exactly the same types.

/// Stock keeping: `Sell`, `Reback`, and admin calls.
pub mod inventory {
    tonic::include_proto!("inventory.v1");
}

/// Cart, orders and payment status.
pub mod order {
    tonic::include_proto!("order.v1");
}

/// Longest order number, matching the `order_sn` columns of both databases.
pub const MAX_ORDER_SN_LEN: usize = 64;

/// The rule for an order number, shared by both services (it travels in `Sell`, `Reback`
/// and the messages): 1 to 64 ASCII letters, digits, `-` or `_`. The error says why not.
pub fn check_order_sn(raw: &str) -> Result<(), String> {
    if raw.is_empty() || raw.len() > MAX_ORDER_SN_LEN {
        return Err(format!(
            "order_sn must be 1 to {MAX_ORDER_SN_LEN} characters"
        ));
    }
    if !raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("order_sn may contain only ASCII letters, digits, '-' and '_'".into());
    }
    Ok(())
}

/// The rule for an id (`user_id`, `goods_id`), shared by both services: positive. The
/// error says why not, naming `field`.
pub fn check_id(field: &str, raw: i64) -> Result<(), String> {
    if raw <= 0 {
        return Err(format!("{field} must be positive, got {raw}"));
    }
    Ok(())
}

/// Encoded descriptors of both packages, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("shop_descriptor");
