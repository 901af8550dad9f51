//! A real `nats-server` (JetStream on) on a free loopback port, for the cluster tests
//! and the cluster benchmark. Started from the `nats-server` on `PATH` (Debian's
//! package, 2.9.10 in CI) and stopped by pid when dropped.
//!
//! When the binary is missing, [`NatsServer::start_or_skip`] says so loudly on stderr
//! and returns `None`, so that `cargo test` on a machine without it still passes;
//! under `CI=true` it panics instead, so CI cannot skip the cluster tests by accident.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a started server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `nats-server`, killed (by pid) and reaped when dropped.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
}

impl NatsServer {
    /// Whether a `nats-server` binary is on `PATH`.
    pub fn available() -> bool {
        Command::new("nats-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|status| status.success())
            .unwrap_or(false)
    }

    /// Starts a server, or, when `nats-server` is not installed, prints why the
    /// caller is skipped and returns `None`. Under `CI=true` a missing server panics.
    pub fn start_or_skip(test: &str) -> Option<Self> {
        if !Self::available() {
            let why = "nats-server is not installed (apt-get install -y nats-server)";
            if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
                panic!("{test}: {why}, and CI=true: the cluster tests must run");
            }
            eprintln!("\n!!! SKIPPED {test}: {why} !!!\n");
            return None;
        }
        Some(Self::start().unwrap_or_else(|e| panic!("{test}: cannot start nats-server: {e}")))
    }

    /// Starts a server with JetStream on a free loopback port and waits until it
    /// accepts connections.
    pub fn start() -> io::Result<Self> {
        let port = free_port()?;
        let store = std::env::temp_dir().join(format!("sharded-router-nats-{}-{port}", std::process::id()));
        let mut server = Self { child: None, port, store };
        server.spawn()?;
        Ok(server)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id of the running server, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// JetStream's store directory (kept across [`restart`](Self::restart)).
    pub fn store_dir(&self) -> &Path {
        &self.store
    }

    /// Kills the server (SIGKILL, by pid) and reaps it. The port and the store stay,
    /// so that [`start_again`](Self::start_again) brings the same server back.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store, after
    /// [`kill`](Self::kill).
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        self.spawn()
    }

    /// [`kill`](Self::kill), then [`start_again`](Self::start_again).
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.start_again()
    }

    fn spawn(&mut self) -> io::Result<()> {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Err(io::Error::other(format!("nats-server exited: {status}")));
                }
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(io::Error::new(io::ErrorKind::TimedOut, "nats-server did not start listening"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// A loopback port nobody listens on now (the OS picks it; it is released before
/// the server binds it).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_restarts_and_stops_by_pid() {
        let Some(mut server) = NatsServer::start_or_skip("starts_restarts_and_stops_by_pid") else {
            return;
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], server.port()));
        assert!(TcpStream::connect(addr).is_ok());
        let first = server.pid().unwrap();
        server.restart().unwrap();
        assert_ne!(server.pid().unwrap(), first);
        assert!(TcpStream::connect(addr).is_ok());
        server.kill();
        assert!(TcpStream::connect(addr).is_err(), "killed server still listens");
    }
}
