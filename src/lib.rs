//! sizeup: size, plan and run large batch jobs on LLM inference endpoints.
//!
//! # Layout
//! - [`cli`]: clap structs (the `--help` text); [`commands`]: one module per command.
//! - [`sim`]: the built-in simulated GPU resource (server).
//! - [`client`]: request bodies, SSE decoding, one [`client::Outcome`] per request.
//! - [`engine`]: the closed-loop sliding window, rate limiting, shutdown.
//! - [`stats`], [`planner`], [`report`]: pure computation and exporters (no network, no clock).
//! - [`batch`]: batch input readers, output writer, resume state.
//! - [`ui`]: everything a person reads on stderr.

pub mod api;
pub mod batch;
pub mod cli;
pub mod client;
pub mod engine;
pub mod planner;
pub mod report;
pub mod secret;
pub mod sim;
pub mod stats;
pub mod ui;
