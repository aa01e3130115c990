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
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::bail;
use proto::{
    inventory::{self as inv, inventory_client::InventoryClient},
    order::order_client::OrderClient,
};
use serde_json::json;
use sqlx::MySqlPool;
use tonic::transport::Channel;

use crate::{
    calls::{self, Stock},
    driver::{Pool, Tickets, ms, percentile},
    history,
    procs::{Parts, Proc, fresh_databases},
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
    /// Also place each scenario's orders through the web gateway (HTTP/JSON with a bearer
    /// token, then the same gRPC): a third side in the rounds, on users of its own, so
    /// the table shows what the gateway adds per order.
    #[arg(long)]
    pub via_gateway: bool,
    /// Past orders seeded on both sides before the scenarios (bulk inserts into every
    /// table an order touches; see `history.rs`); the probes after the scenarios time the
    /// lookups a large history could slow.
    #[arg(long, default_value_t = 0)]
    pub history: u64,
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
    /// One call: its latency when it succeeded, its code when it failed.
    fn record(&mut self, result: Result<(), String>, latency: Duration) {
        match result {
            Ok(()) => {
                self.ok += 1;
                self.latencies.push(latency);
            }
            Err(code) => *self.failures.entry(code).or_default() += 1,
        }
    }

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
        percentile(&self.latencies, p / 100.0)
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let names = [
        "shop_bench_order",
        "shop_bench_inventory",
        "shop_base_order",
        "shop_base_inventory",
    ];
    let (_, [order_db, inventory_db, base_order_db, base_inventory_db]) =
        fresh_databases(&args.mysql_url, names, "BENCH_MYSQL_URL").await?;

    let logs = std::env::temp_dir().join(format!("shop-bench-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;
    println!("process logs in {}", logs.display());
    let service_dbs = [order_db.clone(), inventory_db.clone()];
    let stack = BenchStack::start(&logs, order_db, inventory_db, args.via_gateway).await?;
    let outcome = run_scenarios(
        &args,
        &stack,
        &service_dbs,
        [base_order_db.as_str(), base_inventory_db.as_str()],
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
    /// The gateway with `--via-gateway`: its process, its URL, the key of its tokens.
    gateway: Option<(Proc, String, gateway::auth::Tokens)>,
    /// order_srv's and inventory_srv's `/metrics`, for the per-step latency breakdown.
    metrics: Vec<String>,
    /// The MySQL server, when it runs on this machine: its CPU counts on both sides.
    database_pid: Option<String>,
}

impl BenchStack {
    async fn start(
        logs: &Path,
        order_db: String,
        inventory_db: String,
        via_gateway: bool,
    ) -> anyhow::Result<Self> {
        // Pay timeouts far beyond the run: no order closes while it is measured.
        let parts = Parts::new(logs, order_db, inventory_db, Duration::from_secs(3600))?
            .quiet_production_timing();
        let broker = parts.broker().await?;
        // Retried until the broker has registered with the name server.
        testkit::broker::create_topics(&parts.namesrv(), &testkit::SYSTEM_TOPICS, 4).await?;
        let inventory = parts.inventory(false).await?;
        let order = parts.order_with(None).await?;
        let gateway = if via_gateway {
            let secret = format!("bench-{}-{}", std::process::id(), rand::random::<u64>());
            let secret = format!("{secret:0<40}");
            let proc = parts.gateway(&secret).await?;
            Some((
                proc,
                parts.gateway_url(),
                gateway::auth::Tokens::new(secret.as_bytes(), "shop")?,
            ))
        } else {
            None
        };
        Ok(Self {
            broker,
            inventory,
            order,
            gateway,
            order_client: OrderClient::connect(parts.order_addr()).await?,
            inventory_client: InventoryClient::connect(parts.inventory_addr()).await?,
            metrics: vec![parts.order_metrics_addr(), parts.inventory_metrics_addr()],
            database_pid: crate::procs::pid_named(&["mariadbd", "mysqld"]),
        })
    }

    /// CPU time so far of every process an order runs through.
    fn cpu(&self) -> Cpu {
        let of = |pid: &str| crate::procs::cpu_time_of(pid).unwrap_or_default();
        let seconds = |d: Duration| d.as_secs_f64();
        Cpu {
            order_srv: seconds(self.order.cpu_time().unwrap_or_default()),
            inventory_srv: seconds(self.inventory.cpu_time().unwrap_or_default()),
            broker: seconds(self.broker.cpu_time().unwrap_or_default()),
            bench: seconds(of("self")),
            mysql: seconds(self.database_pid.as_deref().map(of).unwrap_or_default()),
            gateway: seconds(
                self.gateway
                    .as_ref()
                    .and_then(|(proc, ..)| proc.cpu_time())
                    .unwrap_or_default(),
            ),
        }
    }

    async fn stop(mut self) {
        if let Some((proc, ..)) = self.gateway.as_mut() {
            proc.stop(Duration::from_secs(20)).await;
        }
        self.order.stop(Duration::from_secs(20)).await;
        self.inventory.stop(Duration::from_secs(20)).await;
        self.broker.stop(Duration::from_secs(20)).await;
    }
}

const HOT_GOODS: i32 = 1_000_000;

/// CPU seconds of each process an order runs through (the bench process is the load
/// generator, or the whole baseline).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    order_srv: f64,
    inventory_srv: f64,
    broker: f64,
    bench: f64,
    mysql: f64,
    gateway: f64,
}

impl Cpu {
    fn fields(&mut self) -> [&mut f64; 6] {
        [
            &mut self.order_srv,
            &mut self.inventory_srv,
            &mut self.broker,
            &mut self.bench,
            &mut self.mysql,
            &mut self.gateway,
        ]
    }

    /// What was spent between `before` and `self`.
    fn since(mut self, mut before: Cpu) -> Cpu {
        for (now, then) in self.fields().into_iter().zip(before.fields()) {
            *now = (*now - *then).max(0.0);
        }
        self
    }

    /// Adds one round's seconds to a side's.
    fn add(&mut self, mut round: Cpu) {
        for (sum, seconds) in self.fields().into_iter().zip(round.fields()) {
            *sum += *seconds;
        }
    }

    fn total(mut self) -> f64 {
        self.fields().into_iter().map(|s| *s).sum()
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "order_srv": self.order_srv, "inventory_srv": self.inventory_srv,
            "broker": self.broker, "bench_client": self.bench, "mysql": self.mysql,
            "gateway": self.gateway,
        })
    }
}

/// One side of a scenario.
#[derive(Debug, Clone, Copy)]
enum Side {
    /// CreateOrder over gRPC.
    Service,
    /// The same SQL, straight from this process.
    Baseline,
    /// `POST /v1/orders` through the gateway (`--via-gateway`).
    Gateway,
}

/// The gateway side's buyers: this far above the scenario's first user.
const GATEWAY_USERS: i64 = 5_000_000;

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Service => "service",
            Side::Baseline => "baseline",
            Side::Gateway => "gateway",
        }
    }

    /// Who goes first in round `round` (0-based): the sides take turns, so the rounds run
    /// service, (gateway,) baseline, baseline, (gateway,) service, ... and neither side
    /// always runs right after another.
    fn order_of_round(round: usize, via_gateway: bool) -> Vec<Side> {
        let mut sides = vec![Side::Service];
        if via_gateway {
            sides.push(Side::Gateway);
        }
        sides.push(Side::Baseline);
        if !round.is_multiple_of(2) {
            sides.reverse();
        }
        sides
    }
}

async fn run_scenarios(
    args: &BenchArgs,
    stack: &BenchStack,
    [order_url, inventory_url]: &[String; 2],
    [base_order_url, base_inventory_url]: [&str; 2],
) -> anyhow::Result<()> {
    let bench = Bench {
        args,
        stack,
        baseline: Baseline::connect(base_order_url, base_inventory_url).await?,
    };
    bench.seed().await?;
    let service = Baseline::connect(order_url, inventory_url).await?;
    let history = seed_history(args, &service, &bench.baseline).await?;
    let selected = select_scenarios(args)?;
    print_table_header();
    let mut rows = Vec::new();
    for (index, scenario) in selected.iter().enumerate() {
        rows.push(bench.run_scenario(index, scenario).await?);
    }
    let probes = history::probe(
        &history,
        &service.order,
        &service.inventory,
        &stack.order_client,
    )
    .await?;
    print_probes(&history, &probes);
    let report = json!({
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "history": {
            "orders": history.orders,
            "heavy_buyer_orders": history.heavy_orders,
            "seeded_in_s": history.seeded_in.as_secs_f64(),
        },
        "scenarios": rows,
        "probes": probes.iter().map(history::Probe::json).collect::<Vec<_>>(),
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("\nresults written to {}", args.out.display());
    Ok(())
}

/// `--history` past orders on both sides (the same rows), timed.
async fn seed_history(
    args: &BenchArgs,
    service: &Baseline,
    baseline: &Baseline,
) -> anyhow::Result<history::History> {
    println!("seeding {} past orders on each side", args.history);
    let service_side =
        history::seed(&service.order, &service.inventory, args.history, args.goods).await?;
    let baseline_side = history::seed(
        &baseline.order,
        &baseline.inventory,
        args.history,
        args.goods,
    )
    .await?;
    println!(
        "  seeded in {:.1}s (services) and {:.1}s (baseline)",
        service_side.seeded_in.as_secs_f64(),
        baseline_side.seeded_in.as_secs_f64()
    );
    Ok(service_side)
}

fn print_probes(history: &history::History, probes: &[history::Probe]) {
    println!(
        "\nprobes on {} past orders (heavy buyer: {} orders), one call at a time:",
        history.orders, history.heavy_orders
    );
    println!(
        "  {:<28} {:>6} {:>7} {:>9} {:>9} {:>9}",
        "probe", "calls", "failed", "p50 ms", "p99 ms", "max ms"
    );
    for p in probes {
        println!(
            "  {:<28} {:>6} {:>7} {:>9.2} {:>9.2} {:>9.2}",
            p.name, p.calls, p.failed, p.p50_ms, p.p99_ms, p.max_ms
        );
    }
}

/// The scenarios `--only` selects, in their order.
fn select_scenarios(args: &BenchArgs) -> anyhow::Result<Vec<Scenario>> {
    let spread = |concurrency, orders| Scenario {
        name: "spread",
        concurrency,
        orders,
        hot: false,
    };
    let scenarios = [
        spread(1, (args.orders / 4).max(1)),
        spread(16, args.orders),
        spread(64, args.orders),
        Scenario {
            name: "hot",
            concurrency: 16,
            orders: args.orders,
            hot: true,
        },
    ];
    let selected: Vec<Scenario> = scenarios
        .iter()
        .filter(|s| args.only.is_empty() || args.only.contains(&s.label()))
        .cloned()
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
    Ok(selected)
}

fn print_table_header() {
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
}

/// The baseline's databases: the same schema, the same pool size as a service.
struct Baseline {
    order: MySqlPool,
    inventory: MySqlPool,
}

impl Baseline {
    async fn connect(order_url: &str, inventory_url: &str) -> anyhow::Result<Self> {
        let order = service_db::connect(order_url.parse()?, 32).await?;
        order_srv::MIGRATOR.run(&order).await?;
        let inventory = service_db::connect(inventory_url.parse()?, 32).await?;
        inventory_srv::MIGRATOR.run(&inventory).await?;
        Ok(Self { order, inventory })
    }
}

/// A bench run: what to run, the services' side and the baseline's databases.
struct Bench<'a> {
    args: &'a BenchArgs,
    stack: &'a BenchStack,
    baseline: Baseline,
}

/// What a scenario needs besides its carts: the hot goods' stock through order_srv and
/// the gateway users' tokens.
struct Prepared {
    hot_stock: usize,
    gateway_tokens: Arc<Vec<String>>,
}

impl Bench<'_> {
    /// Every goods (and the hot goods) on both sides, with stock no scenario runs out of.
    async fn seed(&self) -> anyhow::Result<()> {
        println!("seeding {} goods", self.args.goods);
        let ids = || (1..=self.args.goods).chain([HOT_GOODS]);
        let price_cents = |id: i32| 100 + i64::from(id % 500);
        calls::seed_goods(
            &mut self.stack.order_client.clone(),
            &mut self.stack.inventory_client.clone(),
            ids().map(|id| (calls::numbered_goods(id, price_cents(id)), 10_000_000)),
            Stock::Set,
        )
        .await?;
        for id in ids() {
            sqlx::query("INSERT INTO goods (id, name, price_cents) VALUES (?, ?, ?)")
                .bind(id)
                .bind(format!("goods {id}"))
                .bind(price_cents(id))
                .execute(&self.baseline.order)
                .await?;
            sqlx::query("INSERT INTO inventory (goods_id, stocks) VALUES (?, 10000000)")
                .bind(id)
                .execute(&self.baseline.inventory)
                .await?;
        }
        Ok(())
    }

    /// One scenario: its carts filled, the sides' turns over the rounds, its lines of the
    /// table printed; returns its JSON row.
    async fn run_scenario(
        &self,
        index: usize,
        scenario: &Scenario,
    ) -> anyhow::Result<serde_json::Value> {
        let first_user = (index as i64 + 1) * 10_000_000;
        let prepared = self.prepare(scenario, first_user).await?;
        let outcome = self.run_rounds(scenario, first_user, &prepared).await?;
        let oversell = if scenario.hot {
            let sold_ok = outcome.service.ok + outcome.via_gateway.ok;
            check_no_oversell(self.stack, prepared.hot_stock, sold_ok).await?
        } else {
            None
        };
        outcome.print(scenario);
        Ok(outcome.json(scenario, oversell, self.stack.gateway.is_some()))
    }

    /// The hot goods' stock on both sides, and every side's carts, outside the timing.
    async fn prepare(&self, scenario: &Scenario, first_user: i64) -> anyhow::Result<Prepared> {
        let stack = self.stack;
        // The hot goods hold one unit per order of the sides that order through order_srv.
        let hot_stock = scenario.orders * if stack.gateway.is_some() { 2 } else { 1 };
        if scenario.hot {
            stack
                .inventory_client
                .clone()
                .set_inv(inv::SetInvRequest {
                    goods_id: HOT_GOODS,
                    stocks: i32::try_from(hot_stock)?,
                })
                .await?;
            sqlx::query("UPDATE inventory SET stocks = ? WHERE goods_id = ?")
                .bind(scenario.orders as i32)
                .bind(HOT_GOODS)
                .execute(&self.baseline.inventory)
                .await?;
        }
        let base_order = &self.baseline.order;
        let lines = |user: i64| cart_lines(user, self.args.goods, scenario.hot);
        fill_carts(stack, base_order, first_user, scenario.orders, &lines).await?;
        let gateway_tokens = match &stack.gateway {
            Some((_, _, tokens)) => {
                let first = first_user + GATEWAY_USERS;
                fill_carts(stack, base_order, first, scenario.orders, &lines).await?;
                let ttl = Duration::from_secs(6 * 3600);
                let tokens: Vec<String> = (0..scenario.orders as i64)
                    .map(|i| tokens.issue(first + i, ttl).map(|(token, _)| token))
                    .collect::<Result<_, _>>()
                    .map_err(|p| anyhow::anyhow!("signing a token: {}", p.body().detail))?;
                Arc::new(tokens)
            }
            None => Arc::new(Vec::new()),
        };
        Ok(Prepared {
            hot_stock,
            gateway_tokens,
        })
    }

    /// The scenario's orders split into rounds; in each, every side takes its turn.
    async fn run_rounds(
        &self,
        scenario: &Scenario,
        first_user: i64,
        prepared: &Prepared,
    ) -> anyhow::Result<Outcome> {
        // No round without an order (a toy run may have fewer orders than rounds).
        let rounds = (self.args.rounds as usize).min(scenario.orders).max(1);
        let steps_before = steps::scrape(&self.stack.metrics).await?;
        let mut outcome = Outcome::new(scenario.orders, rounds);
        for round in 0..rounds {
            let orders = round * scenario.orders / rounds..(round + 1) * scenario.orders / rounds;
            for side in Side::order_of_round(round, self.stack.gateway.is_some()) {
                let turn = Turn {
                    label: scenario.label(),
                    side,
                    round,
                    rounds,
                };
                let load = Load {
                    concurrency: scenario.concurrency,
                    orders: orders.clone(),
                    first_user,
                };
                let (stats, cpu) = self.take_turn(&turn, load, prepared).await?;
                outcome.add(side, stats, cpu);
                if matches!(side, Side::Service) {
                    outcome.steps =
                        steps::settled(&self.stack.metrics, &steps_before, Duration::from_secs(10))
                            .await?;
                }
            }
        }
        Ok(outcome)
    }

    /// One side's orders of a round, and the CPU they took.
    async fn take_turn(
        &self,
        turn: &Turn,
        load: Load,
        prepared: &Prepared,
    ) -> anyhow::Result<(RunStats, Cpu)> {
        let stack = self.stack;
        turn.mark("start");
        let before = stack.cpu();
        let stats = match turn.side {
            Side::Service => place_over_grpc(stack, load).await,
            Side::Gateway => place_over_http(stack, load, prepared.gateway_tokens.clone()).await?,
            Side::Baseline => {
                let (order, inventory) = (&self.baseline.order, &self.baseline.inventory);
                place_as_baseline(order.clone(), inventory.clone(), load).await
            }
        };
        // The round's CPU and a profile's window (scripts/profile-bench) end with the last
        // answer; the END_TRANSACTIONs still on their way (sent after it) finish before the
        // next side's turn.
        let cpu = stack.cpu().since(before);
        turn.mark("end");
        Ok((stats, cpu))
    }
}

/// One side's turn in a round.
struct Turn {
    label: String,
    side: Side,
    round: usize,
    rounds: usize,
}

impl Turn {
    /// Progress on stderr (the table goes to stdout): marks where a profiler can attach.
    fn mark(&self, event: &str) {
        eprintln!(
            "bench: {} {} {event} (round {} of {})",
            self.label,
            self.side.name(),
            self.round + 1,
            self.rounds
        );
    }
}

/// A scenario's result: each side's calls and CPU over all its rounds, and the steps
/// order_srv took.
struct Outcome {
    orders: usize,
    rounds: usize,
    service: RunStats,
    cpu: Cpu,
    baseline: RunStats,
    baseline_cpu: Cpu,
    via_gateway: RunStats,
    gateway_cpu: Cpu,
    steps: Vec<steps::Step>,
}

impl Outcome {
    fn new(orders: usize, rounds: usize) -> Self {
        Self {
            orders,
            rounds,
            service: RunStats::default(),
            cpu: Cpu::default(),
            baseline: RunStats::default(),
            baseline_cpu: Cpu::default(),
            via_gateway: RunStats::default(),
            gateway_cpu: Cpu::default(),
            steps: Vec::new(),
        }
    }

    /// Adds one round of `side`.
    fn add(&mut self, side: Side, stats: RunStats, cpu: Cpu) {
        let (total, total_cpu) = match side {
            Side::Service => (&mut self.service, &mut self.cpu),
            Side::Baseline => (&mut self.baseline, &mut self.baseline_cpu),
            Side::Gateway => (&mut self.via_gateway, &mut self.gateway_cpu),
        };
        total.absorb(stats);
        total_cpu.add(cpu);
    }

    /// Per order, everything the order cost on this machine: the services, the broker,
    /// the load generator and MySQL; the baseline is the bench process and MySQL.
    fn per_order(&self, seconds: f64) -> f64 {
        seconds * 1000.0 / self.orders as f64
    }

    fn service_cpu_ms(&self) -> f64 {
        self.per_order(self.cpu.total())
    }

    fn baseline_cpu_ms(&self) -> f64 {
        self.per_order(self.baseline_cpu.bench + self.baseline_cpu.mysql)
    }

    fn ratio(&self) -> f64 {
        self.service.per_sec() / self.baseline.per_sec().max(1e-9)
    }

    /// The scenario's lines of the table.
    fn print(&self, scenario: &Scenario) {
        let (service, baseline, cpu) = (&self.service, &self.baseline, &self.cpu);
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
            self.ratio(),
            self.service_cpu_ms(),
            self.baseline_cpu_ms(),
            cpu.order_srv,
            cpu.inventory_srv,
            cpu.broker,
            cpu.bench,
            cpu.mysql,
        );
        for (code, n) in &service.failures {
            println!("         service failures {code}: {n}");
        }
        for step in &self.steps {
            println!(
                "         step {:<17} n={:<6} p50 <= {:>6.2} ms  p90 <= {:>6.2} ms  p99 <= {:>6.2} ms",
                step.name, step.count, step.p50_ms, step.p90_ms, step.p99_ms
            );
        }
        for (code, n) in &baseline.failures {
            println!("         baseline failures {code}: {n}");
        }
    }

    /// The scenario's row of the JSON report; with the gateway, its line of the table too.
    fn json(
        &self,
        scenario: &Scenario,
        oversell: Option<i64>,
        via_gateway: bool,
    ) -> serde_json::Value {
        let (service, gateway, gateway_cpu) = (&self.service, &self.via_gateway, &self.gateway_cpu);
        let gateway_json = via_gateway.then(|| {
            print_gateway_row(
                service,
                gateway,
                self.service_cpu_ms(),
                self.per_order(gateway_cpu.total()),
                self.per_order(gateway_cpu.gateway),
            );
            json!({
                "stats": stats_json(gateway),
                "cpu_seconds": gateway_cpu.json(),
                "cpu_ms_per_order": self.per_order(gateway_cpu.total()),
                "gateway_process_cpu_ms_per_order": self.per_order(gateway_cpu.gateway),
                "added_p50_ms": ms(gateway.percentile(50.0)) - ms(service.percentile(50.0)),
                "added_p99_ms": ms(gateway.percentile(99.0)) - ms(service.percentile(99.0)),
            })
        });
        json!({
            "scenario": scenario.name,
            "concurrency": scenario.concurrency,
            "orders": scenario.orders,
            "rounds": self.rounds,
            "service": stats_json(service),
            "service_steps": self.steps.iter().map(steps::Step::json).collect::<Vec<_>>(),
            "baseline": stats_json(&self.baseline),
            "ratio": self.ratio(),
            "oversell": oversell,
            "cpu_seconds": self.cpu.json(),
            "baseline_cpu_seconds": {"bench": self.baseline_cpu.bench, "mysql": self.baseline_cpu.mysql},
            "cpu_ms_per_order": {"service": self.service_cpu_ms(), "baseline": self.baseline_cpu_ms()},
            "via_gateway": gateway_json,
        })
    }
}

/// One side's share of a round: `orders` of the scenario's users, `concurrency` at once.
struct Load {
    concurrency: usize,
    orders: Range<usize>,
    first_user: i64,
}

async fn place_over_grpc(stack: &BenchStack, load: Load) -> RunStats {
    let client = stack.order_client.clone();
    let first_user = load.first_user;
    drive(load.concurrency, load.orders, move |i| {
        let mut client = client.clone();
        async move {
            let user_id = first_user + i as i64;
            client
                .create_order(calls::order_request(user_id, "1 Bench Road", "Bench", ""))
                .await
                .map(|_| ())
                .map_err(|s| format!("{:?}", s.code()))
        }
    })
    .await
}

/// `POST /v1/orders` as user `first_user + GATEWAY_USERS + i`, with that user's token.
async fn place_over_http(
    stack: &BenchStack,
    load: Load,
    tokens: Arc<Vec<String>>,
) -> anyhow::Result<RunStats> {
    let Some((_, url, _)) = &stack.gateway else {
        bail!("no gateway in this run");
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(load.concurrency.max(1))
        .build()?;
    let orders = format!("{url}/v1/orders");
    Ok(drive(load.concurrency, load.orders, move |i| {
        let (http, orders, tokens) = (http.clone(), orders.clone(), tokens.clone());
        async move {
            let token = tokens.get(i).ok_or("no token for this user")?;
            let answer = http
                .post(&orders)
                .bearer_auth(token)
                .json(&json!({"address": "1 Bench Road", "name": "Bench", "mobile": "13800000000"}))
                .send()
                .await
                .map_err(|e| format!("http: {e}"))?;
            match answer.status().as_u16() {
                201 => Ok(()),
                status => Err(format!("HTTP {status}")),
            }
        }
    })
    .await)
}

async fn place_as_baseline(
    order_pool: MySqlPool,
    inventory_pool: MySqlPool,
    load: Load,
) -> RunStats {
    let first_user = load.first_user;
    drive(load.concurrency, load.orders, move |i| {
        let order_pool = order_pool.clone();
        let inventory_pool = inventory_pool.clone();
        async move { baseline_order(&order_pool, &inventory_pool, first_user + i as i64).await }
    })
    .await
}

/// The hot goods' stock went down by exactly the orders that succeeded.
async fn check_no_oversell(
    stack: &BenchStack,
    stock: usize,
    sold_ok: usize,
) -> anyhow::Result<Option<i64>> {
    let left = stack
        .inventory_client
        .clone()
        .inv_detail(inv::InvDetailRequest {
            goods_id: HOT_GOODS,
        })
        .await?
        .into_inner()
        .stocks;
    let sold = stock as i64 - left;
    if left < 0 || sold != sold_ok as i64 {
        bail!("hot goods: {sold_ok} orders succeeded but stock went from {stock} to {left}");
    }
    Ok(Some(0))
}

/// What the gateway added, next to the same scenario over gRPC.
fn print_gateway_row(
    service: &RunStats,
    gateway: &RunStats,
    service_cpu: f64,
    gateway_cpu: f64,
    gateway_process: f64,
) {
    println!(
        "         via gateway: {:>6.0} ord/s  p50 {:>5.1}  p90 {:>5.1}  p99 {:>5.1} ms  fail {}  | added p50 {:+.2} ms, p99 {:+.2} ms | cpu ms/order {:.2} (gRPC {:.2}; gateway process {:.2})",
        gateway.per_sec(),
        ms(gateway.percentile(50.0)),
        ms(gateway.percentile(90.0)),
        ms(gateway.percentile(99.0)),
        gateway.failures.values().sum::<usize>(),
        ms(gateway.percentile(50.0)) - ms(service.percentile(50.0)),
        ms(gateway.percentile(99.0)) - ms(service.percentile(99.0)),
        gateway_cpu,
        service_cpu,
        gateway_process,
    );
    for (code, n) in &gateway.failures {
        println!("         gateway failures {code}: {n}");
    }
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
                    .create_cart_item(calls::cart_line(user_id, goods_id, nums))
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
    let stats = Arc::new(Mutex::new(RunStats::default()));
    let started = Instant::now();
    let workers = Pool::start(concurrency, &Tickets::range(range), |_, tickets| {
        let (stats, job) = (stats.clone(), job.clone());
        async move {
            while let Some(i) = tickets.take() {
                let t = Instant::now();
                let result = job(i).await;
                let latency = t.elapsed();
                if let Ok(mut s) = stats.lock() {
                    s.record(result, latency);
                }
            }
        }
    });
    workers.join().await;
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
