//! Writing one message on one unidirectional stream: written whole, finished, and acknowledged
//! by the receiver, or reset so that it is never taken for a whole one.

use std::net::SocketAddr;

use quinn::{SendStream, VarInt};

use super::{NetError, CODE_CANCELLED};

/// Resets the stream if dropped before the message was completely written, so the receiver
/// never takes a truncated message for a whole one (quinn finishes a dropped stream).
struct StreamGuard {
    stream: SendStream,
    finished: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.finished {
            // Fails only if the stream is already closed or reset: nothing left to do.
            let _ = self.stream.reset(VarInt::from_u32(CODE_CANCELLED));
        }
    }
}

/// Writes `bytes` on `stream`, finishes it and waits for the receiver's acknowledgement.
pub(super) async fn write_message(
    addr: SocketAddr,
    stream: SendStream,
    bytes: &[u8],
) -> Result<(), NetError> {
    let mut guard = StreamGuard {
        stream,
        finished: false,
    };
    guard
        .stream
        .write_all(bytes)
        .await
        .map_err(|e| write_error(addr, e))?;
    guard
        .stream
        .finish()
        .map_err(|_| write_error(addr, quinn::WriteError::ClosedStream))?;
    guard.finished = true;
    match guard.stream.stopped().await {
        Ok(None) => Ok(()),
        Ok(Some(code)) => Err(NetError::Stopped {
            addr,
            code: code.into_inner(),
        }),
        Err(e) => Err(write_error(addr, e.into())),
    }
}

pub(super) fn write_error(addr: SocketAddr, error: quinn::WriteError) -> NetError {
    match error {
        quinn::WriteError::Stopped(code) => NetError::Stopped {
            addr,
            code: code.into_inner(),
        },
        quinn::WriteError::ConnectionLost(source) => NetError::Connection { addr, source },
        source => NetError::Write { addr, source },
    }
}
