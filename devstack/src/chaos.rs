//! `devstack chaos`: the broker and both services as separate OS processes, concurrent
//! CreateOrders, payments and pay timeouts, while order_srv is crashed at protocol steps
//! (failpoints armed through `FAILPOINTS`) or SIGKILLed, inventory_srv is killed and the
//! broker restarted. Then it waits for quiescence and audits I1-I6.
//!
//! With `--partitions` the schedule also cuts each link (order_srv and inventory_srv to
//! MySQL, order_srv to inventory_srv, the services to the broker) for `--cut-for`,
//! order_srv's MySQL once more for `--long-cut`, and keeps an order_srv that crashed
//! after Sell away for `--away-for` (past the broker's check window: the reconciler
//! returns that stock). Per cut the summary adds the slowest CreateOrder answer, the time
//! from the heal to the first success and the WARN/ERROR lines each service logged; a
//! CreateOrder slower than its budget (plus a second), a first success later than 5 s
//! after a heal, or more than 10 such lines per process in a cut is a violation
//! (`partition` says how the cuts are made; root and nftables needed).
//!
//! order_srv must be built with the `failpoints` feature (the debug binaries `scripts/test`
//! builds are; for release: `--features order_srv/failpoints`).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use proto::{inventory::inventory_client::InventoryClient, order::order_client::OrderClient};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use tonic::transport::Channel;

use testkit::audit::{AuditInput, Liveness, audit, report};

use crate::{
    calls::{self, Stock},
    driver::{Pool, Tickets},
    partition::{self, Link, Partitions, Side},
    procs::{Parts, Proc, fresh_databases},
};

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
    /// order_srv replicas; the load goes to them round-robin, as a gateway spreads it.
    /// With two or more, the schedule adds a rolling restart of all of them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub order_replicas: u8,
    /// inventory_srv replicas (every order_srv balances its Sells over them).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub inventory_replicas: u8,
    /// Master brokers, each a process (the first with the name server). With two or
    /// more, the schedule adds stopping one for --broker-stop and restarting it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=4))]
    pub brokers: u8,
    /// How long a stopped broker stays down.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub broker_stop: Duration,
    /// With two or more replicas of a service, how long a SIGKILLed replica stays down:
    /// the others serve its callers and take over its consumer queues meanwhile (the
    /// summary shows how soon). With one replica it restarts at once.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub down_for: Duration,
    /// Cut links too (nftables; needs root): each link for --cut-for, order_srv's MySQL
    /// for --long-cut, and an order_srv crashed after Sell kept away for --away-for.
    #[arg(long)]
    pub partitions: bool,
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub cut_for: Duration,
    /// How many times each link is cut for --cut-for (and order_srv's MySQL for
    /// --long-cut).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=10))]
    pub cut_rounds: u8,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub long_cut: Duration,
    /// Longer than the chaos broker's check window (30 check-backs a second apart, after
    /// a 1 s transaction timeout): the broker gives up on that order's half message.
    #[arg(long, default_value = "45s", value_parser = humantime::parse_duration)]
    pub away_for: Duration,
    /// inventory_srv's reconciler horizon in this run (longer than the check window).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub reconcile_horizon: Duration,
}

/// How long after a fault its window goes on: the answers, consumer lags and log lines
/// counted for it.
const WINDOW_AFTER: Duration = Duration::from_secs(5);

/// order_srv's budget in chaos runs (its default, `ORDER_CREATE_ORDER_BUDGET`).
const CREATE_ORDER_BUDGET: Duration = Duration::from_secs(5);
/// A heal must be followed by a successful CreateOrder within this.
const FIRST_SUCCESS_WITHIN: Duration = Duration::from_secs(5);
/// WARN/ERROR lines a service may log during one cut.
const WARNINGS_PER_CUT: usize = 10;

/// One fault; the number is the replica it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    OrderAt(usize, &'static str),
    OrderSigkill(usize),
    Inventory(usize),
    /// inventory_srv aborts in its reback consumer, before the reback transaction.
    InventoryInConsumer(usize),
    /// The name server and the first broker, restarted at once.
    Broker,
    /// Another master stopped for a while, then restarted on its store.
    BrokerStop(usize),
    /// Every order_srv in turn: SIGTERM, wait until it exits, start it, next.
    RollingRestart,
    /// A link silent both ways for a while, then healed.
    Partition(Link, Duration),
    /// order_srv crashes after Sell and stays away this long: past the broker's check
    /// window, the reconciler returns the stock.
    OrderAwayAfterSell(usize, Duration),
}

impl Kill {
    fn label(self) -> String {
        match self {
            Kill::OrderAt(_, point) => format!("order_srv crash at {point}"),
            Kill::OrderSigkill(_) => "order_srv SIGKILL".into(),
            Kill::Inventory(_) => "inventory_srv SIGKILL".into(),
            Kill::InventoryInConsumer(_) => "inventory_srv crash at inventory.before_reback".into(),
            Kill::Broker => "broker restart (with the name server)".into(),
            Kill::BrokerStop(_) => "broker stop, then restart".into(),
            Kill::RollingRestart => "rolling restart of every order_srv".into(),
            Kill::Partition(link, cut) => format!("{link} cut for {cut:?}"),
            Kill::OrderAwayAfterSell(_, away) => {
                format!("order_srv crash after Sell, away {away:?}")
            }
        }
    }
}

const GOODS: i32 = 20;
const ORDER_DB: &str = "shop_chaos_order";
const INVENTORY_DB: &str = "shop_chaos_inventory";

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
    /// Every CreateOrder answer: when the call started, when it was answered, and its
    /// gRPC code ("Ok" for success).
    answers: Vec<(Instant, Instant, String)>,
    /// The same for every other call that reached order_srv (cart adds, payments).
    other_answers: Vec<(Instant, Instant, String)>,
}

impl Tally {
    fn fail(&mut self, what: String) {
        *self.failed.entry(what).or_default() += 1;
    }
}

/// A span of wall-clock time (the services' logs are stamped with it).
type WallSpan = (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>);

/// A fault's span of time, and for a cut, when it healed (wall clock, for the logs).
struct Window {
    label: String,
    from: Instant,
    to: Instant,
    cut: Option<WallSpan>,
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut stack = Stack::start(&args).await?;
    let kills = schedule(&args, &mut rng);
    let pay_seed = rng.random::<u64>();
    let placed = place_under_faults(&mut stack, &args, &kills, pay_seed, started).await?;
    let placed_at = started.elapsed();
    let settled = settle(&stack, &args, &placed, started).await?;
    let quiescent_after = settled.quiet_at.saturating_sub(placed_at);
    stack.stop().await;

    print_counts(&args, &kills, &placed, &settled);
    let budget_violations = print_windows(&placed, &settled.lags, &stack.parts, started);
    print_run_end(&settled, placed_at, quiescent_after);
    for violation in &budget_violations {
        println!("time budget violated: {violation}");
    }
    if settled.verdicts.iter().all(|v| v.passed()) && budget_violations.is_empty() {
        println!("\nchaos: 0 violations");
        let _ = std::fs::remove_dir_all(&stack.work);
        Ok(())
    } else {
        bail!("chaos: invariants violated (see above)")
    }
}

/// The run's processes and what they run on: the parts (to restart a process), the
/// processes themselves (the faults replace them), and the cuts with `--partitions`.
struct Stack {
    work: PathBuf,
    parts: Parts,
    procs: Procs,
    partitions: Option<Partitions>,
}

impl Stack {
    /// Fresh databases; the broker(s), the inventory_srv and order_srv replicas as
    /// processes (in cgroups, with `--partitions`), and the goods seeded.
    async fn start(args: &ChaosArgs) -> anyhow::Result<Self> {
        let (server, [order_db, inventory_db]) =
            fresh_databases(&args.mysql_url, [ORDER_DB, INVENTORY_DB], "CHAOS_MYSQL_URL").await?;
        let work = std::env::temp_dir().join(format!("shop-chaos-{}", std::process::id()));
        std::fs::create_dir_all(work.join("store"))?;
        println!(
            "chaos seed {} — process logs in {}",
            args.seed,
            work.display()
        );
        let parts = Parts::new(&work, order_db, inventory_db, args.pay_timeout)?
            .replicas(
                usize::from(args.order_replicas),
                usize::from(args.inventory_replicas),
                usize::from(args.brokers),
            )?
            .with_inventory_env(
                "INVENTORY_RECONCILE_HORIZON",
                humantime::format_duration(args.reconcile_horizon).to_string(),
            )
            .with_inventory_env("INVENTORY_RECONCILE_INTERVAL", "5s".into());
        let (parts, partitions) = if args.partitions {
            let (parts, partitions) = in_cgroups(parts, server.get_port()).await?;
            (parts, Some(partitions))
        } else {
            (parts, None)
        };
        let procs = Procs::start(&parts).await?;
        let stack = Self {
            work,
            parts,
            procs,
            partitions,
        };
        seed(
            &stack.parts.order_addr(),
            &stack.parts.inventory_addr(),
            stock_per_goods(args.orders),
        )
        .await?;
        Ok(stack)
    }

    /// Inflicts one fault and returns its window once it is over.
    async fn inflict(&mut self, kill: Kill, args: &ChaosArgs) -> anyhow::Result<Window> {
        let (from, wall_from) = (Instant::now(), chrono::Utc::now());
        execute(
            kill,
            &self.parts,
            &mut self.procs,
            args,
            self.partitions.as_ref(),
        )
        .await?;
        Ok(Window {
            label: kill.label(),
            from,
            to: Instant::now(),
            cut: matches!(kill, Kill::Partition(..)).then(|| (wall_from, chrono::Utc::now())),
        })
    }

    /// Stops every process (the brokers last) and removes the cuts' set-up.
    async fn stop(&mut self) {
        let procs = &mut self.procs;
        for proc in procs
            .orders
            .iter_mut()
            .chain(procs.inventories.iter_mut())
            .chain(procs.brokers.iter_mut().rev())
        {
            proc.stop(Duration::from_secs(20)).await;
        }
        if let Some(partitions) = self.partitions.take() {
            partitions.tear_down().await;
        }
    }
}

/// Sets up the cuts and puts the services into their cgroups.
async fn in_cgroups(parts: Parts, mysql_port: u16) -> anyhow::Result<(Parts, Partitions)> {
    let ports = partition::Ports {
        mysql: mysql_port,
        order: parts.order_ports(),
        inventory: parts.inventory_ports(),
        broker: parts.broker_ports(),
    };
    let partitions = Partitions::set_up(ports).await?;
    let parts = parts.in_cgroups(
        partitions.procs_file(Side::Order),
        partitions.procs_file(Side::Inventory),
    );
    Ok((parts, partitions))
}

/// What the buyers did while the faults ran.
struct Placed {
    tally: Tally,
    /// Indices the buyers took: each buyer takes one more than it places.
    taken: usize,
    windows: Vec<Window>,
}

/// The buyers place orders while the killer follows their progress: each fault once its
/// share of the orders has been started.
async fn place_under_faults(
    stack: &mut Stack,
    args: &ChaosArgs,
    kills: &[Kill],
    pay_seed: u64,
    started: Instant,
) -> anyhow::Result<Placed> {
    let tally = Arc::new(Mutex::new(Tally::default()));
    // The callers go on past --orders until the last fault is over (calls that fail fast
    // during a cut would otherwise use them up before the schedule ends).
    let faults_done = Arc::new(AtomicBool::new(false));
    let tickets = {
        let (orders, faults_done) = (args.orders, faults_done.clone());
        Tickets::from(0, move |i| {
            i < orders || !faults_done.load(Ordering::SeqCst)
        })
    };
    let buyers = start_buyers(args, stack.parts.order_addrs(), pay_seed, &tickets, &tally);
    let every = (args.orders / (kills.len() + 1)).max(1);
    let mut windows = Vec::new();
    for (k, kill) in kills.iter().enumerate() {
        let due = every * (k + 1);
        while tickets.taken() < due && !buyers.is_finished() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "[{:>5.1}s] kill {}: {}",
            started.elapsed().as_secs_f64(),
            k + 1,
            kill.label()
        );
        let window = stack.inflict(*kill, args).await?;
        wait_for_calm(&tally, window.to).await;
        windows.push(window);
    }
    faults_done.store(true, Ordering::SeqCst);
    buyers.join().await;
    let tally = std::mem::take(
        &mut *tally
            .lock()
            .map_err(|_| anyhow::anyhow!("tally poisoned"))?,
    );
    Ok(Placed {
        tally,
        taken: tickets.taken(),
        windows,
    })
}

/// `--concurrency` buyers, each placing the orders of the indices it takes, then waiting
/// for the payments it left retrying.
fn start_buyers(
    args: &ChaosArgs,
    order_addrs: Vec<String>,
    pay_seed: u64,
    tickets: &Tickets,
    tally: &Arc<Mutex<Tally>>,
) -> Pool {
    let order_addrs = Arc::new(order_addrs);
    let pay_timeout = args.pay_timeout;
    Pool::start(args.concurrency, tickets, |w, tickets| {
        let (order_addrs, tally) = (order_addrs.clone(), tally.clone());
        async move {
            let mut rng = StdRng::seed_from_u64(pay_seed ^ w as u64);
            let mut payments = Vec::new();
            while let Some(i) = tickets.take() {
                payments.extend(place_one(&order_addrs, i, &mut rng, pay_timeout, &tally).await);
            }
            for payment in payments {
                let _ = payment.await;
            }
        }
    })
}

/// The next fault starts once orders succeed again (or a minute passed), and not before
/// the end of this one's window (5 s after it), so each fault's recovery and log lines
/// are measured on their own.
async fn wait_for_calm(tally: &Mutex<Tally>, fault_ended: Instant) {
    let calm = Instant::now() + Duration::from_secs(60);
    while Instant::now() < calm && !succeeded_since(tally, fault_ended) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep_until((fault_ended + WINDOW_AFTER).into()).await;
}

/// The system once quiet: the audit's verdicts and what the rows and the broker show.
struct Settled {
    verdicts: Vec<testkit::audit::Verdict>,
    /// When the audit held (since the run started).
    quiet_at: Duration,
    rows: RowCounts,
    lags: ConsumerWork,
    timer: Option<mq::TimerBacklog>,
}

/// Quiescence: every half message resolved, every unpaid order closed, every reback
/// applied. I2 compares the databases, so wait until the audit holds twice in a row (or
/// the deadline passes, and report what is still wrong).
async fn settle(
    stack: &Stack,
    args: &ChaosArgs,
    placed: &Placed,
    started: Instant,
) -> anyhow::Result<Settled> {
    let order_pool = sqlx::MySqlPool::connect(&stack.parts.order_db_url()).await?;
    let inventory_pool = sqlx::MySqlPool::connect(&stack.parts.inventory_db_url()).await?;
    let stock = stock_per_goods(args.orders);
    let input = AuditInput {
        initial_stock: Some((1..=GOODS).map(|g| (g, i64::from(stock))).collect()),
        acknowledged: placed.tally.acknowledged.clone(),
        liveness: Some(Liveness {
            reconcile_horizon: Some(args.reconcile_horizon),
            ..Liveness::new(args.pay_timeout)
        }),
    };
    let verdicts = audit_once_quiet(
        &order_pool,
        &inventory_pool,
        &input,
        Instant::now() + args.settle_within + args.pay_timeout + args.reconcile_horizon,
    )
    .await?;
    let quiet_at = started.elapsed();
    let rows = RowCounts::of(&order_pool, &inventory_pool).await?;
    let lags = consumer_lags(&order_pool, started, args.pay_timeout).await?;
    let timer = {
        let mq = mq::Mq::new(&mq::MqConfig::new(stack.parts.namesrv()), "chaos")?;
        let backlog = crate::soak::timer_backlog(&mq).await;
        mq.shutdown().await;
        backlog
    };
    Ok(Settled {
        verdicts,
        quiet_at,
        rows,
        lags,
        timer,
    })
}

/// Rows that tell how the run ended.
struct RowCounts {
    closed: i64,
    returned: i64,
    tombstones: i64,
    aborted: i64,
}

impl RowCounts {
    async fn of(
        order_pool: &sqlx::MySqlPool,
        inventory_pool: &sqlx::MySqlPool,
    ) -> anyhow::Result<Self> {
        let returned = "SELECT COUNT(*) FROM stock_sell_detail WHERE status = 'RETURNED'";
        Ok(Self {
            closed: count(
                order_pool,
                "SELECT COUNT(*) FROM order_info WHERE status = 'TRADE_CLOSED'",
            )
            .await?,
            returned: count(inventory_pool, returned).await?,
            tombstones: count(
                inventory_pool,
                "SELECT COUNT(*) FROM stock_sell_detail WHERE status = 'RETURNED' AND detail = '[]'",
            )
            .await?,
            aborted: count(
                order_pool,
                "SELECT COUNT(*) FROM tx_barrier WHERE outcome = 'aborted'",
            )
            .await?,
        })
    }
}

/// The number `sql` selects (a `COUNT(*)`).
pub(crate) async fn count(pool: &sqlx::MySqlPool, sql: &'static str) -> anyhow::Result<i64> {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .with_context(|| sql.to_owned())
}

/// The summary's head: the calls' outcomes and the faults.
fn print_counts(args: &ChaosArgs, kills: &[Kill], placed: &Placed, settled: &Settled) {
    let t = &placed.tally;
    println!(
        "\nchaos summary (seed {}; {} order_srv, {} inventory_srv, {} brokers):",
        args.seed, args.order_replicas, args.inventory_replicas, args.brokers
    );
    println!(
        "  orders attempted       {}",
        placed.taken.saturating_sub(args.concurrency.max(1))
    );
    println!("  acknowledged (OK)      {}", t.acknowledged.len());
    for (code, n) in &t.failed {
        println!("  failed {code:<16} {n}");
    }
    println!(
        "  paid / payment refused {} / {}",
        t.paid, t.payment_refused
    );
    println!("  closed by pay timeout  {}", settled.rows.closed);
    println!("  kills                  {}", kills.len());
    let mut kills_by_point: BTreeMap<&str, usize> = BTreeMap::new();
    for window in &placed.windows {
        *kills_by_point.entry(&window.label).or_default() += 1;
    }
    for (label, n) in &kills_by_point {
        println!("    {label:<40} {n}");
    }
}

/// Per fault window: the CreateOrder answers, how late the consumers were, and for a cut
/// what the buyers saw and the services logged. Returns the cuts' budget violations.
fn print_windows(
    placed: &Placed,
    lags: &ConsumerWork,
    parts: &Parts,
    started: Instant,
) -> Vec<String> {
    println!(
        "  per fault window (from its start to 5 s after its end): CreateOrder answers; how late \
         the consumers handled what fell due in it (pay timeouts closing orders, stock returns \
         after a close)"
    );
    let mut budget_violations = Vec::new();
    for window in &placed.windows {
        print_window(window, &placed.tally, lags, started);
        if let Some(wall) = window.cut {
            budget_violations.extend(print_cut(window, wall, &placed.tally, parts));
        }
    }
    budget_violations
}

fn print_window(window: &Window, t: &Tally, lags: &ConsumerWork, started: Instant) {
    let Window {
        label, from, to, ..
    } = window;
    let to = &(*to + WINDOW_AFTER);
    let seconds = to.duration_since(*from).as_secs_f64().max(0.001);
    let mut codes: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, code) in t.answers.iter().filter(|(_, at, _)| at >= from && at <= to) {
        *codes.entry(code.as_str()).or_default() += 1;
    }
    let ok = codes.remove("Ok").unwrap_or(0);
    let span = (
        from.duration_since(started).as_secs_f64(),
        to.duration_since(started).as_secs_f64(),
    );
    println!(
        "    {label:<40} {seconds:>5.1}s  {:>6.1} ack/s  failed {codes:?}",
        ok as f64 / seconds,
    );
    println!(
        "    {:<40} timeouts {}, stock returns {}",
        "",
        Lags::of(&lags.timeouts, span),
        Lags::of(&lags.rebacks, span),
    );
}

/// What the buyers saw of a cut and the WARN/ERROR lines each service logged in its
/// window; returns the budgets it broke.
fn print_cut(
    window: &Window,
    (wall_from, wall_to): WallSpan,
    t: &Tally,
    parts: &Parts,
) -> Vec<String> {
    let label = &window.label;
    let cut = Cut::of(t, window.from, window.to);
    let warnings: Vec<(String, usize)> = parts
        .service_logs()
        .into_iter()
        .map(|(name, log)| {
            let until = wall_to + WINDOW_AFTER;
            (name, partition::warnings_between(&log, wall_from, until))
        })
        .collect();
    println!("    {:<40} {cut}; WARN/ERROR lines {warnings:?}", "");
    let mut violations = cut.violations(label);
    for (name, lines) in warnings {
        if lines > WARNINGS_PER_CUT {
            violations.push(format!(
                "{label}: {name} logged {lines} WARN/ERROR lines (at most {WARNINGS_PER_CUT})"
            ));
        }
    }
    violations
}

/// The summary's tail: the consumers over the whole run, the broker, the rows, the
/// times, the audit.
fn print_run_end(settled: &Settled, placed_at: Duration, quiescent_after: Duration) {
    let (lags, rows) = (&settled.lags, &settled.rows);
    println!(
        "  consumer lag over the whole run: timeouts {}, stock returns {}",
        Lags::of(&lags.timeouts, (f64::MIN, f64::MAX)),
        Lags::of(&lags.rebacks, (f64::MIN, f64::MAX)),
    );
    println!(
        "  broker timer, once quiet: {}",
        settled
            .timer
            .as_ref()
            .map_or_else(|| "no answer".to_owned(), |t| t.to_string())
    );
    println!(
        "  check-backs that found no commit ('aborted' barrier rows)  {}",
        rows.aborted
    );
    println!(
        "  stock returns applied  {} (of which tombstones {})",
        rows.returned, rows.tombstones
    );
    println!("  orders placed in       {:.1}s", placed_at.as_secs_f64());
    println!(
        "  quiescent after        {:.1}s",
        quiescent_after.as_secs_f64()
    );
    println!("\naudit:");
    print!("{}", report(&settled.verdicts));
}

/// The audit once the system is quiet: every unpaid order closed and every invariant
/// holding twice in a row, a second apart (I2 compares two databases that settle at
/// different moments); or, at `deadline`, the last verdicts, to report what is wrong.
pub(crate) async fn audit_once_quiet(
    order_db: &sqlx::MySqlPool,
    inventory_db: &sqlx::MySqlPool,
    input: &AuditInput,
    deadline: Instant,
) -> anyhow::Result<Vec<testkit::audit::Verdict>> {
    let mut passes = 0;
    loop {
        let verdicts = audit(order_db, inventory_db, input).await?;
        let unpaid = count(
            order_db,
            "SELECT COUNT(*) FROM order_info WHERE status = 'WAIT_BUYER_PAY'",
        )
        .await?;
        passes = if verdicts.iter().all(|v| v.passed()) && unpaid == 0 {
            passes + 1
        } else {
            0
        };
        if passes >= 2 || Instant::now() >= deadline {
            return Ok(verdicts);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Whether a CreateOrder succeeded after `since`.
fn succeeded_since(tally: &Mutex<Tally>, since: Instant) -> bool {
    tally.lock().is_ok_and(|t| {
        t.answers
            .iter()
            .any(|(_, answered, code)| *answered >= since && code == "Ok")
    })
}

/// What the buyers saw of one cut: the slowest answer to a CreateOrder the cut met (in
/// flight when it began, or started before the heal), the same for their other calls
/// (cart adds, payments), and how soon after the heal a CreateOrder succeeded.
struct Cut {
    calls: usize,
    slowest: Duration,
    other_calls: usize,
    other_slowest: Duration,
    first_success: Option<Duration>,
}

impl Cut {
    fn of(t: &Tally, cut: Instant, healed: Instant) -> Self {
        let met = |answers: &[(Instant, Instant, String)]| -> Vec<Duration> {
            answers
                .iter()
                .filter(|(started, answered, _)| *answered > cut && *started < healed)
                .map(|(started, answered, _)| answered.duration_since(*started))
                .collect()
        };
        let (creates, others) = (met(&t.answers), met(&t.other_answers));
        Self {
            calls: creates.len(),
            slowest: creates.iter().copied().max().unwrap_or_default(),
            other_calls: others.len(),
            other_slowest: others.iter().copied().max().unwrap_or_default(),
            first_success: t
                .answers
                .iter()
                .filter(|(_, answered, code)| *answered >= healed && code == "Ok")
                .map(|(_, answered, _)| answered.duration_since(healed))
                .min(),
        }
    }

    fn violations(&self, label: &str) -> Vec<String> {
        let mut violations = Vec::new();
        let slack = Duration::from_secs(1);
        if self.slowest > CREATE_ORDER_BUDGET + slack {
            violations.push(format!(
                "{label}: a CreateOrder took {:.1?} (budget {CREATE_ORDER_BUDGET:?})",
                self.slowest
            ));
        }
        if self.other_slowest > observe::grpc::HANDLER_WITHIN + slack {
            violations.push(format!(
                "{label}: a cart or payment call took {:.1?} (handlers are cut at {:?})",
                self.other_slowest,
                observe::grpc::HANDLER_WITHIN
            ));
        }
        match self.first_success {
            Some(after) if after <= FIRST_SUCCESS_WITHIN => {}
            Some(after) => violations.push(format!(
                "{label}: first success {after:.1?} after the heal (at most {FIRST_SUCCESS_WITHIN:?})"
            )),
            None => violations.push(format!("{label}: no success after the heal")),
        }
        violations
    }
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} CreateOrders met the cut, slowest answered in {:.1}s; {} other calls, slowest \
             {:.1}s; first success {} after the heal",
            self.calls,
            self.slowest.as_secs_f64(),
            self.other_calls,
            self.other_slowest.as_secs_f64(),
            self.first_success.map_or_else(
                || "never".to_owned(),
                |d| format!("{:.1}s", d.as_secs_f64())
            )
        )
    }
}

/// When the consumers did their work, read from the rows they wrote (both databases live
/// on one MariaDB, so one clock): every order closed by its pay timeout as (when it fell
/// due, how late it closed), and every stock return of a closed order as (when the order
/// closed, how much later the stock came back). Times are seconds since `started`.
struct ConsumerWork {
    timeouts: Vec<(f64, f64)>,
    rebacks: Vec<(f64, f64)>,
}

async fn consumer_lags(
    pool: &sqlx::MySqlPool,
    started: Instant,
    pay_timeout: Duration,
) -> anyhow::Result<ConsumerWork> {
    let now: String = sqlx::query_scalar("SELECT CAST(NOW(6) AS CHAR)")
        .fetch_one(pool)
        .await?;
    let now_since_start = started.elapsed().as_secs_f64();
    let seconds = |micros: i64| micros as f64 / 1e6;
    let timeouts: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT TIMESTAMPDIFF(MICROSECOND, ?, created_at), \
                TIMESTAMPDIFF(MICROSECOND, created_at, updated_at) \
         FROM order_info WHERE status = 'TRADE_CLOSED'",
    )
    .bind(&now)
    .fetch_all(pool)
    .await?;
    let rebacks: Vec<(i64, i64)> = sqlx::query_as(&format!(
        "SELECT TIMESTAMPDIFF(MICROSECOND, ?, o.updated_at), \
                TIMESTAMPDIFF(MICROSECOND, o.updated_at, d.updated_at) \
         FROM {ORDER_DB}.order_info o JOIN {INVENTORY_DB}.stock_sell_detail d \
           ON d.order_sn = o.order_sn \
         WHERE o.status = 'TRADE_CLOSED' AND d.status = 'RETURNED'"
    ))
    .bind(&now)
    .fetch_all(pool)
    .await?;
    let pay_timeout = pay_timeout.as_secs_f64();
    Ok(ConsumerWork {
        timeouts: timeouts
            .into_iter()
            .map(|(created, open)| {
                let due = now_since_start + seconds(created) + pay_timeout;
                (due, (seconds(open) - pay_timeout).max(0.0))
            })
            .collect(),
        rebacks: rebacks
            .into_iter()
            .map(|(closed, late)| (now_since_start + seconds(closed), seconds(late).max(0.0)))
            .collect(),
    })
}

/// How late the work that fell due in a span of time was done.
struct Lags {
    count: usize,
    p50: f64,
    max: f64,
}

impl Lags {
    fn of(work: &[(f64, f64)], (from, to): (f64, f64)) -> Self {
        let mut lags: Vec<f64> = work
            .iter()
            .filter(|(due, _)| (from..=to).contains(due))
            .map(|(_, lag)| *lag)
            .collect();
        lags.sort_by(f64::total_cmp);
        Self {
            count: lags.len(),
            p50: lags.get(lags.len() / 2).copied().unwrap_or(0.0),
            max: lags.last().copied().unwrap_or(0.0),
        }
    }
}

impl std::fmt::Display for Lags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count == 0 {
            return write!(f, "none due");
        }
        write!(
            f,
            "{} due, late p50 {:.1}s max {:.1}s",
            self.count, self.p50, self.max
        )
    }
}

/// The running processes, by kind (the faults replace them).
struct Procs {
    brokers: Vec<Proc>,
    inventories: Vec<Proc>,
    orders: Vec<Proc>,
}

impl Procs {
    /// The brokers, then every inventory_srv, then every order_srv.
    async fn start(parts: &Parts) -> anyhow::Result<Self> {
        let mut brokers = Vec::new();
        for i in 0..parts.brokers() {
            brokers.push(parts.broker_at(i).await?);
        }
        // Retried until every broker has registered with the name server.
        testkit::broker::create_topics_on(
            &parts.namesrv(),
            &testkit::SYSTEM_TOPICS,
            4,
            parts.brokers(),
        )
        .await?;
        let mut inventories = Vec::new();
        for i in 0..parts.inventory_replicas() {
            inventories.push(parts.inventory_at(i, false).await?);
        }
        let mut orders = Vec::new();
        for i in 0..parts.order_replicas() {
            orders.push(parts.order_at(i, None).await?);
        }
        Ok(Self {
            brokers,
            inventories,
            orders,
        })
    }
}

/// The faults, in a seeded order: at least one broker restart and one inventory kill;
/// with replicas, a rolling restart of every order_srv; with several brokers, a broker
/// stop; the rest order_srv crashes at protocol steps or SIGKILLs, on random replicas.
fn schedule(args: &ChaosArgs, rng: &mut StdRng) -> Vec<Kill> {
    let (orders, inventories) = (
        usize::from(args.order_replicas),
        usize::from(args.inventory_replicas),
    );
    let mut kills = vec![
        Kill::Broker,
        Kill::Inventory(rng.random_range(0..inventories)),
    ];
    if orders > 1 {
        kills.push(Kill::RollingRestart);
    }
    if args.brokers > 1 {
        kills.push(Kill::BrokerStop(
            rng.random_range(1..usize::from(args.brokers)),
        ));
    }
    let mut required = kills.len();
    if args.partitions {
        for _ in 0..args.cut_rounds {
            kills.extend(Link::ALL.map(|link| Kill::Partition(link, args.cut_for)));
            kills.push(Kill::Partition(Link::OrderMysql, args.long_cut));
        }
        kills.push(Kill::OrderAwayAfterSell(
            rng.random_range(0..orders),
            args.away_for,
        ));
        required = kills.len();
    }
    while kills.len() < args.kills.max(required) {
        let order = rng.random_range(0..orders);
        let extra = if args.partitions { 13 } else { 10 };
        kills.push(match rng.random_range(0..extra) {
            0..=6 => Kill::OrderAt(order, CRASH_POINTS[rng.random_range(0..CRASH_POINTS.len())]),
            7 => Kill::InventoryInConsumer(rng.random_range(0..inventories)),
            8 | 9 => Kill::OrderSigkill(order),
            _ => Kill::Partition(
                Link::ALL[rng.random_range(0..Link::ALL.len())],
                Duration::from_secs(rng.random_range(3..=20)),
            ),
        });
    }
    kills.shuffle(rng);
    kills
}

/// Inflicts one fault and returns once it is over: the processes back, the link healed.
async fn execute(
    kill: Kill,
    parts: &Parts,
    procs: &mut Procs,
    args: &ChaosArgs,
    partitions: Option<&Partitions>,
) -> anyhow::Result<()> {
    // A replica that others stand in for stays dead a while, so they must take over.
    let down_for = |replicas: &[Proc]| {
        if replicas.len() > 1 {
            args.down_for
        } else {
            Duration::ZERO
        }
    };
    match kill {
        Kill::Partition(link, cut_for) => {
            // The processes keep running.
            let partitions = partitions.context("a cut without --partitions")?;
            partitions.cut(link).await?;
            tokio::time::sleep(cut_for).await;
            partitions.heal().await?;
        }
        Kill::OrderAt(i, point) => {
            let order = slot(&mut procs.orders, i)?;
            let armed = format!("{point}=1*return(*:crash)");
            crash_armed(order, parts.order_at(i, Some(armed))).await?;
            *order = parts.order_at(i, None).await?;
        }
        Kill::OrderAwayAfterSell(i, away) => {
            let order = slot(&mut procs.orders, i)?;
            let armed = "order.after_sell=1*return(*:crash)".to_owned();
            crash_armed(order, parts.order_at(i, Some(armed))).await?;
            tokio::time::sleep(away).await;
            *order = parts.order_at(i, None).await?;
        }
        Kill::OrderSigkill(i) => {
            slot(&mut procs.orders, i)?.kill().await;
            tokio::time::sleep(down_for(&procs.orders)).await;
            *slot(&mut procs.orders, i)? = parts.order_at(i, None).await?;
        }
        Kill::Inventory(i) => {
            slot(&mut procs.inventories, i)?.kill().await;
            tokio::time::sleep(down_for(&procs.inventories)).await;
            *slot(&mut procs.inventories, i)? = parts.inventory_at(i, false).await?;
        }
        Kill::InventoryInConsumer(i) => {
            let inventory = slot(&mut procs.inventories, i)?;
            crash_armed(inventory, parts.inventory_at(i, true)).await?;
            *inventory = parts.inventory_at(i, false).await?;
        }
        Kill::Broker => {
            let broker = slot(&mut procs.brokers, 0)?;
            broker.stop(Duration::from_secs(30)).await;
            *broker = parts.broker_at(0).await?;
        }
        Kill::BrokerStop(i) => {
            let broker = slot(&mut procs.brokers, i)?;
            broker.stop(Duration::from_secs(30)).await;
            tokio::time::sleep(args.broker_stop).await;
            *broker = parts.broker_at(i).await?;
        }
        Kill::RollingRestart => {
            for i in 0..procs.orders.len() {
                let order = slot(&mut procs.orders, i)?;
                order.stop(Duration::from_secs(30)).await;
                *order = parts.order_at(i, None).await?;
            }
        }
    }
    Ok(())
}

/// Replaces `proc` with the one `armed` starts (a failpoint armed), waits (bounded) for
/// the armed step to be hit and the process to die, and kills what is left; the caller
/// brings it back unarmed.
async fn crash_armed(
    proc: &mut Proc,
    armed: impl Future<Output = anyhow::Result<Proc>>,
) -> anyhow::Result<()> {
    proc.kill().await;
    *proc = armed.await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while proc.is_running() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proc.kill().await;
    Ok(())
}

fn slot(procs: &mut [Proc], i: usize) -> anyhow::Result<&mut Proc> {
    procs
        .get_mut(i)
        .with_context(|| format!("no replica {i} to fault"))
}

/// Goods 1 to 20, each priced at 100 cents times its id, with `stock` units; every call
/// with a deadline.
pub(crate) async fn seed(order_addr: &str, inventory_addr: &str, stock: i32) -> anyhow::Result<()> {
    let mut order = OrderClient::new(calls::channel(order_addr.to_owned()).await?);
    let mut inventory = InventoryClient::new(calls::channel(inventory_addr.to_owned()).await?);
    let goods = (1..=GOODS).map(|id| (calls::numbered_goods(id, 100 * i64::from(id)), stock));
    calls::seed_goods(&mut order, &mut inventory, goods, Stock::Set).await
}

/// One user: fill the cart, CreateOrder (retrying while order_srv is down), maybe pay.
/// Returns the task that goes on trying to pay, if the first attempt failed.
async fn place_one(
    order_addrs: &[String],
    i: usize,
    rng: &mut StdRng,
    pay_timeout: Duration,
    tally: &Arc<Mutex<Tally>>,
) -> Option<tokio::task::JoinHandle<()>> {
    let mut buyer = Buyer::new(order_addrs, i, rng, pay_timeout);
    buyer.fill_cart(tally).await?;
    let order_sn = buyer.create_order(tally).await?;
    if !buyer.pays {
        return None;
    }
    buyer.pay(order_sn, tally).await
}

/// One user's choices (the goods, whether and when to pay) and the replica it calls next.
struct Buyer<'a> {
    i: usize,
    user_id: i64,
    order_addrs: &'a [String],
    turn: usize,
    goods: Vec<i32>,
    nums: i32,
    pays: bool,
    pay_after: Duration,
    /// The buyer gives up on order_srv after this.
    deadline: Instant,
}

impl<'a> Buyer<'a> {
    fn new(order_addrs: &'a [String], i: usize, rng: &mut StdRng, pay_timeout: Duration) -> Self {
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
        Self {
            i,
            user_id: 1_000 + i as i64,
            order_addrs,
            turn: i,
            goods,
            nums,
            pays,
            pay_after,
            deadline: Instant::now() + Duration::from_secs(120),
        }
    }

    /// Round-robin over the replicas, as a gateway spreads calls; a replica that refuses
    /// the connection (it is restarting) passes the call to the next one.
    fn next_addr(&mut self) -> String {
        self.turn = self.turn.wrapping_add(1);
        replica(self.order_addrs, self.turn)
    }

    /// A client of the next replica that accepts a connection, tried every 200 ms;
    /// `None` once the deadline passed.
    async fn client(&mut self) -> Option<OrderClient<Channel>> {
        loop {
            if let Some(client) = connect(self.next_addr()).await {
                return Some(client);
            }
            if Instant::now() > self.deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The cart: retried while order_srv refuses connections (it may be restarting). An
    /// add that order_srv answers with an error (its MySQL cut off) is not retried: the
    /// buyer goes on to CreateOrder with what the cart holds, so CreateOrders meet such
    /// cuts too (with an empty cart it is refused, counted under its code). `None` when
    /// order_srv stayed unreachable.
    async fn fill_cart(&mut self, tally: &Mutex<Tally>) -> Option<()> {
        for goods_id in self.goods.clone() {
            let Some(mut client) = self.client().await else {
                note(tally, |t| t.fail("cart unreachable".into()));
                return None;
            };
            let started = Instant::now();
            let added = client
                .create_cart_item(calls::cart_line(self.user_id, goods_id, self.nums))
                .await;
            let code = code_of(&added);
            note(tally, |t| t.other_answers.push(answer(started, code)));
            if added.is_err() {
                note(tally, |t| t.fail(format!("cart {code:?}")));
                break;
            }
        }
        Some(())
    }

    /// CreateOrder once: a call cut by a crash is exactly what chaos is about (it sends no
    /// request_id, so a retry would be a new order; the request_id retry has tests of its
    /// own). Connection refused (nothing sent) is retried. A call unanswered within
    /// [`calls::CALL_WITHIN`] fails `Cancelled` like any other: its outcome is unknown,
    /// and the audit does not count on its order. The order_sn when it succeeded.
    async fn create_order(&mut self, tally: &Mutex<Tally>) -> Option<String> {
        let Some(mut client) = self.client().await else {
            note(tally, |t| t.fail("order_srv unreachable".into()));
            return None;
        };
        let request = calls::order_request(self.user_id, "1 Chaos Lane", "Chaos", "");
        let started = Instant::now();
        let placed = client.create_order(request).await;
        note(tally, |t| t.answers.push(answer(started, code_of(&placed))));
        match placed {
            Ok(order) => {
                let order_sn = order.into_inner().order_sn;
                note(tally, |t| t.acknowledged.push(order_sn.clone()));
                Some(order_sn)
            }
            Err(status) => {
                note(tally, |t| t.fail(format!("{:?}", status.code())));
                None
            }
        }
    }

    /// Pays after its delay. The first attempt here; if it fails (order_srv away or its
    /// MySQL cut off), the retries go on beside the buyer's next orders, as a payment
    /// provider's would: the task that makes them.
    async fn pay(
        mut self,
        order_sn: String,
        tally: &Arc<Mutex<Tally>>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        tokio::time::sleep(self.pay_after).await;
        if pay_once(self.next_addr(), &order_sn, tally).await.is_some() {
            return None;
        }
        let (addrs, tally) = (self.order_addrs.to_vec(), tally.clone());
        let (i, deadline) = (self.i, self.deadline);
        Some(tokio::spawn(async move {
            let mut turn = i;
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                turn = turn.wrapping_add(1);
                if pay_once(replica(&addrs, turn), &order_sn, &tally)
                    .await
                    .is_some()
                {
                    return;
                }
                if Instant::now() > deadline {
                    note(&tally, |t| t.fail("payment unanswered".into()));
                    return;
                }
            }
        }))
    }
}

/// Changes the tally (unless a buyer panicked holding it).
fn note(tally: &Mutex<Tally>, change: impl FnOnce(&mut Tally)) {
    if let Ok(mut t) = tally.lock() {
        change(&mut t);
    }
}

/// A call's code ("Ok" for success).
fn code_of<T>(result: &Result<T, tonic::Status>) -> tonic::Code {
    result
        .as_ref()
        .map_or_else(|s| s.code(), |_| tonic::Code::Ok)
}

/// An answer to a call that started at `started`, received now.
fn answer(started: Instant, code: tonic::Code) -> (Instant, Instant, String) {
    (started, Instant::now(), format!("{code:?}"))
}

/// Replica `turn` (round-robin) of `addrs`.
fn replica(addrs: &[String], turn: usize) -> String {
    addrs
        .get(turn % addrs.len().max(1))
        .cloned()
        .unwrap_or_default()
}

/// A client of order_srv at `addr`, or `None` when it does not accept a connection within
/// 2 s. Every call on it gives up after [`calls::CALL_WITHIN`].
async fn connect(addr: String) -> Option<OrderClient<Channel>> {
    calls::channel(addr).await.ok().map(OrderClient::new)
}

/// One payment call; `Some` when it settled the payment (paid, or refused because the
/// order was closed first), `None` when it should be tried again.
async fn pay_once(addr: String, order_sn: &str, tally: &Mutex<Tally>) -> Option<()> {
    let mut client = connect(addr).await?;
    let started = Instant::now();
    let paid = client
        .update_order_status(calls::payment(order_sn, "chaos"))
        .await;
    let mut t = tally.lock().ok()?;
    let code = code_of(&paid);
    t.other_answers.push(answer(started, code));
    match code {
        tonic::Code::Ok => t.paid += 1,
        tonic::Code::FailedPrecondition => t.payment_refused += 1,
        _ => return None,
    }
    Some(())
}
