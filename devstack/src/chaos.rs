//! `devstack chaos`: the broker and both services as separate OS processes, concurrent
//! CreateOrders, payments and pay timeouts, while order_srv is crashed at protocol steps
//! (failpoints armed through `FAILPOINTS`) or SIGKILLed, inventory_srv is killed and the
//! broker restarted. Then it waits for quiescence and audits I1-I5.
//!
//! order_srv must be built with the `failpoints` feature (the debug binaries `scripts/test`
//! builds are; for release: `--features order_srv/failpoints`).

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use proto::{
    inventory::{self as inv, inventory_client::InventoryClient},
    order::{self as pb, order_client::OrderClient},
};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use sqlx::mysql::MySqlConnectOptions;
use tokio::sync::RwLock;

use testkit::audit::{AuditInput, audit, report};

use crate::procs::{Parts, Proc};

/// The protocol steps where order_srv is crashed.
pub const CRASH_POINTS: [&str; 5] = [
    "order.after_half_message",
    "order.after_sell",
    "order.fail_local_tx",
    "order.pause_before_commit",
    "order.after_local_commit",
];

#[derive(Debug, Clone, clap::Parser)]
pub struct ChaosArgs {
    /// CreateOrder calls to make.
    #[arg(long, default_value_t = 300)]
    pub orders: usize,
    /// Concurrent callers.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Process kills (order_srv at failpoints or by SIGKILL, inventory_srv, the broker).
    #[arg(long, default_value_t = 5)]
    pub kills: usize,
    /// Seed of the schedule (which kill when, who pays, which goods).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Unpaid orders close after this.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub pay_timeout: Duration,
    /// How long to wait for quiescence after the last order.
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    pub settle_within: Duration,
    #[arg(
        long,
        env = "CHAOS_MYSQL_URL",
        default_value = "mysql://root@127.0.0.1:3306"
    )]
    pub mysql_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    OrderAt(&'static str),
    OrderSigkill,
    Inventory,
    /// inventory_srv aborts in its reback consumer, before the reback transaction.
    InventoryInConsumer,
    Broker,
}

impl Kill {
    fn label(self) -> String {
        match self {
            Kill::OrderAt(point) => format!("order_srv crash at {point}"),
            Kill::OrderSigkill => "order_srv SIGKILL".into(),
            Kill::Inventory => "inventory_srv SIGKILL".into(),
            Kill::InventoryInConsumer => "inventory_srv crash at inventory.before_reback".into(),
            Kill::Broker => "broker restart".into(),
        }
    }
}

const GOODS: i32 = 20;

/// Stock per goods: about three quarters of the orders can be served, so stock runs
/// short only near the end and both outcomes stay in the mix.
fn stock_per_goods(orders: usize) -> i32 {
    // An order takes ~4 units (1-3 of one or two goods).
    i32::try_from(orders * 3 / GOODS as usize)
        .unwrap_or(i32::MAX)
        .max(60)
}

#[derive(Default)]
struct Tally {
    acknowledged: Vec<String>,
    failed: BTreeMap<String, usize>,
    paid: usize,
    payment_refused: usize,
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let base: MySqlConnectOptions = args.mysql_url.parse().context("CHAOS_MYSQL_URL")?;
    testkit::mysql::recreate_databases(
        &base,
        &["shop_chaos_order", "shop_chaos_inventory"],
        "CHAOS_MYSQL_URL",
    )
    .await?;
    let url = |db: &str| format!("{}/{db}", args.mysql_url.trim_end_matches('/'));
    let work = std::env::temp_dir().join(format!("shop-chaos-{}", std::process::id()));
    std::fs::create_dir_all(work.join("store"))?;
    println!(
        "chaos seed {} — process logs in {}",
        args.seed,
        work.display()
    );
    let parts = Arc::new(Parts::new(
        &work,
        url("shop_chaos_order"),
        url("shop_chaos_inventory"),
        args.pay_timeout,
    )?);

    // The schedule: at least one broker restart and one inventory kill, the rest
    // order_srv crashes at protocol steps or SIGKILLs.
    let mut kills = vec![Kill::Broker, Kill::Inventory];
    while kills.len() < args.kills.max(2) {
        kills.push(match rng.random_range(0..10) {
            0..=6 => Kill::OrderAt(CRASH_POINTS[rng.random_range(0..CRASH_POINTS.len())]),
            7 => Kill::InventoryInConsumer,
            _ => Kill::OrderSigkill,
        });
    }
    kills.shuffle(&mut rng);
    let every = (args.orders / (kills.len() + 1)).max(1);

    let broker = parts.broker().await?;
    // Retried until the broker has registered with the name server.
    testkit::broker::create_topics(&parts.namesrv(), &testkit::SYSTEM_TOPICS, 4).await?;
    let inventory = parts.inventory(false).await?;
    let order = parts.order_with(None).await?;
    let procs = Arc::new(RwLock::new(Procs {
        broker,
        inventory,
        order,
    }));

    let order_addr = parts.order_addr();
    let inventory_addr = parts.inventory_addr();
    let stock = stock_per_goods(args.orders);
    seed(&order_addr, &inventory_addr, stock).await?;

    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let pay_seed = rng.random::<u64>();
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|w| {
            let (next, tally, order_addr) = (next.clone(), tally.clone(), order_addr.clone());
            let orders = args.orders;
            let pay_timeout = args.pay_timeout;
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(pay_seed ^ w as u64);
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= orders {
                        return;
                    }
                    place_one(&order_addr, i, &mut rng, pay_timeout, &tally).await;
                }
            })
        })
        .collect();

    // The killer follows the orders' progress.
    let mut kills_by_point: BTreeMap<String, usize> = BTreeMap::new();
    for (k, kill) in kills.iter().enumerate() {
        let due = every * (k + 1);
        while next.load(Ordering::SeqCst) < due && !workers.iter().all(|w| w.is_finished()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "[{:>5.1}s] kill {}: {}",
            started.elapsed().as_secs_f64(),
            k + 1,
            kill.label()
        );
        execute(*kill, &parts, &procs).await?;
        *kills_by_point.entry(kill.label()).or_default() += 1;
    }
    for worker in workers {
        let _ = worker.await;
    }
    let placed_at = started.elapsed();

    // Quiescence: every half message resolved, every unpaid order closed, every reback
    // applied. I2 compares the databases, so wait until the audit holds twice in a row
    // (or the deadline passes, and report what is still wrong).
    let order_pool = sqlx::MySqlPool::connect(&parts.order_db_url()).await?;
    let inventory_pool = sqlx::MySqlPool::connect(&parts.inventory_db_url()).await?;
    let input = {
        let t = tally
            .lock()
            .map_err(|_| anyhow::anyhow!("tally poisoned"))?;
        AuditInput {
            initial_stock: Some((1..=GOODS).map(|g| (g, i64::from(stock))).collect()),
            acknowledged: t.acknowledged.clone(),
        }
    };
    let settle_deadline = Instant::now() + args.settle_within + args.pay_timeout;
    let mut passes = 0;
    let verdicts = loop {
        let verdicts = audit(&order_pool, &inventory_pool, &input).await?;
        let waiting: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM order_info WHERE status = 'WAIT_BUYER_PAY'")
                .fetch_one(&order_pool)
                .await?;
        passes = if verdicts.iter().all(|v| v.passed()) && waiting == 0 {
            passes + 1
        } else {
            0
        };
        if passes >= 2 || Instant::now() >= settle_deadline {
            break verdicts;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let quiescent_after = started.elapsed() - placed_at;

    let closed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM order_info WHERE status = 'TRADE_CLOSED'")
            .fetch_one(&order_pool)
            .await?;
    let returned: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM stock_sell_detail WHERE status = 'RETURNED'")
            .fetch_one(&inventory_pool)
            .await?;
    let tombstones: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM stock_sell_detail WHERE status = 'RETURNED' AND detail = '[]'",
    )
    .fetch_one(&inventory_pool)
    .await?;
    let aborted: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM tx_barrier WHERE outcome = 'aborted'")
            .fetch_one(&order_pool)
            .await?;
    let mut procs = Arc::try_unwrap(procs)
        .map_err(|_| anyhow::anyhow!("processes still shared"))?
        .into_inner();
    procs.order.stop(Duration::from_secs(20)).await;
    procs.inventory.stop(Duration::from_secs(20)).await;
    procs.broker.stop(Duration::from_secs(20)).await;

    let t = tally
        .lock()
        .map_err(|_| anyhow::anyhow!("tally poisoned"))?;
    println!("\nchaos summary (seed {}):", args.seed);
    println!("  orders attempted       {}", args.orders);
    println!("  acknowledged (OK)      {}", t.acknowledged.len());
    for (code, n) in &t.failed {
        println!("  failed {code:<16} {n}");
    }
    println!(
        "  paid / payment refused {} / {}",
        t.paid, t.payment_refused
    );
    println!("  closed by pay timeout  {closed}");
    println!("  kills                  {}", kills.len());
    for (label, n) in &kills_by_point {
        println!("    {label:<40} {n}");
    }
    println!("  check-backs that found no commit ('aborted' barrier rows)  {aborted}");
    println!("  stock returns applied  {returned} (of which tombstones {tombstones})");
    println!("  orders placed in       {:.1}s", placed_at.as_secs_f64());
    println!(
        "  quiescent after        {:.1}s",
        quiescent_after.as_secs_f64()
    );
    println!("\naudit:");
    print!("{}", report(&verdicts));
    if verdicts.iter().all(|v| v.passed()) {
        println!("\nchaos: 0 violations");
        let _ = std::fs::remove_dir_all(&work);
        Ok(())
    } else {
        bail!("chaos: invariants violated (see above)")
    }
}

struct Procs {
    broker: Proc,
    inventory: Proc,
    order: Proc,
}

async fn execute(kill: Kill, parts: &Parts, procs: &RwLock<Procs>) -> anyhow::Result<()> {
    let mut procs = procs.write().await;
    match kill {
        Kill::OrderAt(point) => {
            procs.order.kill().await;
            procs.order = parts.order_crashing_at(point).await?;
            // Wait (bounded) for the armed step to be hit and the process to die, then
            // bring it back unarmed.
            let deadline = Instant::now() + Duration::from_secs(30);
            while procs.order.is_running() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            procs.order.kill().await;
            procs.order = parts.order_with(None).await?;
        }
        Kill::OrderSigkill => {
            procs.order.kill().await;
            procs.order = parts.order_with(None).await?;
        }
        Kill::Inventory => {
            procs.inventory.kill().await;
            procs.inventory = parts.inventory(false).await?;
        }
        Kill::InventoryInConsumer => {
            procs.inventory.kill().await;
            procs.inventory = parts.inventory(true).await?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while procs.inventory.is_running() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            procs.inventory.kill().await;
            procs.inventory = parts.inventory(false).await?;
        }
        Kill::Broker => {
            procs.broker.stop(Duration::from_secs(30)).await;
            procs.broker = parts.broker().await?;
        }
    }
    Ok(())
}

pub(crate) async fn seed(order_addr: &str, inventory_addr: &str, stock: i32) -> anyhow::Result<()> {
    let mut order = OrderClient::connect(order_addr.to_owned()).await?;
    let mut inventory = InventoryClient::connect(inventory_addr.to_owned()).await?;
    for id in 1..=GOODS {
        order
            .upsert_goods(pb::Goods {
                id,
                name: format!("goods {id}"),
                price_cents: 100 * i64::from(id),
            })
            .await?;
        inventory
            .set_inv(inv::SetInvRequest {
                goods_id: id,
                stocks: stock,
            })
            .await?;
    }
    Ok(())
}

/// One user: fill the cart, CreateOrder (retrying while order_srv is down), maybe pay.
async fn place_one(
    order_addr: &str,
    i: usize,
    rng: &mut StdRng,
    pay_timeout: Duration,
    tally: &Mutex<Tally>,
) {
    let user_id = 1_000 + i as i64;
    let goods: Vec<i32> = {
        let first = rng.random_range(1..=GOODS);
        let second = rng.random_range(1..=GOODS);
        if first == second {
            vec![first]
        } else {
            vec![first, second]
        }
    };
    let nums = rng.random_range(1..=3);
    let pays = rng.random_bool(0.5);
    let pay_after =
        Duration::from_millis(rng.random_range(0..=(pay_timeout.as_millis() as u64 * 3 / 2)));
    let deadline = Instant::now() + Duration::from_secs(120);
    let record_failure = |code: String| {
        if let Ok(mut t) = tally.lock() {
            *t.failed.entry(code).or_default() += 1;
        }
    };
    // The cart: retried until order_srv answers (it may be restarting).
    for goods_id in &goods {
        loop {
            let added = match OrderClient::connect(order_addr.to_owned()).await {
                Ok(mut c) => c
                    .create_cart_item(pb::CreateCartItemRequest {
                        user_id,
                        goods_id: *goods_id,
                        nums,
                        checked: Some(true),
                    })
                    .await
                    .is_ok(),
                Err(_) => false,
            };
            if added {
                break;
            }
            if Instant::now() > deadline {
                record_failure("cart unreachable".into());
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // CreateOrder once: a call cut by a crash is exactly what chaos is about, and a retry
    // would be a new order. Connection refused (nothing sent) is retried.
    let order = loop {
        let mut client = match OrderClient::connect(order_addr.to_owned()).await {
            Ok(c) => c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(_) => {
                record_failure("order_srv unreachable".into());
                return;
            }
        };
        let request = pb::CreateOrderRequest {
            user_id,
            address: "1 Chaos Lane".into(),
            name: "Chaos".into(),
            mobile: "13800000000".into(),
            post: String::new(),
            request_id: String::new(),
        };
        match client.create_order(request).await {
            Ok(order) => break order.into_inner(),
            Err(status) => {
                record_failure(format!("{:?}", status.code()));
                return;
            }
        }
    };
    if let Ok(mut t) = tally.lock() {
        t.acknowledged.push(order.order_sn.clone());
    }
    if !pays {
        return;
    }
    tokio::time::sleep(pay_after).await;
    loop {
        let paid = match OrderClient::connect(order_addr.to_owned()).await {
            Ok(mut c) => c
                .update_order_status(pb::UpdateOrderStatusRequest {
                    order_sn: order.order_sn.clone(),
                    status: pb::OrderStatus::TradeSuccess as i32,
                    pay_type: "chaos".into(),
                    trade_no: format!("T{}", order.order_sn),
                })
                .await
                .map(|_| ())
                .map_err(|s| s.code()),
            Err(_) => Err(tonic::Code::Unavailable),
        };
        match paid {
            Ok(()) => {
                if let Ok(mut t) = tally.lock() {
                    t.paid += 1;
                }
                return;
            }
            Err(tonic::Code::FailedPrecondition) => {
                if let Ok(mut t) = tally.lock() {
                    t.payment_refused += 1;
                }
                return;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(code) => {
                record_failure(format!("payment {code:?}"));
                return;
            }
        }
    }
}
