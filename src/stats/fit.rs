//! The token-aware capacity model of one level: per-request latency = a + b x prompt_tokens +
//! c x output_tokens, fitted by least squares over the level's successful requests. With it, a
//! job whose mix differs from the sweep's can be sized by Little's law without a tokenizer.

use crate::model::CapacityModel;

/// Least squares over `(prompt_tokens, output_tokens, latency_ms)`. A token count that does
/// not vary carries no information about its own cost: it is left out (its coefficient 0 and
/// its cost folded into `a`). None with fewer than 3 points.
pub fn fit_latency(points: &[(f64, f64, f64)]) -> Option<CapacityModel> {
    if points.len() < 3
        || points
            .iter()
            .any(|(p, o, l)| !(p.is_finite() && o.is_finite() && l.is_finite()))
    {
        return None;
    }
    let n = points.len() as f64;
    let mean = |f: fn(&(f64, f64, f64)) -> f64| points.iter().map(f).sum::<f64>() / n;
    let (mp, mo, ml) = (mean(|x| x.0), mean(|x| x.1), mean(|x| x.2));
    // Centred sums: the normal equations of the slopes, with the intercept from the means.
    let (mut spp, mut soo, mut spo, mut spl, mut sol, mut sll) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (p, o, l) in points {
        let (dp, d_o, dl) = (p - mp, o - mo, l - ml);
        spp += dp * dp;
        soo += d_o * d_o;
        spo += dp * d_o;
        spl += dp * dl;
        sol += d_o * dl;
        sll += dl * dl;
    }
    let varies = |s: f64, m: f64| s > 1e-9 * (1.0 + m * m) * n;
    let (use_p, use_o) = (varies(spp, mp), varies(soo, mo));
    let (b, c) = match (use_p, use_o) {
        (true, true) => {
            let det = spp * soo - spo * spo;
            if det.abs() <= 1e-12 * spp * soo {
                // Prompt and output tokens move together: their costs cannot be told apart.
                // Put it all on the output tokens, the usual cost of generation.
                (0.0, sol / soo)
            } else {
                ((spl * soo - sol * spo) / det, (sol * spp - spl * spo) / det)
            }
        }
        (true, false) => (spl / spp, 0.0),
        (false, true) => (0.0, sol / soo),
        (false, false) => (0.0, 0.0),
    };
    let a = ml - b * mp - c * mo;
    let sse: f64 = points.iter().map(|(p, o, l)| (l - (a + b * p + c * o)).powi(2)).sum();
    // All latencies alike: a perfect fit if it predicts them (sse ~ 0).
    let r2 = if sll > 1e-12 { (1.0 - sse / sll).max(0.0) } else { 1.0 };
    let range = |f: fn(&(f64, f64, f64)) -> f64| {
        points
            .iter()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
    };
    let (pmin, pmax) = range(|x| x.0);
    let (omin, omax) = range(|x| x.1);
    Some(CapacityModel {
        a_ms: a,
        b_ms_per_prompt_token: b,
        c_ms_per_output_token: c,
        r2,
        n: points.len() as u64,
        prompt_tokens_min: pmin,
        prompt_tokens_max: pmax,
        output_tokens_min: omin,
        output_tokens_max: omax,
        prompt_uncached: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_model() {
        // latency = 20 + 0.01 P + 1 O, over a spread of both.
        let pts: Vec<(f64, f64, f64)> = (0..200)
            .map(|i| {
                let (p, o) = ((i * 37 % 500) as f64, (i * 13 % 128 + 1) as f64);
                (p, o, 20.0 + 0.01 * p + 1.0 * o)
            })
            .collect();
        let f = fit_latency(&pts).unwrap();
        assert!((f.a_ms - 20.0).abs() < 1e-6, "{f:?}");
        assert!((f.b_ms_per_prompt_token - 0.01).abs() < 1e-9, "{f:?}");
        assert!((f.c_ms_per_output_token - 1.0).abs() < 1e-9, "{f:?}");
        assert!(f.r2 > 0.999999);
        assert!((f.latency_ms(100.0, 10.0) - 31.0).abs() < 1e-6);
        assert!(f.covers(250.0, 64.0) && !f.covers(250.0, 1000.0));
    }

    #[test]
    fn noise_lowers_r2_and_a_constant_count_is_left_out() {
        // Prompt tokens all 10: b cannot be known and stays 0; output explains the rest.
        let pts: Vec<(f64, f64, f64)> = (0..100)
            .map(|i| (10.0, f64::from(i % 2) * 100.0 + 8.0, 50.0 + f64::from(i % 2) * 100.0))
            .collect();
        let f = fit_latency(&pts).unwrap();
        assert_eq!(f.b_ms_per_prompt_token, 0.0);
        assert!(
            (f.c_ms_per_output_token - 1.0).abs() < 1e-9 && (f.a_ms - 42.0).abs() < 1e-6,
            "{f:?}"
        );
        // Latency unrelated to tokens: R² near 0.
        let noise: Vec<(f64, f64, f64)> = (0..100)
            .map(|i| (f64::from(i), f64::from(i % 7), f64::from((i * 7919) % 101)))
            .collect();
        assert!(fit_latency(&noise).unwrap().r2 < 0.2);
        // Identical requests: the mean latency, a perfect fit.
        let same = vec![(5.0, 5.0, 30.0); 10];
        let f = fit_latency(&same).unwrap();
        assert_eq!((f.a_ms, f.r2), (30.0, 1.0));
        assert!(fit_latency(&same[..2]).is_none());
    }
}
