//! Choosing the deployment: several options (a sweep of one GPU type, provider or shape, each
//! with its own price) sized for the same target, compared, and one chosen: the cheapest that
//! meets the target (or deadline), `--max-gpus` and `--budget`, or the fastest within them.
//!
//! Each option is sized exactly as a single sweep is ([`super::plan`]); an option that needs
//! more than `--max-gpus` is shown at `--max-gpus`, with how far it falls short. Cost grows with
//! the GPU count only through startup (each GPU serves the same requests for a shorter time),
//! so the fewest GPUs that meet the target are also the cheapest for that option.

use super::explain::{gpus_word, human_duration};
use super::plan::{OptionRow, Plan};
use super::size::{at_gpus, carried, size, PlanError, PlanInput};
use crate::fmt::{grouped, thousands};
pub use crate::model::Objective;
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
    /// Over `--max-gpus`: how far the capped option falls short.
    shortfall: Option<String>,
    pub meets_deadline: Option<bool>,
    pub within_budget: Option<bool>,
    pub lost_because: Option<String>,
}

impl Evaluated {
    /// Meets the target (deadline), `--max-gpus` and `--budget`.
    fn feasible(&self) -> bool {
        self.plan.is_some()
            && self.within_max_gpus
            && self.meets_deadline != Some(false)
            && self.within_budget != Some(false)
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
        self.options
            .iter()
            .enumerate()
            .map(|(i, o)| o.row(Some(i) == chosen))
            .collect()
    }

    /// The chosen option's plan, with its label, the goal and every row.
    pub fn chosen_plan(&self) -> Option<Plan> {
        let i = *self.outcome.as_ref().ok()?;
        let mut plan = self.options[i].plan.clone()?;
        plan.name = Some(self.options[i].name.clone());
        plan.deadline_s = self.deadline_s;
        plan.objective = Some(self.objective);
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
        return Err(PlanError::Invalid(format!(
            "--deadline must be longer than 0s, got {deadline_s} s"
        )));
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
            return Err(PlanError::Invalid(format!(
                "--budget must be a positive number of USD, got {b}"
            )));
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
        shortfall: None,
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
    let mut plan = at_gpus(&c.input, &s.chosen, gpus);
    plan.plateau_levels = s.pooled.clone();
    plan.sweep = c.sweep.clone();
    // At the plan's own count, so a reach quoted for it carries the measured scaling there.
    e.per_gpu = carried(&c.input, s.per_gpu, gpus) / f64::from(gpus.max(1));
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
        let reach = carried(&c.input, s.per_gpu, max);
        let mut why = format!(
            "{} sustain about {} of the {} RPM needed ({:.0}% short)",
            gpus_word(max),
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
        e.lost_because = Some(format!(
            "needs {} GPUs, more than --max-gpus {max}: {why}",
            s.needed_gpus
        ));
        e.shortfall = Some(why);
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
            format!(
                "cost unknown (no price or no --requests), `{w}` costs ${}",
                grouped(wcost, 2)
            )
        }
    };
    let speed_gap = || format!("serves {} RPM, slower than `{w}`'s {}", thousands(rpm), thousands(wrpm));
    match objective {
        Objective::Cost if costlier => cost_gap(),
        Objective::Time if slower => speed_gap(),
        Objective::Cost if slower => format!("as cheap as `{w}` but slower: {}", speed_gap()),
        Objective::Time if costlier => format!("as fast as `{w}` but dearer: {}", cost_gap()),
        _ if o.gpus() > winner.gpus() => format!(
            "ties with `{w}`, which needs fewer GPUs ({} vs {})",
            winner.gpus(),
            o.gpus()
        ),
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
            reachable_rpm: f64::from(max) * o.per_gpu,
            needed_gpus: o.needed_gpus.unwrap_or(max),
        };
    }
    let best = if options.len() == 1 { "the option" } else { "the best" };
    PlanError::Unmet(format!(
        "no option {} within --max-gpus {max}: {best}, `{}`, needs {}; {}",
        goal_words(goal, input),
        o.name,
        gpus_word(o.needed_gpus.unwrap_or(max)),
        o.shortfall.as_deref().unwrap_or("")
    ))
}

/// "finishes 120,000 requests within the 10m 00s deadline" / "reaches 30,000 RPM".
fn goal_words(goal: &Goal, input: &PlanInput) -> String {
    match (goal.deadline_s, input.requests) {
        (Some(d), Some(r)) => format!(
            "finishes {} requests by the {} deadline",
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
        "", "option", "$/GPU-h", "level", "RPM/GPU", "GPUs", "conc", "RPM", "p95 ms", "duration", "cost", "$/1M tok",
        "target", "deadline", "budget",
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
            if r.meets_slo {
                yes_no(Some(r.meets_target))
            } else {
                "no SLO".to_string()
            },
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

#[cfg(test)]
mod tests {
    use super::super::size::SweepLevel;
    use super::*;
    use crate::model::{Estimate, Slo};

    /// A sweep of `gpus` GPUs x `slots` slots at 50 ms a request (1,200 RPM per slot), CI ±1%:
    /// levels at half, full and double the slots.
    fn option(name: &str, gpus: u32, slots: u32, price: f64) -> Candidate {
        let cap = gpus * slots;
        let levels = [cap / 2, cap, cap * 2]
            .into_iter()
            .map(|c| {
                let rpm = f64::from(c.min(cap)) * 1_200.0;
                SweepLevel {
                    concurrency: c,
                    rpm,
                    rpm_ci_low: rpm * 0.99,
                    rpm_ci_high: rpm * 1.01,
                    latency_p95_ms: 51.0 * f64::from(c.max(cap)) / f64::from(cap),
                    ttft_p95_ms: None,
                    error_rate: 0.0,
                }
            })
            .collect();
        Candidate {
            name: name.into(),
            sweep: format!("reports/{name}"),
            input: PlanInput {
                levels,
                sweep_gpus: gpus,
                target_rpm: 12_000.0,
                headroom: 0.1,
                estimate: Estimate::Low,
                slo: Slo::default(),
                max_gpus: None,
                requests: Some(120_000),
                gpu_hour_cost: Some(price),
                startup_s: 0.0,
                scaling: None,
            },
        }
    }

    /// The pair: 2 x 8 slots at $4/h and 2 x 4 slots at $1.5/h.
    fn pair() -> Vec<Candidate> {
        vec![option("h100", 2, 8, 4.0), option("a100", 2, 4, 1.5)]
    }

    fn goal() -> Goal {
        Goal {
            deadline_s: Some(600.0),
            ..Goal::default()
        }
    }

    fn chosen_name(c: &Choice) -> &str {
        &c.options[*c.outcome.as_ref().unwrap()].name
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn deadline_becomes_a_rate() {
        // 120,000 requests in 10 min = 12,000 RPM; with 60 s startup, in 9 min = 13,333.3.
        assert!(close(deadline_target_rpm(Some(120_000), 600.0, 0.0).unwrap(), 12_000.0));
        assert!(close(
            deadline_target_rpm(Some(120_000), 600.0, 60.0).unwrap(),
            120_000.0 / 9.0
        ));
        assert!(
            matches!(deadline_target_rpm(None, 600.0, 0.0), Err(PlanError::Invalid(m)) if m.contains("--requests"))
        );
        assert!(matches!(
            deadline_target_rpm(Some(5), 0.0, 0.0),
            Err(PlanError::Invalid(_))
        ));
        // Startup eats the whole deadline: a goal no option meets, not a bad flag.
        assert!(
            matches!(deadline_target_rpm(Some(5), 60.0, 60.0), Err(PlanError::Unmet(m)) if m.contains("--startup-s 60"))
        );
    }

    #[test]
    fn cheapest_meeting_the_deadline() {
        let c = choose(&pair(), &goal()).unwrap();
        // h100: 13,200 / 9,504 = 1.39 -> 2 GPUs, 19,200 RPM, 375 s, 2 x 375 / 3600 x $4 = $0.833.
        // a100: 13,200 / 4,752 = 2.78 -> 3 GPUs, 14,400 RPM, 500 s, 3 x 500 / 3600 x $1.5 = $0.625.
        let (h, a) = (c.options[0].plan.as_ref().unwrap(), c.options[1].plan.as_ref().unwrap());
        assert_eq!((h.gpus, a.gpus), (2, 3));
        assert!(close(h.cost_usd.unwrap(), 2.0 * 375.0 / 3600.0 * 4.0));
        assert!(close(a.cost_usd.unwrap(), 3.0 * 500.0 / 3600.0 * 1.5));
        assert_eq!(chosen_name(&c), "a100");
        let rows = c.rows();
        assert!(rows[1].chosen && !rows[0].chosen);
        assert_eq!(rows[0].meets_deadline, Some(true));
        let why = rows[0].lost_because.as_deref().unwrap();
        assert!(
            why.contains("$0.83") && why.contains("$0.21") && why.contains("`a100`"),
            "{why}"
        );
        let plan = c.chosen_plan().unwrap();
        assert_eq!(plan.name.as_deref(), Some("a100"));
        assert_eq!(plan.sweep, "reports/a100");
        assert_eq!(plan.options.len(), 2);
        assert_eq!(plan.deadline_s, Some(600.0));
        assert_eq!(plan.objective, Some(Objective::Cost));
    }

    #[test]
    fn startup_counts_in_the_rate_and_the_cost() {
        // 60 s startup: 13,333 RPM x 1.1 = 14,667; h100 / 9,504 = 1.54 -> 2 GPUs;
        // a100 / 4,752 = 3.09 -> 4 GPUs. Costs: 2 x (375 + 60) / 3600 x 4 = $0.967;
        // 4 x (375 + 60) / 3600 x 1.5 = $0.725: a100 still.
        let mut cands = pair();
        for c in &mut cands {
            c.input.startup_s = 60.0;
            c.input.target_rpm = deadline_target_rpm(Some(120_000), 600.0, 60.0).unwrap();
        }
        let c = choose(&cands, &goal()).unwrap();
        let gpus: Vec<u32> = c.options.iter().map(|o| o.plan.as_ref().unwrap().gpus).collect();
        assert_eq!(gpus, [2, 4]);
        assert!(close(c.options[1].cost(), 4.0 * 435.0 / 3600.0 * 1.5));
        assert_eq!(chosen_name(&c), "a100");
    }

    #[test]
    fn time_objective_takes_the_fastest_within_budget() {
        let mut g = goal();
        g.objective = Objective::Time;
        assert_eq!(chosen_name(&choose(&pair(), &g).unwrap()), "h100");
        // $0.70 rules h100 ($0.83) out: a100 ($0.625) is the fastest left.
        g.budget_usd = Some(0.70);
        let c = choose(&pair(), &g).unwrap();
        assert_eq!(chosen_name(&c), "a100");
        assert_eq!(c.rows()[0].within_budget, Some(false));
        assert!(c.rows()[0]
            .lost_because
            .as_deref()
            .unwrap()
            .contains("over the --budget $0.70"));
        // Nothing fits $0.50: unmet, naming the cheapest and its overrun.
        g.budget_usd = Some(0.50);
        let c = choose(&pair(), &g).unwrap();
        let Err(PlanError::Unmet(m)) = &c.outcome else {
            panic!("{:?}", c.outcome)
        };
        assert!(
            m.contains("`a100`") && m.contains("$0.63") && m.contains("$0.13"),
            "{m}"
        );
        assert!(c.chosen_plan().is_none());
    }

    #[test]
    fn budget_applies_to_the_cost_objective_too() {
        let mut g = goal();
        g.budget_usd = Some(0.60);
        let c = choose(&pair(), &g).unwrap();
        assert!(matches!(c.outcome, Err(PlanError::Unmet(_))));
        // Budget without a price is a usage error that names the option.
        let mut cands = pair();
        cands[1].input.gpu_hour_cost = None;
        g.budget_usd = Some(5.0);
        let e = choose(&cands, &g).unwrap_err();
        assert!(matches!(&e, PlanError::Invalid(m) if m.contains("`a100`")), "{e:?}");
        g.budget_usd = Some(-1.0);
        assert!(matches!(choose(&pair(), &g), Err(PlanError::Invalid(m)) if m.contains("--budget")));
    }

    #[test]
    fn max_gpus_caps_and_rules_out() {
        // a100 needs 3 GPUs: at --max-gpus 2 it falls short, so the dearer h100 wins.
        let mut cands = pair();
        for c in &mut cands {
            c.input.max_gpus = Some(2);
        }
        let c = choose(&cands, &goal()).unwrap();
        assert_eq!(chosen_name(&c), "h100");
        let a = &c.rows()[1];
        assert_eq!(
            (a.gpus, a.gpus_needed, a.within_max_gpus, a.meets_target),
            (Some(2), Some(3), false, false)
        );
        // 2 GPUs x 4,800 = 9,600 RPM: 120,000 in 750 s, 150 s past the 600 s deadline.
        assert_eq!(a.meets_deadline, Some(false));
        let why = a.lost_because.as_deref().unwrap();
        assert!(
            why.contains("--max-gpus 2") && why.contains("2m 30s past the deadline"),
            "{why}"
        );
        // --max-gpus 1: neither makes it; the best is the one that serves the most.
        for c in &mut cands {
            c.input.max_gpus = Some(1);
        }
        let c = choose(&cands, &goal()).unwrap();
        let Err(PlanError::Unmet(m)) = &c.outcome else {
            panic!("{:?}", c.outcome)
        };
        // h100 on 1 GPU: 9,600 / 1.1 = 8,727 of 12,000 (27% short); 120,000 / 9,600 = 12m 30s.
        assert!(
            m.contains("`h100`") && m.contains("8,727") && m.contains("27% short"),
            "{m}"
        );
        assert!(m.contains("2m 30s past the deadline"), "{m}");
    }

    #[test]
    fn single_option_keeps_the_old_errors() {
        let mut one = vec![option("h100", 2, 8, 4.0)];
        one[0].input.max_gpus = Some(1);
        let c = choose(&one, &Goal::default()).unwrap();
        let Err(PlanError::Unreachable {
            max_gpus,
            needed_gpus,
            reachable_rpm,
        }) = c.outcome
        else {
            panic!("{:?}", c.outcome)
        };
        assert_eq!((max_gpus, needed_gpus), (1, 2));
        // The plateau's mean over the headroom (its CI low, 9,532, is the narrower margin).
        assert!(close(reachable_rpm, 9_600.0 / 1.1), "{reachable_rpm}");
        // Invalid input of a single option is not prefixed with its name.
        one[0].input.headroom = -1.0;
        assert!(matches!(choose(&one, &Goal::default()), Err(PlanError::Invalid(m)) if m.starts_with("--headroom")));
        let mut two = pair();
        two[1].input.headroom = -1.0;
        assert!(matches!(choose(&two, &Goal::default()), Err(PlanError::Invalid(m)) if m.starts_with("option `a100`")));
    }

    #[test]
    fn options_failing_the_slo_lose_and_say_why() {
        // p95 <= 60 ms: h100's levels are 51, 51, 102 ms; make a100 slow (all above 60 ms).
        let mut cands = pair();
        for l in &mut cands[1].input.levels {
            l.latency_p95_ms = 80.0;
        }
        for c in &mut cands {
            c.input.slo.max_latency_p95_ms = Some(60.0);
        }
        let c = choose(&cands, &goal()).unwrap();
        assert_eq!(chosen_name(&c), "h100");
        let a = &c.rows()[1];
        assert!(!a.meets_slo && a.gpus.is_none());
        assert!(a.lost_because.as_deref().unwrap().starts_with("no level meets the SLO"));
        // Both failing: the SLO error, naming each option.
        for l in &mut cands[0].input.levels {
            l.latency_p95_ms = 80.0;
        }
        let c = choose(&cands, &goal()).unwrap();
        let Err(PlanError::NoLevelMeetsSlo(m)) = &c.outcome else {
            panic!("{:?}", c.outcome)
        };
        assert!(m.contains("`h100`") && m.contains("`a100`"), "{m}");
    }

    #[test]
    fn ties_break_by_speed_then_gpus_then_order() {
        // Same shape and price: a full tie; the option given first wins.
        let twins = vec![option("first", 2, 8, 4.0), option("second", 2, 8, 4.0)];
        let c = choose(&twins, &goal()).unwrap();
        assert_eq!(chosen_name(&c), "first");
        assert!(c.rows()[1].lost_because.as_deref().unwrap().contains("given first"));
        // Equal cost, different speed: with cost the objective, the faster wins. `fast`:
        // 2 GPUs, 375 s, $0.8333. `slow` measures 20% less (15,360 RPM, low 15,206: 13,200 /
        // 7,603 -> 2 GPUs as well) and is priced to cost the same.
        let mut slow = option("slow", 2, 8, 4.0);
        for l in &mut slow.input.levels {
            l.rpm *= 0.8;
            l.rpm_ci_low *= 0.8;
        }
        // 15,360 RPM: 468.75 s on 2 GPUs; price so 2 x 468.75 / 3600 x p = 0.8333 -> p = 3.2.
        slow.input.gpu_hour_cost = Some(3.2);
        let c = choose(&[slow, option("fast", 2, 8, 4.0)], &goal()).unwrap();
        assert!(close(c.options[0].cost(), c.options[1].cost()));
        assert_eq!(chosen_name(&c), "fast");
        assert!(c.rows()[0]
            .lost_because
            .as_deref()
            .unwrap()
            .starts_with("as cheap as `fast` but slower"));
    }

    #[test]
    fn the_table_marks_the_choice_and_lists_the_losers() {
        let text = options_table(&choose(&pair(), &goal()).unwrap());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("option") && lines[0].contains("cost"), "{text}");
        assert!(lines[1].contains("h100") && !lines[1].starts_with('*'), "{text}");
        assert!(
            lines[2].starts_with('*') && lines[2].contains("a100") && lines[2].contains("$0.63"),
            "{text}"
        );
        assert!(lines[3].starts_with("h100: costs $0.83"), "{text}");
    }
}
