//! rumor: barrier-free, eventually consistent training by gossip over mutually authenticated QUIC.
//!
//! Peers train candle models on their own data shards and spread versioned model deltas by gossip.
//! Each peer merges what arrives by version number, at once; when training stops and gossip
//! settles, all peers hold the same model. See `docs/ALGORITHM.md` for the merge invariant.

pub mod bench;
pub mod certs;
pub mod chaos;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod data;
pub mod fsutil;
pub mod handshake_flood;
pub mod lab;
pub mod lock;
pub mod metrics;
pub mod model;
pub mod net;
pub mod node;
pub mod placement;
pub mod ratelog;
pub mod report;
pub mod run;
pub mod short_id;
pub mod sync;
pub mod train;
pub mod ui;
pub mod workload;
