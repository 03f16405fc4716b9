//! One integration test binary (ripgrep-style): every module links once.

mod architecture;
mod auto;
mod bad_input;
mod cli;
mod crash;
mod faults;
mod first_try;
mod html_page;
mod plan;
mod real;
mod run;
mod scale;
mod secrets;
mod server_metrics;
mod sim;
mod sweep;
mod util;
