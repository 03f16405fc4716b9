//! One integration test binary (ripgrep-style): every module links once.

mod auto;
mod cli;
mod plan;
mod run;
mod sim;
mod sweep;
mod util;
