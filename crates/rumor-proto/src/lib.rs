//! rumor's gossip protocol, sans-IO.
//!
//! Everything a peer decides lives here, and nothing here does I/O or reads a clock: the caller
//! passes `now`, bytes and local events in and takes transmits, events and the next timer out, so
//! the same code runs under the tokio node, the deterministic [`sim`]ulator and the fuzzer. The
//! crate depends on no async runtime, network, tensor or UI crate.
//!
//! - [`id`]: [`PeerId`] and [`MessageId`].
//! - [`auth`]: identities bound to certificates, origin signatures and their statements.
//! - [`version_vector`]: the exact set of `(origin, version)` deltas folded into a base.
//! - [`compact`]: quantization with error feedback and the lossless compact value encoding.
//! - [`wire`]: the messages, their codec and validation.
//! - [`core`]: the protocol state machine.
//! - [`sim`]: a deterministic many-peer simulator over the real codec.
//!
//! `docs/ALGORITHM.md` states the merge invariant and the protocol; `docs/ARCHITECTURE.md` how the
//! crates fit together.

pub mod auth;
pub mod compact;
pub mod core;
pub mod id;
pub mod sim;
pub mod version_vector;
pub mod wire;

pub use id::{MessageId, PeerId};
