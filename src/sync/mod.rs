//! The barrier baseline (`rumor up --mode sync`): what a user of synchronous data parallelism
//! (DDP-style model averaging) or FedAvg would run instead of gossip, over the same QUIC
//! transport, certificates, loss injection, learning-rate rule, batch size, sharding and
//! evaluation as the gossip peers, so the two can be compared fairly.
//!
//! # Algorithm (local SGD / FedAvg with full participation)
//!
//! Every peer trains on its shard with its own AdamW state. Every H = `train.publish_every`
//! steps it sends its update (below) to every other live peer and waits until it holds the same
//! round's update of every live peer, then sets its model to the previous average plus their
//! plain mean (summed in peer-index order, so every peer computes the bit-identical average). The averaged model moves by
//! `(1/N) Σ_i Δ_i`, exactly as the gossip peers' shared model does with `w = 1/N`, so both modes
//! use the same learning rate (`lr × lr_scaling(N)`). References: McMahan et al., 2017
//! (FedAvg); Stich, 2019 ("Local SGD converges fast and communicates little").
//!
//! **What a round carries.** A round frame carries the sender's *update* since the last
//! average, `u_i = work_i − avg`, quantized with error feedback as `train.delta_compression`
//! says (the same scheme as the gossip deltas, so both modes put the same bytes per parameter
//! on the wire); every peer then sets `avg ← avg + (1/N) Σ_i u_i`. With no compression this is
//! the mean of the models up to float rounding. The final frame carries the whole model, in
//! `f32`.
//!
//! **Start.** Each peer first sends a *hello* (round [`HELLO_ROUND`], no values) to every other
//! peer and waits for theirs (at most `up.sync_timeout`), so QUIC handshakes happen before
//! training, not inside the first barrier.
//!
//! **Timeouts.** A peer whose model has not arrived within `up.sync_timeout` is left out of that
//! round and is not waited for afterwards; it is averaged in again in any later round its model
//! arrives in time.
//!
//! **End.** When its budget is spent, a peer sends a *final* frame with its model; peers ignore
//! a finished peer in later rounds. Every peer then waits for the final model of every peer it
//! still counts live and sets its model to their mean: with no timeouts all peers end with the
//! same model (consensus distance 0). Every peer trains the same number of steps whatever its
//! shard's size (`Workload::epoch_examples`); should budgets still differ (a run cut short by
//! time), peers that finish first stop taking part in the rounds, and their final models enter
//! the final mean with equal weight (FedAvg with equal client weights).
//!
//! # Frames
//!
//! Sync frames do not go through the gossip codec or core (the core would refuse an unknown
//! kind); they travel on their own streams with their own header:
//!
//! ```text
//! magic "RSYN" (4) | version 1 (1) | round u64 BE (8) | sender index u32 BE (4) | final u8 (1)
//!   | value count u32 BE (4) | values (CompactValues::to_bytes: format byte, then
//!   f32 LE, bf16 LE, or int8 block exponents and values)
//! ```

mod frame;
mod peer;
mod trainer;

pub use frame::{
    SyncFrame, HELLO_ROUND, MAX_ROUNDS_AHEAD, SYNC_HEADER_LEN, SYNC_MAGIC, SYNC_VERSION,
};
pub use peer::{run_sync_peer, SyncOutcome, SyncPeer};

use crate::model;

/// Errors of the sync baseline.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A frame is malformed (wrong magic, version, length or sender).
    #[error("bad sync frame: {0}")]
    Frame(String),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] model::ModelError),
    /// The trainer thread failed or could not start.
    #[error("trainer: {0}")]
    Trainer(String),
    /// The data dir could not be written.
    #[error("cannot write to the data dir")]
    Io(#[from] std::io::Error),
}
