//! `sharded-router bench --latency`: latency distributions (send → receive for acked
//! one-way messages, round-trip time for requests) of every implementation, at a
//! fixed offered load below saturation and at saturation, and with one slow actor
//! among 100. Histograms are `hdrhistogram`s merged over the interleaved runs.

use std::error::Error;
use std::time::Instant;

use sharded_router_workloads::{histogram, Fixture, Full, Histogram, Impl, Mode, Percentiles, Spec};

use crate::bench::BenchArgs;
use crate::bench_cases::{human, median, rate, Progress};

#[derive(Clone, Copy)]
enum Kind {
    OneWay { producers: usize, full: Full },
    Requests { requesters: usize },
}

struct Case {
    label: &'static str,
    spec: Spec,
    kind: Kind,
    /// Offered load in messages (round trips) per second; `None`: saturation.
    load: Option<f64>,
    /// Messages (round trips) per run.
    count: u64,
}

/// The offered load below saturation: about a tenth of what the slowest
/// implementation sustains here.
const ONE_WAY_LOAD: f64 = 200_000.0;
const REQUEST_LOAD: f64 = 40_000.0;

fn cases() -> Vec<Case> {
    let one_way = Kind::OneWay { producers: 2, full: Full::Wait };
    let refuse = Kind::OneWay { producers: 2, full: Full::Refuse };
    let mailbox_64 = Spec { slow_actor: false, ..Spec::overflow() };
    vec![
        Case {
            label: "one-way acked, 100 actors, 2 producers",
            spec: Spec::actors(100),
            kind: one_way,
            load: Some(ONE_WAY_LOAD),
            count: 60_000,
        },
        Case {
            label: "one-way acked, 100 actors, 2 producers",
            spec: Spec::actors(100),
            kind: one_way,
            load: None,
            count: 100_000,
        },
        Case {
            label: "request/response, 100 actors, 8 requesters",
            spec: Spec::actors(100),
            kind: Kind::Requests { requesters: 8 },
            load: Some(REQUEST_LOAD),
            count: 12_000,
        },
        Case {
            label: "request/response, 100 actors, 8 requesters",
            spec: Spec::actors(100),
            kind: Kind::Requests { requesters: 8 },
            load: None,
            count: 40_000,
        },
        Case {
            label: "one-way acked, 100 actors (mailbox 64), no slow actor, refusing when full",
            spec: mailbox_64,
            kind: refuse,
            load: Some(ONE_WAY_LOAD),
            count: 60_000,
        },
        Case {
            label: "one-way acked, 100 actors (mailbox 64), 1 slow, others' latency, refusing when full",
            spec: Spec::overflow(),
            kind: refuse,
            load: Some(ONE_WAY_LOAD),
            count: 60_000,
        },
    ]
}

/// One case's result for one implementation.
pub struct Measured {
    pub percentiles: Percentiles,
    /// Median achieved rate over the runs.
    pub rate: Option<f64>,
    pub refused: u64,
}

fn micros(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.1} µs", ns as f64 / 1e3)
    }
}

fn load_text(case: &Case) -> String {
    match case.load {
        Some(l) => format!("{} /s offered", human(Some(l))),
        None => "saturation".to_owned(),
    }
}

pub fn run(args: &BenchArgs) -> Result<(), Box<dyn Error>> {
    let runs = args.runs.max(1);
    let mut cases = cases();
    if let Some(only) = &args.only {
        cases.retain(|c| format!("{} {}", c.label, load_text(c)).contains(only.as_str()));
        if cases.is_empty() {
            return Err(format!("no latency case matches {only:?}").into());
        }
    }
    let started = Instant::now();
    let impls: Vec<Impl> = Impl::ALL.into_iter().filter(|&i| args.selected(i)).collect();
    let mut progress = Progress::new(cases.len() * impls.len() * (runs + 2));
    let mut results: Vec<Vec<(Impl, Measured)>> = Vec::new();
    for case in &cases {
        let spec = case.spec.with_latency();
        let fixtures: Vec<(Impl, Fixture)> = impls
            .iter()
            .map(|&imp| {
                let f = Fixture::new(imp, spec);
                progress.step(&format!("started {}", imp.name()));
                (imp, f)
            })
            .collect();
        let measure = |f: &Fixture, n: u64| match case.kind {
            Kind::OneWay { producers, full } => f.one_way_paced(producers, Mode::Acked, full, n, case.load),
            Kind::Requests { requesters } => f.round_trips_paced(requesters, n, case.load),
        };
        for (imp, f) in &fixtures {
            measure(f, case.count / 4);
            progress.step(&format!("{} ({}): {} warming up", case.label, load_text(case), imp.name()));
        }
        let mut merged: Vec<Histogram<u64>> = fixtures.iter().map(|_| histogram()).collect();
        let mut rates: Vec<Vec<f64>> = fixtures.iter().map(|_| Vec::new()).collect();
        let mut refused = vec![0u64; fixtures.len()];
        for _ in 0..runs {
            for (k, (imp, f)) in fixtures.iter().enumerate() {
                let run = measure(f, case.count);
                if let Some(h) = &run.latency {
                    let _ = merged[k].add(h);
                }
                rates[k].push(rate(case.count, run.elapsed));
                refused[k] += run.refused;
                progress.step(&format!("{} ({}): {}", case.label, load_text(case), imp.name()));
            }
        }
        results.push(
            fixtures
                .iter()
                .zip(merged)
                .zip(rates)
                .zip(refused)
                .map(|((((imp, _), h), r), refused)| {
                    (*imp, Measured { percentiles: Percentiles::of(&h), rate: median(r), refused })
                })
                .collect(),
        );
        drop(fixtures);
    }
    progress.finish();

    println!(
        "sharded-router bench --latency: {runs} interleaved runs per implementation, histograms merged; \
         one-way: send -> receive (acked); requests: round trip"
    );
    println!(
        "(offered loads are paced in 1 ms timer ticks; saturation: as fast as the producers go; ours: {} \
         shards)\n",
        crate::bench::default_shards()
    );
    println!("| case | load | impl | p50 | p99 | p99.9 | max | achieved/s | refused |");
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|");
    for (case, rows) in cases.iter().zip(&results) {
        for (imp, m) in rows {
            let p = m.percentiles;
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                case.label,
                load_text(case),
                imp.name(),
                micros(p.p50),
                micros(p.p99),
                micros(p.p999),
                micros(p.max),
                human(m.rate),
                m.refused
            );
        }
    }

    // The slow actor's effect on the others' p99, per implementation.
    let find = |needle: &str| cases.iter().position(|c| c.label.contains(needle));
    if let (Some(base), Some(slow)) = (find("no slow actor"), find("1 slow")) {
        println!("\none slow actor among 100: the others' p99 against the same run without it");
        for ((imp, b), (_, s)) in results[base].iter().zip(&results[slow]) {
            println!(
                "  {}: {} -> {} ({:.2}x)",
                imp.name(),
                micros(b.percentiles.p99),
                micros(s.percentiles.p99),
                s.percentiles.p99 as f64 / b.percentiles.p99.max(1) as f64
            );
        }
    }
    if let Some(path) = &args.plot {
        let groups: Vec<(String, Vec<(&'static str, Percentiles)>)> = cases
            .iter()
            .zip(&results)
            .map(|(c, rows)| {
                (
                    format!("{} ({})", c.label, load_text(c)),
                    rows.iter().map(|(i, m)| (i.name(), m.percentiles)).collect(),
                )
            })
            .collect();
        std::fs::write(path, crate::plot::latency(&groups))?;
        println!("\nplot written to {}", path.display());
    }
    println!("\ntotal time {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
