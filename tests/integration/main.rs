//! One integration-test binary (less linking); each module is one area.

mod cli;
mod cluster;
mod common;
mod security;
