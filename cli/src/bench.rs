//! `sharded-router bench`: a short run of the benchmark workloads (one-way sends,
//! request/response, channels, scale, churn, overflow, back-pressure, Theater's
//! shapes) for our router, the hand-rolled `DashMap` of tokio senders, the
//! single-task anchor and the raw flume and tokio hops, printed as one table of
//! medians with ratios from the same run, and a second one for our router's
//! variants (ours-tokio: tokio-backed mailboxes; ours-handle: sends through
//! resolved handles). `--latency` measures latency
//! distributions instead (`bench_latency.rs`); `--plot FILE.svg` draws the result.
//!
//! The workloads are the ones the criterion benches run (the
//! `sharded-router-workloads` crate, `workloads/`); see its docs for how actors and
//! producers are run.

use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use sharded_router_workloads::{Fixture, Impl, Run, Spec};

use crate::bench_cases::{cases, human, median, pct, rate, times, Case, Progress, THEATER_STATED};

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
    /// Run only these implementations (comma-separated: ours, hand-rolled, anchor,
    /// limit, limit-tokio, ours-tokio, ours-handle).
    #[arg(long, value_delimiter = ',', value_parser = parse_impl)]
    pub impls: Vec<Impl>,
    /// Fixed size of every timed run (messages, round trips or pairs) instead of a
    /// measured one; for profiling, where a fixed amount of work is compared.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Measure latency distributions (p50/p99/p99.9) instead of throughput.
    #[arg(long)]
    pub latency: bool,
    /// Draw the ratios (or, with --latency, the percentiles) into this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: crate::cluster_bench::ClusterBenchArgs,
}

fn parse_impl(name: &str) -> Result<Impl, String> {
    Impl::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = Impl::ALL.iter().map(|i| i.name()).collect();
        format!("unknown implementation {name:?} (known: {})", known.join(", "))
    })
}

impl BenchArgs {
    pub fn selected(&self, imp: Impl) -> bool {
        self.impls.is_empty() || self.impls.contains(&imp)
    }
}

const N: usize = Impl::ALL.len();
/// The main table's implementations; our router's variants have a table of their own.
const MAIN: [Impl; 5] = [Impl::Ours, Impl::HandRolled, Impl::Anchor, Impl::Limit, Impl::LimitTokio];

/// One case's figures: the median rate of each implementation (`None`: not run or
/// not applicable), and the medians of the ratios taken run by run.
#[derive(Clone, Copy, Default)]
pub struct Row {
    pub rates: [Option<f64>; N],
    /// ours / hand-rolled.
    pub vs_hand: Option<f64>,
    /// ours / the faster of the two raw hops.
    pub vs_limit: Option<f64>,
    /// ours / anchor (rates), which is anchor / ours in time per message.
    pub vs_anchor: Option<f64>,
    /// ours-tokio / hand-rolled.
    pub tokio_vs_hand: Option<f64>,
    /// ours-handle / hand-rolled.
    pub handle_vs_hand: Option<f64>,
    /// ours-tokio / ours.
    pub tokio_vs_ours: Option<f64>,
    /// ours-handle / ours.
    pub handle_vs_ours: Option<f64>,
}

fn row(runs: &[[Option<f64>; N]]) -> Row {
    let col = |k: usize| median(runs.iter().filter_map(|r| r[k]).collect());
    let ratio = |f: &dyn Fn(&[Option<f64>; N]) -> Option<f64>| median(runs.iter().filter_map(f).collect());
    let ours = Impl::Ours.index();
    let faster_limit = |r: &[Option<f64>; N]| match (r[Impl::Limit.index()], r[Impl::LimitTokio.index()]) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let of = |a: Impl, b: Impl| ratio(&|r| Some(r[a.index()]? / r[b.index()]?));
    Row {
        rates: std::array::from_fn(col),
        vs_hand: of(Impl::Ours, Impl::HandRolled),
        vs_limit: ratio(&|r| Some(r[ours]? / faster_limit(r)?)),
        vs_anchor: of(Impl::Ours, Impl::Anchor),
        tokio_vs_hand: of(Impl::OursTokio, Impl::HandRolled),
        handle_vs_hand: of(Impl::OursHandle, Impl::HandRolled),
        tokio_vs_ours: of(Impl::OursTokio, Impl::Ours),
        handle_vs_ours: of(Impl::OursHandle, Impl::Ours),
    }
}

pub fn run(args: &BenchArgs) -> Result<(), Box<dyn Error>> {
    if args.cluster.cluster {
        return crate::cluster_bench::run(&args.cluster, args.runs);
    }
    if args.latency {
        return crate::bench_latency::run(args);
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
    let mut progress = Progress::new(specs.len() * N + cases.len() * N * (runs + 1));
    let mut results: Vec<Row> = vec![Row::default(); cases.len()];
    let mut notes = Vec::new();
    let started = Instant::now();

    for &spec in &specs {
        let fixtures: Vec<Option<Fixture>> = Impl::ALL
            .iter()
            .map(|&imp| {
                // Not started where none of this spec's cases applies to it.
                let wanted =
                    args.selected(imp) && cases.iter().any(|c| c.spec == spec && c.work.applies(imp));
                let fixture = wanted.then(|| Fixture::new(imp, spec));
                progress.step(&format!("started {} with {} actors", imp.name(), spec.actors));
                fixture
            })
            .collect();
        let mut overflow_seen = 0;
        for (index, case) in cases.iter().enumerate().filter(|(_, c)| c.spec == spec) {
            // Warm up and size each implementation's runs, then interleave the timed
            // runs so that noise on the machine falls on all of them alike.
            let sizes: Vec<Option<u64>> = fixtures
                .iter()
                .zip(Impl::ALL)
                .map(|(fixture, imp)| {
                    let probe = case.work.probe();
                    let size = fixture.as_ref().and_then(|fixture| {
                        // A short probe, then (unless the size is fixed) a full-length
                        // warm-up run whose rate sets the size of the timed runs.
                        let sized = |n: u64, run: Run| {
                            ((rate(n, run.elapsed) * run_time.as_secs_f64()) as u64).clamp(probe, 50_000_000)
                        };
                        let first = sized(probe, case.work.run(fixture, probe)?);
                        match args.messages {
                            Some(n) => Some(n),
                            None => Some(sized(first, case.work.run(fixture, first)?)),
                        }
                    });
                    progress.step(&format!("{} {}: {} (warming up)", case.group, case.label, imp.name()));
                    size
                })
                .collect();
            let mut per_run: Vec<[Option<f64>; N]> = Vec::with_capacity(runs);
            let mut refused = [(0u64, 0u64); N];
            for _ in 0..runs {
                let mut this = [None; N];
                for (k, fixture) in fixtures.iter().enumerate() {
                    if let (Some(n), Some(fixture)) = (sizes[k], fixture) {
                        if let Some(run) = case.work.run(fixture, n) {
                            this[k] = Some(rate(n, run.elapsed));
                            refused[k].0 += run.refused;
                            refused[k].1 += n;
                        }
                    }
                    progress.step(&format!("{} {}: {}", case.group, case.label, Impl::ALL[k].name()));
                }
                per_run.push(this);
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
            results[index] = row(&per_run);
            if refused.iter().any(|&(r, _)| r > 0) {
                let parts: Vec<String> = Impl::ALL
                    .iter()
                    .zip(refused)
                    .filter(|(_, (_, n))| *n > 0)
                    .map(|(imp, (r, n))| format!("{} {r} of {n}", imp.name()))
                    .collect();
                notes.push(format!("{} {}: refused {}", case.group, case.label, parts.join(", ")));
            }
        }
    }
    progress.finish();
    print_tables(args, &cases, &results, &notes);
    if let Some(path) = &args.plot {
        let bars: Vec<(String, Vec<Option<f64>>)> = cases
            .iter()
            .zip(&results)
            .map(|(c, r)| {
                let ratios = vec![r.vs_hand, r.vs_limit, r.vs_anchor, r.tokio_vs_hand, r.handle_vs_hand];
                (format!("{} {}", c.group, c.label), ratios)
            })
            .collect();
        std::fs::write(path, crate::plot::ratios(&RATIO_NAMES, &bars))?;
        println!("\nplot written to {}", path.display());
    }
    println!("\ntotal time {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The ratios `--plot` draws, per case.
const RATIO_NAMES: [&str; 5] = [
    "ours/hand-rolled",
    "ours/limit (faster raw hop)",
    "ours/anchor (= anchor/ours in time)",
    "ours-tokio/hand-rolled",
    "ours-handle/hand-rolled",
];

/// The main table's rates (ours and the baselines), formatted.
fn main_rates(r: &Row) -> String {
    MAIN.iter().map(|imp| human(r.rates[imp.index()])).collect::<Vec<_>>().join(" | ")
}

fn print_tables(args: &BenchArgs, cases: &[Case], results: &[Row], notes: &[String]) {
    let runs = args.runs.max(1);
    println!(
        "sharded-router bench: medians of {runs} interleaved runs of ~{} ms each; ratios are medians of \
         the per-run ratios",
        args.run_ms
    );
    println!(
        "(msgs/s; round trips/s for request/response; pairs/s for churn; ours: {} shards; limit = the \
         faster of the flume and tokio hops in each run)\n",
        default_shards()
    );
    println!(
        "| group | case | ours | hand-rolled | anchor | limit (flume) | limit-tokio | ours/hand-rolled | \
         ours/limit | anchor/ours (time) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (case, r) in cases.iter().zip(results) {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            case.group,
            case.label,
            main_rates(r),
            times(r.vs_hand),
            pct(r.vs_limit),
            times(r.vs_anchor),
        );
    }
    if args.selected(Impl::OursTokio) || args.selected(Impl::OursHandle) {
        println!(
            "\nour router's variants, same runs: ours-tokio (tokio-backed mailboxes), ours-handle (sends \
             through handles resolved at setup; n/a: no handle applies)\n"
        );
        println!(
            "| group | case | ours-tokio | ours-handle | ours-tokio/hand-rolled | ours-handle/hand-rolled | \
             ours-tokio/ours | ours-handle/ours |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|");
        for (case, r) in cases.iter().zip(results) {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                case.group,
                case.label,
                human(r.rates[Impl::OursTokio.index()]),
                human(r.rates[Impl::OursHandle.index()]),
                times(r.tokio_vs_hand),
                times(r.handle_vs_hand),
                times(r.tokio_vs_ours),
                times(r.handle_vs_ours),
            );
        }
    }
    for note in notes {
        println!("\n{note}");
    }

    let theater: Vec<(&Case, &Row)> =
        cases.iter().zip(results).filter(|(c, _)| c.group == "8 theater").collect();
    if !theater.is_empty() {
        println!("\nTheater's shapes (mailbox 100) beside Theater's stated rates:\n");
        println!(
            "| actors | Theater (stated) | ours | hand-rolled | anchor | limit | limit-tokio | ours/stated |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (case, r) in theater {
            let stated = THEATER_STATED.iter().find(|(a, _)| *a == case.spec.actors).map(|&(_, s)| s);
            println!(
                "| {} | {} | {} | {} |",
                case.spec.actors,
                human(stated),
                main_rates(r),
                times(r.rates[0].zip(stated).map(|(o, s)| o / s))
            );
        }
    }

    // The targets this run can check (instructions: benches/instructions.sh).
    let find = |group: &str, label: &str| {
        cases.iter().position(|c| c.group == group && c.label == label).map(|i| results[i])
    };
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "n/a",
    };
    let checked = [
        ("4 scale", "100 actors, acked, 2 producers"),
        ("4 scale", "10000 actors, acked, 2 producers"),
        ("4 scale", "100000 actors, acked, 2 producers"),
        ("1 one-way", "acked, 100 actors, 2 producers"),
        ("3 channels", "channel messages, 100 open channels, 2 producers"),
        ("2 request/response", "1 requester, 100 actors"),
        ("2 request/response", "8 requesters, 100 actors"),
    ];
    let rows: Vec<_> = checked.iter().filter_map(|&(g, l)| Some((g, l, find(g, l)?))).collect();
    if !rows.is_empty() {
        println!("\ntargets (ours >= 1.0x hand-rolled; ours >= 90% of the faster raw hop):");
        for (group, label, r) in rows {
            println!(
                "  {group} {label}: ours/hand-rolled {} ({}), ours/limit {} ({})",
                times(r.vs_hand),
                verdict(r.vs_hand.map(|x| x >= 1.0)),
                pct(r.vs_limit),
                verdict(r.vs_limit.map(|x| x >= 0.9)),
            );
        }
    }
    if let (Some(small), Some(big)) = (
        find("4 scale", "100 actors, acked, 2 producers"),
        find("4 scale", "100000 actors, acked, 2 producers"),
    ) {
        let share = |k: usize| Some(big.rates[k]? / small.rates[k]?);
        println!(
            "  scale: ours at 100k actors is {} of ours at 100 actors; hand-rolled keeps {}, the flume limit {}",
            pct(share(Impl::Ours.index())),
            pct(share(Impl::HandRolled.index())),
            pct(share(Impl::Limit.index())),
        );
    }
    if let Some(r) = find("5 churn", "register + unregister pairs, 100 actors") {
        println!(
            "  churn: ours {} pairs/s (>= 500 k/s: {})",
            human(r.rates[0]),
            verdict(r.rates[0].map(|x| x >= 500_000.0))
        );
    }
}

pub fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use sharded_router_workloads::{Full, Mode};

    use super::*;
    use crate::bench_cases::Work;

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
            assert_eq!(fixture.churn(100).is_some(), imp.churns(), "{}", imp.name());

            let channels = Fixture::new(imp, Spec::channels(10));
            let channel_work = Work::OneWay { producers: 2, mode: Mode::Channel, full: Full::Wait };
            match channel_work.run(&channels, 2_000) {
                Some(run) => assert_eq!(run.refused, 0, "{}", imp.name()),
                None => assert_eq!(imp, Impl::OursHandle),
            }

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

            // Theater's shape: one actor with a mailbox of 100, producers waiting.
            let theater = Fixture::new(imp, Spec::theater(1));
            assert_eq!(theater.one_way(2, Mode::Acked, Full::Await, 5_000).refused, 0, "{}", imp.name());
        }
    }

    /// `--impls` takes every implementation by its name, and nothing else.
    #[test]
    fn impls_parse_by_name() {
        for imp in Impl::ALL {
            assert_eq!(parse_impl(imp.name()), Ok(imp));
        }
        assert_eq!(parse_impl("ours-tokio"), Ok(Impl::OursTokio));
        assert_eq!(parse_impl("ours-handle"), Ok(Impl::OursHandle));
        assert!(parse_impl("ours_tokio").unwrap_err().contains("ours-handle"));
    }

    /// A latency fixture records one send → receive time per message to a counted
    /// actor, and one round-trip time per request, and starts afresh each run.
    #[test]
    fn latency_is_recorded_per_message() {
        for imp in Impl::ALL {
            let fixture = Fixture::new(imp, Spec::actors(10).with_latency());
            let run = fixture.one_way_paced(2, Mode::Acked, Full::Wait, 1_000, Some(200_000.0));
            let h = run.latency.expect("a latency fixture records latencies");
            assert_eq!(h.len(), 1_000, "{}", imp.name());
            assert!(h.min() >= 1 && h.max() < 60_000_000_000, "{}", imp.name());
            let again = fixture.one_way(2, Mode::Acked, Full::Wait, 500);
            assert_eq!(again.latency.map(|h| h.len()), Some(500), "{}", imp.name());
            let trips = fixture.round_trips_paced(2, 300, None);
            assert_eq!(trips.latency.map(|h| h.len()), Some(300), "{}", imp.name());
        }
        // A throughput fixture does not.
        let plain = Fixture::new(Impl::Ours, Spec::actors(10));
        assert!(plain.one_way(1, Mode::Acked, Full::Wait, 100).latency.is_none());
    }
}
