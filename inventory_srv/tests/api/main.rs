//! Integration tests of inventory_srv: the real service on port 0 against a fresh
//! MariaDB database per test (`#[sqlx::test]`, needs `DATABASE_URL`; `scripts/test` sets it).

mod admin;
mod helpers;
mod reback;
mod sell;
