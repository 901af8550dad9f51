//! `sharded-router stats`: a live view of a running node, read through the
//! gateway's `Stats` command, so it works against any node that serves the
//! gateway.
//!
//! Every interval it takes a snapshot and prints one row per shard and a total:
//! rates (messages and requests per second) and request latency quantiles come
//! from the difference between this snapshot and the previous one; depths,
//! actors and channels are as of now. `--once` prints the counts since the start
//! instead (and latency quantiles since the start), and exits: its columns are
//! the same as the live view's, rates shown as `-`.

use std::error::Error;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Args;
use sharded_router::gateway::{Client, ClientConfig, ShardStats, StatsReport, DEFAULT_BIND};
use sharded_router::LatencySnapshot;

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// The gateway's address.
    #[arg(long, default_value_t = DEFAULT_BIND)]
    pub connect: SocketAddr,
    /// Print one snapshot (counts since the start) and exit.
    #[arg(long)]
    pub once: bool,
    /// Time between two refreshes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// How long to wait for each answer, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

pub async fn run(args: StatsArgs) -> Result<(), Box<dyn Error>> {
    let config = ClientConfig::default().timeout(Duration::from_millis(args.timeout_ms));
    let (client, _events) = Client::connect(args.connect, config)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", args.connect))?;
    let mut previous = client.stats().await?;
    if args.once {
        print!("{}", render(&previous, None));
        return Ok(());
    }
    let interval = Duration::from_millis(args.interval_ms.max(1));
    let clear = std::io::stdout().is_terminal();
    let mut taken = Instant::now();
    loop {
        tokio::time::sleep(interval).await;
        let report = client.stats().await?;
        let now = Instant::now();
        let mut screen = String::new();
        if clear {
            // Home the cursor and clear the screen, as `watch` does.
            screen.push_str("\x1b[H\x1b[2J");
        }
        screen.push_str(&render(&report, Some((&previous, now - taken))));
        screen.push('\n');
        let mut out = std::io::stdout().lock();
        out.write_all(screen.as_bytes())?;
        out.flush()?;
        previous = report;
        taken = now;
    }
}

/// One shard's row, or the total.
struct Row {
    name: String,
    messages: u64,
    messages_per_sec: Option<f64>,
    parked: u64,
    rejected: u64,
    dead_letters: u64,
    requests: u64,
    requests_per_sec: Option<f64>,
    latency: LatencySnapshot,
    actors: u64,
}

impl Row {
    fn new(name: String, now: &ShardStats, before: Option<(&ShardStats, Duration)>) -> Self {
        let messages = |s: &ShardStats| s.delivered_direct + s.delivered_overflow;
        let per_sec = |now: u64, then: u64, elapsed: Duration| {
            now.saturating_sub(then) as f64 / elapsed.as_secs_f64().max(1e-9)
        };
        let (messages_per_sec, requests_per_sec, latency) = match before {
            Some((then, elapsed)) => (
                Some(per_sec(messages(now), messages(then), elapsed)),
                Some(per_sec(now.requests, then.requests, elapsed)),
                now.latency().since(&then.latency()),
            ),
            None => (None, None, now.latency()),
        };
        Self {
            name,
            messages: messages(now),
            messages_per_sec,
            parked: now.overflow_depth,
            rejected: now.rejected,
            dead_letters: now.dead_letters,
            requests: now.requests,
            requests_per_sec,
            latency,
            actors: now.registered_actors,
        }
    }

    fn add(&mut self, other: &Self) {
        let sum = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a + b);
        self.messages += other.messages;
        self.messages_per_sec = sum(self.messages_per_sec, other.messages_per_sec);
        self.parked += other.parked;
        self.rejected += other.rejected;
        self.dead_letters += other.dead_letters;
        self.requests += other.requests;
        self.requests_per_sec = sum(self.requests_per_sec, other.requests_per_sec);
        self.latency.add(&other.latency);
        self.actors += other.actors;
    }
}

/// The column headers; `--once` output keeps them as they are.
const HEADER: [&str; 11] =
    ["shard", "msgs", "msgs/s", "parked", "rejected", "dead", "requests", "req/s", "p50", "p99", "actors"];

/// The table for `now`; with the previous snapshot and the time between them,
/// rates and the interval's latency quantiles.
fn render(now: &StatsReport, before: Option<(&StatsReport, Duration)>) -> String {
    let mut rows: Vec<Row> = now
        .shards
        .iter()
        .map(|s| {
            let then = before.and_then(|(b, elapsed)| b.shards.get(s.shard).map(|t| (t, elapsed)));
            Row::new(s.shard.to_string(), s, then)
        })
        .collect();
    let mut total = Row::new("all".into(), &ShardStats::default(), None);
    total.messages_per_sec = before.map(|_| 0.0);
    total.requests_per_sec = before.map(|_| 0.0);
    for row in &rows {
        total.add(row);
    }
    rows.push(total);

    let mut out = String::new();
    let widths = [5, 12, 10, 8, 9, 8, 10, 9, 9, 9, 7];
    let mut line = |cells: [String; 11]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let _ = write!(text, "{}{cell:>width$}", if i == 0 { "" } else { " " });
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(HEADER.map(str::to_owned));
    for row in &rows {
        line([
            row.name.clone(),
            row.messages.to_string(),
            rate(row.messages_per_sec),
            row.parked.to_string(),
            row.rejected.to_string(),
            row.dead_letters.to_string(),
            row.requests.to_string(),
            rate(row.requests_per_sec),
            latency(row.latency.quantile(0.5)),
            latency(row.latency.quantile(0.99)),
            row.actors.to_string(),
        ]);
    }
    let c = &now.channels;
    let _ = writeln!(
        out,
        "channels: {} open, {} opened, {} rejected, {} messages",
        c.open, c.opened, c.rejected, c.messages
    );
    out
}

fn rate(per_sec: Option<f64>) -> String {
    match per_sec {
        None => "-".into(),
        Some(r) if r >= 1e6 => format!("{:.2}M", r / 1e6),
        Some(r) if r >= 1e4 => format!("{:.1}k", r / 1e3),
        Some(r) => format!("{r:.1}"),
    }
}

fn latency(d: Option<Duration>) -> String {
    match d {
        None => "-".into(),
        Some(d) if d >= Duration::from_secs(1) => format!("{:.2}s", d.as_secs_f64()),
        Some(d) if d >= Duration::from_millis(1) => format!("{:.2}ms", d.as_secs_f64() * 1e3),
        Some(d) => format!("{:.1}us", d.as_secs_f64() * 1e6),
    }
}
