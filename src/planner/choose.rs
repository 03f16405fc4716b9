//! Choosing the deployment: several options (a sweep of one GPU type, provider or shape, each
//! with its own price) sized for the same target, compared, and one chosen: the cheapest that
//! meets the target (or deadline), `--max-gpus` and `--budget`, or the fastest within them.
//!
//! Each option is sized exactly as a single sweep is ([`super::plan`]); an option that needs
//! more than `--max-gpus` is shown at `--max-gpus`, with how far it falls short. Cost grows with
//! the GPU count only through startup (each GPU serves the same requests for a shorter time),
//! so the fewest GPUs that meet the target are also the cheapest for that option.

use super::{at_gpus, gpus_word, human_duration, size, Plan, PlanError, PlanInput};
use crate::report::fmt::{grouped, thousands};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// One deployment option: a sweep and its price (in `input.gpu_hour_cost`).
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The label people read (`sweep --name`, else the folder's name).
    pub name: String,
    /// The sweep folder, as given.
    pub sweep: String,
    /// The option's planning input; every candidate has the same target and job.
    pub input: PlanInput,
}

/// What the choice minimises.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Objective {
    /// The cheapest option that meets the target (deadline) and limits; the default.
    #[default]
    Cost,
    /// The fastest option within `--budget` and the limits.
    Time,
}

impl Objective {
    pub fn as_str(self) -> &'static str {
        match self {
            Objective::Cost => "cost",
            Objective::Time => "time",
        }
    }
}

/// The goal every option is judged against, beyond the target rate in each [`PlanInput`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Goal {
    pub objective: Objective,
    /// Most the job may cost, USD.
    pub budget_usd: Option<f64>,
    /// Wall-clock limit for the job, seconds from switching on (startup included) to the last
    /// answer; the target rate came from it ([`deadline_target_rpm`]).
    pub deadline_s: Option<f64>,
}

/// One row of the comparison, as plan.json's `options` lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OptionRow {
    pub name: String,
    pub sweep: String,
    pub gpu_hour_cost: Option<f64>,
    /// The operating level under the SLO flags; null when no level meets them.
    pub chosen_concurrency: Option<u32>,
    /// GPUs the target needs; `gpus` is this capped at `--max-gpus`.
    pub gpus_needed: Option<u32>,
    pub gpus: Option<u32>,
    pub concurrency_per_gpu: Option<u32>,
    pub total_concurrency: Option<u32>,
    pub rpm_per_gpu: Option<f64>,
    pub expected_rpm: Option<f64>,
    pub expected_latency_p95_ms: Option<f64>,
    pub expected_duration_s: Option<f64>,
    pub cost_usd: Option<f64>,
    pub usd_per_million_tokens: Option<f64>,
    pub meets_slo: bool,
    pub meets_target: bool,
    /// Null without `--deadline`.
    pub meets_deadline: Option<bool>,
    pub within_max_gpus: bool,
    /// Null without `--budget`.
    pub within_budget: Option<bool>,
    pub chosen: bool,
    /// Why this option was not chosen; null for the chosen one.
    pub lost_because: Option<String>,
}

/// One option after sizing.
#[derive(Clone, Debug)]
pub struct Evaluated {
    pub name: String,
    pub sweep: String,
    pub gpu_hour_cost: Option<f64>,
    /// At `min(needed, --max-gpus)` GPUs; `None` when no level meets the SLO.
    pub plan: Option<Plan>,
    /// Why no plan: the SLO message.
    pub no_plan: Option<String>,
    /// What the sizing rests on: RPM per GPU (CI low or mean) at the operating level.
    per_gpu: f64,
    pub needed_gpus: Option<u32>,
    pub within_max_gpus: bool,
    pub meets_deadline: Option<bool>,
    pub within_budget: Option<bool>,
    pub lost_because: Option<String>,
}

impl Evaluated {
    /// Meets the target (deadline), `--max-gpus` and `--budget`.
    fn feasible(&self) -> bool {
        self.plan.is_some() && self.within_max_gpus && self.meets_deadline != Some(false) && self.within_budget != Some(false)
    }

    fn cost(&self) -> f64 {
        self.plan.as_ref().and_then(|p| p.cost_usd).unwrap_or(f64::INFINITY)
    }

    fn rpm(&self) -> f64 {
        self.plan.as_ref().map_or(0.0, |p| p.expected_rpm)
    }

    fn gpus(&self) -> u32 {
        self.plan.as_ref().map_or(u32::MAX, |p| p.gpus)
    }

    fn row(&self, chosen: bool) -> OptionRow {
        let p = self.plan.as_ref();
        OptionRow {
            name: self.name.clone(),
            sweep: self.sweep.clone(),
            gpu_hour_cost: self.gpu_hour_cost,
            chosen_concurrency: p.map(|p| p.chosen_concurrency),
            gpus_needed: self.needed_gpus,
            gpus: p.map(|p| p.gpus),
            concurrency_per_gpu: p.map(|p| p.concurrency_per_gpu),
            total_concurrency: p.map(|p| p.total_concurrency),
            rpm_per_gpu: p.map(|p| p.rpm_per_gpu),
            expected_rpm: p.map(|p| p.expected_rpm),
            expected_latency_p95_ms: p.map(|p| p.expected_latency_p95_ms),
            expected_duration_s: p.and_then(|p| p.expected_duration_s),
            cost_usd: p.and_then(|p| p.cost_usd),
            usd_per_million_tokens: p.and_then(|p| p.usd_per_million_tokens.as_ref()).and_then(|u| u.total),
            meets_slo: p.is_some(),
            meets_target: p.is_some() && self.within_max_gpus,
            meets_deadline: self.meets_deadline,
            within_max_gpus: self.within_max_gpus,
            within_budget: self.within_budget,
            chosen,
            lost_because: self.lost_because.clone(),
        }
    }
}

/// The comparison and its outcome.
#[derive(Clone, Debug)]
pub struct Choice {
    pub options: Vec<Evaluated>,
    pub objective: Objective,
    pub deadline_s: Option<f64>,
    /// The chosen option's index, or why none qualifies (exit 1).
    pub outcome: Result<usize, PlanError>,
}

impl Choice {
    pub fn rows(&self) -> Vec<OptionRow> {
        let chosen = self.outcome.as_ref().ok().copied();
        self.options.iter().enumerate().map(|(i, o)| o.row(Some(i) == chosen)).collect()
    }

    /// The chosen option's plan, with its label, the goal and every row.
    pub fn chosen_plan(&self) -> Option<Plan> {
        let i = *self.outcome.as_ref().ok()?;
        let mut plan = self.options[i].plan.clone()?;
        plan.name = Some(self.options[i].name.clone());
        plan.deadline_s = self.deadline_s;
        plan.objective = Some(self.objective.as_str().to_string());
        plan.options = self.rows();
        Some(plan)
    }
}

/// Relative tolerance within which two costs or rates count as equal (float noise).
const TIE: f64 = 1e-9;

fn cmp_close(a: f64, b: f64) -> Ordering {
    if a == b || (a - b).abs() <= TIE * a.abs().max(b.abs()) {
        Ordering::Equal
    } else {
        a.total_cmp(&b)
    }
}

/// The rate a deadline asks for: the job's requests over the time left after startup.
/// A deadline no longer than the startup leaves no time at all: unmet (exit 1).
pub fn deadline_target_rpm(requests: Option<u64>, deadline_s: f64, startup_s: f64) -> Result<f64, PlanError> {
    if !(deadline_s.is_finite() && deadline_s > 0.0) {
        return Err(PlanError::Invalid(format!("--deadline must be longer than 0s, got {deadline_s} s")));
    }
    let Some(r) = requests.filter(|r| *r > 0) else {
        return Err(PlanError::Invalid(
            "--deadline needs the job's size: give --requests N or --input FILE".into(),
        ));
    };
    if deadline_s <= startup_s {
        return Err(PlanError::Unmet(format!(
            "the --deadline of {} is used up by --startup-s {} before the first request: no option can finish",
            human_duration(deadline_s),
            grouped(startup_s, 0)
        )));
    }
    Ok(r as f64 * 60.0 / (deadline_s - startup_s))
}

/// Sizes every candidate for its target and picks one by `goal`. `Err` only for bad input
/// (the message names the option when there are several); an unmet goal is in
/// [`Choice::outcome`], so the comparison can still be shown.
pub fn choose(cands: &[Candidate], goal: &Goal) -> Result<Choice, PlanError> {
    if cands.is_empty() {
        return Err(PlanError::Invalid("--sweep: give at least one sweep folder".into()));
    }
    if let Some(b) = goal.budget_usd {
        if !(b.is_finite() && b > 0.0) {
            return Err(PlanError::Invalid(format!("--budget must be a positive number of USD, got {b}")));
        }
    }
    let several = cands.len() > 1;
    let mut options = Vec::with_capacity(cands.len());
    for c in cands {
        options.push(evaluate(c, goal, several)?);
    }
    let order = |a: &Evaluated, b: &Evaluated| match goal.objective {
        Objective::Cost => cmp_close(a.cost(), b.cost())
            .then(cmp_close(b.rpm(), a.rpm()))
            .then(a.gpus().cmp(&b.gpus())),
        Objective::Time => cmp_close(b.rpm(), a.rpm())
            .then(cmp_close(a.cost(), b.cost()))
            .then(a.gpus().cmp(&b.gpus())),
    };
    // min_by keeps the first of equals: on a full tie the option given first wins.
    let best = options
        .iter()
        .enumerate()
        .filter(|(_, o)| o.feasible())
        .min_by(|(_, a), (_, b)| order(a, b))
        .map(|(i, _)| i);
    let outcome = match best {
        Some(i) => Ok(i),
        None => Err(why_none(&options, cands, goal)),
    };
    if let Some(b) = best {
        let winner = options[b].clone();
        for (i, o) in options.iter_mut().enumerate() {
            if i != b && o.lost_because.is_none() {
                o.lost_because = Some(lost_to(o, &winner, goal.objective));
            }
        }
    }
    Ok(Choice {
        options,
        objective: goal.objective,
        deadline_s: goal.deadline_s,
        outcome,
    })
}

/// Sizes one candidate and records which limits it breaks (with the reason it loses for that).
fn evaluate(c: &Candidate, goal: &Goal, several: bool) -> Result<Evaluated, PlanError> {
    let mut e = Evaluated {
        name: c.name.clone(),
        sweep: c.sweep.clone(),
        gpu_hour_cost: c.input.gpu_hour_cost,
        plan: None,
        no_plan: None,
        per_gpu: 0.0,
        needed_gpus: None,
        within_max_gpus: false,
        meets_deadline: None,
        within_budget: None,
        lost_because: None,
    };
    let s = match size(&c.input) {
        Ok(s) => s,
        Err(PlanError::Invalid(m)) if several => return Err(PlanError::Invalid(format!("option `{}`: {m}", c.name))),
        Err(PlanError::NoLevelMeetsSlo(m)) => {
            e.lost_because = Some(format!("no level meets the SLO: {m}"));
            e.no_plan = Some(m);
            return Ok(e);
        }
        Err(other) => return Err(other),
    };
    if goal.budget_usd.is_some() && (c.input.gpu_hour_cost.is_none() || c.input.requests.is_none()) {
        return Err(PlanError::Invalid(format!(
            "--budget needs every option's cost, and `{}` has none: give --requests N (or --input FILE) and a price (`sweep --gpu-hour-cost`, or `plan --gpu-hour-cost`)",
            c.name
        )));
    }
    let max = c.input.max_gpus.unwrap_or(u32::MAX);
    let gpus = s.needed_gpus.min(max);
    let mut plan = at_gpus(&c.input, s.chosen, gpus);
    plan.sweep = c.sweep.clone();
    e.per_gpu = s.per_gpu;
    e.needed_gpus = Some(s.needed_gpus);
    e.within_max_gpus = s.needed_gpus <= max;
    e.meets_deadline = goal.deadline_s.map(|d| {
        plan.expected_duration_s
            .is_some_and(|t| t + c.input.startup_s <= d * (1.0 + TIE))
    });
    e.within_budget = goal
        .budget_usd
        .map(|b| plan.cost_usd.is_some_and(|cost| cost <= b * (1.0 + TIE)));
    let target = c.input.target_rpm;
    if !e.within_max_gpus {
        let reach = f64::from(max) * s.per_gpu / (1.0 + c.input.headroom);
        let mut why = format!(
            "needs {} GPUs, more than --max-gpus {max}, which sustain about {} of the {} RPM needed ({:.0}% short)",
            s.needed_gpus,
            thousands(reach),
            thousands(target),
            (1.0 - reach / target) * 100.0
        );
        if let (Some(d), Some(t)) = (goal.deadline_s, plan.expected_duration_s) {
            let finish = t + c.input.startup_s;
            if finish > d {
                why.push_str(&format!(
                    "; would finish in {}, {} past the deadline",
                    human_duration(finish),
                    human_duration(finish - d)
                ));
            }
        }
        e.lost_because = Some(why);
    } else if e.within_budget == Some(false) {
        let (cost, b) = (plan.cost_usd.unwrap_or(f64::INFINITY), goal.budget_usd.unwrap_or(0.0));
        e.lost_because = Some(format!(
            "costs ${}, ${} over the --budget ${}",
            grouped(cost, 2),
            grouped(cost - b, 2),
            grouped(b, 2)
        ));
    }
    e.plan = Some(plan);
    Ok(e)
}

/// Why a feasible option lost to `winner`.
fn lost_to(o: &Evaluated, winner: &Evaluated, objective: Objective) -> String {
    let w = &winner.name;
    let (cost, wcost) = (o.cost(), winner.cost());
    let (rpm, wrpm) = (o.rpm(), winner.rpm());
    let costlier = cmp_close(cost, wcost) == Ordering::Greater;
    let slower = cmp_close(rpm, wrpm) == Ordering::Less;
    let cost_gap = || {
        if cost.is_finite() {
            format!(
                "costs ${}, ${} ({:.0}%) more than `{w}`",
                grouped(cost, 2),
                grouped(cost - wcost, 2),
                (cost / wcost - 1.0) * 100.0
            )
        } else {
            format!("cost unknown (no price or no --requests), `{w}` costs ${}", grouped(wcost, 2))
        }
    };
    let speed_gap = || {
        format!(
            "serves {} RPM, slower than `{w}`'s {}",
            thousands(rpm),
            thousands(wrpm)
        )
    };
    match objective {
        Objective::Cost if costlier => cost_gap(),
        Objective::Time if slower => speed_gap(),
        Objective::Cost if slower => format!("as cheap as `{w}` but slower: {}", speed_gap()),
        Objective::Time if costlier => format!("as fast as `{w}` but dearer: {}", cost_gap()),
        _ if o.gpus() > winner.gpus() => format!("ties with `{w}`, which needs fewer GPUs ({} vs {})", winner.gpus(), o.gpus()),
        _ => format!("ties with `{w}`, given first"),
    }
}

/// Why no option qualifies: the error the command exits 1 with.
fn why_none(options: &[Evaluated], cands: &[Candidate], goal: &Goal) -> PlanError {
    let planned: Vec<&Evaluated> = options.iter().filter(|o| o.plan.is_some()).collect();
    if planned.is_empty() {
        return if options.len() == 1 {
            PlanError::NoLevelMeetsSlo(options[0].no_plan.clone().unwrap_or_default())
        } else {
            let each: Vec<String> = options
                .iter()
                .map(|o| format!("`{}`: {}", o.name, o.no_plan.as_deref().unwrap_or("")))
                .collect();
            PlanError::NoLevelMeetsSlo(format!("no option has a level that meets it; {}", each.join("; ")))
        };
    }
    let input = &cands[0].input;
    // Options that reach the target but cost too much: the cheapest of them is the nearest miss.
    if let Some(o) = planned
        .iter()
        .filter(|o| o.within_max_gpus)
        .min_by(|a, b| cmp_close(a.cost(), b.cost()))
    {
        let (cost, b) = (o.cost(), goal.budget_usd.unwrap_or(0.0));
        return PlanError::Unmet(format!(
            "no option {} within --budget ${}: the cheapest, `{}` ({}), costs ${}, ${} ({:.0}%) over",
            goal_words(goal, input),
            grouped(b, 2),
            o.name,
            gpus_word(o.gpus()),
            grouped(cost, 2),
            grouped(cost - b, 2),
            (cost / b - 1.0) * 100.0
        ));
    }
    // Every option needs more GPUs than --max-gpus: the one that gets closest.
    let o = planned
        .iter()
        .max_by(|a, b| a.rpm().total_cmp(&b.rpm()))
        .expect("planned is not empty");
    let max = o.gpus();
    if options.len() == 1 && goal.deadline_s.is_none() {
        // One sweep and a target rate: the error `plan` has always given.
        return PlanError::Unreachable {
            max_gpus: max,
            reachable_rpm: f64::from(max) * o.per_gpu / (1.0 + input.headroom),
            needed_gpus: o.needed_gpus.unwrap_or(max),
        };
    }
    let best = if options.len() == 1 { "the option" } else { "the best" };
    PlanError::Unmet(format!(
        "no option {} within --max-gpus {max}: {best}, `{}`, {}",
        goal_words(goal, input),
        o.name,
        o.lost_because.as_deref().unwrap_or("")
    ))
}

/// "finishes 120,000 requests within the 10m 00s deadline" / "reaches 30,000 RPM".
fn goal_words(goal: &Goal, input: &PlanInput) -> String {
    match (goal.deadline_s, input.requests) {
        (Some(d), Some(r)) => format!(
            "finishes {} requests within the {} deadline",
            thousands(r as f64),
            human_duration(d)
        ),
        _ => format!("reaches {} RPM", thousands(input.target_rpm)),
    }
}

/// The comparison as a table for stdout: one row per option, the chosen one marked `*`, then
/// why each other option lost.
pub fn options_table(choice: &Choice) -> String {
    let rows = choice.rows();
    let dash = || "-".to_string();
    let yes_no = |b: Option<bool>| b.map_or(dash(), |b| if b { "yes" } else { "no" }.to_string());
    let header = [
        "", "option", "$/GPU-h", "level", "RPM/GPU", "GPUs", "conc", "RPM", "p95 ms", "duration", "cost",
        "$/1M tok", "target", "deadline", "budget",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in &rows {
        let gpus = match (r.gpus, r.gpus_needed) {
            (Some(g), Some(n)) if n > g => format!("{g} (needs {n})"),
            (Some(g), _) => g.to_string(),
            _ => dash(),
        };
        table.push(vec![
            if r.chosen { "*" } else { "" }.to_string(),
            r.name.clone(),
            r.gpu_hour_cost.map_or(dash(), |c| grouped(c, 2)),
            r.chosen_concurrency.map_or(dash(), |c| c.to_string()),
            r.rpm_per_gpu.map_or(dash(), thousands),
            gpus,
            r.total_concurrency.map_or(dash(), |c| c.to_string()),
            r.expected_rpm.map_or(dash(), thousands),
            r.expected_latency_p95_ms.map_or(dash(), thousands),
            r.expected_duration_s.map_or(dash(), human_duration),
            r.cost_usd.map_or(dash(), |c| format!("${}", grouped(c, 2))),
            r.usd_per_million_tokens.map_or(dash(), |c| format!("${c:.3}")),
            if r.meets_slo { yes_no(Some(r.meets_target)) } else { "no SLO".to_string() },
            yes_no(r.meets_deadline),
            yes_no(r.within_budget),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| table.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &table {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, s)| {
                // Labels left, numbers right.
                if c <= 1 {
                    format!("{s:<w$}", w = widths[c])
                } else {
                    format!("{s:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    for r in rows.iter().filter(|r| !r.chosen) {
        if let Some(why) = &r.lost_because {
            out.push_str(&format!("{}: {why}\n", r.name));
        }
    }
    out
}
