//! What the server writes to one client: the bounded outbound queue and the
//! writer task, final error frames and the linger before a close, and why a
//! connection ended.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedWrite, LengthDelimitedCodec};

use super::protocol::{encode, ErrorKind, Response, ServerFrame};

/// How long a connection closed with a final frame waits for the client to close
/// its side, reading what it still sends (see [`linger`]).
pub(super) const LINGER: Duration = Duration::from_millis(500);

/// The most a lingering connection reads before it closes anyway.
pub(super) const LINGER_BYTES: usize = 1 << 20;

/// Writes one frame, shuts the sending side and lingers before the close.
pub(super) async fn write_final<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, frame: &ServerFrame) {
    let Ok(bytes) = encode(frame) else { return };
    let Ok(len) = u32::try_from(bytes.len()) else { return };
    let mut buf = Vec::with_capacity(4 + bytes.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&bytes);
    if stream.write_all(&buf).await.is_ok() && stream.shutdown().await.is_ok() {
        linger(stream).await;
    }
}

pub(super) fn error_frame(
    request_id: Option<u64>,
    kind: ErrorKind,
    message: impl Into<String>,
) -> ServerFrame {
    ServerFrame::Response { request_id, response: Response::error(kind, message) }
}

/// Why a connection ended.
#[derive(Debug)]
pub(super) enum End {
    /// The client closed its side (answers not yet ready are dropped).
    ClientDone,
    /// The frame stream broke (oversize frame, I/O error).
    BadStream,
    /// The client did not keep up with its answers and events.
    TooSlow,
    /// The writer stopped (write error or timeout).
    WriterGone,
    /// The router shut down.
    RouterGone,
    /// The client sent nothing for the idle timeout.
    Idle,
    /// The client presented a wrong token.
    Unauthorized,
}

/// After a final frame has been written and the sending side shut: reads and
/// discards what the client still sends, until it closes, [`LINGER`] passes or
/// [`LINGER_BYTES`] have come. Closing a socket with unread bytes resets the
/// connection, and a reset can destroy the final frame before the client has
/// read it.
pub(super) async fn linger<R: AsyncRead + Unpin>(mut read: R) {
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// `now + after`, or a year from now when that does not fit (the idle check
/// then re-arms itself).
pub(super) fn deadline_after(after: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(after).or_else(|| now.checked_add(Duration::from_secs(60 * 60 * 24 * 365))).unwrap_or(now)
}

/// The bounded queue of frames for one client.
pub(super) struct Outbound {
    pub(super) tx: mpsc::Sender<Bytes>,
    pub(super) max_frame_length: usize,
}

impl Outbound {
    /// Queues a frame without waiting; a full queue means the client is too slow.
    pub(super) fn push(&self, frame: &ServerFrame) -> Result<(), End> {
        let bytes = match encode(frame) {
            Ok(bytes) if bytes.len() <= self.max_frame_length => bytes,
            Ok(bytes) => {
                let request_id = match frame {
                    ServerFrame::Response { request_id, .. } => *request_id,
                    ServerFrame::Event { .. } => None,
                };
                let message = format!(
                    "an answer of {} bytes exceeds the {}-byte frame limit and was dropped",
                    bytes.len(),
                    self.max_frame_length
                );
                encode(&error_frame(request_id, ErrorKind::ResponseTooLarge, message))
                    .map_err(|_| End::BadStream)?
            }
            Err(e) => {
                tracing::error!(error = %e, "gateway could not encode a frame");
                return Ok(());
            }
        };
        self.tx.try_send(Bytes::from(bytes)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => End::TooSlow,
            mpsc::error::TrySendError::Closed(_) => End::WriterGone,
        })
    }
}

/// Writes queued frames, flushing when the queue runs dry. Ends when the queue is
/// closed and drained, on a write error, or when a write makes no progress for
/// `write_timeout`.
pub(super) async fn write_frames<W: AsyncWrite + Unpin>(
    mut sink: FramedWrite<WriteHalf<W>, LengthDelimitedCodec>,
    mut rx: mpsc::Receiver<Bytes>,
    write_timeout: Duration,
) -> io::Result<()> {
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "the client is not reading");
    while let Some(frame) = rx.recv().await {
        tokio::time::timeout(write_timeout, sink.feed(frame)).await.map_err(|_| timed_out())??;
        while let Ok(frame) = rx.try_recv() {
            tokio::time::timeout(write_timeout, sink.feed(frame)).await.map_err(|_| timed_out())??;
        }
        tokio::time::timeout(write_timeout, SinkExt::<Bytes>::flush(&mut sink))
            .await
            .map_err(|_| timed_out())??;
    }
    tokio::time::timeout(write_timeout, SinkExt::<Bytes>::close(&mut sink)).await.map_err(|_| timed_out())?
}
