//! What the subcommands do: build peers from a [`Config`](crate::config::Config), run `up`
//! (many local peers, the barrier baseline or the centralized baseline), one `peer`, and
//! `compare`. The binary's `main` only parses and calls these; errors come back typed so the
//! binary prints them once with their causes.

mod centralized;
mod options;
mod peer;
mod sample;
mod summary;
mod sync_peer;
mod up;

use std::net::SocketAddr;
use std::path::Path;

use serde::Serialize;

use crate::config::ConfigError;
use crate::node::NodeError;
use crate::{certs, data, model};

pub use centralized::{centralized, CENTRALIZED_PEER};
pub use options::{
    budget, load_data, local_peer_options, peer_options, workload_for, workload_peer_options,
    RunData,
};
pub use peer::peer;
pub use sample::sample;
pub use summary::{
    checkpoint_consensus, combine_summaries, compare, PeerSummary, RunSummary, SinglePeerSummary,
};
pub use up::{up, UpOptions};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration or flags.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Certificates missing or invalid.
    #[error(transparent)]
    Certs(#[from] certs::CertError),
    /// The dataset could not be loaded or sharded.
    #[error(transparent)]
    Data(#[from] data::DataError),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] model::ModelError),
    /// A peer failed.
    #[error("peer {name} failed")]
    Peer {
        /// The peer's name.
        name: String,
        /// What went wrong.
        source: Box<NodeError>,
    },
    /// The metrics server could not start, or a peer's `/status` could not be fetched.
    #[error(transparent)]
    Http(#[from] crate::metrics::http::HttpError),
    /// An output directory is a file, or has a file among its parents.
    #[error(transparent)]
    NotADirectory(#[from] crate::node::NotADirectory),
    /// A file could not be written or a temp dir made.
    #[error("{what} failed")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl RunError {
    /// [`RunError::Peer`] for the peer called `name`, failed with `source`.
    pub fn peer(name: &str, source: NodeError) -> Self {
        RunError::Peer {
            name: name.to_string(),
            source: Box::new(source),
        }
    }
}

/// Maps an I/O error to [`RunError::Io`] saying `what` was being done.
fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

/// Writes `addr` to `path` atomically (temp file, then rename): scripts wait for it.
fn write_ready(path: &Path, addr: SocketAddr) -> Result<(), RunError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{addr}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(io_err(format!("writing {}", path.display())))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RunError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| RunError::Io {
        what: "serialising the summary".into(),
        source: std::io::Error::other(e),
    })?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(io_err(format!("creating {}", parent.display())))?;
    }
    std::fs::write(path, text + "\n").map_err(io_err(format!("writing {}", path.display())))
}
