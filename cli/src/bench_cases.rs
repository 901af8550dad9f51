//! The cases `sharded-router bench` runs, and the small helpers its reports share
//! (progress bar, medians, number formatting).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use sharded_router_workloads::{Fixture, Full, Impl, Mode, Run, Spec};

#[derive(Clone, Copy)]
pub enum Work {
    OneWay { producers: usize, mode: Mode, full: Full },
    Requests { requesters: usize },
    Churn,
}

pub struct Case {
    pub group: &'static str,
    pub label: String,
    pub spec: Spec,
    pub work: Work,
}

/// Theater's stated rates (msgs/s) for its actor counts, beside which group 8 is
/// printed.
pub const THEATER_STATED: [(usize, f64); 4] = [(1, 500e3), (10, 100e3), (100, 80e3), (1000, 50e3)];

pub fn cases() -> Vec<Case> {
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
    for (actors, _) in THEATER_STATED {
        cases.push(Case {
            group: "8 theater",
            label: format!(
                "{actors} actor{}, mailbox 100, acked, 2 producers",
                if actors == 1 { "" } else { "s" }
            ),
            spec: Spec::theater(actors),
            work: Work::OneWay { producers: 2, mode: Mode::Acked, full: Full::Await },
        });
    }
    cases
}

impl Work {
    /// Messages (or round trips) in the first, sizing run.
    pub fn probe(self) -> u64 {
        match self {
            Work::OneWay { .. } | Work::Churn => 4096,
            Work::Requests { .. } => 512,
        }
    }

    /// Whether `imp` has something of its own to measure here (the raw channels
    /// have no registry to churn; ours-handle has no handle for channel messages or
    /// churn).
    pub fn applies(self, imp: Impl) -> bool {
        match self {
            Work::OneWay { mode, .. } => imp.sends_in(mode),
            Work::Requests { .. } => true,
            Work::Churn => imp.churns(),
        }
    }

    /// One timed run; `None` where the implementation has nothing to measure
    /// ([`Work::applies`]).
    pub fn run(self, fixture: &Fixture, n: u64) -> Option<Run> {
        if !self.applies(fixture.imp()) {
            return None;
        }
        match self {
            Work::OneWay { producers, mode, full } => Some(fixture.one_way(producers, mode, full, n)),
            Work::Requests { requesters } => Some(fixture.round_trips(requesters, n)),
            Work::Churn => fixture.churn(n).map(|elapsed| Run { elapsed, refused: 0, latency: None }),
        }
    }
}

/// A progress bar on stderr (one line per step when stderr is not a terminal).
pub struct Progress {
    total: usize,
    done: usize,
    tty: bool,
    started: Instant,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        Self { total, done: 0, tty: std::io::stderr().is_terminal(), started: Instant::now() }
    }

    pub fn step(&mut self, what: &str) {
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

    pub fn finish(&self) {
        if self.tty {
            let _ =
                writeln!(std::io::stderr(), "\r\x1b[2Kdone in {:.1}s", self.started.elapsed().as_secs_f64());
        }
    }
}

pub fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.retain(|x| x.is_finite());
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        None
    } else if n % 2 == 1 {
        Some(xs[n / 2])
    } else {
        Some((xs[n / 2 - 1] + xs[n / 2]) / 2.0)
    }
}

pub fn rate(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(1e-9)
}

pub fn human(per_sec: Option<f64>) -> String {
    match per_sec {
        None => "n/a".to_owned(),
        Some(r) if r >= 1e6 => format!("{:.2} M", r / 1e6),
        Some(r) => format!("{:.0} k", r / 1e3),
    }
}

pub fn times(r: Option<f64>) -> String {
    r.map_or("n/a".to_owned(), |r| format!("{r:.2}x"))
}

pub fn pct(r: Option<f64>) -> String {
    r.map_or("n/a".to_owned(), |r| format!("{:.0}%", 100.0 * r))
}
