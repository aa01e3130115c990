//! `devstack bench`: CreateOrder over gRPC against the raw-SQL ceiling, side by side.
//!
//! The services and the broker run as separate processes (release builds next to this
//! one) so each one's CPU time is measured. The baseline runs the same SQL of one order
//! (the cart read, the Sell transaction, the order transaction), through the services'
//! own database functions, straight from this process: no gRPC, no broker. The two sides
//! take turns in rounds (`--rounds`), so both meet the machine in the same state.

use std::{
    ops::Range,
    path::{Path, PathBuf},
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
use serde_json::json;
use sqlx::{MySqlPool, mysql::MySqlConnectOptions};
use tonic::transport::Channel;

use crate::{
    procs::{Parts, Proc},
    steps,
};

/// What to run.
#[derive(Debug, Clone, clap::Parser)]
pub struct BenchArgs {
    /// Orders per scenario (c=1 runs a quarter of them).
    #[arg(long, default_value_t = 2_000)]
    pub orders: usize,
    /// Goods the spread scenarios pick from.
    #[arg(long, default_value_t = 1_000)]
    pub goods: i32,
    /// MySQL server (no database); the bench creates and drops its own databases.
    #[arg(
        long,
        env = "BENCH_MYSQL_URL",
        default_value = "mysql://root@127.0.0.1:3306"
    )]
    pub mysql_url: String,
    /// Which scenarios to run (default: all of spread-1, spread-16, spread-64, hot-16).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Where the JSON results go.
    #[arg(long, default_value = "bench-results.json")]
    pub out: PathBuf,
    /// Rounds each scenario is split into: the service and the baseline take turns
    /// (service, baseline, baseline, service, ...), so that a change in the machine's speed
    /// during a scenario weighs on both sides alike.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
}

#[derive(Debug, Clone)]
struct Scenario {
    name: &'static str,
    concurrency: usize,
    orders: usize,
    hot: bool,
}

impl Scenario {
    fn label(&self) -> String {
        format!("{}-{}", self.name, self.concurrency)
    }
}

#[derive(Debug, Default)]
struct RunStats {
    ok: usize,
    failures: std::collections::BTreeMap<String, usize>,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl RunStats {
    /// Adds another round of the same side.
    fn absorb(&mut self, round: RunStats) {
        self.ok += round.ok;
        for (code, n) in round.failures {
            *self.failures.entry(code).or_default() += n;
        }
        self.latencies.extend(round.latencies);
        self.latencies.sort();
        self.elapsed += round.elapsed;
    }

    fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * (self.latencies.len() - 1) as f64).round() as usize;
        self.latencies[rank.min(self.latencies.len() - 1)]
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let base: MySqlConnectOptions = args.mysql_url.parse().context("BENCH_MYSQL_URL")?;
    let names = [
        "shop_bench_order",
        "shop_bench_inventory",
        "shop_base_order",
        "shop_base_inventory",
    ];
    testkit::mysql::recreate_databases(&base, &names, "BENCH_MYSQL_URL").await?;
    let url = |db: &str| format!("{}/{db}", args.mysql_url.trim_end_matches('/'));

    let logs = std::env::temp_dir().join(format!("shop-bench-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;
    println!("process logs in {}", logs.display());
    let mut stack =
        BenchStack::start(&logs, url("shop_bench_order"), url("shop_bench_inventory")).await?;
    let outcome = run_scenarios(
        &args,
        &mut stack,
        &url("shop_base_order"),
        &url("shop_base_inventory"),
    )
    .await;
    stack.stop().await;
    // The broker's store preallocates its commit log (1.5 GB): runs would fill the disk
    // (and a broker on a full disk refuses to start). The logs stay.
    if let Err(e) = std::fs::remove_dir_all(logs.join("store")) {
        eprintln!("bench: the broker's store in {} stays: {e}", logs.display());
    }
    outcome
}

/// The broker and both services as processes.
struct BenchStack {
    broker: Proc,
    inventory: Proc,
    order: Proc,
    order_client: OrderClient<Channel>,
    inventory_client: InventoryClient<Channel>,
    /// order_srv's and inventory_srv's `/metrics`, for the per-step latency breakdown.
    metrics: Vec<String>,
    /// The MySQL server, when it runs on this machine: its CPU counts on both sides.
    database_pid: Option<String>,
}

impl BenchStack {
    async fn start(logs: &Path, order_db: String, inventory_db: String) -> anyhow::Result<Self> {
        // Pay timeouts far beyond the run: no order closes while it is measured.
        let parts = Parts::new(logs, order_db, inventory_db, Duration::from_secs(3600))?
            .quiet_production_timing();
        let broker = parts.broker().await?;
        // Retried until the broker has registered with the name server.
        testkit::broker::create_topics(&parts.namesrv(), &testkit::SYSTEM_TOPICS, 4).await?;
        let inventory = parts.inventory(false).await?;
        let order = parts.order_with(None).await?;
        Ok(Self {
            broker,
            inventory,
            order,
            order_client: OrderClient::connect(parts.order_addr()).await?,
            inventory_client: InventoryClient::connect(parts.inventory_addr()).await?,
            metrics: vec![parts.order_metrics_addr(), parts.inventory_metrics_addr()],
            database_pid: crate::procs::pid_named(&["mariadbd", "mysqld"]),
        })
    }

    /// CPU time so far of order_srv, inventory_srv, the broker, this process and MySQL.
    fn cpu(&self) -> Cpu {
        let of = |pid: &str| crate::procs::cpu_time_of(pid).unwrap_or_default();
        Cpu([
            self.order.cpu_time().unwrap_or_default(),
            self.inventory.cpu_time().unwrap_or_default(),
            self.broker.cpu_time().unwrap_or_default(),
            of("self"),
            self.database_pid.as_deref().map(of).unwrap_or_default(),
        ])
    }

    async fn stop(mut self) {
        self.order.stop(Duration::from_secs(20)).await;
        self.inventory.stop(Duration::from_secs(20)).await;
        self.broker.stop(Duration::from_secs(20)).await;
    }
}

const HOT_GOODS: i32 = 1_000_000;

/// CPU seconds of order_srv, inventory_srv, the broker, the bench process and MySQL.
#[derive(Debug, Clone, Copy)]
struct Cpu([Duration; 5]);

impl Cpu {
    fn since(self, before: Cpu) -> [f64; 5] {
        std::array::from_fn(|i| self.0[i].saturating_sub(before.0[i]).as_secs_f64())
    }
}

/// Adds one round's CPU seconds (per process, as [`Cpu::since`] gives them) to a side's.
fn add_round(total: &mut [f64; 5], round: [f64; 5]) {
    for (sum, seconds) in total.iter_mut().zip(round) {
        *sum += seconds;
    }
}

/// One side of a scenario.
#[derive(Debug, Clone, Copy)]
enum Side {
    Service,
    Baseline,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Service => "service",
            Side::Baseline => "baseline",
        }
    }

    /// Who goes first in round `round` (0-based): the sides take turns, so the rounds run
    /// service, baseline, baseline, service, service, ... and neither side always runs
    /// right after the other.
    fn order_of_round(round: usize) -> [Side; 2] {
        if round.is_multiple_of(2) {
            [Side::Service, Side::Baseline]
        } else {
            [Side::Baseline, Side::Service]
        }
    }
}

async fn run_scenarios(
    args: &BenchArgs,
    stack: &mut BenchStack,
    base_order_url: &str,
    base_inventory_url: &str,
) -> anyhow::Result<()> {
    // The baseline's databases: the same schema, the same pool size as a service.
    let base_order = service_db::connect(base_order_url.parse()?, 32).await?;
    order_srv::MIGRATOR.run(&base_order).await?;
    let base_inventory = service_db::connect(base_inventory_url.parse()?, 32).await?;
    inventory_srv::MIGRATOR.run(&base_inventory).await?;

    println!("seeding {} goods", args.goods);
    for id in (1..=args.goods).chain([HOT_GOODS]) {
        let price_cents = 100 + i64::from(id % 500);
        stack
            .order_client
            .upsert_goods(pb::Goods {
                id,
                name: format!("goods {id}"),
                price_cents,
            })
            .await?;
        stack
            .inventory_client
            .set_inv(inv::SetInvRequest {
                goods_id: id,
                stocks: 10_000_000,
            })
            .await?;
        sqlx::query("INSERT INTO goods (id, name, price_cents) VALUES (?, ?, ?)")
            .bind(id)
            .bind(format!("goods {id}"))
            .bind(price_cents)
            .execute(&base_order)
            .await?;
        sqlx::query("INSERT INTO inventory (goods_id, stocks) VALUES (?, 10000000)")
            .bind(id)
            .execute(&base_inventory)
            .await?;
    }

    let scenarios = [
        Scenario {
            name: "spread",
            concurrency: 1,
            orders: (args.orders / 4).max(1),
            hot: false,
        },
        Scenario {
            name: "spread",
            concurrency: 16,
            orders: args.orders,
            hot: false,
        },
        Scenario {
            name: "spread",
            concurrency: 64,
            orders: args.orders,
            hot: false,
        },
        Scenario {
            name: "hot",
            concurrency: 16,
            orders: args.orders,
            hot: true,
        },
    ];
    let selected: Vec<&Scenario> = scenarios
        .iter()
        .filter(|s| args.only.is_empty() || args.only.contains(&s.label()))
        .collect();
    if selected.is_empty() {
        bail!(
            "--only matches no scenario; they are: {}",
            scenarios
                .iter()
                .map(Scenario::label)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut rows = Vec::new();
    println!(
        "\n{:<8} {:>3} {:>6} | {:>9} {:>6} {:>6} {:>6} {:>7} {:>5} | {:>9} {:>6} {:>6} | {:>5} | cpu ms/order svc base | svc cpu s: order inv broker bench mysql",
        "scenario",
        "c",
        "orders",
        "svc ord/s",
        "p50",
        "p90",
        "p99",
        "max",
        "fail",
        "base ord/s",
        "p50",
        "p99",
        "ratio"
    );
    for (index, scenario) in selected.into_iter().enumerate() {
        let first_user = (index as i64 + 1) * 10_000_000;
        if scenario.hot {
            stack
                .inventory_client
                .set_inv(inv::SetInvRequest {
                    goods_id: HOT_GOODS,
                    stocks: scenario.orders as i32,
                })
                .await?;
            sqlx::query("UPDATE inventory SET stocks = ? WHERE goods_id = ?")
                .bind(scenario.orders as i32)
                .bind(HOT_GOODS)
                .execute(&base_inventory)
                .await?;
        }
        let lines = |user: i64| cart_lines(user, args.goods, scenario.hot);
        fill_carts(stack, &base_order, first_user, scenario.orders, &lines).await?;

        // Progress on stderr (the table goes to stdout): marks where a profiler can attach.
        let label = scenario.label();
        // No round without an order (a toy run may have fewer orders than rounds).
        let rounds = (args.rounds as usize).min(scenario.orders).max(1);
        let steps_before = steps::scrape(&stack.metrics).await?;
        let mut steps = Vec::new();
        let (mut service, mut baseline) = (RunStats::default(), RunStats::default());
        let (mut cpu, mut baseline_cpu) = ([0.0; 5], [0.0; 5]);
        for round in 0..rounds {
            let orders = round * scenario.orders / rounds..(round + 1) * scenario.orders / rounds;
            for side in Side::order_of_round(round) {
                let mark = |event: &str| {
                    eprintln!(
                        "bench: {label} {} {event} (round {} of {rounds})",
                        side.name(),
                        round + 1
                    );
                };
                mark("start");
                let before = stack.cpu();
                match side {
                    Side::Service => {
                        let client = stack.order_client.clone();
                        let stats = drive(scenario.concurrency, orders.clone(), move |i| {
                            let mut client = client.clone();
                            async move {
                                client
                                    .create_order(pb::CreateOrderRequest {
                                        user_id: first_user + i as i64,
                                        address: "1 Bench Road".into(),
                                        name: "Bench".into(),
                                        mobile: "13800000000".into(),
                                        post: String::new(),
                                        request_id: String::new(),
                                    })
                                    .await
                                    .map(|_| ())
                                    .map_err(|s| format!("{:?}", s.code()))
                            }
                        })
                        .await;
                        // The round's CPU and a profile's window (scripts/profile-bench)
                        // end with the last answer; the END_TRANSACTIONs still on their
                        // way (sent after it) finish before the baseline's turn.
                        add_round(&mut cpu, stack.cpu().since(before));
                        mark("end");
                        service.absorb(stats);
                        steps =
                            steps::settled(&stack.metrics, &steps_before, Duration::from_secs(10))
                                .await?;
                    }
                    Side::Baseline => {
                        let order_pool = base_order.clone();
                        let inventory_pool = base_inventory.clone();
                        let stats = drive(scenario.concurrency, orders.clone(), move |i| {
                            let order_pool = order_pool.clone();
                            let inventory_pool = inventory_pool.clone();
                            async move {
                                baseline_order(&order_pool, &inventory_pool, first_user + i as i64)
                                    .await
                            }
                        })
                        .await;
                        add_round(&mut baseline_cpu, stack.cpu().since(before));
                        mark("end");
                        baseline.absorb(stats);
                    }
                }
            }
        }
        let mut oversell = None;
        if scenario.hot {
            let left = stack
                .inventory_client
                .inv_detail(inv::InvDetailRequest {
                    goods_id: HOT_GOODS,
                })
                .await?
                .into_inner()
                .stocks;
            let sold = scenario.orders as i64 - left;
            if left < 0 || sold != service.ok as i64 {
                bail!(
                    "hot goods: {} orders succeeded but stock went from {} to {left}",
                    service.ok,
                    scenario.orders
                );
            }
            oversell = Some(0);
        }
        // Per order, everything the order cost on this machine: the services, the broker,
        // the load generator and MySQL; the baseline is the bench process and MySQL.
        let per_order = |seconds: f64| seconds * 1000.0 / scenario.orders as f64;
        let service_cpu = per_order(cpu.iter().sum());
        let baseline_cpu_ms = per_order(baseline_cpu[3] + baseline_cpu[4]);
        let ratio = service.per_sec() / baseline.per_sec().max(1e-9);
        println!(
            "{:<8} {:>3} {:>6} | {:>9.0} {:>6.1} {:>6.1} {:>6.1} {:>7.1} {:>5} | {:>9.0} {:>6.1} {:>6.1} | {:>5.2} | {:>6.2} {:>6.2} | {:.1} {:.1} {:.1} {:.1} {:.1}",
            scenario.name,
            scenario.concurrency,
            scenario.orders,
            service.per_sec(),
            ms(service.percentile(50.0)),
            ms(service.percentile(90.0)),
            ms(service.percentile(99.0)),
            ms(service.percentile(100.0)),
            service.failures.values().sum::<usize>(),
            baseline.per_sec(),
            ms(baseline.percentile(50.0)),
            ms(baseline.percentile(99.0)),
            ratio,
            service_cpu,
            baseline_cpu_ms,
            cpu[0],
            cpu[1],
            cpu[2],
            cpu[3],
            cpu[4],
        );
        for (code, n) in &service.failures {
            println!("         service failures {code}: {n}");
        }
        for step in &steps {
            println!(
                "         step {:<17} n={:<6} p50 <= {:>6.2} ms  p90 <= {:>6.2} ms  p99 <= {:>6.2} ms",
                step.name, step.count, step.p50_ms, step.p90_ms, step.p99_ms
            );
        }
        for (code, n) in &baseline.failures {
            println!("         baseline failures {code}: {n}");
        }
        rows.push(json!({
            "scenario": scenario.name,
            "concurrency": scenario.concurrency,
            "orders": scenario.orders,
            "rounds": rounds,
            "service": stats_json(&service),
            "service_steps": steps.iter().map(steps::Step::json).collect::<Vec<_>>(),
            "baseline": stats_json(&baseline),
            "ratio": ratio,
            "oversell": oversell,
            "cpu_seconds": {"order_srv": cpu[0], "inventory_srv": cpu[1], "broker": cpu[2], "bench_client": cpu[3], "mysql": cpu[4]},
            "baseline_cpu_seconds": {"bench": baseline_cpu[3], "mysql": baseline_cpu[4]},
            "cpu_ms_per_order": {"service": service_cpu, "baseline": baseline_cpu_ms},
        }));
    }
    let report = json!({
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "scenarios": rows,
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("\nresults written to {}", args.out.display());
    Ok(())
}

fn stats_json(stats: &RunStats) -> serde_json::Value {
    json!({
        "ok": stats.ok,
        "failures": stats.failures,
        "orders_per_sec": stats.per_sec(),
        "p50_ms": ms(stats.percentile(50.0)),
        "p90_ms": ms(stats.percentile(90.0)),
        "p99_ms": ms(stats.percentile(99.0)),
        "max_ms": ms(stats.percentile(100.0)),
        "elapsed_s": stats.elapsed.as_secs_f64(),
    })
}

/// Two goods per order spread over the catalogue, or one unit of the hot goods.
fn cart_lines(user: i64, goods: i32, hot: bool) -> Vec<(i32, i32)> {
    if hot {
        return vec![(HOT_GOODS, 1)];
    }
    let n = i64::from(goods.max(2));
    let first = (user % n) as i32 + 1;
    let mut second = ((user * 7 + 3) % n) as i32 + 1;
    if second == first {
        second = first % goods.max(2) + 1;
    }
    vec![(first, 1), (second, 2)]
}

/// Fills both carts (the service's, over gRPC, and the baseline's) outside the timing.
async fn fill_carts(
    stack: &BenchStack,
    base_order: &MySqlPool,
    first_user: i64,
    orders: usize,
    lines: &impl Fn(i64) -> Vec<(i32, i32)>,
) -> anyhow::Result<()> {
    let requests: Vec<(i64, i32, i32)> = (0..orders as i64)
        .flat_map(|i| {
            lines(first_user + i)
                .into_iter()
                .map(move |(g, n)| (first_user + i, g, n))
        })
        .collect();
    let results = drive(16, 0..requests.len(), {
        let client = stack.order_client.clone();
        let requests = Arc::new(requests.clone());
        move |i| {
            let mut client = client.clone();
            let (user_id, goods_id, nums) = requests[i];
            async move {
                client
                    .create_cart_item(pb::CreateCartItemRequest {
                        user_id,
                        goods_id,
                        nums,
                        checked: Some(true),
                    })
                    .await
                    .map(|_| ())
                    .map_err(|s| format!("{:?}", s.code()))
            }
        }
    })
    .await;
    if !results.failures.is_empty() {
        bail!("filling carts failed: {:?}", results.failures);
    }
    let mut conn = base_order.acquire().await?;
    for (user_id, goods_id, nums) in requests {
        order_srv::db::insert_cart_line(&mut conn, user_id, goods_id, nums, true).await?;
    }
    Ok(())
}

/// Runs `job(i)` for every `i` in `range` with `concurrency` workers; records each call's
/// latency.
async fn drive<F, Fut>(concurrency: usize, range: Range<usize>, job: F) -> RunStats
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let end = range.end;
    let next = Arc::new(AtomicUsize::new(range.start));
    let stats = Arc::new(Mutex::new(RunStats::default()));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let next = next.clone();
            let stats = stats.clone();
            let job = job.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        return;
                    }
                    let t = Instant::now();
                    let result = job(i).await;
                    let latency = t.elapsed();
                    if let Ok(mut s) = stats.lock() {
                        match result {
                            Ok(()) => {
                                s.ok += 1;
                                s.latencies.push(latency);
                            }
                            Err(code) => *s.failures.entry(code).or_default() += 1,
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    let mut stats = stats
        .lock()
        .map(|mut s| std::mem::take(&mut *s))
        .unwrap_or_default();
    stats.elapsed = started.elapsed();
    stats.latencies.sort();
    stats
}

/// One order's SQL, as the services run it, without gRPC or the broker.
async fn baseline_order(
    order_pool: &MySqlPool,
    inventory_pool: &MySqlPool,
    user_id: i64,
) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| e.to_string();
    let order_sn = format!("B{user_id}");
    // Like order_srv: one order transaction claims the cart before Sell and writes the order.
    let mut tx = order_pool.begin().await.map_err(|e| fail(&e))?;
    let lines = order_srv::create_order::claim_priced_cart(&mut tx, user_id)
        .await
        .map_err(|e| fail(&e))?;
    let items = order_srv::create_order::sell_items(&lines);
    let sell = inventory_srv::domain::SellOrder {
        order_sn: inventory_srv::domain::OrderSn::parse(&order_sn).map_err(|e| fail(&e))?,
        lines: inventory_srv::domain::SellLines::parse(&items).map_err(|e| fail(&e))?,
    };
    inventory_srv::stock::sell(inventory_pool, &sell)
        .await
        .map_err(|e| fail(&e))?;
    let total = order_srv::domain::order_total(lines.iter().map(|l| (l.price_cents, l.nums)))
        .ok_or("total out of range")?;
    let order = order_srv::domain::NewOrder {
        user_id,
        address: "1 Bench Road".into(),
        name: "Bench".into(),
        mobile: "13800000000".into(),
        post: String::new(),
        request_id: None,
    };
    order_srv::db::insert_committed_barrier(&mut tx, &order_sn)
        .await
        .map_err(|e| fail(&e))?;
    let order = order_srv::db::insert_order(&mut tx, &order_sn, &order, total)
        .await
        .map_err(|e| fail(&e))?;
    order_srv::db::insert_order_goods(&mut tx, order.id, &lines)
        .await
        .map_err(|e| fail(&e))?;
    let goods_ids: Vec<i32> = lines.iter().map(|l| l.goods_id).collect();
    order_srv::db::delete_ordered_cart_lines(&mut tx, user_id, &goods_ids)
        .await
        .map_err(|e| fail(&e))?;
    tx.commit().await.map_err(|e| fail(&e))?;
    Ok(())
}
