//! `devstack soak`: a steady stream of orders for a given time, at a given rate, against
//! the broker and both services as processes, with a short pay timeout and short
//! retention so that every background path runs many times: CreateOrder, payments,
//! cancels, pay timeouts and their rebacks, the overdue sweep, the reconciler, the purges
//! and the settle job. Sampled while it runs (orders/s, CreateOrder p50/p99, unpaid and
//! overdue orders, who closed what, RSS and open files of every process, MySQL
//! connections, rows per table, the broker's store, rows the purges deleted); at the end,
//! once quiet, the I1-I6 audit, how late the pay timeouts came, and the trends after the
//! warm-up (RSS and open files per process, the bounded tables' rows, p99 first vs last).
//!
//! It fails (exit code 1) when an invariant is violated, when the overdue sweep had to
//! close an order (a pay-timeout message did not come in time), when the pay-timeout
//! closes' p99 lateness is above `--max-lateness`, when the stream fell short of `--rate`,
//! when a purge (barrier rows, RETURNED details, settled deductions) deleted nothing, or
//! when a run of 15 minutes or more ends with a p99 above 120% of its start's.
//! `scripts/test` runs it at 100 orders/s for 2 minutes with a 30 s pay timeout.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use proto::order::{self as pb, order_client::OrderClient};
use serde_json::json;
use sqlx::MySqlPool;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use testkit::audit::{AuditInput, Liveness, close_report, report};

use crate::{
    calls,
    chaos::count,
    driver::{ms, percentile},
    procs::{Parts, Proc, fresh_databases},
};

#[derive(Debug, Clone, clap::Parser)]
pub struct SoakArgs {
    /// How long orders are placed.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Orders started per second (open loop: a slow answer does not slow the stream,
    /// up to --concurrency calls in flight).
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Most orders in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// The services' pay timeout.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub pay_timeout: Duration,
    /// Every n-th order is paid at once (the rest wait for their pay timeout).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub pay_every: u32,
    /// Every n-th order (offset by one from the paid ones) is cancelled by its buyer.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..))]
    pub cancel_every: u32,
    /// order_srv's ORDER_OVERDUE_SWEEP_GRACE: unpaid this long past the pay timeout, an
    /// order is closed by the sweep (and the run fails: its message did not come).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub sweep_grace: Duration,
    /// The largest p99 lateness of the pay-timeout closes past their timeout.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub max_lateness: Duration,
    /// How long tx_barrier rows and RETURNED sell details are kept (ORDER_BARRIER_RETENTION,
    /// INVENTORY_TOMBSTONE_RETENTION); the reconciler's horizon is half of it.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub retention: Duration,
    /// INVENTORY_SETTLE_AFTER: a paid order's deduction, once confirmed by the reconciler,
    /// is settled (its detail row deleted) this much later.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub settle_after: Duration,
    /// How often the purges, the settle job and the reconciler run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub purge_every: Duration,
    /// How often a sample line is printed.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub sample_every: Duration,
    /// How long to wait for quiescence after the last order, beyond the pay timeout.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub settle_within: Duration,
    /// Where the samples and the result go as JSON (default: soak.json in the run's
    /// directory, printed).
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(
        long,
        env = "SOAK_MYSQL_URL",
        default_value = "mysql://root@127.0.0.1:3306"
    )]
    pub mysql_url: String,
}

const GOODS: i32 = 20;
/// A run this long has a 5-minute warm-up and must hold its p99 (see `problems`).
const LONG_RUN: Duration = Duration::from_secs(15 * 60);
const ORDER_DB: &str = "shop_soak_order";
const INVENTORY_DB: &str = "shop_soak_inventory";

/// One CreateOrder: when it was answered, how long it took, and whether it succeeded.
struct Call {
    at: Instant,
    latency: Duration,
    ok: bool,
}

#[derive(Default)]
struct Calls {
    calls: Vec<Call>,
    failed: std::collections::BTreeMap<String, usize>,
    payments_refused: usize,
    cancels_refused: usize,
}

pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    let soak = Soak::start(&args).await?;
    let stream = soak.drive(&args).await?;
    let findings = soak.settle(&args, stream).await?;
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| soak.work.join("soak.json"));
    soak.stop().await;
    findings.print(&args);
    let problems = findings.problems(&args);
    let result = findings.json(&args, &problems);
    std::fs::write(&json_path, serde_json::to_string_pretty(&result)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("\nsamples and result: {}", json_path.display());
    if problems.is_empty() {
        println!("soak: passed");
        Ok(())
    } else {
        bail!("soak failed:\n  {}", problems.join("\n  "))
    }
}

/// The run's processes and the connections it watches them through.
struct Soak {
    work: PathBuf,
    parts: Parts,
    broker: Proc,
    inventory: Proc,
    order: Proc,
    stock: i32,
    order_pool: MySqlPool,
    inventory_pool: MySqlPool,
    client: OrderClient<Channel>,
    mq: mq::Mq,
    calls: Arc<Mutex<Calls>>,
}

impl Soak {
    /// Fresh databases, the broker and both services as processes, the goods seeded.
    async fn start(args: &SoakArgs) -> anyhow::Result<Self> {
        let (_, [order_db, inventory_db]) =
            fresh_databases(&args.mysql_url, [ORDER_DB, INVENTORY_DB], "SOAK_MYSQL_URL").await?;
        let work = std::env::temp_dir().join(format!("shop-soak-{}", std::process::id()));
        std::fs::create_dir_all(&work)?;
        println!(
            "soak: {} orders/s for {:?}, pay timeout {:?} (every {}th paid, every {}th cancelled); \
             logs in {}",
            args.rate,
            args.duration,
            args.pay_timeout,
            args.pay_every,
            args.cancel_every,
            work.display()
        );
        let parts = Parts::new(&work, order_db, inventory_db, args.pay_timeout)?
            .with_order_env(
                "ORDER_OVERDUE_SWEEP_GRACE",
                format!("{}ms", args.sweep_grace.as_millis()),
            )
            .with_order_env("ORDER_OVERDUE_SWEEP_INTERVAL", "5s".into())
            .with_order_env("ORDER_BARRIER_RETENTION", secs(args.retention))
            .with_order_env("ORDER_PURGE_INTERVAL", secs(args.purge_every))
            .with_inventory_env("INVENTORY_TOMBSTONE_RETENTION", secs(args.retention))
            .with_inventory_env("INVENTORY_RECONCILE_HORIZON", secs(args.retention / 2))
            .with_inventory_env("INVENTORY_RECONCILE_INTERVAL", secs(args.purge_every))
            .with_inventory_env("INVENTORY_SETTLE_AFTER", secs(args.settle_after))
            .with_inventory_env("INVENTORY_PURGE_INTERVAL", secs(args.purge_every));
        let broker = parts.broker().await?;
        testkit::broker::create_topics(&parts.namesrv(), &testkit::SYSTEM_TOPICS, 4).await?;
        let inventory = parts.inventory(false).await?;
        let order = parts.order_with(None).await?;
        // Enough stock that no order is refused for want of it.
        let stock = i32::try_from(
            u64::from(args.rate)
                .saturating_mul(args.duration.as_secs().max(1))
                .saturating_mul(2),
        )
        .unwrap_or(i32::MAX)
        .max(1_000);
        crate::chaos::seed(&parts.order_addr(), &parts.inventory_addr(), stock).await?;
        Ok(Self {
            order_pool: MySqlPool::connect(&parts.order_db_url()).await?,
            inventory_pool: MySqlPool::connect(&parts.inventory_db_url()).await?,
            client: OrderClient::connect(parts.order_addr()).await?,
            mq: mq::Mq::new(&mq::MqConfig::new(parts.namesrv()), "soak")?,
            calls: Arc::new(Mutex::new(Calls::default())),
            work,
            parts,
            broker,
            inventory,
            order,
            stock,
        })
    }

    /// The stream: an order started every 1/rate s (open loop, at most --concurrency in
    /// flight) for --duration, a sample every --sample-every and one at the end.
    async fn drive(&self, args: &SoakArgs) -> anyhow::Result<Stream> {
        let slots = Arc::new(Semaphore::new(args.concurrency.max(1)));
        let started = Instant::now();
        let mut samples = Vec::new();
        let mut next_sample = started + args.sample_every;
        let mut sampled_at = started;
        let mut tasks = tokio::task::JoinSet::new();
        let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
        let mut i: u64 = 0;
        let stream_end = started + args.duration;
        print_sample_header();
        loop {
            let due = started + interval.mul_f64(i as f64);
            if due >= stream_end {
                break;
            }
            if Instant::now() >= next_sample {
                let sample = self
                    .sample(sampled_at, started, args, samples.last())
                    .await?;
                samples.push(sample);
                sampled_at = Instant::now();
                next_sample += args.sample_every;
            }
            tokio::time::sleep_until(due.into()).await;
            let permit = slots.clone().acquire_owned().await?;
            let (client, calls, args) = (self.client.clone(), self.calls.clone(), args.clone());
            tasks.spawn(async move {
                place(client, i, &args, &calls).await;
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
            i += 1;
        }
        while tasks.join_next().await.is_some() {}
        let placed_in = started.elapsed();
        let sample = self
            .sample(sampled_at, started, args, samples.last())
            .await?;
        samples.push(sample);
        Ok(Stream {
            started,
            started_orders: i,
            placed_in,
            samples,
        })
    }

    /// Quiet: every unpaid order closed (or the deadline passed) and the audit passing
    /// twice; then how the orders were closed and what order_srv and the broker count.
    async fn settle(&self, args: &SoakArgs, stream: Stream) -> anyhow::Result<Findings> {
        let input = AuditInput {
            initial_stock: Some((1..=GOODS).map(|g| (g, i64::from(self.stock))).collect()),
            acknowledged: Vec::new(),
            liveness: Some(Liveness::new(args.pay_timeout)),
        };
        let verdicts = crate::chaos::audit_once_quiet(
            &self.order_pool,
            &self.inventory_pool,
            &input,
            Instant::now() + args.pay_timeout + args.settle_within,
        )
        .await?;
        let quiet_after = stream.started.elapsed().saturating_sub(stream.placed_in);
        // The first rows expire one retention after the stream started.
        let purged = self
            .purges_ran(
                stream.started
                    + args.retention
                    + args.settle_after
                    + args.purge_every.saturating_mul(4)
                    + Duration::from_secs(60),
            )
            .await;
        let closes = close_report(&self.order_pool, args.pay_timeout).await?;
        let counters = scrape_counters(&self.parts.order_metrics_addr()).await.ok();
        let timer_at_end = timer_backlog(&self.mq).await;
        let calls = CallsSummary::of(&self.calls)?;
        Ok(Findings {
            stream,
            verdicts,
            purged,
            quiet_after,
            closes,
            counters,
            timer_at_end,
            calls,
        })
    }

    async fn stop(self) {
        let Self {
            mq,
            mut order,
            mut inventory,
            mut broker,
            ..
        } = self;
        mq.shutdown().await;
        for proc in [&mut order, &mut inventory, &mut broker] {
            proc.stop(Duration::from_secs(20)).await;
        }
    }

    /// A sample of the span since `from`, printed (with what was purged since `previous`).
    async fn sample(
        &self,
        from: Instant,
        started: Instant,
        args: &SoakArgs,
        previous: Option<&Sample>,
    ) -> anyhow::Result<Sample> {
        let pay_timeout = args.pay_timeout;
        let to = Instant::now();
        let latencies = self.latencies_between(from, to)?;
        let seconds = to.duration_since(from).as_secs_f64().max(0.001);
        let orders = OrderCounts::of(&self.order_pool, pay_timeout).await?;
        let (_, connections): (String, String) =
            sqlx::query_as("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
                .fetch_one(&self.order_pool)
                .await?;
        let sample = Sample {
            at_s: to.duration_since(started).as_secs_f64(),
            orders_per_s: latencies.len() as f64 / seconds,
            p50_ms: ms(percentile(&latencies, 0.5)),
            p99_ms: ms(percentile(&latencies, 0.99)),
            unpaid: orders.unpaid,
            overdue: orders.overdue,
            closed_by_timeout: orders.closed_by_timeout,
            closed_by_sweep: orders.closed_by_sweep,
            procs: [&self.broker, &self.inventory, &self.order]
                .into_iter()
                .map(|proc| Usage::of(&proc.name, proc.pid()))
                .collect(),
            mysql_connections: connections.parse().unwrap_or(-1),
            rows: table_rows(&self.order_pool, &self.inventory_pool).await?,
            broker_store_mib: dir_size(&self.work.join("store")) as f64 / (1024.0 * 1024.0),
            timer: timer_backlog(&self.mq).await,
            purged: self.purged().await,
        };
        print_sample(&sample, previous);
        Ok(sample)
    }

    /// What the purges and the settle job have deleted so far (zero where a service did
    /// not answer).
    async fn purged(&self) -> Purged {
        let order = metrics_text(&self.parts.order_metrics_addr())
            .await
            .unwrap_or_default();
        let inventory = metrics_text(&self.parts.inventory_metrics_addr())
            .await
            .unwrap_or_default();
        Purged {
            barriers: counter(&order, "order_purged_rows_total{table=\"tx_barrier\"}"),
            returned: counter(&inventory, "inventory_purged_rows_total{rows=\"returned\"}"),
            settled: counter(&inventory, "inventory_purged_rows_total{rows=\"settled\"}"),
        }
    }

    /// Waits (up to `deadline`) until every purge has deleted rows: barrier rows, RETURNED
    /// details and settled deductions.
    async fn purges_ran(&self, deadline: Instant) -> Purged {
        loop {
            let purged = self.purged().await;
            if purged.all_ran() || Instant::now() >= deadline {
                return purged;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The latencies of the CreateOrders that succeeded between `from` and `to`, sorted.
    fn latencies_between(&self, from: Instant, to: Instant) -> anyhow::Result<Vec<Duration>> {
        let mut latencies: Vec<Duration> = self
            .calls
            .lock()
            .map_err(|_| anyhow::anyhow!("calls poisoned"))?
            .calls
            .iter()
            .filter(|c| c.ok && c.at >= from && c.at < to)
            .map(|c| c.latency)
            .collect();
        latencies.sort();
        Ok(latencies)
    }
}

/// The stream of orders as it went.
struct Stream {
    started: Instant,
    started_orders: u64,
    placed_in: Duration,
    samples: Vec<Sample>,
}

impl Stream {
    fn achieved(&self) -> f64 {
        self.started_orders as f64 / self.placed_in.as_secs_f64().max(0.001)
    }
}

/// The CreateOrders over the whole run.
struct CallsSummary {
    ok: usize,
    failed: std::collections::BTreeMap<String, usize>,
    p50: Duration,
    p99: Duration,
}

impl CallsSummary {
    fn of(calls: &Mutex<Calls>) -> anyhow::Result<Self> {
        let c = calls
            .lock()
            .map_err(|_| anyhow::anyhow!("calls poisoned"))?;
        let mut latencies: Vec<Duration> =
            c.calls.iter().filter(|c| c.ok).map(|c| c.latency).collect();
        latencies.sort();
        Ok(Self {
            ok: latencies.len(),
            failed: c.failed.clone(),
            p50: percentile(&latencies, 0.5),
            p99: percentile(&latencies, 0.99),
        })
    }
}

/// What the run found: the stream, the audit once quiet, the closes and the counters.
struct Findings {
    stream: Stream,
    verdicts: Vec<testkit::audit::Verdict>,
    /// What the purges and the settle job had deleted by the end.
    purged: Purged,
    quiet_after: Duration,
    closes: testkit::audit::CloseReport,
    /// order_srv's pay-timeout counters, as one line.
    counters: Option<String>,
    timer_at_end: Option<mq::TimerBacklog>,
    calls: CallsSummary,
}

impl Findings {
    /// The pay-timeout closes' lateness: p50, p99, max.
    fn lateness(&self) -> (f64, f64, f64) {
        (
            self.closes.lateness_at(0.5),
            self.closes.lateness_at(0.99),
            self.closes.lateness_at(1.0),
        )
    }

    /// The samples after the warm-up (the first 5 minutes of a [`LONG_RUN`]), the last
    /// one (a partial interval) left out.
    fn steady(&self) -> Vec<&Sample> {
        let samples = &self.stream.samples;
        let warm_up = if self.stream.placed_in >= LONG_RUN {
            300.0
        } else {
            0.0
        };
        let whole = samples.len().saturating_sub(1);
        samples
            .iter()
            .take(whole)
            .filter(|s| s.at_s > warm_up)
            .collect()
    }

    /// RSS and open files of each process, rows of the bounded tables (over the second
    /// half of the steady samples: the plateau), and per-minute p99 first 5 vs last 5.
    fn trends(&self) -> Vec<Trend> {
        let steady = self.steady();
        let mut trends = Vec::new();
        let names: Vec<String> = steady
            .first()
            .map(|s| s.procs.iter().map(|p| p.name.clone()).collect())
            .unwrap_or_default();
        for (i, name) in names.iter().enumerate() {
            let rss = |s: &Sample| s.procs.get(i).map_or(0.0, |p| p.rss_mib);
            let anon = |s: &Sample| s.procs.get(i).map_or(0.0, |p| p.anon_mib);
            let fds = |s: &Sample| s.procs.get(i).map_or(0.0, |p| p.fds as f64);
            trends.extend(Trend::of(format!("{name} RSS"), "MiB", &steady, rss));
            trends.extend(Trend::of(
                format!("{name} RSS anonymous"),
                "MiB",
                &steady,
                anon,
            ));
            trends.extend(Trend::of(format!("{name} open files"), "fds", &steady, fds));
        }
        let second_half = &steady[steady.len() / 2..];
        for table in ["tx_barrier", "stock_sell_detail", "order_info"] {
            let rows = |s: &Sample| {
                s.rows
                    .iter()
                    .find(|(t, _)| *t == table)
                    .map_or(0.0, |(_, n)| *n as f64)
            };
            trends.extend(Trend::of(
                format!("{table} rows (2nd half)"),
                "rows",
                second_half,
                rows,
            ));
        }
        let p99 = |window: &[&Sample]| {
            window.iter().map(|s| s.p99_ms).sum::<f64>() / window.len().max(1) as f64
        };
        let k = steady.len().min(5);
        if k > 0 {
            trends.push(Trend {
                what: format!("p99, first/last {k} samples"),
                unit: "ms",
                first: p99(&steady[..k]),
                last: p99(&steady[steady.len() - k..]),
                per_minute: None,
            });
        }
        trends
    }

    fn print(&self, args: &SoakArgs) {
        let (stream, calls, closes) = (&self.stream, &self.calls, &self.closes);
        let lateness = self.lateness();
        println!("\nsoak summary:");
        println!(
            "  orders started         {} in {:.1}s ({:.1}/s; asked {}/s)",
            stream.started_orders,
            stream.placed_in.as_secs_f64(),
            stream.achieved(),
            args.rate
        );
        println!(
            "  CreateOrder OK         {} (p50 {:.1} ms, p99 {:.1} ms)",
            calls.ok,
            ms(calls.p50),
            ms(calls.p99)
        );
        for (code, n) in &calls.failed {
            println!("  failed {code:<16} {n}");
        }
        println!(
            "  closed                 by pay timeout {}, by cancel {}, by the overdue sweep {}",
            closes.by_pay_timeout, closes.by_cancel, closes.by_sweep
        );
        println!(
            "  pay-timeout lateness   p50 {:.1}s, p99 {:.1}s, max {:.1}s (limit p99 {:?})",
            lateness.0, lateness.1, lateness.2, args.max_lateness
        );
        if let Some(counters) = &self.counters {
            println!("  order_srv counters     {counters}");
        }
        println!(
            "  rows deleted           tx_barrier {}, RETURNED details {}, settled deductions {}",
            self.purged.barriers, self.purged.returned, self.purged.settled
        );
        let trends = self.trends();
        for trend in &trends {
            println!("  {trend}");
        }
        match &self.timer_at_end {
            Some(backlog) => println!("  broker timer at end    {backlog}"),
            None => println!("  broker timer at end    no answer"),
        }
        println!(
            "  quiet after            {:.1}s",
            self.quiet_after.as_secs_f64()
        );
        println!("\naudit:");
        print!("{}", report(&self.verdicts));
    }

    /// Why the run fails; empty when it passed.
    fn problems(&self, args: &SoakArgs) -> Vec<String> {
        let (closes, lateness, achieved) = (&self.closes, self.lateness(), self.stream.achieved());
        let mut problems = Vec::new();
        if !self.verdicts.iter().all(|v| v.passed()) {
            problems.push("invariants violated (see the audit)".to_owned());
        }
        if closes.by_sweep > 0 {
            problems.push(format!(
                "{} orders were closed by the overdue sweep: their pay-timeout messages did not come",
                closes.by_sweep
            ));
        }
        // A long run must not slow down: the per-minute p99 of its last 5 samples within
        // 20% of its first 5 after the warm-up (10 at least, or the two would overlap).
        if self.stream.placed_in >= LONG_RUN {
            let steady = self.steady().len();
            match self.trends().into_iter().find(|t| t.per_minute.is_none()) {
                _ if steady < 10 => problems.push(format!(
                    "{steady} samples after the warm-up: too few to compare the first 5 with \
                     the last 5 (lower --sample-every)"
                )),
                Some(p99) if p99.last > p99.first * 1.2 => problems.push(format!(
                    "CreateOrder p99 went from {:.1} ms (first 5 samples) to {:.1} ms (last 5)",
                    p99.first, p99.last
                )),
                _ => {}
            }
        }
        if !self.purged.all_ran() {
            problems.push(format!(
                "a purge deleted nothing (tx_barrier {}, RETURNED details {}, settled {})",
                self.purged.barriers, self.purged.returned, self.purged.settled
            ));
        }
        if closes.by_pay_timeout == 0 {
            problems.push("no order was closed by its pay timeout".to_owned());
        }
        if lateness.1 > args.max_lateness.as_secs_f64() {
            problems.push(format!(
                "pay-timeout closes p99 {:.1}s late, above {:?}",
                lateness.1, args.max_lateness
            ));
        }
        if achieved < f64::from(args.rate) * 0.95 {
            problems.push(format!(
                "the stream reached {achieved:.1} orders/s of {} asked",
                args.rate
            ));
        }
        problems
    }

    fn json(&self, args: &SoakArgs, problems: &[String]) -> serde_json::Value {
        let (stream, calls, closes, lateness) =
            (&self.stream, &self.calls, &self.closes, self.lateness());
        json!({
            "args": {
                "duration_s": args.duration.as_secs_f64(),
                "rate": args.rate,
                "concurrency": args.concurrency,
                "pay_timeout_s": args.pay_timeout.as_secs_f64(),
                "pay_every": args.pay_every,
                "cancel_every": args.cancel_every,
            },
            "orders_started": stream.started_orders,
            "orders_per_s": stream.achieved(),
            "create_order_ok": calls.ok,
            "create_order_p50_ms": ms(calls.p50),
            "create_order_p99_ms": ms(calls.p99),
            "failed": calls.failed,
            "closed": {
                "by_pay_timeout": closes.by_pay_timeout,
                "by_cancel": closes.by_cancel,
                "by_sweep": closes.by_sweep,
            },
            "pay_timeout_lateness_s": { "p50": lateness.0, "p99": lateness.1, "max": lateness.2 },
            "quiet_after_s": self.quiet_after.as_secs_f64(),
            "audit_passed": self.verdicts.iter().all(|v| v.passed()),
            "rows_deleted": self.purged.json(),
            "trends": self.trends().iter().map(Trend::json).collect::<Vec<_>>(),
            "samples": stream.samples.iter().map(Sample::json).collect::<Vec<_>>(),
            "problems": problems,
        })
    }
}

/// One buyer: a cart line, CreateOrder, then (for some) payment or cancel at once.
async fn place(client: OrderClient<Channel>, i: u64, args: &SoakArgs, calls: &Mutex<Calls>) {
    let mut client = client;
    let user_id = 1_000_000 + i as i64;
    let record_failure = |what: String| {
        if let Ok(mut c) = calls.lock() {
            *c.failed.entry(what).or_default() += 1;
        }
    };
    let goods_id = (i % GOODS as u64) as i32 + 1;
    if let Err(status) = client
        .create_cart_item(calls::cart_line(user_id, goods_id, 1))
        .await
    {
        record_failure(format!("cart {:?}", status.code()));
        return;
    }
    let t = Instant::now();
    let mut request =
        tonic::Request::new(calls::order_request(user_id, "1 Soak Street", "Soak", ""));
    request.set_timeout(Duration::from_secs(30));
    let answer = client.create_order(request).await;
    if let Ok(mut c) = calls.lock() {
        c.calls.push(Call {
            at: Instant::now(),
            latency: t.elapsed(),
            ok: answer.is_ok(),
        });
    }
    let order = match answer {
        Ok(order) => order.into_inner(),
        Err(status) => {
            record_failure(format!("{:?}", status.code()));
            return;
        }
    };
    if i.is_multiple_of(u64::from(args.pay_every)) {
        let paid = client
            .update_order_status(calls::payment(&order.order_sn, "soak"))
            .await;
        if paid.is_err()
            && let Ok(mut c) = calls.lock()
        {
            c.payments_refused += 1;
        }
    } else if i % u64::from(args.cancel_every) == 1 {
        let cancelled = client
            .cancel_order(pb::CancelOrderRequest {
                order_sn: order.order_sn.clone(),
                user_id,
            })
            .await;
        if cancelled.is_err()
            && let Ok(mut c) = calls.lock()
        {
            c.cancels_refused += 1;
        }
    }
}

/// What one sample saw.
struct Sample {
    at_s: f64,
    orders_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    unpaid: i64,
    overdue: i64,
    closed_by_timeout: i64,
    closed_by_sweep: i64,
    /// Each process's memory and open files.
    procs: Vec<Usage>,
    mysql_connections: i64,
    rows: Vec<(&'static str, i64)>,
    broker_store_mib: f64,
    /// The broker's timer, as it reports it (`None`: it did not answer).
    timer: Option<mq::TimerBacklog>,
    /// What the purges had deleted so far.
    purged: Purged,
}

impl Sample {
    fn json(&self) -> serde_json::Value {
        json!({
            "at_s": self.at_s,
            "orders_per_s": self.orders_per_s,
            "create_order_p50_ms": self.p50_ms,
            "create_order_p99_ms": self.p99_ms,
            "unpaid": self.unpaid,
            "overdue": self.overdue,
            "closed_by_pay_timeout": self.closed_by_timeout,
            "closed_by_sweep": self.closed_by_sweep,
            "processes": self.procs.iter().map(|p| json!({
                "name": p.name, "rss_mib": p.rss_mib, "rss_anonymous_mib": p.anon_mib,
                "open_files": p.fds,
            })).collect::<Vec<_>>(),
            "mysql_connections": self.mysql_connections,
            "rows": self.rows.iter().map(|(t, n)| (t.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "broker_store_mib": self.broker_store_mib,
            "rows_deleted": self.purged.json(),
            "timer": self.timer.as_ref().map(|t| json!({
                "read_behind_s": t.read_behind_secs,
                "not_indexed": t.messages_not_indexed,
                "waiting": t.waiting,
                "enqueue_per_s": t.enqueue_per_sec,
                "dequeue_per_s": t.dequeue_per_sec,
            })),
        })
    }
}

/// Rows the purges and the settle job deleted since start (their counters).
#[derive(Debug, Default, Clone, Copy)]
struct Purged {
    barriers: u64,
    returned: u64,
    settled: u64,
}

impl Purged {
    fn all_ran(&self) -> bool {
        self.barriers > 0 && self.returned > 0 && self.settled > 0
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            barriers: self.barriers.saturating_sub(before.barriers),
            returned: self.returned.saturating_sub(before.returned),
            settled: self.settled.saturating_sub(before.settled),
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "tx_barrier": self.barriers,
            "returned_details": self.returned,
            "settled_details": self.settled,
        })
    }
}

/// How one measure moved after the warm-up: a least-squares slope per minute.
struct Trend {
    what: String,
    unit: &'static str,
    first: f64,
    last: f64,
    /// The slope; `None` for a before/after comparison.
    per_minute: Option<f64>,
}

impl std::fmt::Display for Trend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<34} {:.1} -> {:.1} {}",
            self.what, self.first, self.last, self.unit
        )?;
        match self.per_minute {
            Some(slope) => write!(f, ", slope {slope:+.2} {}/min", self.unit),
            None => write!(
                f,
                ", {:+.0}%",
                (self.last / self.first.max(f64::MIN_POSITIVE) - 1.0) * 100.0
            ),
        }
    }
}

impl Trend {
    /// `value` over the samples, or `None` with fewer than two.
    fn of(
        what: String,
        unit: &'static str,
        samples: &[&Sample],
        value: impl Fn(&Sample) -> f64,
    ) -> Option<Self> {
        let points: Vec<(f64, f64)> = samples.iter().map(|s| (s.at_s / 60.0, value(s))).collect();
        let (first, last) = (points.first()?.1, points.last()?.1);
        if points.len() < 2 {
            return None;
        }
        let n = points.len() as f64;
        let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
        let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
        Some(Self {
            what,
            unit,
            first,
            last,
            per_minute: Some(if sxx > 0.0 { sxy / sxx } else { 0.0 }),
        })
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "what": self.what, "unit": self.unit, "first": self.first, "last": self.last,
            "slope_per_minute": self.per_minute,
        })
    }
}

/// The orders a sample counts by state.
struct OrderCounts {
    unpaid: i64,
    overdue: i64,
    closed_by_timeout: i64,
    closed_by_sweep: i64,
}

impl OrderCounts {
    async fn of(order_db: &MySqlPool, pay_timeout: Duration) -> anyhow::Result<Self> {
        let unpaid = count(
            order_db,
            "SELECT COUNT(*) FROM order_info WHERE status = 'WAIT_BUYER_PAY'",
        )
        .await?;
        // Unpaid past their pay timeout by more than the timer's one-second slots and a
        // little: what the pay-timeout messages should have closed already.
        let overdue: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM order_info WHERE status = 'WAIT_BUYER_PAY' \
             AND created_at < NOW(6) - INTERVAL ? MICROSECOND",
        )
        .bind(u64::try_from((pay_timeout + Duration::from_secs(5)).as_micros()).unwrap_or(u64::MAX))
        .fetch_one(order_db)
        .await?;
        Ok(Self {
            unpaid,
            overdue,
            closed_by_timeout: count(
                order_db,
                "SELECT COUNT(*) FROM order_info WHERE closed_by = 'pay_timeout'",
            )
            .await?,
            closed_by_sweep: count(
                order_db,
                "SELECT COUNT(*) FROM order_info WHERE closed_by = 'sweep'",
            )
            .await?,
        })
    }
}

/// Rows per table the run grows (and the purges shrink).
async fn table_rows(
    order_db: &MySqlPool,
    inventory_db: &MySqlPool,
) -> anyhow::Result<Vec<(&'static str, i64)>> {
    let mut rows = Vec::new();
    for (table, sql, pool) in [
        ("order_info", "SELECT COUNT(*) FROM order_info", order_db),
        ("order_goods", "SELECT COUNT(*) FROM order_goods", order_db),
        ("tx_barrier", "SELECT COUNT(*) FROM tx_barrier", order_db),
        (
            "shopping_cart",
            "SELECT COUNT(*) FROM shopping_cart",
            order_db,
        ),
        (
            "stock_sell_detail",
            "SELECT COUNT(*) FROM stock_sell_detail",
            inventory_db,
        ),
    ] {
        rows.push((table, count(pool, sql).await?));
    }
    Ok(rows)
}

/// The first broker's timer backlog, or `None` when it does not answer within 5 s.
pub async fn timer_backlog(mq: &mq::Mq) -> Option<mq::TimerBacklog> {
    match tokio::time::timeout(Duration::from_secs(5), mq.timer_backlogs()).await {
        Ok(Ok(backlogs)) => backlogs.into_iter().next().map(|(_, backlog)| backlog),
        _ => None,
    }
}

fn print_sample_header() {
    println!(
        "{:>7} {:>7} {:>8} {:>8} {:>7} {:>7} {:>8} {:>6}  {:<52} {:>5} {:>9} {:>8} {:>8} {:>8}  {:<17}  timer",
        "t(s)",
        "ok/s",
        "p50(ms)",
        "p99(ms)",
        "unpaid",
        "overdue",
        "timeout",
        "swept",
        "RSS (anonymous) MiB / open files",
        "conns",
        "orders",
        "barriers",
        "details",
        "store MiB",
        "purged b/r/s"
    );
}

fn print_sample(s: &Sample, previous: Option<&Sample>) {
    let procs: Vec<String> = s
        .procs
        .iter()
        .map(|p| {
            let name = short(&p.name);
            format!("{name}={:.0}({:.0})/{}", p.rss_mib, p.anon_mib, p.fds)
        })
        .collect();
    let rows = |table: &str| {
        s.rows
            .iter()
            .find(|(t, _)| *t == table)
            .map_or(0, |(_, n)| *n)
    };
    let purged = s
        .purged
        .since(&previous.map(|p| p.purged).unwrap_or_default());
    println!(
        "{:>7.0} {:>7.1} {:>8.1} {:>8.1} {:>7} {:>7} {:>8} {:>6}  {:<52} {:>5} {:>9} {:>8} {:>8} {:>8.0}  {:<17}  {}",
        s.at_s,
        s.orders_per_s,
        s.p50_ms,
        s.p99_ms,
        s.unpaid,
        s.overdue,
        s.closed_by_timeout,
        s.closed_by_sweep,
        procs.join(" "),
        s.mysql_connections,
        rows("order_info"),
        rows("tx_barrier"),
        rows("stock_sell_detail"),
        s.broker_store_mib,
        format!("{}/{}/{}", purged.barriers, purged.returned, purged.settled),
        s.timer
            .as_ref()
            .map_or_else(|| "no answer".to_owned(), ToString::to_string)
    );
}

fn short(name: &str) -> &str {
    match name {
        "order_srv" => "order",
        "inventory_srv" => "inv",
        other if other.starts_with("broker") => "broker",
        other => other,
    }
}

/// What one process holds: resident memory, the anonymous part of it (heap and stacks:
/// what a leak grows; the rest is mapped files, such as the broker's commit log, which the
/// kernel can drop), and open file descriptors. Zero when the process is gone.
struct Usage {
    name: String,
    rss_mib: f64,
    anon_mib: f64,
    fds: usize,
}

impl Usage {
    fn of(name: &str, pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let mib = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kib| kib.parse::<u64>().ok())
                .map_or(0.0, |kib| kib as f64 / 1024.0)
        };
        Self {
            name: name.to_owned(),
            rss_mib: mib("VmRSS:"),
            anon_mib: mib("RssAnon:"),
            fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()),
        }
    }
}

/// Bytes under `dir` (files only; what the broker's store takes on disk, sparse files at
/// their apparent size).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A service's `GET /metrics` answer (within 5 s).
async fn metrics_text(addr: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
            .await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        anyhow::Ok(text)
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| anyhow::anyhow!("{addr}/metrics did not answer within 5 s"))?
}

/// The value of the counter line starting with `name` (0 when absent).
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// `d` as whole seconds for a humantime variable (at least one).
fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

/// order_srv's pay-timeout counters, as one line.
async fn scrape_counters(addr: &str) -> anyhow::Result<String> {
    let text = metrics_text(addr).await?;
    let wanted = [
        "order_pay_timeouts_total{outcome=\"closed\"}",
        "order_overdue_closed_total",
        "order_pay_timeout_lateness_seconds_count",
        "order_rebacks_sent_total",
    ];
    let found: Vec<String> = text
        .lines()
        .filter(|l| wanted.iter().any(|w| l.starts_with(w)))
        .map(str::to_owned)
        .collect();
    Ok(found.join(", "))
}
