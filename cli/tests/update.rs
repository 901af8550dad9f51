//! `sharded-router update` against a real `serve` process: the demo's greeter
//! switches from v1 to v2 through the gateway, keeps its count, and a second
//! update (or one of an actor with no new version) fails with a clear error.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sharded-router");

/// A `serve` process on a free loopback port, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start() -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--bind", "127.0.0.1:0", "--shards", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            assert!(Instant::now() < deadline, "serve did not say where it listens");
            let line = lines.next().expect("serve exited").expect("a line");
            if let Some(rest) = line.strip_prefix("gateway listening on ") {
                break rest.split_whitespace().next().expect("an address").to_owned();
            }
        };
        // Keep reading stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, addr }
    }

    /// Runs a client verb against this server: (success, stdout, stderr).
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let output =
            Command::new(BIN).args(args).args(["--connect", &self.addr]).output().expect("run the client");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn update_switches_the_greeter_to_v2_and_its_count_survives() {
    let server = Server::start();
    let (ok, out, err) = server.run(&["request", "greeter", "alice"]);
    assert!(ok, "{err}");
    assert_eq!(out, "hello alice (greeting 1)");
    let (ok, out, _) = server.run(&["request", "greeter", "bob"]);
    assert!(ok);
    assert_eq!(out, "hello bob (greeting 2)");

    let (ok, out, err) = server.run(&["update", "greeter"]);
    assert!(ok, "{err}");
    assert_eq!(out, "greeter now runs v2");
    let (ok, out, _) = server.run(&["request", "greeter", "carol"]);
    assert!(ok);
    assert_eq!(out, "hi carol (greeting 3)", "new behaviour, same count");

    let (ok, _, err) = server.run(&["update", "greeter"]);
    assert!(!ok, "there is no v3");
    assert!(err.contains("UpdateFailed") && err.contains("already runs v2"), "{err}");
    let (ok, _, err) = server.run(&["update", "echo"]);
    assert!(!ok);
    assert!(err.contains("UpdateFailed"), "{err}");
    // The other actors are untouched.
    let (ok, out, _) = server.run(&["request", "echo", "still here"]);
    assert!(ok);
    assert_eq!(out, "still here");
}

#[test]
fn messages_sent_during_updates_all_arrive() {
    let server = Server::start();
    // Requests racing the update: each gets exactly one answer, hello or hi,
    // and the greeting numbers have no gap and no repeat.
    let requests: Vec<_> = (0..8)
        .map(|i| {
            let addr = server.addr.clone();
            std::thread::spawn(move || {
                let output = Command::new(BIN)
                    .args(["request", "greeter", &format!("n{i}"), "--connect", &addr])
                    .output()
                    .expect("run the client");
                assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
                String::from_utf8_lossy(&output.stdout).trim().to_owned()
            })
        })
        .collect();
    let (ok, out, err) = server.run(&["update", "greeter"]);
    assert!(ok, "{err}");
    assert_eq!(out, "greeter now runs v2");
    let mut numbers: Vec<u64> = requests
        .into_iter()
        .map(|r| {
            let answer = r.join().unwrap();
            assert!(answer.starts_with("hello n") || answer.starts_with("hi n"), "{answer}");
            let n = answer.rsplit("greeting ").next().unwrap().trim_end_matches(')');
            n.parse().unwrap()
        })
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=8).collect::<Vec<u64>>());
}
