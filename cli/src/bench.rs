//! `sharded-router bench`: a short run of the benchmark workloads (one-way sends,
//! request/response, scale, churn, overflow, back-pressure) for our router, the single-task anchor
//! and the raw flume limit, printed as one table of medians with ratios from the same
//! run.
//!
//! The workloads are the ones the criterion benches run (the
//! `sharded-router-workloads` crate, `workloads/`); see its docs for how actors and
//! producers are run.

use std::error::Error;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::Args;

use sharded_router_workloads::{Fixture, Full, Impl, Mode, Run, Spec};

#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Timed runs per case and implementation; the table shows the median.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Target length of one timed run, in milliseconds.
    #[arg(long, default_value_t = 40)]
    pub run_ms: u64,
    /// Run only the cases whose "group case" text contains this (e.g. "scale").
    #[arg(long)]
    pub only: Option<String>,
    /// Run only these implementations (comma-separated: ours, anchor, limit).
    #[arg(long, value_delimiter = ',', value_parser = parse_impl)]
    pub impls: Vec<Impl>,
    /// Fixed size of every timed run (messages, round trips or pairs) instead of a
    /// measured one; for profiling, where a fixed amount of work is compared.
    #[arg(long)]
    pub messages: Option<u64>,
    #[command(flatten)]
    pub cluster: crate::cluster_bench::ClusterBenchArgs,
}

fn parse_impl(name: &str) -> Result<Impl, String> {
    Impl::ALL.into_iter().find(|i| i.name() == name).ok_or_else(|| format!("unknown implementation {name:?}"))
}

#[derive(Clone, Copy)]
enum Work {
    OneWay { producers: usize, mode: Mode, full: Full },
    Requests { requesters: usize },
    Churn,
}

struct Case {
    group: &'static str,
    label: String,
    spec: Spec,
    work: Work,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (mode, name) in [(Mode::Acked, "acked"), (Mode::Tell, "fire-and-forget")] {
        for producers in [2, 4] {
            cases.push(Case {
                group: "1 one-way",
                label: format!("{name}, 100 actors, {producers} producers"),
                spec: Spec::actors(100),
                work: Work::OneWay { producers, mode, full: Full::Wait },
            });
        }
    }
    for requesters in [1, 8] {
        cases.push(Case {
            group: "2 request/response",
            label: format!("{requesters} requester{}, 100 actors", if requesters == 1 { "" } else { "s" }),
            spec: Spec::actors(100),
            work: Work::Requests { requesters },
        });
    }
    cases.push(Case {
        group: "3 channels",
        label: "channel messages, 100 open channels, 2 producers".to_owned(),
        spec: Spec::channels(100),
        work: Work::OneWay { producers: 2, mode: Mode::Channel, full: Full::Wait },
    });
    for actors in [100, 10_000, 100_000] {
        cases.push(Case {
            group: "4 scale",
            label: format!("{actors} actors, acked, 2 producers"),
            spec: Spec::actors(actors),
            work: Work::OneWay { producers: 2, mode: Mode::Acked, full: Full::Wait },
        });
    }
    cases.push(Case {
        group: "5 churn",
        label: "register + unregister pairs, 100 actors".to_owned(),
        spec: Spec::actors(100),
        work: Work::Churn,
    });
    cases.push(Case {
        group: "6 overflow",
        label: "1 slow actor of 100, acked, 2 producers".to_owned(),
        spec: Spec::overflow(),
        work: Work::OneWay { producers: 2, mode: Mode::Acked, full: Full::Refuse },
    });
    cases.push(Case {
        group: "7 back-pressure",
        label: "4 actors at their bound, acked, 4 producers waiting for room".to_owned(),
        spec: Spec::backpressure(),
        work: Work::OneWay { producers: 4, mode: Mode::Acked, full: Full::Await },
    });
    cases
}

impl Work {
    /// Messages (or round trips) in the first, sizing run.
    fn probe(self) -> u64 {
        match self {
            Work::OneWay { .. } | Work::Churn => 4096,
            Work::Requests { .. } => 512,
        }
    }

    /// One timed run; `None` where the implementation has nothing to measure
    /// (the raw channel has no registry to churn).
    fn run(self, fixture: &Fixture, n: u64) -> Option<Run> {
        match self {
            Work::OneWay { producers, mode, full } => Some(fixture.one_way(producers, mode, full, n)),
            Work::Requests { requesters } => Some(fixture.round_trips(requesters, n)),
            Work::Churn => fixture.churn(n).map(|elapsed| Run { elapsed, refused: 0 }),
        }
    }
}

/// A progress bar on stderr (one line per step when stderr is not a terminal).
struct Progress {
    total: usize,
    done: usize,
    tty: bool,
    started: Instant,
}

impl Progress {
    fn new(total: usize) -> Self {
        Self { total, done: 0, tty: std::io::stderr().is_terminal(), started: Instant::now() }
    }

    fn step(&mut self, what: &str) {
        self.done = (self.done + 1).min(self.total);
        const WIDTH: usize = 30;
        let filled = WIDTH * self.done / self.total.max(1);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(
                err,
                "\r\x1b[2K[{}{}] {:>3}% {:>4.1}s {what}",
                "#".repeat(filled),
                "-".repeat(WIDTH - filled),
                100 * self.done / self.total.max(1),
                self.started.elapsed().as_secs_f64(),
            );
        } else if self.done == self.total || self.done % 10 == 0 {
            let _ = writeln!(err, "[{}/{}] {what}", self.done, self.total);
        }
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.tty {
            let _ =
                writeln!(std::io::stderr(), "\r\x1b[2Kdone in {:.1}s", self.started.elapsed().as_secs_f64());
        }
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn rate(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn human(per_sec: Option<f64>) -> String {
    match per_sec {
        None => "n/a".to_owned(),
        Some(r) if r >= 1e6 => format!("{:.2} M", r / 1e6),
        Some(r) => format!("{:.0} k", r / 1e3),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? / b?)
}

/// Medians of one case, in `Impl::ALL` order (`None`: not applicable).
type Medians = [Option<f64>; 3];

pub fn run(args: &BenchArgs) -> Result<(), Box<dyn Error>> {
    if args.cluster.cluster {
        return crate::cluster_bench::run(&args.cluster, args.runs);
    }
    let runs = args.runs.max(1);
    let run_time = Duration::from_millis(args.run_ms.max(1));
    let mut cases = cases();
    if let Some(only) = &args.only {
        cases.retain(|c| format!("{} {}", c.group, c.label).contains(only.as_str()));
        if cases.is_empty() {
            return Err(format!("no case matches {only:?}").into());
        }
    }
    let mut specs: Vec<Spec> = Vec::new();
    for case in &cases {
        if !specs.contains(&case.spec) {
            specs.push(case.spec);
        }
    }
    let mut progress = Progress::new(specs.len() * 3 + cases.len() * 3 * (runs + 1));
    let mut results: Vec<Medians> = vec![[None; 3]; cases.len()];
    let mut notes = Vec::new();
    let started = Instant::now();
    let selected = |imp: Impl| args.impls.is_empty() || args.impls.contains(&imp);

    for &spec in &specs {
        let fixtures: Vec<Option<Fixture>> = Impl::ALL
            .iter()
            .map(|&imp| {
                let fixture = selected(imp).then(|| Fixture::new(imp, spec));
                progress.step(&format!("started {} with {} actors", imp.name(), spec.actors));
                fixture
            })
            .collect();
        let mut overflow_seen = 0;
        for (index, case) in cases.iter().enumerate().filter(|(_, c)| c.spec == spec) {
            // Warm up and size each implementation's runs, then interleave the timed
            // runs so that noise on the machine falls on all three alike.
            let sizes: Vec<Option<u64>> = fixtures
                .iter()
                .zip(Impl::ALL)
                .map(|(fixture, imp)| {
                    let probe = case.work.probe();
                    let size = fixture.as_ref().and_then(|fixture| {
                        // A short probe, then a full-length warm-up run whose rate
                        // sets the size of the timed runs.
                        let sized = |n: u64, run: Run| {
                            ((rate(n, run.elapsed) * run_time.as_secs_f64()) as u64).clamp(probe, 50_000_000)
                        };
                        let first = sized(probe, case.work.run(fixture, probe)?);
                        let warm = sized(first, case.work.run(fixture, first)?);
                        Some(args.messages.unwrap_or(warm))
                    });
                    progress.step(&format!("{} {}: {} (warming up)", case.group, case.label, imp.name()));
                    size
                })
                .collect();
            let mut rates: Vec<Vec<f64>> = (0..3).map(|_| Vec::with_capacity(runs)).collect();
            let mut refused = [(0u64, 0u64); 3];
            for _ in 0..runs {
                for (k, fixture) in fixtures.iter().enumerate() {
                    if let (Some(n), Some(fixture)) = (sizes[k], fixture) {
                        if let Some(run) = case.work.run(fixture, n) {
                            rates[k].push(rate(n, run.elapsed));
                            refused[k].0 += run.refused;
                            refused[k].1 += n;
                        }
                    }
                    progress.step(&format!("{} {}: {}", case.group, case.label, Impl::ALL[k].name()));
                }
            }
            let overflowed = fixtures[0].as_ref().and_then(Fixture::overflowed).unwrap_or(0);
            if overflowed > overflow_seen {
                notes.push(format!(
                    "{} {}: ours delivered {} messages through its shards' overflow queues (mailbox full)",
                    case.group,
                    case.label,
                    overflowed - overflow_seen
                ));
            }
            overflow_seen = overflowed;
            for (k, r) in rates.into_iter().enumerate() {
                results[index][k] = (!r.is_empty()).then(|| median(r));
            }
            if refused.iter().any(|&(r, _)| r > 0) {
                let parts: Vec<String> = Impl::ALL
                    .iter()
                    .zip(refused)
                    .map(|(imp, (r, n))| format!("{} {r} of {n}", imp.name()))
                    .collect();
                notes.push(format!("{} {}: refused {}", case.group, case.label, parts.join(", ")));
            }
        }
    }
    progress.finish();

    println!(
        "sharded-router bench: medians of {runs} runs of ~{} ms each, ratios from this run",
        args.run_ms
    );
    println!(
        "(msgs/s; round trips/s for request/response; pairs/s for churn; ours: {} shards)\n",
        default_shards()
    );
    println!("| group | case | ours | anchor | limit | ours/anchor | ours/limit |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (case, [ours, anchor, limit]) in cases.iter().zip(&results) {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            case.group,
            case.label,
            human(*ours),
            human(*anchor),
            human(*limit),
            ratio(*ours, *anchor).map_or("n/a".to_owned(), |r| format!("{r:.2}x")),
            ratio(*ours, *limit).map_or("n/a".to_owned(), |r| format!("{:.0}%", 100.0 * r)),
        );
    }

    for note in &notes {
        println!("\n{note}");
    }

    // The targets that this short run can check.
    let find = |group: &str, label: &str| {
        cases.iter().position(|c| c.group == group && c.label == label).map(|i| results[i])
    };
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "n/a",
    };
    let pct = |r: Option<f64>| r.map_or("n/a".to_owned(), |r| format!("{:.0}%", 100.0 * r));
    let times = |r: Option<f64>| r.map_or("n/a".to_owned(), |r| format!("{r:.2}x"));
    println!("\ntargets:");
    for p in [2, 4] {
        if let Some([o, a, l]) = find("1 one-way", &format!("acked, 100 actors, {p} producers")) {
            let (vs_anchor, vs_limit) = (ratio(o, a), ratio(o, l));
            println!(
                "  one-way acked, {p} producers: ours/anchor {} (>= 5x: {}), ours/limit {} (>= 50%: {})",
                times(vs_anchor),
                verdict(vs_anchor.map(|r| r >= 5.0)),
                pct(vs_limit),
                verdict(vs_limit.map(|r| r >= 0.5)),
            );
        }
    }
    for r in [1, 8] {
        let label = format!("{r} requester{}, 100 actors", if r == 1 { "" } else { "s" });
        if let Some([o, a, _]) = find("2 request/response", &label) {
            let vs_anchor = ratio(o, a);
            println!(
                "  request/response, {r} requester(s): ours/anchor {} (>= 1.5x: {})",
                times(vs_anchor),
                verdict(vs_anchor.map(|r| r >= 1.5))
            );
        }
    }
    if let (Some([small, _, limit_small]), Some([big, _, limit_big])) = (
        find("4 scale", "100 actors, acked, 2 producers"),
        find("4 scale", "100000 actors, acked, 2 producers"),
    ) {
        let share = ratio(big, small);
        println!(
            "  scale: ours at 100k actors is {} of ours at 100 actors (>= 80%: {}); the limit keeps {}",
            pct(share),
            verdict(share.map(|r| r >= 0.8)),
            pct(ratio(limit_big, limit_small)),
        );
    }
    if let Some([ours, ..]) = find("5 churn", "register + unregister pairs, 100 actors") {
        println!(
            "  churn: ours {} pairs/s (>= 500 k/s: {})",
            human(ours),
            verdict(ours.map(|r| r >= 500_000.0))
        );
    }
    println!("\ntotal time {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every workload completes for every implementation, with nothing lost.
    #[test]
    fn workloads_complete() {
        for imp in Impl::ALL {
            let fixture = Fixture::new(imp, Spec::actors(10));
            for mode in [Mode::Acked, Mode::Tell] {
                for producers in [1, 3] {
                    let run = fixture.one_way(producers, mode, Full::Wait, 2_000);
                    assert_eq!(run.refused, 0, "{}", imp.name());
                }
            }
            fixture.round_trips(4, 200);
            assert_eq!(fixture.churn(100).is_some(), imp != Impl::Limit);

            let channels = Fixture::new(imp, Spec::channels(10));
            assert_eq!(channels.one_way(2, Mode::Channel, Full::Wait, 2_000).refused, 0, "{}", imp.name());

            let overflow = Fixture::new(imp, Spec::overflow());
            let run = overflow.one_way(2, Mode::Acked, Full::Refuse, 2_000);
            assert!(run.refused <= 2_000);

            // Every message waits its turn and gets through (the run ends only
            // when all of them were taken).
            let backpressure = Fixture::new(imp, Spec::backpressure());
            assert_eq!(
                backpressure.one_way(4, Mode::Acked, Full::Await, 20_000).refused,
                0,
                "{}",
                imp.name()
            );
        }
    }
}
