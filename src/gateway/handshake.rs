//! The authentication handshake a connection goes through before its session
//! starts (when the server has tokens).

use std::net::SocketAddr;

use futures_util::StreamExt;
use tokio::io::AsyncRead;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use super::auth::TokenSet;
use super::config::ServerConfig;
use super::outbound::{error_frame, Outbound};
use super::protocol::{decode_client_frame, Authenticate, ErrorKind, Response, ServerFrame};

/// The authentication handshake: `true` once the first frame presented a valid
/// token (answered `Authenticated`); otherwise, after the fixed failure delay,
/// `Unauthorized` is queued and `false` returned.
pub(super) async fn authenticate<R: AsyncRead + Unpin>(
    frames: &mut FramedRead<R, LengthDelimitedCodec>,
    out: &Outbound,
    tokens: &TokenSet,
    config: &ServerConfig,
    peer: SocketAddr,
) -> bool {
    let first = tokio::time::timeout(config.handshake_timeout, frames.next()).await;
    let in_time = first.is_ok();
    let (request_id, refusal) = match first {
        Ok(Some(Ok(bytes))) => match Authenticate::decode(&bytes) {
            Ok(Some(Authenticate { request_id, token })) => {
                if tokens.verify(token.expose()) {
                    tracing::debug!(%peer, "gateway client authenticated");
                    return out
                        .push(&ServerFrame::Response {
                            request_id: Some(request_id),
                            response: Response::Authenticated,
                        })
                        .is_ok();
                }
                (Some(request_id), "the token is not valid")
            }
            Ok(None) => (readable_request_id(&bytes), FIRST_FRAME),
            Err(e) => (e.request_id, FIRST_FRAME),
        },
        // Gone before a word, or a broken stream: nobody to answer.
        Ok(Some(Err(_)) | None) => {
            tracing::debug!(%peer, "gateway client left before authenticating");
            return false;
        }
        Err(_) => (None, "no Authenticate frame in time"),
    };
    tracing::warn!(%peer, reason = refusal, "gateway refuses a client: unauthorized");
    if in_time {
        tokio::time::sleep(config.auth_failure_delay).await;
    }
    let _ = out.push(&error_frame(request_id, ErrorKind::Unauthorized, refusal));
    false
}

pub(super) const FIRST_FRAME: &str = "this gateway requires a token: the first frame must be Authenticate";

/// The `request_id` of a frame, when it can be read.
pub(super) fn readable_request_id(bytes: &[u8]) -> Option<u64> {
    match decode_client_frame(bytes) {
        Ok(frame) => Some(frame.request_id),
        Err(e) => e.request_id,
    }
}
