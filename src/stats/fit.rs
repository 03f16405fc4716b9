//! The token-aware capacity model of one level: per-request latency = a + b x prompt_tokens +
//! b' x cached_tokens + c x output_tokens, fitted by least squares over the level's successful
//! requests (prompt_tokens being the ones a prefix cache did not serve, where the answers said).
//! With it, a job whose mix or sharing differs from the sweep's can be sized by Little's law
//! without a tokenizer.

use crate::model::CapacityModel;

/// One request: (prompt tokens the server prefilled, prompt tokens its prefix cache served,
/// output tokens, latency ms).
pub type FitPoint = (f64, f64, f64, f64);

/// A cached token's cost must stand this many standard errors clear of nothing to count; a
/// weaker one is taken as free (what a prefix cache promises), not as noise's figure.
const CACHED_T: f64 = 2.0;

/// Least squares over the level's requests. A token count that does not vary carries no
/// information about its own cost: it is left out (its coefficient 0 and its cost folded into
/// `a`); so is one that moves with those before it (output, then prompt, then cached tokens:
/// prompt and output moving together put it all on the output tokens, the usual cost of
/// generation). A cached token's cost is kept only where the level tells it from nothing, and
/// at most an uncached token's. None with fewer than 3 points.
pub fn fit_latency(points: &[FitPoint]) -> Option<CapacityModel> {
    if points.len() < 3
        || points
            .iter()
            .any(|&(p, k, o, l)| !(p.is_finite() && k.is_finite() && o.is_finite() && l.is_finite()))
    {
        return None;
    }
    let column = |j: usize| -> Vec<f64> { points.iter().map(|&(p, k, o, _)| [o, p, k][j]).collect() };
    let (output, prompt, cached) = (column(0), column(1), column(2));
    let latency: Vec<f64> = points.iter().map(|x| x.3).collect();
    let mut ls = Ols::fit(&[&output, &prompt, &cached], &latency);
    let b_cached = match ls.coef[2] {
        // (A floor too: rounding's 1e-16 on noise-free data is no price.)
        Some(k) if k.is_finite() && k.abs() > 1e-6 && k.abs() >= CACHED_T * ls.se(2) => Some(k),
        _ => None,
    };
    let b_cached = match (b_cached, ls.coef[1].unwrap_or(0.0)) {
        (Some(k), _) if k < 0.0 => {
            // A cached token that saves time is noise (or a cold start's misses): free.
            ls = Ols::fit(&[&output, &prompt], &latency);
            None
        }
        (Some(k), b) if k > b => {
            // Dearer than prefilling it: priced as a prompt token, one column of both.
            let whole: Vec<f64> = prompt.iter().zip(&cached).map(|(p, k)| p + k).collect();
            ls = Ols::fit(&[&output, &whole], &latency);
            Some(ls.coef[1].unwrap_or(0.0))
        }
        (Some(k), _) => Some(k),
        (None, _) if ls.coef[2].is_some() => {
            ls = Ols::fit(&[&output, &prompt], &latency);
            None
        }
        (None, _) => None,
    };
    let (c, b) = (ls.coef[0].unwrap_or(0.0), ls.coef[1].unwrap_or(0.0));
    let range = |v: &[f64]| {
        v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
    };
    let (pmin, pmax) = range(&prompt);
    let (omin, omax) = range(&output);
    Some(CapacityModel {
        a_ms: ls.intercept,
        b_ms_per_prompt_token: b,
        b_ms_per_cached_token: b_cached,
        c_ms_per_output_token: c,
        r2: ls.r2,
        n: points.len() as u64,
        prompt_tokens_min: pmin,
        prompt_tokens_max: pmax,
        output_tokens_min: omin,
        output_tokens_max: omax,
        prompt_uncached: false,
    })
}

/// Ordinary least squares with an intercept over up to 3 columns, each left out (None) where
/// it does not vary or moves with the columns before it.
struct Ols {
    intercept: f64,
    coef: [Option<f64>; 3],
    r2: f64,
    /// The residual variance and the inverse of the kept columns' centred cross products:
    /// what a coefficient's standard error is made of.
    sigma2: f64,
    inverse: Vec<Vec<f64>>,
    kept: Vec<usize>,
}

impl Ols {
    fn fit(columns: &[&Vec<f64>], y: &[f64]) -> Ols {
        let n = y.len() as f64;
        let mean = |v: &[f64]| v.iter().sum::<f64>() / n;
        let centred = |v: &[f64]| {
            let m = mean(v);
            v.iter().map(|x| x - m).collect::<Vec<f64>>()
        };
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let yc = centred(y);
        let sll = dot(&yc, &yc);
        // Gram-Schmidt on the centred columns decides which carry information of their own.
        let mut kept: Vec<usize> = Vec::new();
        let mut basis: Vec<Vec<f64>> = Vec::new();
        // The kept columns, centred, for the normal equations.
        let mut xs: Vec<Vec<f64>> = Vec::new();
        for (j, col) in columns.iter().enumerate() {
            let m = mean(col);
            let x = centred(col);
            let ss = dot(&x, &x);
            if ss <= 1e-9 * (1.0 + m * m) * n {
                continue;
            }
            let mut r = x.clone();
            for q in &basis {
                let f = dot(&r, q) / dot(q, q);
                r.iter_mut().zip(q).for_each(|(ri, qi)| *ri -= f * qi);
            }
            if dot(&r, &r) <= 1e-12 * ss {
                continue;
            }
            basis.push(r);
            kept.push(j);
            xs.push(x);
        }
        let k = kept.len();
        let xtx: Vec<Vec<f64>> = (0..k).map(|a| (0..k).map(|b| dot(&xs[a], &xs[b])).collect()).collect();
        let inverse = invert(xtx);
        let xty: Vec<f64> = xs.iter().map(|x| dot(x, &yc)).collect();
        let beta: Vec<f64> = (0..k).map(|a| dot(&inverse[a], &xty)).collect();
        let mut coef = [None; 3];
        let mut intercept = mean(y);
        for (i, &j) in kept.iter().enumerate() {
            coef[j] = Some(beta[i]);
            intercept -= beta[i] * mean(columns[j]);
        }
        let sse: f64 = (0..y.len())
            .map(|r| {
                let fit = intercept + kept.iter().zip(&beta).map(|(&j, b)| b * columns[j][r]).sum::<f64>();
                (y[r] - fit).powi(2)
            })
            .sum();
        // All latencies alike: a perfect fit if it predicts them (sse ~ 0).
        let r2 = if sll > 1e-12 { (1.0 - sse / sll).max(0.0) } else { 1.0 };
        // No degrees of freedom left: the fit is exact by construction and says nothing of
        // any coefficient's error.
        let dof = n - k as f64 - 1.0;
        Ols {
            intercept,
            coef,
            r2,
            sigma2: if dof > 0.0 { sse / dof } else { f64::INFINITY },
            inverse,
            kept,
        }
    }

    /// The standard error of column `j`'s coefficient (infinite where it was left out).
    fn se(&self, j: usize) -> f64 {
        match self.kept.iter().position(|&c| c == j) {
            Some(i) => (self.sigma2 * self.inverse[i][i]).max(0.0).sqrt(),
            None => f64::INFINITY,
        }
    }
}

/// The inverse of a small symmetric positive definite matrix (Gauss-Jordan): the columns kept
/// are independent, so it exists.
fn invert(mut m: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    let k = m.len();
    let mut inv: Vec<Vec<f64>> = (0..k)
        .map(|i| (0..k).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    for c in 0..k {
        let p = (c..k)
            .max_by(|&a, &b| m[a][c].abs().total_cmp(&m[b][c].abs()))
            .expect("a row");
        m.swap(c, p);
        inv.swap(c, p);
        let d = m[c][c];
        for j in 0..k {
            m[c][j] /= d;
            inv[c][j] /= d;
        }
        for r in 0..k {
            if r != c {
                let f = m[r][c];
                for j in 0..k {
                    m[r][j] -= f * m[c][j];
                    inv[r][j] -= f * inv[c][j];
                }
            }
        }
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_model() {
        // latency = 20 + 0.01 P + 1 O, over a spread of both.
        let pts: Vec<FitPoint> = (0..200)
            .map(|i| {
                let (p, o) = ((i * 37 % 500) as f64, (i * 13 % 128 + 1) as f64);
                (p, 0.0, o, 20.0 + 0.01 * p + 1.0 * o)
            })
            .collect();
        let f = fit_latency(&pts).unwrap();
        assert!((f.a_ms - 20.0).abs() < 1e-6, "{f:?}");
        assert!((f.b_ms_per_prompt_token - 0.01).abs() < 1e-9, "{f:?}");
        assert!((f.c_ms_per_output_token - 1.0).abs() < 1e-9, "{f:?}");
        assert!(f.r2 > 0.999999);
        assert_eq!(f.b_ms_per_cached_token, None, "no cached tokens: no price for them");
        assert!((f.latency_ms(100.0, 10.0) - 31.0).abs() < 1e-6);
        assert!(f.covers(250.0, 64.0) && !f.covers(250.0, 1000.0));
    }

    #[test]
    fn noise_lowers_r2_and_a_constant_count_is_left_out() {
        // Prompt tokens all 10: b cannot be known and stays 0; output explains the rest.
        let pts: Vec<FitPoint> = (0..100)
            .map(|i| {
                (
                    10.0,
                    0.0,
                    f64::from(i % 2) * 100.0 + 8.0,
                    50.0 + f64::from(i % 2) * 100.0,
                )
            })
            .collect();
        let f = fit_latency(&pts).unwrap();
        assert_eq!(f.b_ms_per_prompt_token, 0.0);
        assert!(
            (f.c_ms_per_output_token - 1.0).abs() < 1e-9 && (f.a_ms - 42.0).abs() < 1e-6,
            "{f:?}"
        );
        // Latency unrelated to tokens: R² near 0.
        let noise: Vec<FitPoint> = (0..100)
            .map(|i| (f64::from(i), 0.0, f64::from(i % 7), f64::from((i * 7919) % 101)))
            .collect();
        assert!(fit_latency(&noise).unwrap().r2 < 0.2);
        // Identical requests: the mean latency, a perfect fit.
        let same = vec![(5.0, 0.0, 5.0, 30.0); 10];
        let f = fit_latency(&same).unwrap();
        assert_eq!((f.a_ms, f.r2), (30.0, 1.0));
        assert!(fit_latency(&same[..2]).is_none());
    }

    /// A level of hits and misses: uncached questions of 20-60 tokens after a 1,000-token
    /// system prompt, cached on most requests.
    fn hits_and_misses(cached_cost: f64, noise: f64) -> Vec<FitPoint> {
        (0..400)
            .map(|i: i32| {
                let q = f64::from(20 + i * 7 % 41);
                let o = f64::from(10 + i * 13 % 50);
                let hit = i % 5 != 0;
                let (p, k) = if hit { (q, 1000.0) } else { (q + 1000.0, 0.0) };
                let jitter = noise * f64::from((i * 7919) % 21 - 10) / 10.0;
                (p, k, o, 30.0 + 0.2 * p + cached_cost * k + 2.0 * o + jitter)
            })
            .collect()
    }

    #[test]
    fn a_cached_tokens_cost_is_told_apart_from_a_prefilled_ones() {
        let f = fit_latency(&hits_and_misses(0.02, 0.0)).unwrap();
        let k = f.b_ms_per_cached_token.expect("priced");
        assert!(
            (k - 0.02).abs() < 1e-6 && (f.b_ms_per_prompt_token - 0.2).abs() < 1e-6,
            "{f:?}"
        );
        assert!((f.latency_split_ms(40.0, 1000.0, 30.0) - (30.0 + 8.0 + 20.0 + 60.0)).abs() < 1e-6);
        // Free cached tokens under noise: no price told from nothing, so taken as free, and
        // the prompt and output costs still found.
        let f = fit_latency(&hits_and_misses(0.0, 3.0)).unwrap();
        assert!(f.b_ms_per_cached_token.is_none_or(|k| k.abs() < 0.005), "{f:?}");
        assert!((f.b_ms_per_prompt_token - 0.2).abs() < 0.01, "{f:?}");
        // A cached token "saving" time is noise: free, refitted without it.
        let f = fit_latency(&hits_and_misses(-0.05, 0.0)).unwrap();
        assert_eq!(f.b_ms_per_cached_token, None, "{f:?}");
        // One dearer than a prefilled token: priced as one.
        let f = fit_latency(&hits_and_misses(0.5, 0.0)).unwrap();
        assert_eq!(f.b_ms_per_cached_token, Some(f.b_ms_per_prompt_token), "{f:?}");
    }
}
