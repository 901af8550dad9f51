//! `sharded-router bench --cluster`: cross-node traffic through two routers
//! joined over NATS, against raw `async-nats` on the same server in the same
//! run (see `sharded_router_workloads::cluster` and `::nats_raw`).
//!
//! * **One-way**: messages per second from node A's producers to actors on node
//!   B, against raw publish→subscribe between two connections; the median of the
//!   runs, and its ratio to raw (target: at least 0.5).
//! * **Request/reply**: round trips one at a time from node A to an echo actor
//!   on node B, against raw request→reply; p50 and p99 over every round trip of
//!   every run, and their ratios to raw (target: p50 at most 1.5×).
//!
//! Runs of the two alternate, so that a noisy neighbour slows both alike.

use std::error::Error;
use std::time::Duration;

use clap::Args;
use sharded_router_workloads::cluster::{TwoNodes, SINKS};
use sharded_router_workloads::nats_raw::{OneWay, RawNats};
use sharded_router_workloads::nats_server::NatsServer;

/// Publishing tasks on the sending side, raw and ours alike: one per core.
const PRODUCERS: usize = 2;
/// Round trips before the timed ones, on each side (connections, inboxes and
/// routes warm up).
const WARM_UP: u64 = 200;
/// One-way: ours must reach this share of raw NATS.
const ONE_WAY_TARGET: f64 = 0.5;
/// Request/reply: our p50 must stay within this multiple of raw NATS's.
const REQUEST_TARGET: f64 = 1.5;

#[derive(Args, Clone, Debug, Default)]
pub struct ClusterBenchArgs {
    /// Benchmark cross-node traffic over NATS (one-way throughput, request
    /// latency) against raw async-nats on the same server, instead of the
    /// in-process workloads. Starts its own nats-server unless --nats is given.
    #[arg(long)]
    pub cluster: bool,
    /// The NATS server for --cluster (default: a nats-server started for the run
    /// on a free loopback port).
    #[arg(long, value_name = "URL", requires = "cluster")]
    pub nats: Option<String>,
    /// Messages per one-way run (--cluster).
    #[arg(long, default_value_t = 200_000, requires = "cluster")]
    pub cluster_messages: u64,
    /// Round trips per request run (--cluster).
    #[arg(long, default_value_t = 2_000, requires = "cluster")]
    pub cluster_requests: u64,
}

pub fn run(args: &ClusterBenchArgs, runs: usize) -> Result<(), Box<dyn Error>> {
    let runs = runs.max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (_server, url, whose) = match &args.nats {
        Some(url) => (None, url.clone(), "given"),
        None => {
            let server = NatsServer::start().map_err(|e| {
                format!("cannot start nats-server (apt-get install nats-server, or give --nats): {e}")
            })?;
            let url = server.url();
            (Some(server), url, "started for this run")
        }
    };
    let raw = RawNats::connect(&runtime, &url).map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let cluster = format!("bench-{}", std::process::id());
    let nodes = TwoNodes::join(&runtime, &url, &cluster)?;
    println!("cluster bench: nats-server at {url} ({whose}), {runs} runs of each, alternating");

    raw.round_trips(&runtime, WARM_UP).map_err(|e| format!("raw request/reply: {e}"))?;
    nodes.round_trips(&runtime, WARM_UP)?;
    let (mut raw_rates, mut our_rates) = (Vec::new(), Vec::new());
    let (mut raw_times, mut our_times) = (Vec::new(), Vec::new());
    let (mut raw_lost, mut our_lost) = (0, 0);
    for _ in 0..runs {
        let r = raw
            .one_way(&runtime, PRODUCERS, args.cluster_messages)
            .map_err(|e| format!("raw pub/sub: {e}"))?;
        raw_lost += lost(&r, args.cluster_messages);
        raw_rates.push(r.rate());
        let o = nodes.one_way(&runtime, PRODUCERS, args.cluster_messages);
        our_lost += lost(&o, args.cluster_messages);
        our_rates.push(o.rate());
        raw_times.extend(
            raw.round_trips(&runtime, args.cluster_requests)
                .map_err(|e| format!("raw request/reply: {e}"))?,
        );
        our_times.extend(nodes.round_trips(&runtime, args.cluster_requests)?);
    }
    nodes.leave(&runtime);

    let (raw_rate, our_rate) = (median(&mut raw_rates), median(&mut our_rates));
    let one_way = our_rate / raw_rate;
    println!();
    println!(
        "one-way, {} messages of 8 bytes per run, {PRODUCERS} producers, median msg/s",
        args.cluster_messages
    );
    println!("  raw async-nats publish -> subscribe     {:>12}", rate(raw_rate));
    println!("  ours, node a -> {SINKS} actors on node b    {:>12}", rate(our_rate));
    println!(
        "  ours / raw: {one_way:.2} (target >= {ONE_WAY_TARGET}: {})",
        verdict(one_way >= ONE_WAY_TARGET)
    );
    if raw_lost + our_lost > 0 {
        println!("  not delivered within the run: raw {raw_lost}, ours {our_lost}");
    }
    let (raw_p50, raw_p99) = (percentile(&mut raw_times, 0.50), percentile(&mut raw_times, 0.99));
    let (our_p50, our_p99) = (percentile(&mut our_times, 0.50), percentile(&mut our_times, 0.99));
    let (p50, p99) = (ratio(our_p50, raw_p50), ratio(our_p99, raw_p99));
    println!();
    println!("request/reply, one at a time, {} round trips per run", args.cluster_requests);
    println!(
        "  raw async-nats request -> reply         p50 {:>9}   p99 {:>9}",
        micros(raw_p50),
        micros(raw_p99)
    );
    println!(
        "  ours, node a -> echo on node b          p50 {:>9}   p99 {:>9}",
        micros(our_p50),
        micros(our_p99)
    );
    println!(
        "  ours / raw: p50 {p50:.2}, p99 {p99:.2} (target p50 <= {REQUEST_TARGET}: {})",
        verdict(p50 <= REQUEST_TARGET)
    );
    Ok(())
}

fn lost(run: &OneWay, total: u64) -> u64 {
    total.saturating_sub(run.delivered + run.refused)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The `q` quantile (nearest rank) of `times`.
fn percentile(times: &mut [Duration], q: f64) -> Duration {
    times.sort_unstable();
    let rank = ((times.len() as f64 * q).ceil() as usize).clamp(1, times.len().max(1));
    times.get(rank - 1).copied().unwrap_or_default()
}

fn ratio(ours: Duration, raw: Duration) -> f64 {
    ours.as_secs_f64() / raw.as_secs_f64().max(1e-12)
}

fn rate(per_second: f64) -> String {
    format!("{:.0}", per_second)
}

fn micros(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "missed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let mut times: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        assert_eq!(percentile(&mut times, 0.50), Duration::from_micros(50));
        assert_eq!(percentile(&mut times, 0.99), Duration::from_micros(99));
        assert_eq!(percentile(&mut [Duration::from_micros(7)], 0.99), Duration::from_micros(7));
        assert_eq!(percentile(&mut [], 0.5), Duration::ZERO);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
    }
}
