//! The domain model: what a sweep measured (its levels, knee, mix and the server's evidence),
//! the capacity model, the typed words (limits, estimate, objective, API) and the SLO. Pure
//! data with the few rules that belong to it; `stats` computes it, `planner` reads it,
//! `report` renders it, and the files (summary.json, levels.csv, requests.csv) serialize it.

mod capacity;
mod limits;
mod mix;
pub mod schema;
mod sweep;

pub use capacity::CapacityModel;
pub use limits::{AnnouncedLimits, Estimate, LimitedBy, Objective, ServerLimit, Slo};
pub use mix::{prompt_bytes, prompt_text, requested_tokens, MixSums};
#[cfg(test)]
pub(crate) use sweep::fixtures;
pub use sweep::{KneeRow, LevelEnd, LevelRow, LevelSpend, RequestRow, ServerInfo, ServerVerdict, Summary, SweepMix};
