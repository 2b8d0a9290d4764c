//! hoist: a GitLab webhook-driven deploy bot for Docker Swarm.
//!
//! Data flows one way: `webhook` authenticates and persists deliveries into
//! `store`; the `worker` claims them, `events` parses them, and the dispatcher
//! decides what they mean. `registry` and `swarm` do the deploy itself.

pub mod cli;
pub mod command;
pub mod config;
pub mod doctor;
pub mod engine;
pub mod events;
pub mod gitlab;
pub mod hook;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod registry;
pub mod report;
pub mod server;
pub mod store;
pub mod swarm;
pub mod webhook;
pub mod worker;
