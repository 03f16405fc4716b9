//! Which inference server's metric names a `/metrics` page speaks, and how to read the few
//! figures sizeup needs from each.

use super::prom::{self, PromSample};
use crate::stats::server::ServerSnapshot;

/// A server's metric vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Vllm,
    Sglang,
    Tgi,
    LlamaCpp,
}

/// Metric names per figure, the first present wins. Sources: vLLM `vllm/v1/metrics/loggers.py`
/// (`kv_cache_usage_perc` since v0.10, `gpu_cache_usage_perc` before), SGLang
/// `python/sglang/srt/metrics/collector.py`, TGI `router/src` (`metrics::gauge!`), llama.cpp
/// `tools/server/server.cpp` (`/metrics`, with `--metrics`). The fixtures in
/// `tests/data/metrics/` name the versions.
struct Names {
    running: &'static [&'static str],
    waiting: &'static [&'static str],
    /// 0..=1 (vLLM's `_perc` is a fraction too: "1 means 100 percent usage").
    kv_usage: &'static [&'static str],
    preemptions: &'static [&'static str],
    prompt_tokens: &'static [&'static str],
    output_tokens: &'static [&'static str],
    /// Prefix cache counters in tokens, queried and hit; or the hit rate as a gauge.
    prefix_queries: &'static [&'static str],
    prefix_hits: &'static [&'static str],
    prefix_hit_rate: &'static [&'static str],
}

const VLLM: Names = Names {
    running: &["vllm:num_requests_running"],
    waiting: &["vllm:num_requests_waiting"],
    kv_usage: &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
    preemptions: &["vllm:num_preemptions_total"],
    prompt_tokens: &["vllm:prompt_tokens_total"],
    output_tokens: &["vllm:generation_tokens_total"],
    // v1 engine (0.8+); the gauge before it.
    // 0.10's names, still shown with --show-hidden-metrics-for-version=0.10.
    prefix_queries: &["vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"],
    prefix_hits: &["vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"],
    prefix_hit_rate: &["vllm:gpu_prefix_cache_hit_rate"],
};

const SGLANG: Names = Names {
    running: &["sglang:num_running_reqs"],
    waiting: &["sglang:num_queue_reqs"],
    kv_usage: &["sglang:token_usage"],
    preemptions: &[],
    prompt_tokens: &["sglang:prompt_tokens_total"],
    output_tokens: &["sglang:generation_tokens_total"],
    prefix_queries: &[],
    prefix_hits: &[],
    prefix_hit_rate: &["sglang:cache_hit_rate"],
};

const TGI: Names = Names {
    running: &["tgi_batch_current_size"],
    waiting: &["tgi_queue_size"],
    kv_usage: &[],
    preemptions: &[],
    // Histogram sums: they grow by each finished request's lengths.
    prompt_tokens: &["tgi_request_input_length_sum"],
    output_tokens: &["tgi_request_generated_tokens_sum"],
    prefix_queries: &[],
    prefix_hits: &[],
    prefix_hit_rate: &[],
};

const LLAMACPP: Names = Names {
    running: &["llamacpp:requests_processing"],
    waiting: &["llamacpp:requests_deferred"],
    kv_usage: &["llamacpp:kv_cache_usage_ratio"],
    preemptions: &[],
    prompt_tokens: &["llamacpp:prompt_tokens_total"],
    output_tokens: &["llamacpp:tokens_predicted_total"],
    prefix_queries: &[],
    prefix_hits: &[],
    prefix_hit_rate: &[],
};

impl Dialect {
    pub const ALL: [Dialect; 4] = [Dialect::Vllm, Dialect::Sglang, Dialect::Tgi, Dialect::LlamaCpp];

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Vllm => "vllm",
            Dialect::Sglang => "sglang",
            Dialect::Tgi => "tgi",
            Dialect::LlamaCpp => "llamacpp",
        }
    }

    fn names(self) -> &'static Names {
        match self {
            Dialect::Vllm => &VLLM,
            Dialect::Sglang => &SGLANG,
            Dialect::Tgi => &TGI,
            Dialect::LlamaCpp => &LLAMACPP,
        }
    }

    /// The first dialect whose running or waiting gauge the page has.
    pub fn detect(samples: &[PromSample]) -> Option<Dialect> {
        Dialect::ALL.into_iter().find(|d| {
            let n = d.names();
            n.running
                .iter()
                .chain(n.waiting)
                .any(|name| samples.iter().any(|s| s.name == *name))
        })
    }

    /// The figures of one scrape, summed over label sets (KV usage: the fullest engine).
    pub fn snapshot(self, samples: &[PromSample], at_s: f64) -> ServerSnapshot {
        let n = self.names();
        let first =
            |names: &[&str], f: fn(&[PromSample], &str) -> Option<f64>| names.iter().find_map(|m| f(samples, m));
        ServerSnapshot {
            at_s,
            running: first(n.running, prom::sum),
            waiting: first(n.waiting, prom::sum),
            kv_usage: first(n.kv_usage, prom::max),
            preemptions_total: first(n.preemptions, prom::sum),
            prompt_tokens_total: first(n.prompt_tokens, prom::sum),
            output_tokens_total: first(n.output_tokens, prom::sum),
            prefix_queries_total: first(n.prefix_queries, prom::sum),
            prefix_hits_total: first(n.prefix_hits, prom::sum),
            // Several engines: the mean of their rates (each serves its own share). vLLM 0.6
            // writes -1 before any query.
            prefix_hit_rate: first(n.prefix_hit_rate, prom::mean).filter(|r| (0.0..=1.0).contains(r)),
        }
    }
}

impl Dialect {
    /// Tokens one engine's prefix cache holds, where the server says: vLLM's `cache_config_info`
    /// (num_gpu_blocks x block_size, with enable_prefix_caching on); the smallest engine's with
    /// several. None for other servers, or with caching off.
    pub fn prefix_cache_tokens(self, samples: &[PromSample]) -> Option<u64> {
        if self != Dialect::Vllm {
            return None;
        }
        samples
            .iter()
            .filter(|s| s.name == "vllm:cache_config_info")
            .filter_map(|s| {
                let label = |k: &str| s.labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
                if !label("enable_prefix_caching")?.eq_ignore_ascii_case("true") {
                    return None;
                }
                let blocks: u64 = label("num_gpu_blocks")?.parse().ok()?;
                let size: u64 = label("block_size")?.parse().ok()?;
                Some(blocks * size)
            })
            .min()
    }
}

/// Each server's metrics text as the server writes it (`tests/data/metrics/README.md` names
/// the sources), read back into the figures sizeup uses.
#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            ($name, include_str!(concat!("../../tests/data/metrics/", $name)))
        };
    }

    type Expect = (Dialect, f64, f64, Option<f64>, Option<f64>, Option<f64>, Option<f64>);

    /// Detects the dialect of one fixture and reads its snapshot: (file, (dialect, running,
    /// waiting, kv, preemptions, prompt tokens, output tokens)).
    fn reads((file, text): (&str, &str), (dialect, running, waiting, kv, pre, prompt, out): Expect) {
        let samples = prom::parse(text);
        assert_eq!(Dialect::detect(&samples), Some(dialect), "{file}");
        let s = dialect.snapshot(&samples, 1.5);
        assert_eq!(s.at_s, 1.5);
        assert_eq!(s.running, Some(running), "{file} running");
        assert_eq!(s.waiting, Some(waiting), "{file} waiting");
        assert_eq!(s.kv_usage, kv, "{file} kv");
        assert_eq!(s.preemptions_total, pre, "{file} preemptions");
        assert_eq!(s.prompt_tokens_total, prompt, "{file} prompt tokens");
        assert_eq!(s.output_tokens_total, out, "{file} output tokens");
    }

    /// `text` with each sample of `name` set to `value`: a later scrape of the same server.
    fn later(text: &str, name: &str, value: f64) -> String {
        text.lines()
            .map(|l| match l.strip_prefix(name).filter(|rest| rest.starts_with('{')) {
                Some(_) => format!("{} {value}", l.rsplit_once(' ').map_or(l, |(k, _)| k)),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_prefix_cache_hit_rate_comes_from_two_scrapes_of_its_counters() {
        use crate::stats::server::summarize_server;
        let level = |d: Dialect, a: &str, b: &str| {
            summarize_server(&[d.snapshot(&prom::parse(a), 0.0), d.snapshot(&prom::parse(b), 1.0)])
                .prefix_cache_hit_rate
        };
        // vLLM 0.11: 20,000 tokens queried between two scrapes, 18,000 of them hits.
        let (_, first) = fixture!("vllm-v0.11.0-busy.prom");
        let second = later(first, "vllm:prefix_cache_queries_total", 752_160.0);
        let second = later(&second, "vllm:prefix_cache_hits_total", 243_456.0);
        assert_eq!(level(Dialect::Vllm, first, &second), Some(0.9));
        // The same page twice: nothing queried in between, no rate (not the lifetime's 31%).
        assert_eq!(level(Dialect::Vllm, first, first), None);
        // 0.10's hidden names.
        let (_, old) = fixture!("vllm-v0.11.0-show-hidden-0.10.prom");
        let old2 = later(old, "vllm:gpu_prefix_cache_queries_total", 742_160.0);
        let old2 = later(&old2, "vllm:gpu_prefix_cache_hits_total", 230_456.0);
        let old2 = later(&old2, "vllm:prefix_cache_queries_total", 742_160.0);
        let old2 = later(&old2, "vllm:prefix_cache_hits_total", 230_456.0);
        assert_eq!(level(Dialect::Vllm, old, &old2), Some(0.5));
        // vLLM 0.6's gauge says -1 before any query: unknown, not a rate.
        let (_, v06) = fixture!("vllm-v0.6.3-busy.prom");
        assert_eq!(level(Dialect::Vllm, v06, v06), None);
        // SGLang reports the rate itself: the mean over the level's scrapes.
        let (_, sg) = fixture!("sglang-v0.5.3-busy.prom");
        let (a, b) = (
            later(sg, "sglang:cache_hit_rate", 0.4),
            later(sg, "sglang:cache_hit_rate", 0.6),
        );
        let r = level(Dialect::Sglang, &a, &b).unwrap();
        assert!((r - 0.5).abs() < 1e-12, "{r}");
    }

    #[test]
    fn vllm_says_how_large_its_prefix_cache_is() {
        let cache = |(_, text): (&str, &str)| Dialect::Vllm.prefix_cache_tokens(&prom::parse(text));
        // 400 blocks of 16 tokens, prefix caching on.
        assert_eq!(cache(fixture!("vllm-v0.11.0-busy.prom")), Some(6400));
        let (_, text) = fixture!("vllm-v0.11.0-busy.prom");
        let off = text.replace("enable_prefix_caching=\"True\"", "enable_prefix_caching=\"False\"");
        assert_eq!(Dialect::Vllm.prefix_cache_tokens(&prom::parse(&off)), None);
        let (_, sg) = fixture!("sglang-v0.5.3-busy.prom");
        assert_eq!(Dialect::Sglang.prefix_cache_tokens(&prom::parse(sg)), None);
    }

    // One test per server: every dialect reads from its server's own text.
    #[test]
    fn vllm_reads_from_its_servers_text() {
        reads(
            fixture!("vllm-v0.11.0-busy.prom"),
            (
                Dialect::Vllm,
                8.0,
                16.0,
                Some(0.873),
                Some(3.0),
                Some(732160.0),
                Some(422625.0),
            ),
        );
        // vLLM before 0.10: the KV gauge had its older name.
        reads(
            fixture!("vllm-v0.6.3-busy.prom"),
            (
                Dialect::Vllm,
                8.0,
                16.0,
                Some(0.873),
                Some(3.0),
                Some(727280.0),
                Some(422177.0),
            ),
        );
        reads(
            fixture!("vllm-v0.11.0-show-hidden-0.10.prom"),
            (
                Dialect::Vllm,
                8.0,
                16.0,
                Some(0.873),
                Some(3.0),
                Some(732160.0),
                Some(422625.0),
            ),
        );
        // Two models behind one server: summed (KV: the fuller one).
        reads(
            fixture!("vllm-v0.11.0-two-models.prom"),
            (
                Dialect::Vllm,
                12.0,
                18.0,
                Some(0.873),
                Some(3.0),
                Some(1110814.0),
                Some(656014.0),
            ),
        );
        // Data parallel: two engines, summed.
        reads(
            fixture!("vllm-v0.11.0-dp2.prom"),
            (
                Dialect::Vllm,
                15.0,
                27.0,
                Some(0.873),
                Some(4.0),
                Some(1418094.0),
                Some(843145.0),
            ),
        );
    }

    #[test]
    fn sglang_reads_from_its_servers_text() {
        reads(
            fixture!("sglang-v0.5.3-busy.prom"),
            (
                Dialect::Sglang,
                8.0,
                16.0,
                Some(0.87),
                None,
                Some(703957.0),
                Some(426514.0),
            ),
        );
        // Tensor parallel: only rank 0 reports the scheduler's gauges, so nothing doubles.
        reads(
            fixture!("sglang-v0.5.3-busy-tp2.prom"),
            (
                Dialect::Sglang,
                8.0,
                16.0,
                Some(0.87),
                None,
                Some(703957.0),
                Some(426514.0),
            ),
        );
    }

    #[test]
    fn tgi_reads_from_its_servers_text() {
        reads(
            fixture!("tgi-v3.3.7-busy.prom"),
            (Dialect::Tgi, 8.0, 16.0, None, None, Some(971288.0), Some(422323.0)),
        );
    }

    #[test]
    fn llamacpp_reads_from_its_servers_text() {
        // Captured from a real llama-server (-np 4, --metrics) with 10 requests sent: 4
        // in its slots, 5 deferred; this build has no KV gauge.
        reads(
            fixture!("llamacpp-busy.prom"),
            (Dialect::LlamaCpp, 4.0, 5.0, None, None, Some(168.0), Some(64.0)),
        );
        reads(
            fixture!("llamacpp-idle.prom"),
            (Dialect::LlamaCpp, 0.0, 0.0, None, None, Some(0.0), Some(0.0)),
        );
        reads(
            fixture!("llamacpp-7841fc7-busy.prom"),
            (
                Dialect::LlamaCpp,
                4.0,
                6.0,
                Some(0.549316),
                None,
                Some(187342.0),
                Some(96512.0),
            ),
        );
    }

    #[test]
    fn unknown_pages_are_not_guessed() {
        assert_eq!(
            Dialect::detect(&prom::parse("process_cpu_seconds_total 12\nup 1\n")),
            None
        );
        assert_eq!(Dialect::detect(&[]), None);
    }
}
