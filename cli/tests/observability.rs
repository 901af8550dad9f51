//! The built `sharded-router` binary, observed from outside: `serve` with its
//! Prometheus endpoint, `stats --once`, and `channel` fed from a pipe. Every
//! process is killed when its test ends, and every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sharded-router");
const WAIT: Duration = Duration::from_secs(20);

/// A loopback address with a port nobody listens on right now.
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A `serve` process, killed on drop.
struct Server {
    child: Child,
    gateway: SocketAddr,
    metrics: SocketAddr,
}

impl Server {
    /// Starts `serve` with two shards and waits until it listens.
    fn start() -> Self {
        let (gateway, metrics) = (free_addr(), free_addr());
        let mut child = Command::new(BIN)
            .args(["serve", "--shards", "2", "--bind", &gateway.to_string()])
            .args(["--metrics-bind", &metrics.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if line.starts_with("gateway listening") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let server = Self { child, gateway, metrics };
        ready.recv_timeout(WAIT).expect("serve did not start listening in time");
        server
    }

    /// Runs a client verb against this server and returns its output.
    fn client(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut command = Command::new(BIN);
        command.args(args).args(["--connect", &self.gateway.to_string()]);
        command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        let deadline = Instant::now() + WAIT;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("`sharded-router {}` did not finish in time", args.join(" "));
            }
            thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// `GET /metrics`, over a plain TCP connection.
    fn scrape(&self) -> String {
        let mut stream = TcpStream::connect(self.metrics).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.metrics)
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
        body.to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One sample line of the Prometheus text format: `name{k="v",...} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Parses the exposition, checking every line's syntax: comments are `# HELP`
/// or `# TYPE` lines, samples are a metric name, optional labels and a number.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let (kind, name) = (words.next().unwrap(), words.next().unwrap_or(""));
            assert!(kind == "HELP" || kind == "TYPE", "unknown comment: {line}");
            assert!(name_ok(name), "bad metric name in: {line}");
            if kind == "TYPE" {
                let ty = words.next().unwrap_or("");
                assert!(["counter", "gauge", "summary", "histogram"].contains(&ty), "bad type: {line}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let labels = inner
                    .split(',')
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("bad label: {line}"));
                        assert!(name_ok(k), "bad label name: {line}");
                        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                        (k.to_owned(), v.unwrap_or_else(|| panic!("unquoted label value: {line}")).to_owned())
                    })
                    .collect();
                (name, labels)
            }
            None => (series, Vec::new()),
        };
        assert!(name_ok(name), "bad metric name: {line}");
        samples.push(Sample { name: name.to_owned(), labels, value });
    }
    samples
}

/// The sum of a metric's samples whose labels include `with`.
fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| with.iter().all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v)))
        .map(|s| s.value)
        .sum()
}

/// Scrapes until `ready` holds of the samples (the publisher runs every second).
fn scrape_until(server: &Server, what: &str, ready: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let deadline = Instant::now() + WAIT;
    loop {
        let samples = parse_exposition(&server.scrape());
        if ready(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn metrics_endpoint_serves_prometheus_text_that_moves_with_traffic() {
    let server = Server::start();
    let before = scrape_until(&server, "the first publication", |s| {
        s.iter().any(|s| s.name == "sharded_router_registered_actors")
    });
    for name in ["sharded_router_delivered_direct_total", "sharded_router_registered_actors"] {
        let shards: Vec<&str> = before
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.iter().find(|(k, _)| k == "shard").map(|(_, v)| v.as_str()))
            .collect();
        assert!(shards.contains(&"0") && shards.contains(&"1"), "{name} per shard: {shards:?}");
    }
    assert_eq!(sum(&before, "sharded_router_registered_actors", &[]), 4.0, "the four demo actors");
    let direct_before = sum(&before, "sharded_router_delivered_direct_total", &[]);

    for i in 0..5 {
        server.client(&["send", "counter", &format!("m{i}")], None);
    }
    for _ in 0..3 {
        server.client(&["request", "echo", "ping"], None);
    }
    let after = scrape_until(&server, "the traffic to show", |s| {
        sum(s, "sharded_router_requests_total", &[("outcome", "ok")]) >= 3.0
    });
    // Each request is also delivered directly; each client's session is an endpoint.
    let direct = sum(&after, "sharded_router_delivered_direct_total", &[]) - direct_before;
    assert!(direct >= 8.0, "5 sends and 3 requests delivered: {direct}");
    assert_eq!(sum(&after, "sharded_router_requests_total", &[("outcome", "ok")]), 3.0);
    assert_eq!(sum(&after, "sharded_router_request_duration_seconds_count", &[]), 3.0);
    assert!(after.iter().any(|s| s.name == "sharded_router_request_duration_seconds"
        && s.labels.iter().any(|(k, v)| k == "quantile" && v == "0.99")));
    assert_eq!(sum(&after, "sharded_router_dead_letters_total", &[]), 0.0);
}

#[test]
fn stats_once_shows_the_traffic_just_sent() {
    let server = Server::start();
    for i in 0..4 {
        server.client(&["send", "counter", &format!("m{i}")], None);
    }
    for _ in 0..2 {
        server.client(&["request", "echo", "ping"], None);
    }
    let output = server.client(&["stats", "--once"], None);
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "shard", "msgs", "msgs/s", "parked", "rejected", "dead", "requests", "req/s", "p50", "p99",
            "actors"
        ],
        "{text}"
    );
    let rows: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split_whitespace().collect()).collect();
    let shards: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(&shards[..3], ["0", "1", "all"], "{text}");
    let all = &rows[2];
    assert_eq!(all.len(), header.len(), "{text}");
    let msgs: u64 = all[1].parse().unwrap();
    assert!(msgs >= 6, "4 sends and 2 requests delivered: {text}");
    assert_eq!((all[2], all[7]), ("-", "-"), "one snapshot has no rates: {text}");
    assert_eq!(all[6], "2", "two requests resolved: {text}");
    assert!(all[8].ends_with("us") || all[8].ends_with("ms"), "a p50 latency: {text}");
    // The four demo actors and this client's own session.
    assert_eq!(all[10], "5", "{text}");
    assert!(lines.last().unwrap().starts_with("channels: 0 open"), "{text}");
}

#[test]
fn piped_channel_input_prints_the_echoes_before_closing() {
    let server = Server::start();
    let output = server.client(&["channel", "channel-echo"], Some(b"hello\nworld\n"));
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].ends_with("open; the actor says: welcome"), "{text}");
    assert_eq!(&lines[1..], ["< hello", "< world", "channel closed"], "{text}");
}
