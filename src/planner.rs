//! Capacity planning: from a measured concurrency sweep, how many GPUs (and
//! how much concurrency, time and money) a batch job needs to hit a target
//! request rate.
//!
//! Pure arithmetic on the sweep results; the command layer does all I/O and
//! fills in [`Plan::sweep`].

mod choose;
mod explain;
mod limit;
mod plan;
mod plateau;
mod rescale;
mod scaling;
mod size;
mod sweeps;

pub use choose::{options_table, Choice, Objective};
pub use explain::explain;
pub use limit::{unmet as limit_unmet, TokenPrices};
pub use plan::Plan;
pub use size::PlanError;
pub use sweeps::{
    chosen, for_sweeps, server_warnings, sweep_prefix_share, JobSpec, Note, Question, RateGoal, Sizing, SweepOption,
};
