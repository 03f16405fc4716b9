//! The planning entry for sweeps as `plan` and `auto` have them: each sweep's summary turned
//! into a planning input (its measured levels, its price, the job's mix estimated from the
//! job's file and, when that mix differs, the levels rescaled with the capacity model), every
//! option sized and one chosen. Pure: what a person should read comes back as [`Note`]s.

use super::choose::{choose, deadline_target_rpm, Candidate, Choice, Goal};
use super::explain::{gpus_word, scaling_points};
use super::plan::{Plan, PlanPrefixCache, WorkloadMix};
use super::rescale::rescale_for_mix;
use super::scaling::Scaling;
use super::size::{plateau_per_gpu, token_figures, PlanError, PlanInput, SweepLevel};
use crate::model::{Estimate, LevelRow, MixSums, Objective, Slo, Summary, SweepMix};

/// The rate the job must sustain: given, or what a deadline asks for.
#[derive(Clone, Copy, Debug)]
pub enum RateGoal {
    Rpm(f64),
    /// Seconds from switching the GPUs on to the last answer.
    Deadline(f64),
}

/// One deployment option: a sweep's summary, where it came from, and its label when the
/// sweep recorded none (the folder's name).
pub struct SweepOption<'a> {
    pub summary: &'a Summary,
    /// The sweep folder as given, for plan.json and messages.
    pub sweep: String,
    pub folder_name: String,
}

/// The sizing knobs (`--headroom`, `--estimate`, `--max-gpus`, `--gpu-hour-cost`,
/// `--startup-s`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sizing {
    pub headroom: f64,
    pub estimate: Estimate,
    pub max_gpus: Option<u32>,
    /// Overrides each sweep's recorded price.
    pub gpu_hour_cost: Option<f64>,
    pub startup_s: f64,
    /// A hosted API's prices per million tokens, for a plan at its rate limit.
    pub token_prices: super::limit::TokenPrices,
}

/// What every option is planned for: the job and the user's limits.
pub struct JobSpec<'a> {
    /// Requests in the job (`--requests`, or counted from `--input`).
    pub requests: Option<u64>,
    /// The job file's sizes (`--input`), to size for its mix.
    pub mix: Option<&'a MixSums>,
    pub slo: Slo,
    pub sizing: Sizing,
}

/// The whole question: options, rate, job, what to minimise and the budget.
pub struct Question<'a> {
    pub options: &'a [SweepOption<'a>],
    pub rate: RateGoal,
    pub job: JobSpec<'a>,
    pub objective: Objective,
    pub budget_usd: Option<f64>,
}

/// A line for the person planning: how the mix was judged, a price override, the server's
/// warnings about the chosen level.
#[derive(Clone, Debug, PartialEq)]
pub enum Note {
    Info(String),
    Warn(String),
}

/// The sized options and the notes that explain them.
pub struct Answer {
    pub choice: Choice,
    pub notes: Vec<Note>,
}

/// Sizes every option for the goal and chooses one (see [`choose`]). Bad input is an error;
/// an unmet goal is in the choice's `outcome`, for [`chosen`] to turn into one.
pub fn for_sweeps(q: &Question) -> Result<Answer, PlanError> {
    let (t, requests) = (q.job.sizing, q.job.requests);
    let (target_rpm, deadline_s) = match q.rate {
        RateGoal::Rpm(r) => (r, None),
        RateGoal::Deadline(d) => (deadline_target_rpm(requests, d, t.startup_s)?, Some(d)),
    };
    let groups = scaling_groups(q.options);
    let primaries: Vec<&SweepOption> = groups.iter().map(|g| &q.options[g[0]]).collect();
    let several = primaries.len() > 1;
    let names = option_names(&primaries);
    let mut notes = Vec::new();
    let mut prepared = Vec::with_capacity(primaries.len());
    let mut cands = Vec::with_capacity(primaries.len());
    for ((o, name), group) in primaries.iter().zip(&names).zip(&groups) {
        let price = match (t.gpu_hour_cost, o.summary.gpu_hour_cost) {
            (Some(flag), Some(own)) if (flag - own).abs() > 1e-12 => {
                notes.push(Note::Warn(format!(
                    "`{name}` recorded ${own}/GPU-hour; --gpu-hour-cost {flag} overrides it"
                )));
                Some(flag)
            }
            (flag, own) => flag.or(own),
        };
        let mut say = |n: Note| {
            notes.push(match n {
                Note::Info(m) if several => Note::Info(format!("{name}: {m}")),
                Note::Warn(m) if several => Note::Warn(format!("{name}: {m}")),
                n => n,
            })
        };
        let mut p = prepare(o.summary, target_rpm, &q.job, price, &mut say);
        if let Some(why) = p.refusal.take() {
            return Err(PlanError::CannotPrice(if several {
                format!("{name}: {why}")
            } else {
                why
            }));
        }
        if group.len() > 1 {
            p.input.scaling = measured_scaling(&p.input, group, q, target_rpm, price, &mut say);
        }
        cands.push(Candidate {
            name: name.clone(),
            sweep: o.sweep.clone(),
            input: p.input.clone(),
        });
        prepared.push(p);
    }
    let goal = Goal {
        objective: q.objective,
        budget_usd: q.budget_usd,
        deadline_s,
    };
    let mut choice = choose(&cands, &goal)?;
    for ((e, p), o) in choice.options.iter_mut().zip(&prepared).zip(&primaries) {
        if let Some(plan) = e.plan.as_mut() {
            finish(plan, p, o.summary, q.job.mix, requests);
            // An endpoint held by its rate limit is planned at that limit, not in GPUs.
            super::limit::at_rate_limit(plan, o.summary, t.token_prices);
        }
    }
    if let Ok(i) = choice.outcome {
        if let (Some(plan), Some(o)) = (choice.options[i].plan.as_ref(), primaries.get(i)) {
            notes.extend(server_warnings(o.summary, plan).into_iter().map(Note::Warn));
        }
    }
    Ok(Answer { choice, notes })
}

/// The chosen option's plan, or the unmet goal.
pub fn chosen(choice: &Choice) -> Result<Plan, PlanError> {
    match (&choice.outcome, choice.chosen_plan()) {
        (Ok(_), Some(plan)) => Ok(plan),
        (Err(e), _) => Err(e.clone()),
        (Ok(_), None) => Err(PlanError::Unmet("no option could be planned".into())),
    }
}

/// The server's warnings about the level the plan runs at (preemptions, a KV cache near full).
pub fn server_warnings(summary: &Summary, plan: &Plan) -> Vec<String> {
    summary
        .levels
        .iter()
        .find(|l| l.concurrency == plan.chosen_concurrency)
        .map(crate::stats::server::operating_warnings)
        .unwrap_or_default()
}

/// The options as indices into `options`: sweeps that recorded one `--name` at two or more GPU
/// counts are one option measured at several sizes (its smallest-count sweep first, the one
/// its plan is sized from); every other sweep is an option of its own, in the order given.
fn scaling_groups(options: &[SweepOption]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut taken = vec![false; options.len()];
    for i in 0..options.len() {
        if taken[i] {
            continue;
        }
        let mut group = vec![i];
        if let Some(name) = &options[i].summary.name {
            let same: Vec<usize> = (i + 1..options.len())
                .filter(|&j| !taken[j] && options[j].summary.name.as_ref() == Some(name))
                .collect();
            if same.iter().any(|&j| options[j].summary.gpus != options[i].summary.gpus) {
                group.extend(same);
                // Smallest GPU count first; the order given among equals.
                group.sort_by_key(|&j| (options[j].summary.gpus, j));
            }
        }
        for &j in &group {
            taken[j] = true;
        }
        groups.push(group);
    }
    groups
}

/// The scaling a group of one `--name` measured: each sweep's plateau per GPU (sized for the
/// same job as the plan), relative to the smallest count's. `primary` is the group's first
/// sweep, already prepared.
fn measured_scaling(
    primary: &PlanInput,
    group: &[usize],
    q: &Question,
    target_rpm: f64,
    price: Option<f64>,
    say: &mut dyn FnMut(Note),
) -> Option<Scaling> {
    let mut rates = Vec::with_capacity(group.len());
    for (k, &j) in group.iter().enumerate() {
        let o = &q.options[j];
        // Each other member's own mix notes repeat the primary's: not said again.
        let other;
        let input = if k == 0 {
            primary
        } else {
            other = prepare(o.summary, target_rpm, &q.job, price, &mut |_| {}).input;
            &other
        };
        match plateau_per_gpu(input) {
            Some(r) => rates.push((o.summary.gpus, r)),
            None => say(Note::Warn(format!(
                "{}: no level meets the SLO, so it measures no scaling",
                o.sweep
            ))),
        }
    }
    let scaling = Scaling::from_rates(&rates)?;
    say(Note::Info(format!(
        "scaling measured by sweeps of one --name (per-GPU rate relative to {}): {}",
        gpus_word(scaling.base_gpus()),
        scaling_points(&scaling.measured)
    )));
    Some(scaling)
}

/// Each option's label: `sweep --name`, else its folder's name; two of one name (`a/sweep`,
/// `b/sweep`) are told apart by their paths.
fn option_names(options: &[&SweepOption]) -> Vec<String> {
    let names: Vec<String> = options
        .iter()
        .map(|o| o.summary.name.clone().unwrap_or_else(|| o.folder_name.clone()))
        .collect();
    // Judged on the names as they were, so the first of a pair is not renamed alone.
    let shared = |n: &String| names.iter().filter(|m| *m == n).count() > 1;
    names
        .iter()
        .zip(options)
        .map(|(n, o)| if shared(n) { o.sweep.clone() } else { n.clone() })
        .collect()
}

/// The job's mean request in tokens, estimated from its file with the sweep's ratios: prompt
/// bytes x the sweep's tokens per byte, asked output tokens x the sweep's answered share.
fn job_mix(job: &MixSums, sweep: &SweepMix) -> Option<(f64, f64, String)> {
    let prompt = job.prompt_bytes_mean()? * sweep.tokens_per_prompt_byte?;
    let (output, how) = match (job.requested_tokens_mean(), sweep.output_per_requested_token) {
        (Some(asked), Some(share)) => (asked * share, "estimated from the file"),
        // The job does not say how long its answers are: as long as the sweep's.
        _ => (
            sweep.output_tokens_mean,
            "prompts from the file, output as in the sweep",
        ),
    };
    Some((prompt, output, how.to_string()))
}

/// What one option's plan is sized for: its planning input and the mix (and whether the
/// capacity model rescaled the levels for the job's mix).
struct Prepared {
    input: PlanInput,
    mix: Option<(f64, f64, String)>,
    model_used: bool,
    /// The sweep cannot price this job (its prompts were mostly cached): the plan says so.
    refusal: Option<String>,
    /// What the job's lines share through a prefix cache, where its file was replayed.
    shares: Option<(f64, Option<f64>, f64)>,
}

/// The planning input for one sweep, rescaled to the job's mix when it differs.
fn prepare(
    summary: &Summary,
    target_rpm: f64,
    spec: &JobSpec,
    gpu_hour_cost: Option<f64>,
    say: &mut dyn FnMut(Note),
) -> Prepared {
    let t = spec.sizing;
    // A level without data (too few requests finished) says nothing about capacity.
    let measured: Vec<&LevelRow> = summary.levels.iter().filter(|l| l.rpm.is_finite()).collect();
    let mut input = PlanInput {
        levels: measured.iter().map(|l| sweep_level(l)).collect(),
        sweep_gpus: summary.gpus,
        target_rpm,
        headroom: t.headroom,
        estimate: t.estimate,
        slo: spec.slo,
        max_gpus: t.max_gpus,
        requests: spec.requests,
        gpu_hour_cost,
        startup_s: t.startup_s,
        scaling: None,
    };
    // The mix the plan is for: the job's (estimated from its file) or the sweep's own.
    let sweep_mix = summary.workload;
    let sweep_tokens = sweep_mix.map(|m| (m.prompt_tokens_mean.unwrap_or(0.0), m.output_tokens_mean));
    let mut mix = sweep_tokens.map(|(p, o)| (p, o, "sweep".to_string()));
    let mut model_used = false;
    let mut refusal = None;
    let mut shares = None;
    if let (Some(job), Some(sm), Some((sp, so))) = (spec.mix, sweep_mix, sweep_tokens) {
        match job_mix(job, &sm) {
            Some((jp, jo, how)) => {
                say(Note::Info(format!(
                    "mix: the sweep's requests averaged {sp:.0} prompt + {so:.0} output tokens; the job's {jp:.0} + {jo:.0} ({how})"
                )));
                // The prompts in the terms the levels' models price them (see `cache_adjusted`).
                // (Levels without a model are left out of the rescale below.)
                let mut models = measured.iter().filter_map(|l| l.capacity_model).peekable();
                let uncached = models.peek().is_some() && models.all(|m| m.prompt_uncached);
                let fits: Vec<_> = measured.iter().map(|l| l.capacity_model).collect();
                let terms = match cache_adjusted(summary, job, (sp, jp), uncached, &fits, say) {
                    Ok(terms) => terms,
                    Err(why) => {
                        refusal = Some(why);
                        PromptTerms::whole(jp, sp)
                    }
                };
                shares = terms.shares;
                let differs = |a: f64, b: f64| (a - b).abs() > 0.1 * b.max(1.0);
                let priced_cached = fits.iter().flatten().any(|f| f.b_ms_per_cached_token.is_some());
                if differs(terms.job.0, terms.sweep.0)
                    || (priced_cached && differs(terms.job.1, terms.sweep.1))
                    || differs(jo, so)
                {
                    // Each level's wait in the server's queue (Little's law on its waiting
                    // requests), where its metrics said.
                    let waits: Vec<f64> = measured
                        .iter()
                        .map(|l| l.server_waiting_mean.map_or(0.0, |w| w * 60_000.0 / l.rpm))
                        .collect();
                    let tokens = ((terms.sweep.0, terms.sweep.1, so), (terms.job.0, terms.job.1, jo));
                    match rescale_for_mix(&mut input.levels, &fits, &waits, tokens, terms.extrapolates) {
                        Ok(borrowed) => {
                            model_used = true;
                            let borrowed: Vec<String> = borrowed.iter().map(u32::to_string).collect();
                            if !borrowed.is_empty() {
                                say(Note::Info(format!(
                                    "level {} has no capacity model that explains its latency (a queued level's is mostly others' tokens; a level cut short has none; a few noisy requests can price a token below nothing): priced with the best-fitting level's token costs",
                                    borrowed.join(", ")
                                )));
                            }
                            say(Note::Info("the job's mix differs from the sweep's by more than 10%: sized with the capacity model".into()));
                        }
                        Err(why) => say(Note::Warn(format!(
                            "the job's mix differs from the sweep's by more than 10%, but {why}: sized on the sweep as measured (sweep with a sample of this job for a true figure)"
                        ))),
                    }
                }
                mix = Some((jp, jo, how));
            }
            None => say(Note::Warn(
                "the sweep recorded no token counts to relate to the job's file: sized on the sweep as measured".into(),
            )),
        }
    }
    Prepared {
        input,
        mix,
        model_used,
        refusal,
        shares,
    }
}

/// The share of the sweep's prompt tokens the server's prefix cache served: the answers'
/// cached tokens over their prompt tokens, else the server's own hit rate.
pub fn sweep_prefix_share(summary: &Summary) -> Option<f64> {
    // Lines sent again (the sample used up) are cached whole: the levels without them say what
    // the lines share, where there are such levels.
    let fresh = summary
        .levels
        .iter()
        .any(|l| l.rpm.is_finite() && l.repeated_requests == 0);
    let levels = summary
        .levels
        .iter()
        .filter(|l| l.rpm.is_finite() && (!fresh || l.repeated_requests == 0));
    let (cached, prompt) = levels
        .clone()
        .filter_map(|l| Some((l.cached_prompt_tokens_per_s?, l.input_tokens_per_s)))
        .filter(|(_, p)| p.is_finite() && *p > 0.0)
        .fold((0.0, 0.0), |(c, p), (lc, lp)| (c + lc, p + lp));
    if prompt > 0.0 {
        return Some((cached / prompt).clamp(0.0, 1.0));
    }
    let rates: Vec<f64> = levels.filter_map(|l| l.server_prefix_cache_hit_rate).collect();
    (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64)
}

/// Above this share of cached prompt, the sweep's levels cannot price uncached tokens.
const PRICEABLE_SHARE: f64 = 0.8;

/// A request's prompt in the terms the levels' capacity models price it: (tokens prefilled,
/// tokens a prefix cache served), for the job and for the sweep.
struct PromptTerms {
    job: (f64, f64),
    sweep: (f64, f64),
    /// The job's prefilled tokens may pass the range the levels saw.
    extrapolates: bool,
    /// (the job's share, the sweep's, the one sized for), where the job's was estimated.
    shares: Option<(f64, Option<f64>, f64)>,
}

impl PromptTerms {
    /// Whole prompts, no cache in the reckoning.
    fn whole(job_prompt: f64, sweep_prompt: f64) -> PromptTerms {
        PromptTerms {
            job: (job_prompt, 0.0),
            sweep: (sweep_prompt, 0.0),
            extrapolates: false,
            shares: None,
        }
    }
}

/// The job's and the sweep's prompts as the levels' capacity models price them. A prefix cache
/// changes what a prompt costs: the job's own sharing (its file replayed through a cache)
/// counts where it differs from what the sweep's cache served by more than 10 points, and the
/// sweep's share otherwise.
/// - Models fitted on uncached tokens (the answers said what was cached): each side's tokens
///   prefilled and cached, a cached token at the level's b' (free where it could not tell).
/// - Models fitted on whole prompts: a level prices a prompt token at what the sweep's varying,
///   uncached part cost, the sweep's cached tokens folded into its intercept; so a job request
///   costs what a sweep request of (the sweep's cached + the job's uncached tokens) does.
///
/// `Err`: the sweep was so cached it cannot price the job.
fn cache_adjusted(
    summary: &Summary,
    job: &MixSums,
    (sweep_prompt, job_prompt): (f64, f64),
    uncached: bool,
    fits: &[Option<crate::model::CapacityModel>],
    say: &mut dyn FnMut(Note),
) -> Result<PromptTerms, String> {
    let sweep_share = sweep_prefix_share(summary);
    let ss = sweep_share.unwrap_or(0.0);
    let mut sj = ss;
    if let (Some(job_share), Some(sweep_share)) = (job.prefix_share(), sweep_share) {
        say(Note::Info(format!(
            "prefix cache: the job's lines, read in file order through a cache of --prefix-cache-tokens, share {:.0}% of their prompt; the sweep's answers were {:.0}% cached",
            job_share * 100.0,
            sweep_share * 100.0
        )));
        if (job_share - sweep_share).abs() > 0.10 {
            if sweep_share > PRICEABLE_SHARE {
                return Err(format!(
                    "the sweep's prompts were {:.0}% served by the server's prefix cache, so it cannot price the uncached prompt tokens this job needs (it shares {:.0}%)",
                    sweep_share * 100.0,
                    job_share * 100.0
                ));
            }
            sj = job_share;
        }
    }
    let adjusted = sj != ss;
    let shares = job.prefix_share().map(|j| (j, sweep_share, sj));
    let terms = if uncached {
        PromptTerms {
            job: ((1.0 - sj) * job_prompt, sj * job_prompt),
            sweep: ((1.0 - ss) * sweep_prompt, ss * sweep_prompt),
            extrapolates: adjusted,
            shares,
        }
    } else {
        PromptTerms {
            extrapolates: adjusted,
            shares,
            ..PromptTerms::whole(ss * sweep_prompt + (1.0 - sj) * job_prompt, sweep_prompt)
        }
    };
    if adjusted {
        let mut priced: Vec<f64> = fits.iter().flatten().filter_map(|f| f.b_ms_per_cached_token).collect();
        priced.sort_by(f64::total_cmp);
        let cached_cost = match priced.get(priced.len() / 2) {
            Some(k) if uncached => format!("a cached token at {k:.4} ms, the levels' median fit"),
            _ => "cached tokens taken as free: the levels could not tell their cost from nothing".into(),
        };
        say(Note::Info(format!(
            "the job's sharing differs from the sweep's by more than 10 points: sized for {:.0} uncached prompt tokens a request where the sweep's prefilled {:.0} ({cached_cost})",
            (1.0 - sj) * job_prompt,
            (1.0 - ss) * sweep_prompt
        )));
    }
    Ok(terms)
}

fn sweep_level(l: &LevelRow) -> SweepLevel {
    SweepLevel {
        concurrency: l.concurrency,
        rpm: l.rpm,
        rpm_ci_low: l.rpm_ci_low,
        rpm_ci_high: l.rpm_ci_high,
        latency_p95_ms: l.latency_p95_ms,
        ttft_p95_ms: l.ttft_p95_ms,
        error_rate: l.error_rate,
    }
}

/// Fills in what sizing leaves open: the mix, token figures, the model that sized it.
fn finish(plan: &mut Plan, p: &Prepared, summary: &Summary, job: Option<&MixSums>, requests: Option<u64>) {
    if let Some((prompt, output, source)) = &p.mix {
        plan.workload = Some(WorkloadMix {
            requests: job.map(|j| j.requests).or(requests),
            prompt_tokens_mean: *prompt,
            output_tokens_mean: *output,
            source: source.clone(),
        });
        let (tps, usd) = token_figures(plan.rpm_per_gpu, *prompt, *output, p.input.gpu_hour_cost);
        plan.tokens_per_s_per_gpu = Some(tps);
        plan.usd_per_million_tokens = usd;
    }
    plan.prefix_cache = p.shares.map(|(job_share, sweep_share, sized_share)| PlanPrefixCache {
        cache_tokens: None,
        job_share,
        sweep_share,
        sized_share,
        round_robin_share: None,
        round_robin_gpus: None,
        round_robin_rpm_per_gpu: None,
    });
    if p.model_used {
        plan.capacity_model = summary
            .levels
            .iter()
            .filter(|l| l.rpm.is_finite())
            .find(|l| l.concurrency == plan.chosen_concurrency)
            .and_then(|l| l.capacity_model);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures;

    fn ask<'a>(options: &'a [SweepOption<'a>], rpm: f64) -> Question<'a> {
        Question {
            options,
            rate: RateGoal::Rpm(rpm),
            job: JobSpec {
                requests: Some(60_000),
                mix: None,
                slo: Slo::default(),
                sizing: Sizing {
                    headroom: 0.1,
                    ..Sizing::default()
                },
            },
            objective: Objective::Cost,
            budget_usd: None,
        }
    }

    #[test]
    fn one_sweep_is_sized_and_named_by_its_folder() {
        let s = fixtures::summary();
        let options = [SweepOption {
            summary: &s,
            sweep: "reports/a".into(),
            folder_name: "a".into(),
        }];
        let answer = for_sweeps(&ask(&options, 30_000.0)).unwrap();
        let plan = chosen(&answer.choice).unwrap();
        // 9,600 RPM per GPU at the knee (16); CI low 0.99 x: 30,000 x 1.1 / 9,504 -> 4 GPUs.
        assert_eq!((plan.gpus, plan.chosen_concurrency), (4, 16));
        assert_eq!(plan.name.as_deref(), Some("a"));
        assert_eq!(plan.schema_version, crate::model::schema::PLAN);
    }

    #[test]
    fn a_flag_price_overrides_the_recorded_one_and_says_so() {
        let mut s = fixtures::summary();
        s.gpu_hour_cost = Some(4.0);
        let options = [SweepOption {
            summary: &s,
            sweep: "reports/a".into(),
            folder_name: "a".into(),
        }];
        let mut q = ask(&options, 30_000.0);
        q.job.sizing.gpu_hour_cost = Some(2.0);
        let answer = for_sweeps(&q).unwrap();
        assert!(answer
            .notes
            .iter()
            .any(|n| matches!(n, Note::Warn(m) if m.contains("overrides"))));
        assert_eq!(chosen(&answer.choice).unwrap().gpu_hour_cost, Some(2.0));
    }

    #[test]
    fn two_folders_of_one_name_are_told_apart_by_path() {
        let s = fixtures::summary();
        let options = [
            SweepOption {
                summary: &s,
                sweep: "x/sweep".into(),
                folder_name: "sweep".into(),
            },
            SweepOption {
                summary: &s,
                sweep: "y/sweep".into(),
                folder_name: "sweep".into(),
            },
        ];
        assert_eq!(
            option_names(&options.iter().collect::<Vec<_>>()),
            ["x/sweep", "y/sweep"]
        );
    }

    /// The fixture's sweep on 2 GPUs and one of the same resource on 8 GPUs serving `share` of
    /// its per-GPU rate, both recorded under `name_a` and `name_b`.
    fn two_sizes(share: f64, name_a: &str, name_b: &str) -> (Summary, Summary) {
        let mut a = fixtures::summary();
        a.name = Some(name_a.into());
        let mut b = fixtures::summary();
        b.name = Some(name_b.into());
        b.gpus = 8;
        for l in &mut b.levels {
            l.concurrency *= 4;
            for v in [&mut l.rpm, &mut l.rpm_ci_low, &mut l.rpm_ci_high] {
                *v *= 4.0 * share;
            }
        }
        (a, b)
    }

    fn options<'a>(a: &'a Summary, b: &'a Summary) -> [SweepOption<'a>; 2] {
        [
            SweepOption {
                summary: a,
                sweep: "reports/two".into(),
                folder_name: "two".into(),
            },
            SweepOption {
                summary: b,
                sweep: "reports/eight".into(),
                folder_name: "eight".into(),
            },
        ]
    }

    #[test]
    fn sweeps_of_one_name_at_two_sizes_measure_the_scaling_the_plan_uses() {
        let (a, b) = two_sizes(0.8, "fleet", "fleet");
        let options = options(&a, &b);
        let answer = for_sweeps(&ask(&options, 60_000.0)).unwrap();
        // One option, measured at two sizes, sized from its smallest.
        assert_eq!(answer.choice.options.len(), 1);
        let plan = chosen(&answer.choice).unwrap();
        let s = plan.scaling.as_ref().expect("measured scaling");
        assert_eq!(s.measured.iter().map(|p| p.gpus).collect::<Vec<_>>(), vec![2, 8]);
        assert!((s.measured[1].efficiency - 0.8).abs() < 0.01, "{s:?}");
        // Linear: 60,000 x 1.1 / 9,6xx = 6.9 -> 7 GPUs. Measured: 8 GPUs carry 0.8 x 8 x 9,6xx =
        // 61k, short of 66k; 9 GPUs extrapolate to ~0.78 and carry it.
        assert_eq!(plan.gpus, 9, "{plan:?}");
        assert!(s.efficiency < 0.8 && s.efficiency > 0.7, "{s:?}");
        assert!((plan.rpm_per_gpu - s.swept_rpm_per_gpu * s.efficiency).abs() < 1e-6);
        assert!((plan.expected_rpm - 9.0 * plan.rpm_per_gpu).abs() < 1e-6);
        assert!(answer
            .notes
            .iter()
            .any(|n| matches!(n, Note::Info(m) if m.contains("scaling measured") && m.contains("8 GPUs x0.80"))));
        let text = crate::planner::explain(&plan);
        assert!(text.contains("extrapolated past the largest count measured"), "{text}");
    }

    #[test]
    fn sweeps_of_other_names_stay_options_and_assume_linear() {
        let (a, b) = two_sizes(0.8, "small", "big");
        let options = options(&a, &b);
        let answer = for_sweeps(&ask(&options, 60_000.0)).unwrap();
        assert_eq!(answer.choice.options.len(), 2);
        let plan = chosen(&answer.choice).unwrap();
        assert!(plan.scaling.is_none());
        assert!(crate::planner::explain(&plan).contains("assumes linear scaling"));
    }

    /// A sweep of 1,000-token prompts, `share` of them cached, whose levels' models price an
    /// uncached token at 0.02 ms, a cached one at `cached_cost` and an output token at 0.2 ms,
    /// each level's intercept making it predict the latency it measured.
    fn cached_sweep(share: f64, cached_cost: Option<f64>) -> Summary {
        let mut s = fixtures::summary();
        s.workload = Some(crate::model::SweepMix {
            requests: 1000,
            prompt_tokens_mean: Some(1000.0),
            output_tokens_mean: 50.0,
            prompt_bytes_mean: 4000.0,
            requested_output_tokens_mean: Some(50.0),
            tokens_per_prompt_byte: Some(0.25),
            output_per_requested_token: Some(1.0),
        });
        for l in &mut s.levels {
            l.input_tokens_per_s = l.rpm / 60.0 * 1000.0;
            l.cached_prompt_tokens_per_s = Some(share * l.input_tokens_per_s);
            let latency = f64::from(l.concurrency) * 60_000.0 / l.rpm;
            let priced = 0.02 * (1.0 - share) * 1000.0 + cached_cost.unwrap_or(0.0) * share * 1000.0 + 0.2 * 50.0;
            l.capacity_model = Some(crate::model::CapacityModel {
                a_ms: latency - priced,
                b_ms_per_prompt_token: 0.02,
                b_ms_per_cached_token: cached_cost,
                c_ms_per_output_token: 0.2,
                r2: 0.9,
                n: 500,
                prompt_tokens_min: 20.0,
                prompt_tokens_max: 1100.0,
                output_tokens_min: 40.0,
                output_tokens_max: 60.0,
                prompt_uncached: true,
            });
        }
        s
    }

    /// The job: the sweep's prompts and outputs, but 90% of its prompt cached in file order.
    fn shared_job() -> MixSums {
        MixSums {
            requests: 1000,
            prompt_bytes: 4_000_000,
            with_requested: 1000,
            requested_tokens: 50_000,
            cached_prompt_bytes: Some(3_600_000),
        }
    }

    fn spec_for(job: &MixSums) -> JobSpec<'_> {
        JobSpec {
            requests: Some(job.requests),
            mix: Some(job),
            slo: Slo::default(),
            sizing: Sizing::default(),
        }
    }

    #[test]
    fn a_job_sharing_more_than_the_sweep_pays_the_levels_price_of_a_cached_token() {
        let job = shared_job();
        let spec = spec_for(&job);
        for cached_cost in [None, Some(0.005)] {
            let s = cached_sweep(0.3, cached_cost);
            let mut notes = Vec::new();
            let p = prepare(&s, 10_000.0, &spec, None, &mut |n| notes.push(n));
            assert!(p.model_used && p.refusal.is_none(), "{notes:?}");
            for (l, m) in p.input.levels.iter().zip(&s.levels) {
                let f = m.capacity_model.unwrap();
                // 100 prefilled, 900 cached, 50 output tokens a request.
                let job_latency = f.a_ms + 0.02 * 100.0 + cached_cost.unwrap_or(0.0) * 900.0 + 10.0;
                let want = f64::from(l.concurrency) * 60_000.0 / job_latency;
                assert!(
                    (l.rpm - want).abs() < 1e-6 * want,
                    "{cached_cost:?}: {} vs {want}",
                    l.rpm
                );
            }
            let said = |w: &str| notes.iter().any(|n| matches!(n, Note::Info(m) if m.contains(w)));
            match cached_cost {
                Some(_) => assert!(said("a cached token at 0.0050 ms")),
                None => assert!(said("cached tokens taken as free")),
            }
        }
    }

    #[test]
    fn a_level_without_a_model_is_priced_with_the_best_fitting_levels_costs() {
        let job = shared_job();
        let spec = spec_for(&job);
        let whole = cached_sweep(0.3, None);
        let mut s = whole.clone();
        s.levels[2].capacity_model = None;
        let mut notes = Vec::new();
        let p = prepare(&s, 10_000.0, &spec, None, &mut |n| notes.push(n));
        assert!(p.model_used, "{notes:?}");
        // Every level's model has the same token costs: the borrowed one gives the same rate.
        let q = prepare(&whole, 10_000.0, &spec, None, &mut |_| {});
        for (a, b) in p.input.levels.iter().zip(&q.input.levels) {
            assert!(
                (a.rpm - b.rpm).abs() < 1e-6 * b.rpm,
                "{} {} {}",
                a.concurrency,
                a.rpm,
                b.rpm
            );
        }
        assert!(notes
            .iter()
            .any(|n| matches!(n, Note::Info(m) if m.contains("level 16 has no capacity model"))));
    }
}
