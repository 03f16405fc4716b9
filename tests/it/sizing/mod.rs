//! Sizing: `sweep`, `plan` and `auto` give figures a job can be sized on. RPM per GPU is near
//! what the resource serves, the knee is at G x B, each rate carries its confidence interval, and
//! a plan (GPUs, concurrency, duration, cost, the cheapest option for a deadline) follows from
//! them by plain arithmetic.

mod auto;
mod plan;
mod sweep;
