//! A sweep's levels rescaled to a job of another mix with the levels' capacity models: the
//! one place a model's prediction changes a measured rate.

use super::size::SweepLevel;
use crate::model::CapacityModel;

/// R² below this: the model explains too little of the latency to size a job with.
pub const MIN_R2: f64 = 0.5;

/// What a level's requests are, in the terms the capacity models price: (prompt tokens
/// prefilled, prompt tokens a prefix cache served, output tokens).
pub type Tokens = (f64, f64, f64);

/// Rescales the sweep's levels to a job of another mix. A level at concurrency C serves
/// C x 60000 / L requests a minute, L its mean latency; part of L is the wait in the server's
/// queue (`waits`, ms: Little's law on the server's waiting requests, 0 where it did not say),
/// which at a full batch scales with the service time, as the rate does. So each level's rate
/// (and CI) is divided, and its p95 latency multiplied, by S_job / S_sweep, S_sweep = L - wait.
/// S_job is the level's own model's latency for the job less the wait; where the level has no
/// model, or one that explains too little of its latency (a queued level's latencies are
/// mostly others' tokens), it is S_sweep plus what the job's tokens cost more than the
/// sweep's at the best-fitting level's token prices. `Ok`: the concurrencies of the levels
/// priced so; `Err` says why the models cannot be trusted for this job, and the levels are
/// left as measured.
pub fn rescale_for_mix(
    levels: &mut [SweepLevel],
    fits: &[Option<CapacityModel>],
    waits: &[f64],
    (sweep, job): (Tokens, Tokens),
    prompt_extrapolates: bool,
) -> Result<Vec<u32>, String> {
    // A token that costs less than nothing is a few noisy requests' fit, not the server: such
    // a level would rate a dearer job faster.
    let usable =
        |f: &&CapacityModel| f.r2 >= MIN_R2 && f.b_ms_per_prompt_token >= 0.0 && f.c_ms_per_output_token >= 0.0;
    let best = fits
        .iter()
        .flatten()
        .filter(usable)
        .max_by(|a, b| a.r2.total_cmp(&b.r2));
    let Some(best) = best else {
        let why = match fits.iter().flatten().map(|f| f.r2).max_by(f64::total_cmp) {
            Some(r2) => format!("no level's model explains enough of its latency (best R² {r2:.2} < {MIN_R2})"),
            None => "no level has a capacity model (no token counts)".to_string(),
        };
        return Err(why);
    };
    let mut ratios = Vec::with_capacity(levels.len());
    let mut borrowed = Vec::new();
    for ((l, fit), wait) in levels.iter().zip(fits).zip(waits.iter().chain(std::iter::repeat(&0.0))) {
        let own = fit.as_ref().filter(usable);
        if own.is_none() {
            borrowed.push(l.concurrency);
        }
        let f = own.unwrap_or(best);
        // Cache-adjusted prompts may pass the range seen: prefill is taken as linear in them.
        let checked_prompt = if prompt_extrapolates {
            f.prompt_tokens_min
        } else {
            job.0
        };
        if !f.covers(checked_prompt, job.2) {
            return Err(format!(
                "the job's mix ({:.0} prompt, {:.0} output tokens) lies outside what level {} saw ({:.0}-{:.0} prompt, {:.0}-{:.0} output)",
                job.0, job.2, l.concurrency, f.prompt_tokens_min, f.prompt_tokens_max, f.output_tokens_min, f.output_tokens_max
            ));
        }
        if l.rpm <= 0.0 {
            return Err(format!("level {} measured no rate", l.concurrency));
        }
        let latency = f64::from(l.concurrency) * 60_000.0 / l.rpm;
        // A wait the level's own latency cannot hold is no wait (a stale or odd scrape).
        let wait = if wait.is_finite() && *wait > 0.0 && *wait < 0.9 * latency {
            *wait
        } else {
            0.0
        };
        let service = latency - wait;
        let predicted = |t: Tokens| f.latency_split_ms(t.0, t.1, t.2);
        // A level's own model predicts the job's latency whole (its intercept holds the wait);
        // a borrowed one only what the job's tokens cost more than the sweep's.
        let job_service = match own {
            Some(_) => predicted(job) - wait,
            None => service + predicted(job) - predicted(sweep),
        };
        if job_service <= 0.0 || service <= 0.0 {
            return Err(format!("level {}'s model predicts no positive latency", l.concurrency));
        }
        ratios.push(job_service / service);
    }
    for (l, ratio) in levels.iter_mut().zip(ratios) {
        l.rpm /= ratio;
        l.rpm_ci_low /= ratio;
        l.rpm_ci_high /= ratio;
        // TTFT depends on the prompt and the queue, not on the answer's length: left as is.
        l.latency_p95_ms *= ratio;
    }
    Ok(borrowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(concurrency: u32, rpm: f64) -> SweepLevel {
        SweepLevel {
            concurrency,
            rpm,
            rpm_ci_low: rpm * 0.95,
            rpm_ci_high: rpm * 1.05,
            latency_p95_ms: 100.0,
            ttft_p95_ms: None,
            error_rate: 0.0,
        }
    }

    fn model(a: f64, r2: f64) -> CapacityModel {
        CapacityModel {
            a_ms: a,
            b_ms_per_prompt_token: 0.2,
            b_ms_per_cached_token: None,
            c_ms_per_output_token: 5.0,
            r2,
            n: 100,
            prompt_tokens_min: 10.0,
            prompt_tokens_max: 600.0,
            output_tokens_min: 8.0,
            output_tokens_max: 8.0,
            prompt_uncached: true,
        }
    }

    #[test]
    fn a_queued_level_scales_by_its_service_time_with_the_best_levels_prices() {
        // A batch of 32 at 120 ms a request (400 prompt + 8 output tokens): 16,000 RPM at 32;
        // at 64 the same rate, half of each request's 240 ms spent waiting in the queue, its
        // own fit mostly noise. The job prefills 100 tokens: 60 ms a request, twice the rate.
        let mut levels = [level(32, 16_000.0), level(64, 16_000.0)];
        let fits = [Some(model(0.0, 0.99)), Some(model(120.0, 0.1))];
        let tokens = ((400.0, 0.0, 8.0), (100.0, 300.0, 8.0));
        let borrowed = rescale_for_mix(&mut levels, &fits, &[0.0, 120.0], tokens, true).unwrap();
        assert_eq!(borrowed, [64], "the queued level's own fit is noise");
        for l in &levels {
            assert!((l.rpm - 32_000.0).abs() < 1e-6, "{}: {}", l.concurrency, l.rpm);
        }
        // Without the server's queue, the wait is taken as service: a smaller gain there.
        let mut levels = [level(64, 16_000.0)];
        rescale_for_mix(&mut levels, &[Some(model(120.0, 0.99))], &[], tokens, true).unwrap();
        assert!(
            (levels[0].rpm - 16_000.0 * 240.0 / 180.0).abs() < 1e-6,
            "{}",
            levels[0].rpm
        );
        // A level whose fit prices a prompt token below nothing borrows the best level's costs.
        let mut odd = model(0.0, 0.999);
        odd.b_ms_per_prompt_token = -0.05;
        let mut levels = [level(32, 16_000.0), level(64, 16_000.0)];
        let odd_fits = [Some(model(0.0, 0.99)), Some(odd)];
        let borrowed = rescale_for_mix(&mut levels, &odd_fits, &[0.0, 120.0], tokens, true).unwrap();
        assert_eq!(borrowed, [64]);
        assert!((levels[1].rpm - 32_000.0).abs() < 1e-6, "{}", levels[1].rpm);
        // No level explains its latency: no rescale.
        let mut levels = [level(64, 16_000.0)];
        let err = rescale_for_mix(&mut levels, &fits[1..], &[120.0], tokens, true).unwrap_err();
        assert!(err.contains("best R² 0.10"), "{err}");
        assert_eq!(levels[0].rpm, 16_000.0);
    }
}
