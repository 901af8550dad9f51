//! How the gateway's TCP server behaves: its address, limits, authentication
//! and TLS ([`ServerConfig`]), and the frame codec.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use tokio_util::codec::LengthDelimitedCodec;

use super::auth::TokenSet;
use super::limits::RateLimit;
use super::session::SessionConfig;
#[cfg(feature = "tls")]
use super::tls::TlsServer;

/// The default address: loopback only.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7420));

/// The default largest frame: 1 MiB.
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 1024 * 1024;

/// How the server behaves. Every limit has a default meant to be safe to expose
/// (see the module docs for what each limit does when it is reached).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Where to listen. Default: [`DEFAULT_BIND`] (127.0.0.1:7420).
    pub bind: SocketAddr,
    /// The longest frame accepted or sent, not counting the length prefix.
    /// Default: 1 MiB.
    pub max_frame_length: usize,
    /// Requests and channel opens one client may have waiting at once. Default: 64.
    pub max_in_flight: usize,
    /// Channels one client may have open or opening at once. Default: 256.
    pub max_channels: usize,
    /// Frames queued for one client before it counts as too slow. Default: 1024.
    pub outbound_queue: usize,
    /// How long one write may make no progress before the client is dropped.
    /// Default: 10 s.
    pub write_timeout: Duration,
    /// Connections served at once. Default: 1024.
    pub max_connections: usize,
    /// Connections served at once from one IP address. Default: 64.
    pub max_connections_per_peer: usize,
    /// How long a client may send nothing (with nothing in flight) before it is
    /// closed. Default: 5 min.
    pub idle_timeout: Duration,
    /// The command rate one client may send. Default: none (the `serve` command
    /// sets 1000 a second, in bursts of up to 2000).
    pub rate_limit: Option<RateLimit>,
    /// The tokens a client must present first. Default: none (every connection is
    /// admitted, which [`Server::bind`] allows only on loopback).
    pub auth: Option<TokenSet>,
    /// How long a failed authentication waits before its `Unauthorized` answer
    /// and the close. Default: 500 ms.
    pub auth_failure_delay: Duration,
    /// How long a new connection has for its TLS handshake and its
    /// `Authenticate` frame. Default: 10 s.
    pub handshake_timeout: Duration,
    /// Allows serving a non-loopback address without tokens. Default: `false`.
    pub insecure: bool,
    /// TLS: the server's certificate and key. Default: none (plain TCP).
    #[cfg(feature = "tls")]
    pub tls: Option<TlsServer>,
    /// Each session's settings.
    pub session: SessionConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: DEFAULT_BIND,
            max_frame_length: DEFAULT_MAX_FRAME_LENGTH,
            max_in_flight: 64,
            max_channels: 256,
            outbound_queue: 1024,
            write_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_peer: 64,
            idle_timeout: Duration::from_secs(300),
            rate_limit: None,
            auth: None,
            auth_failure_delay: Duration::from_millis(500),
            handshake_timeout: Duration::from_secs(10),
            insecure: false,
            #[cfg(feature = "tls")]
            tls: None,
            session: SessionConfig::default(),
        }
    }
}

impl ServerConfig {
    /// Sets the listening address.
    #[must_use]
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Sets the longest frame.
    #[must_use]
    pub fn max_frame_length(mut self, n: usize) -> Self {
        self.max_frame_length = n.max(64);
        self
    }

    /// Sets how many requests and opens one client may have waiting.
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Sets how many channels one client may have open or opening.
    #[must_use]
    pub fn max_channels(mut self, n: usize) -> Self {
        self.max_channels = n;
        self
    }

    /// Sets the outbound queue length per client.
    #[must_use]
    pub fn outbound_queue(mut self, n: usize) -> Self {
        self.outbound_queue = n.max(1);
        self
    }

    /// Sets the write timeout.
    #[must_use]
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Sets the most connections served at once.
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Sets the most connections served at once from one IP address.
    #[must_use]
    pub fn max_connections_per_peer(mut self, n: usize) -> Self {
        self.max_connections_per_peer = n.max(1);
        self
    }

    /// Sets the idle timeout.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets (or, with `None`, lifts) the command rate limit per client.
    #[must_use]
    pub fn rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = limit;
        self
    }

    /// Requires every connection to authenticate with one of `tokens`.
    #[must_use]
    pub fn auth(mut self, tokens: TokenSet) -> Self {
        self.auth = Some(tokens);
        self
    }

    /// Sets the delay before a failed authentication is answered.
    #[must_use]
    pub fn auth_failure_delay(mut self, delay: Duration) -> Self {
        self.auth_failure_delay = delay;
        self
    }

    /// Sets how long a new connection has to complete TLS and authenticate.
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Allows (`true`) serving a non-loopback address without tokens.
    #[must_use]
    pub fn insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }

    /// Serves over TLS with this certificate and key.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls(mut self, tls: TlsServer) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets the sessions' settings.
    #[must_use]
    pub fn session(mut self, session: SessionConfig) -> Self {
        self.session = session;
        self
    }

    /// Whether connections arrive over TLS.
    fn uses_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            self.tls.is_some()
        }
        #[cfg(not(feature = "tls"))]
        {
            false
        }
    }

    /// Refuses an exposure that lets anyone who can connect message every actor.
    pub(super) fn check_exposure(&self) -> io::Result<()> {
        let ip = self.bind.ip();
        if ip.is_loopback() || self.auth.is_some() {
            if !ip.is_loopback() && !self.uses_tls() {
                tracing::warn!(
                    addr = %self.bind,
                    "gateway serves a non-loopback address without TLS: tokens and traffic travel in clear"
                );
            }
            return Ok(());
        }
        if self.insecure {
            tracing::warn!(
                addr = %self.bind,
                "gateway serves a non-loopback address WITHOUT authentication (insecure): \
                 anyone who can connect can message every actor"
            );
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "refusing to serve the gateway on {} without authentication: anyone who can reach \
                 it could message every actor. Configure tokens (`--token-file`, ServerConfig::auth), \
                 bind a loopback address, or accept the risk explicitly (`--insecure`, \
                 ServerConfig::insecure)",
                self.bind
            ),
        ))
    }
}

/// The codec the server and client use in both directions: a 4-byte big-endian
/// length, then the frame. Decoding a length above `max_frame_length` fails with
/// [`io::ErrorKind::InvalidData`]; the decoder reserves at most the announced
/// frame (so at most `max_frame_length` plus the 4-byte header is buffered).
///
/// ```
/// use bytes::BytesMut;
/// use tokio_util::codec::Decoder;
/// let mut codec = sharded_router::gateway::frame_codec(64);
/// let mut buf = BytesMut::from(&b"\0\0\0\x02{}"[..]);
/// assert_eq!(&codec.decode(&mut buf).unwrap().unwrap()[..], b"{}");
/// let mut big = BytesMut::from(&b"\0\0\x01\0"[..]);
/// assert_eq!(codec.decode(&mut big).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
/// ```
#[must_use]
pub fn frame_codec(max_frame_length: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(max_frame_length)
        .new_codec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::auth::TokenSet;

    #[test]
    fn non_loopback_without_tokens_is_refused_unless_insecure() {
        let public: SocketAddr = "0.0.0.0:7420".parse().unwrap();
        let err = ServerConfig::default().bind(public).check_exposure().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("--insecure"));
        assert!(ServerConfig::default().bind(public).insecure(true).check_exposure().is_ok());
        let tokens = TokenSet::new(["t"]).unwrap();
        assert!(ServerConfig::default().bind(public).auth(tokens).check_exposure().is_ok());
        assert!(ServerConfig::default().check_exposure().is_ok());
        let v6: SocketAddr = "[::1]:7420".parse().unwrap();
        assert!(ServerConfig::default().bind(v6).check_exposure().is_ok());
    }
}
