//! What people look at: the live ratatui dashboard of `rumor up`, the coloured tables of
//! `rumor status` and `rumor top`, and indicatif progress bars for long runs.

pub mod dashboard;
pub mod format;
pub mod peer_table;
pub mod progress;
pub mod table;
