//! Where one order's time goes, from the services' own latency histograms (order_srv's
//! `order_step_seconds{step}` and `order_create_order_seconds{outcome="OK"}`, and
//! inventory_srv's `inventory_sell_seconds`: Sell as its handler sees it, so the gRPC hop
//! is the difference to order_srv's `sell`): the bench scrapes both `/metrics` before and
//! after a scenario and reads percentiles from the difference. A percentile is the upper
//! bound of the bucket it falls in (buckets resolve a tenth of a millisecond below 1 ms:
//! `observe::LATENCY_BUCKETS`).

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Cumulative bucket counts per series: series name → (upper bound in seconds, count).
pub type Buckets = BTreeMap<String, Vec<(f64, u64)>>;

/// The steps in the order they happen, then the whole call.
pub const SERIES: [&str; 9] = [
    "half_message",
    "claim_cart",
    "sell",
    "sell_in_inventory",
    "pay_timeout_send",
    "order_writes",
    "commit",
    "end_transaction",
    "create_order (OK)",
];

/// Reads the latency buckets of every service in `addrs` (`host:port` of its `/metrics`).
pub async fn scrape(addrs: &[String]) -> anyhow::Result<Buckets> {
    let mut buckets = Buckets::new();
    for addr in addrs {
        buckets.extend(scrape_one(addr).await?);
    }
    Ok(buckets)
}

async fn scrape_one(addr: &str) -> anyhow::Result<Buckets> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("service metrics on {addr}"))?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(parse(&text))
}

fn parse(text: &str) -> Buckets {
    let mut buckets = Buckets::new();
    for line in text.lines() {
        let series = if let Some(rest) = line.strip_prefix("order_step_seconds_bucket{step=\"") {
            rest.split('"').next().map(str::to_owned)
        } else if line.starts_with("order_create_order_seconds_bucket{outcome=\"OK\"") {
            Some("create_order (OK)".to_owned())
        } else if line.starts_with("inventory_sell_seconds_bucket{") {
            Some("sell_in_inventory".to_owned())
        } else {
            None
        };
        let Some(series) = series else { continue };
        let le = line
            .split("le=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .map(|le| {
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                }
            });
        let count = line
            .rsplit(' ')
            .next()
            .and_then(|n| n.trim().parse::<u64>().ok());
        if let (Some(le), Some(count)) = (le, count) {
            buckets.entry(series).or_default().push((le, count));
        }
    }
    buckets
}

/// The steps observed since `before`, once every call answered OK has its
/// END_TRANSACTION counted too (order_srv sends it after the caller's reply), or what is
/// there after `within`.
pub async fn settled(
    addrs: &[String],
    before: &Buckets,
    within: std::time::Duration,
) -> anyhow::Result<Vec<Step>> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let steps = breakdown(before, &scrape(addrs).await?);
        let count = |name: &str| steps.iter().find(|s| s.name == name).map_or(0, |s| s.count);
        if count("end_transaction") >= count("create_order (OK)")
            || std::time::Instant::now() >= deadline
        {
            return Ok(steps);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// One step's latency over a scenario.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: &'static str,
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

impl Step {
    pub fn json(&self) -> serde_json::Value {
        json!({
            "step": self.name,
            "count": self.count,
            "p50_ms_at_most": self.p50_ms,
            "p90_ms_at_most": self.p90_ms,
            "p99_ms_at_most": self.p99_ms,
        })
    }
}

/// The steps observed between two scrapes.
pub fn breakdown(before: &Buckets, after: &Buckets) -> Vec<Step> {
    SERIES
        .iter()
        .filter_map(|name| {
            let now = after.get(*name)?;
            let then = before.get(*name);
            let delta: Vec<(f64, u64)> = now
                .iter()
                .map(|(le, count)| {
                    let earlier = then
                        .and_then(|b| b.iter().find(|(l, _)| l == le))
                        .map_or(0, |(_, c)| *c);
                    (*le, count.saturating_sub(earlier))
                })
                .collect();
            let total = delta.last().map_or(0, |(_, c)| *c);
            if total == 0 {
                return None;
            }
            let at = |q: f64| {
                let rank = (q * total as f64).ceil() as u64;
                delta
                    .iter()
                    .find(|(_, c)| *c >= rank)
                    .map_or(f64::INFINITY, |(le, _)| le * 1000.0)
            };
            Some(Step {
                name,
                count: total,
                p50_ms: at(0.5),
                p90_ms: at(0.9),
                p99_ms: at(0.99),
            })
        })
        .collect()
}
