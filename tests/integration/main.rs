#![allow(clippy::unwrap_used, clippy::expect_used)]
//! One integration-test binary (less linking); each module is one area.

mod churn;
mod cli;
mod cluster;
mod common;
mod containers;
mod discovery;
mod durability;
mod equivocation;
mod examples;
mod exhaustion;
mod flood;
mod forgery;
mod health;
mod kubernetes;
mod lab;
mod models;
mod netns;
mod observability;
mod procs;
mod revocation;
mod scale;
mod security;
mod slurm;
mod ssh;
mod version_reuse;
