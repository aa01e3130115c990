//! `devstack demo`: the failure-table scenarios that can be shown live, each with a
//! timeline of what the two databases show as it unfolds, ending with the audit.
//!
//! It runs its own broker (1 s check-back) and services as processes on demo databases,
//! because two scenarios restart order_srv with a failpoint armed for one user; so
//! order_srv must be built with the `failpoints` feature, as `scripts/test` builds it.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use proto::order::{self as pb, order_client::OrderClient};
use sqlx::MySqlPool;

use testkit::audit::{AuditInput, Liveness, audit, report};

use crate::{
    calls,
    chaos::seed,
    procs::{Parts, Proc, fresh_databases},
};

#[derive(Debug, Clone, clap::Parser)]
pub struct DemoArgs {
    /// Pay timeout of the demo orders.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    pub pay_timeout: Duration,
    #[arg(
        long,
        env = "DEMO_MYSQL_URL",
        default_value = "mysql://root@127.0.0.1:3306"
    )]
    pub mysql_url: String,
}

const STOCK: i32 = 10;
const PATIENCE: Duration = Duration::from_secs(60);

struct Demo {
    parts: Parts,
    order: Proc,
    order_db: MySqlPool,
    inventory_db: MySqlPool,
    started: Instant,
    acknowledged: Vec<String>,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let (_, [order_db, inventory_db]) = fresh_databases(
        &args.mysql_url,
        ["shop_demo_order", "shop_demo_inventory"],
        "DEMO_MYSQL_URL",
    )
    .await?;
    let work: PathBuf = std::env::temp_dir().join(format!("shop-demo-{}", std::process::id()));
    let parts = Parts::new(&work, order_db, inventory_db, args.pay_timeout)?;
    println!(
        "starting the broker (check-back after ~1 s) and both services; logs in {}",
        work.display()
    );
    let mut broker = parts.broker().await?;
    testkit::broker::create_topics(&parts.namesrv(), &testkit::SYSTEM_TOPICS, 4).await?;
    let mut inventory = parts.inventory(false).await?;
    let order = parts.order_with(None).await?;
    seed(&parts.order_addr(), &parts.inventory_addr(), STOCK).await?;
    let mut demo = Demo {
        order_db: MySqlPool::connect(&parts.order_db_url()).await?,
        inventory_db: MySqlPool::connect(&parts.inventory_db_url()).await?,
        parts,
        order,
        started: Instant::now(),
        acknowledged: Vec::new(),
    };

    let outcome = demo.scenarios(args.pay_timeout).await;
    let verdicts = audit(
        &demo.order_db,
        &demo.inventory_db,
        &AuditInput {
            initial_stock: Some((1..=20).map(|g| (g, i64::from(STOCK))).collect()),
            acknowledged: demo.acknowledged.clone(),
            liveness: Some(Liveness::new(args.pay_timeout)),
        },
    )
    .await;
    demo.order.stop(Duration::from_secs(20)).await;
    inventory.stop(Duration::from_secs(20)).await;
    broker.stop(Duration::from_secs(20)).await;
    outcome?;
    let verdicts = verdicts?;
    println!("\naudit of both databases:");
    print!("{}", report(&verdicts));
    ensure!(
        verdicts.iter().all(|v| v.passed()),
        "demo: invariants violated"
    );
    let _ = std::fs::remove_dir_all(&work);
    println!("\ndemo: every scenario ended as DESIGN.md §9 says");
    Ok(())
}

impl Demo {
    async fn scenarios(&mut self, pay_timeout: Duration) -> anyhow::Result<()> {
        self.happy_path().await?;
        self.insufficient_stock().await?;
        self.local_transaction_fails_after_sell().await?;
        self.crash_before_commit().await?;
        self.unpaid_order_times_out(pay_timeout).await?;
        self.payment_and_timeout_race(pay_timeout).await?;
        self.lost_reply_retried().await?;
        self.buyer_cancels().await
    }

    async fn happy_path(&mut self) -> anyhow::Result<()> {
        self.heading("1. happy path: order created, stock deducted, the reback rolled back");
        let order = self.place_ok(101, 1, 2).await?;
        self.show(&order, 1).await?;
        self.expect(
            &order,
            1,
            Some("WAIT_BUYER_PAY"),
            Some("DEDUCTED"),
            Some("committed"),
            STOCK - 2,
        )
        .await
    }

    async fn insufficient_stock(&mut self) -> anyhow::Result<()> {
        self.heading("2. insufficient stock: Sell refused, Rollback, nothing changes");
        let refused = self.place(102, 2, STOCK + 1).await?;
        ensure!(
            refused.is_err(),
            "an order beyond the stock must be refused"
        );
        self.log(&format!(
            "CreateOrder → {}",
            refused.err().unwrap_or_default()
        ));
        self.log(&format!("stock of goods 2 still {}", self.stock(2).await?));
        ensure!(
            self.stock(2).await? == STOCK,
            "goods 2 stock must be unchanged"
        );
        Ok(())
    }

    async fn local_transaction_fails_after_sell(&mut self) -> anyhow::Result<()> {
        self.heading("3. the local transaction fails after Sell: the reback is committed");
        self.restart_order(Some("order.fail_local_tx=return(103)".into()))
            .await?;
        let failed = self.place(103, 3, 3).await?;
        self.log(&format!(
            "CreateOrder → {}",
            failed.err().unwrap_or_default()
        ));
        let sn = self.latest_sell(3).await?;
        self.log(&format!(
            "Sell of {sn} deducted 3 of goods 3; waiting for the reback"
        ));
        self.until(&sn, 3, |o, d, _, s| {
            o.is_none() && d.as_deref() == Some("RETURNED") && s == STOCK
        })
        .await
    }

    async fn crash_before_commit(&mut self) -> anyhow::Result<()> {
        self.heading(
            "4. order_srv crashes before COMMIT: the broker checks back, barrier says aborted",
        );
        self.restart_order(Some("order.pause_before_commit=return(104:crash)".into()))
            .await?;
        let crashed = self.place(104, 4, 2).await?;
        self.log(&format!(
            "CreateOrder → {} (the process died)",
            crashed.err().unwrap_or_default()
        ));
        self.restart_order(None).await?;
        self.log("order_srv restarted; the broker will ask it about the half message");
        let sn = self.latest_sell(4).await?;
        self.until(&sn, 4, |o, d, b, s| {
            o.is_none()
                && d.as_deref() == Some("RETURNED")
                && b.as_deref() == Some("aborted")
                && s == STOCK
        })
        .await
    }

    async fn unpaid_order_times_out(&mut self, pay_timeout: Duration) -> anyhow::Result<()> {
        self.heading("5. pay timeout: an unpaid order is closed and its stock returned");
        let order = self.place_ok(105, 5, 4).await?;
        self.show(&order, 5).await?;
        self.log(&format!("not paying; the pay timeout is {pay_timeout:?}"));
        self.until_closed_and_returned(&order.order_sn, 5).await
    }

    async fn payment_and_timeout_race(&mut self, pay_timeout: Duration) -> anyhow::Result<()> {
        self.heading("6. payment and timeout race: exactly one wins");
        let late = self.place_ok(106, 6, 1).await?;
        let on_time = self.place_ok(107, 7, 1).await?;
        let paid = self.pay(&on_time.order_sn).await;
        self.log(&format!(
            "payment of {} at once → {}",
            on_time.order_sn,
            describe(&paid)
        ));
        ensure!(paid.is_ok(), "an on-time payment must succeed");
        tokio::time::sleep(pay_timeout + Duration::from_secs(2)).await;
        let refused = self.pay(&late.order_sn).await;
        self.log(&format!(
            "payment of {} after the timeout → {}",
            late.order_sn,
            describe(&refused)
        ));
        ensure!(
            refused
                .as_ref()
                .err()
                .is_some_and(|s| s.code() == tonic::Code::FailedPrecondition),
            "a late payment must be refused"
        );
        self.until_closed_and_returned(&late.order_sn, 6).await?;
        self.expect(
            &on_time,
            7,
            Some("TRADE_SUCCESS"),
            Some("DEDUCTED"),
            Some("committed"),
            STOCK - 1,
        )
        .await
    }

    async fn lost_reply_retried(&mut self) -> anyhow::Result<()> {
        self.heading(
            "7. the reply is lost; the retry with the same request_id returns the same order",
        );
        let key = "demo-retry-0001";
        let first = self
            .place_keyed(108, 8, 2, Some(key))
            .await?
            .map_err(anyhow::Error::msg)
            .context("the order should succeed")?;
        self.log("the reply never reaches the gateway (as if its connection broke); it retries");
        let retry = self.create_order(108, Some(key)).await?;
        self.log(&format!(
            "retry with request_id {key} → {}",
            describe_order(&retry)
        ));
        let retry = retry
            .map_err(anyhow::Error::msg)
            .context("the retry should succeed")?;
        ensure!(
            retry.order_sn == first.order_sn,
            "the retry must return the first order"
        );
        self.expect(
            &first,
            8,
            Some("WAIT_BUYER_PAY"),
            Some("DEDUCTED"),
            Some("committed"),
            STOCK - 2,
        )
        .await
    }

    async fn buyer_cancels(&mut self) -> anyhow::Result<()> {
        self.heading("8. the buyer cancels an unpaid order: closed, stock returned once");
        let order = self.place_ok(109, 9, 3).await?;
        self.show(&order, 9).await?;
        let cancelled = self
            .client()
            .await?
            .cancel_order(pb::CancelOrderRequest {
                order_sn: order.order_sn.clone(),
                user_id: 109,
            })
            .await;
        self.log(&format!(
            "CancelOrder → {}",
            match &cancelled {
                Ok(_) => "OK (TRADE_CLOSED)".to_owned(),
                Err(status) => format!("{:?}: {}", status.code(), status.message()),
            }
        ));
        ensure!(cancelled.is_ok(), "an unpaid order can be cancelled");
        self.until_closed_and_returned(&order.order_sn, 9).await
    }

    /// Waits until the order is closed and its goods' stock is all back.
    async fn until_closed_and_returned(&self, order_sn: &str, goods_id: i32) -> anyhow::Result<()> {
        self.until(order_sn, goods_id, |o, d, _, s| {
            o.as_deref() == Some("TRADE_CLOSED") && d.as_deref() == Some("RETURNED") && s == STOCK
        })
        .await
    }

    fn heading(&self, text: &str) {
        println!("\n== {text}");
    }

    fn log(&self, text: &str) {
        println!("[{:>5.1}s] {text}", self.started.elapsed().as_secs_f64());
    }

    async fn restart_order(&mut self, failpoints: Option<String>) -> anyhow::Result<()> {
        self.order.kill().await;
        let armed = failpoints.clone();
        self.order = self.parts.order_with(failpoints).await?;
        if let Some(armed) = armed {
            self.log(&format!("order_srv restarted with failpoint {armed}"));
        }
        Ok(())
    }

    async fn client(&self) -> anyhow::Result<OrderClient<tonic::transport::Channel>> {
        Ok(OrderClient::connect(self.parts.order_addr()).await?)
    }

    /// Cart + CreateOrder for one user and one goods; `Err` inside is the refusal.
    async fn place(
        &mut self,
        user_id: i64,
        goods_id: i32,
        nums: i32,
    ) -> anyhow::Result<Result<pb::OrderInfo, String>> {
        self.place_keyed(user_id, goods_id, nums, None).await
    }

    /// Cart + CreateOrder that must succeed.
    async fn place_ok(
        &mut self,
        user_id: i64,
        goods_id: i32,
        nums: i32,
    ) -> anyhow::Result<pb::OrderInfo> {
        self.place(user_id, goods_id, nums)
            .await?
            .map_err(anyhow::Error::msg)
            .context("the order should succeed")
    }

    /// CreateOrder alone, with an optional request_id; `Err` inside is the refusal.
    async fn create_order(
        &self,
        user_id: i64,
        request_id: Option<&str>,
    ) -> anyhow::Result<Result<pb::OrderInfo, String>> {
        let placed = self
            .client()
            .await?
            .create_order(calls::order_request(
                user_id,
                "1 Demo Street",
                "Demo",
                request_id.unwrap_or_default(),
            ))
            .await;
        Ok(placed
            .map(tonic::Response::into_inner)
            .map_err(|status| format!("{:?}: {}", status.code(), status.message())))
    }

    /// Cart + CreateOrder with an optional request_id.
    async fn place_keyed(
        &mut self,
        user_id: i64,
        goods_id: i32,
        nums: i32,
        request_id: Option<&str>,
    ) -> anyhow::Result<Result<pb::OrderInfo, String>> {
        let mut client = self.client().await?;
        client
            .create_cart_item(calls::cart_line(user_id, goods_id, nums))
            .await?;
        let keyed = request_id.map_or(String::new(), |k| format!(" with request_id {k}"));
        self.log(&format!(
            "user {user_id}: {nums} × goods {goods_id} in the cart; CreateOrder{keyed}"
        ));
        let placed = self.create_order(user_id, request_id).await?;
        if let Ok(order) = &placed {
            self.log(&format!(
                "CreateOrder → OK {} total {} cents",
                order.order_sn, order.total_cents
            ));
            self.acknowledged.push(order.order_sn.clone());
        }
        Ok(placed)
    }

    async fn pay(&self, order_sn: &str) -> Result<(), tonic::Status> {
        let mut client = self
            .client()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        client
            .update_order_status(calls::payment(order_sn, "demo"))
            .await
            .map(|_| ())
    }

    async fn stock(&self, goods_id: i32) -> anyhow::Result<i32> {
        let stock: i64 = sqlx::query_scalar("SELECT stocks FROM inventory WHERE goods_id = ?")
            .bind(goods_id)
            .fetch_one(&self.inventory_db)
            .await?;
        // The demo's stocks are tiny.
        Ok(i32::try_from(stock)?)
    }

    /// The order_sn of the newest Sell that touched `goods_id`.
    async fn latest_sell(&self, goods_id: i32) -> anyhow::Result<String> {
        let pattern = format!("%\"goods_id\":{goods_id},%");
        sqlx::query_scalar(
            "SELECT order_sn FROM stock_sell_detail WHERE detail LIKE ? ORDER BY id DESC LIMIT 1",
        )
        .bind(pattern)
        .fetch_optional(&self.inventory_db)
        .await?
        .context("no Sell recorded for the goods")
    }

    /// (order status, stock detail status, barrier outcome, stock of the goods).
    async fn state(
        &self,
        order_sn: &str,
        goods_id: i32,
    ) -> anyhow::Result<(Option<String>, Option<String>, Option<String>, i32)> {
        let order = sqlx::query_scalar("SELECT status FROM order_info WHERE order_sn = ?")
            .bind(order_sn)
            .fetch_optional(&self.order_db)
            .await?;
        let detail = sqlx::query_scalar("SELECT status FROM stock_sell_detail WHERE order_sn = ?")
            .bind(order_sn)
            .fetch_optional(&self.inventory_db)
            .await?;
        let barrier = sqlx::query_scalar("SELECT outcome FROM tx_barrier WHERE order_sn = ?")
            .bind(order_sn)
            .fetch_optional(&self.order_db)
            .await?;
        Ok((order, detail, barrier, self.stock(goods_id).await?))
    }

    async fn show(&self, order: &pb::OrderInfo, goods_id: i32) -> anyhow::Result<()> {
        let (o, d, b, s) = self.state(&order.order_sn, goods_id).await?;
        self.log(&line(&o, &d, &b, s, goods_id));
        Ok(())
    }

    async fn expect(
        &self,
        order: &pb::OrderInfo,
        goods_id: i32,
        status: Option<&str>,
        detail: Option<&str>,
        barrier: Option<&str>,
        stock: i32,
    ) -> anyhow::Result<()> {
        let (o, d, b, s) = self.state(&order.order_sn, goods_id).await?;
        if o.as_deref() != status || d.as_deref() != detail || b.as_deref() != barrier || s != stock
        {
            bail!(
                "{}: unexpected end state {}",
                order.order_sn,
                line(&o, &d, &b, s, goods_id)
            );
        }
        self.log(&format!("end state: {}", line(&o, &d, &b, s, goods_id)));
        Ok(())
    }

    /// Prints each change of state until `done` holds (or fails after a minute).
    async fn until(
        &self,
        order_sn: &str,
        goods_id: i32,
        done: impl Fn(&Option<String>, &Option<String>, &Option<String>, i32) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        let mut last = String::new();
        loop {
            let (o, d, b, s) = self.state(order_sn, goods_id).await?;
            let now = line(&o, &d, &b, s, goods_id);
            if now != last {
                self.log(&now);
                last = now;
            }
            if done(&o, &d, &b, s) {
                self.log("end state reached");
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{order_sn}: did not reach its end state within {PATIENCE:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn line(
    order: &Option<String>,
    detail: &Option<String>,
    barrier: &Option<String>,
    stock: i32,
    goods_id: i32,
) -> String {
    format!(
        "order {} | stock detail {} | tx_barrier {} | stock of goods {goods_id}: {stock}",
        order.as_deref().unwrap_or("none"),
        detail.as_deref().unwrap_or("none"),
        barrier.as_deref().unwrap_or("none"),
    )
}

fn describe(result: &Result<(), tonic::Status>) -> String {
    match result {
        Ok(()) => "OK (TRADE_SUCCESS)".into(),
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    }
}

fn describe_order(result: &Result<pb::OrderInfo, String>) -> String {
    match result {
        Ok(order) => format!("OK {}", order.order_sn),
        Err(refusal) => refusal.clone(),
    }
}
