//! One integration test binary (ripgrep-style): every module links once. One module per promise
//! sizeup makes, so "where is X tested?" has one answer; `util` holds the helpers they share.

mod architecture;
mod cli;
mod exactly_once;
mod faults;
mod first_try;
mod gateways;
mod html_page;
mod limits;
mod real;
mod resource;
mod secrets;
mod server_evidence;
mod simulator;
mod sizing;
mod slurm;
mod util;
