//! Two `sharded-router serve` processes joined over a real nats-server (started
//! here on a free loopback port), driven through the client verbs like a user
//! would: the listing through either node shows every actor with its node,
//! requests and channels cross nodes, and when one node's process is killed its
//! actors leave the other's listing, its channel closes and requests to it fail
//! with a typed error, each within a bounded time.
//!
//! Every child process is killed by pid when the test ends, also on a panic.
//! Without nats-server the test says so loudly and passes; under `CI=true` it
//! fails instead.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use sharded_router_workloads::nats_server::NatsServer;

const BIN: &str = env!("CARGO_BIN_EXE_sharded-router");
/// The longest any one step may take.
const WAIT: Duration = Duration::from_secs(30);
/// The nodes' failure detection: a heartbeat every 100 ms, dead after 1 s.
const HEARTBEAT_MS: &str = "100";
const NODE_TIMEOUT_MS: &str = "1000";

/// A child process, killed by pid and reaped when dropped.
struct Guard(Child);

impl Guard {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Lines a child prints, read on a thread of their own (so the child never
/// blocks on a full pipe).
fn lines_of(out: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next line that satisfies `wanted`, or a panic after [`WAIT`].
fn expect_line(lines: &Receiver<String>, what: &str, wanted: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if wanted(&line) => return line,
            Ok(line) => seen.push(line),
            Err(e) => panic!("no {what} ({e}); printed so far: {seen:?}"),
        }
    }
}

/// One `serve --nats` process.
struct Node {
    process: Guard,
    gateway: String,
}

impl Node {
    fn start(nats: &str, cluster: &str, name: &str) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--bind", "127.0.0.1:0", "--shards", "2", "--rate-limit", "0"])
            .args(["--nats", nats, "--node", name, "--cluster", cluster])
            .args(["--heartbeat-ms", HEARTBEAT_MS, "--node-timeout-ms", NODE_TIMEOUT_MS])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start serve");
        let lines = lines_of(child.stdout.take().expect("stdout"));
        let process = Guard(child);
        let listening =
            expect_line(&lines, "`gateway listening on`", |l| l.starts_with("gateway listening on "));
        let gateway =
            listening["gateway listening on ".len()..].split_whitespace().next().expect("an address");
        // Keep draining stdout.
        thread::spawn(move || for _ in lines {});
        Self { process, gateway: gateway.to_owned() }
    }
}

/// Runs a client verb against `gateway`: (success, stdout, stderr), killed after
/// [`WAIT`].
fn client(gateway: &str, args: &[&str]) -> (bool, String, String) {
    let mut child = Guard(
        Command::new(BIN)
            .args(args)
            .args(["--connect", gateway])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the client"),
    );
    let (out, err) = (child.0.stdout.take().expect("stdout"), child.0.stderr.take().expect("stderr"));
    let (out, err) = (lines_of(out), lines_of(err));
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "`sharded-router {}` did not finish in time", args.join(" "));
        thread::sleep(Duration::from_millis(10));
    };
    let collect = |lines: Receiver<String>| {
        let mut text = Vec::new();
        while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
            text.push(line);
        }
        text.join("\n")
    };
    (status.success(), collect(out), collect(err))
}

/// One line of `list`: id, name, node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    id: String,
    name: String,
    node: Option<String>,
}

fn list(gateway: &str) -> Vec<Listed> {
    let (ok, out, err) = client(gateway, &["list"]);
    assert!(ok, "list failed: {err}");
    out.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() == 2 || fields.len() == 3, "a list line: {line:?}");
            Listed { id: fields[0].into(), name: fields[1].into(), node: fields.get(2).map(|n| (*n).into()) }
        })
        .collect()
}

/// Polls `check` until it holds, for at most [`WAIT`]; the time it took.
fn eventually(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < WAIT, "{what}: not within {WAIT:?}");
        thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

fn names_on(listing: &[Listed], node: &str) -> Vec<String> {
    let mut names: Vec<String> =
        listing.iter().filter(|a| a.node.as_deref() == Some(node)).map(|a| a.name.clone()).collect();
    names.sort();
    names
}

fn demo_names(node: &str) -> Vec<String> {
    let mut names: Vec<String> =
        ["echo", "counter", "channel-echo", "greeter"].iter().map(|n| format!("{node}.{n}")).collect();
    names.sort();
    names
}

/// A `channel` client kept open: its stdin and the lines it prints.
struct OpenChannel {
    process: Guard,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl OpenChannel {
    fn open(gateway: &str, actor: &str) -> Self {
        let mut child = Command::new(BIN)
            .args(["channel", actor, "--connect", gateway, "--initial", "hello"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run channel");
        let stdin = child.stdin.take().expect("stdin");
        let lines = lines_of(child.stdout.take().expect("stdout"));
        let channel = Self { process: Guard(child), stdin, lines };
        let opened = expect_line(&channel.lines, "open", |l| l.starts_with("channel "));
        assert!(opened.ends_with("open; the actor says: welcome"), "{opened}");
        channel
    }

    fn echoes(&mut self, text: &str) {
        writeln!(self.stdin, "{text}").expect("write to channel");
        self.stdin.flush().expect("flush");
        expect_line(&self.lines, "echo", |l| l == format!("< {text}"));
    }
}

#[test]
fn two_serve_processes_form_one_cluster_and_survive_losing_one() {
    let Some(nats) = NatsServer::start_or_skip("two_serve_processes_form_one_cluster_and_survive_losing_one")
    else {
        return;
    };
    let cluster = format!("cli-test-{}", std::process::id());
    let a = Node::start(&nats.url(), &cluster, "a");
    let mut b = Node::start(&nats.url(), &cluster, "b");

    // Either node's gateway lists every actor of the cluster, with its node.
    for gateway in [&a.gateway, &b.gateway] {
        eventually("every actor listed with its node", || {
            let listing = list(gateway);
            names_on(&listing, "a") == demo_names("a") && names_on(&listing, "b") == demo_names("b")
        });
    }
    let listing = list(&a.gateway);
    let b_echo = listing.iter().find(|l| l.name == "b.echo").expect("b.echo").id.clone();
    assert_eq!(
        list(&b.gateway).iter().find(|l| l.name == "b.echo").map(|l| l.id.clone()),
        Some(b_echo.clone())
    );

    // Requests cross nodes, by name and by id, both ways.
    assert_eq!(client(&a.gateway, &["request", "b.echo", "hi"]), (true, "hi".into(), String::new()));
    assert_eq!(client(&a.gateway, &["request", &b_echo, "by id"]), (true, "by id".into(), String::new()));
    assert_eq!(client(&b.gateway, &["request", "a.echo", "back"]), (true, "back".into(), String::new()));
    let (ok, greeting, err) = client(&a.gateway, &["request", "b.greeter", "a"]);
    assert!(ok && greeting.starts_with("hello a (greeting"), "{greeting} {err}");

    // One-way sends cross nodes: b's counter sees the two sent through a.
    for _ in 0..2 {
        assert_eq!(client(&a.gateway, &["send", "b.counter", "tick"]), (true, "sent".into(), String::new()));
    }
    eventually("b.counter counts the sends from a", || {
        client(&b.gateway, &["request", "b.counter", "?"]) == (true, "2".into(), String::new())
    });

    // A channel from a client of node a to an actor on node b, fed from a pipe.
    let mut channel = Command::new(BIN)
        .args(["channel", "b.channel-echo", "--connect", &a.gateway])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run channel");
    channel.stdin.take().expect("stdin").write_all(b"one\ntwo\n").expect("write");
    let mut channel = Guard(channel);
    let lines = lines_of(channel.0.stdout.take().expect("stdout"));
    let printed: Vec<String> = (0..4).map(|_| expect_line(&lines, "a channel line", |_| true)).collect();
    assert!(printed[0].ends_with("open; the actor says: welcome"), "{printed:?}");
    assert_eq!(&printed[1..], ["< one", "< two", "channel closed"]);
    drop(channel);

    // A channel kept open across the failure below.
    let mut open = OpenChannel::open(&a.gateway, "b.channel-echo");
    open.echoes("before");

    // Node b dies (killed by pid): a request in flight to it fails within its
    // node timeout, long before its own 20 s timeout, with a typed error...
    let killed = Instant::now();
    b.process.kill();
    let (ok, out, err) = client(&a.gateway, &["request", &b_echo, "anyone?", "--reply-timeout-ms", "20000"]);
    let failed_after = killed.elapsed();
    assert!(!ok, "a request to a dead node succeeded: {out}");
    assert!(err.contains("ActorNotFound"), "not the typed error: {err}");
    assert!(failed_after < Duration::from_secs(15), "the request failed only after {failed_after:?}");

    // ... its actors leave a's listing, a's own stay ...
    eventually("b's actors leave a's listing", || names_on(&list(&a.gateway), "b").is_empty());
    eprintln!("node b's actors were gone from a's listing {:?} after the kill", killed.elapsed());
    assert_eq!(names_on(&list(&a.gateway), "a"), demo_names("a"));

    // ... the channel to it is closed on a's side ...
    expect_line(&open.lines, "the close of the channel to the dead node", |l| {
        l == "the actor closed the channel"
    });
    eventually("the channel client exits", || open.process.0.try_wait().ok().flatten().is_some());

    // ... later requests to it fail at once, and node a keeps working.
    let (ok, _, err) = client(&a.gateway, &["request", &b_echo, "again"]);
    assert!(!ok && err.contains("ActorNotFound"), "{err}");
    let (ok, _, err) = client(&a.gateway, &["request", "b.echo", "by name"]);
    assert!(!ok && err.contains("b.echo"), "{err}");
    assert_eq!(
        client(&a.gateway, &["request", "a.echo", "still here"]),
        (true, "still here".into(), String::new())
    );
}
