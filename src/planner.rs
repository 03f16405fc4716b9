//! Capacity planning: from a measured concurrency sweep, how many GPUs (and
//! how much concurrency, time and money) a batch job needs to hit a target
//! request rate.
//!
//! Pure arithmetic on the sweep results; the command layer does all I/O and
//! fills in [`Plan::sweep`].

mod choose;
mod explain;
mod plan;
mod size;
mod sweeps;

pub use crate::model::{Estimate, Slo};
pub use choose::{choose, deadline_target_rpm, options_table, Candidate, Choice, Goal, Objective};
pub use explain::explain;
pub use plan::{OptionRow, Plan, TokensPerS, UsdPerMillion, WorkloadMix};
pub use size::{plan, rescale_for_mix, token_figures, PlanError, PlanInput, SweepLevel, MIN_R2};
pub use sweeps::{chosen, for_sweeps, server_warnings, Answer, JobSpec, Note, Question, RateGoal, Sizing, SweepOption};
