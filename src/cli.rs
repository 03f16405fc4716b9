//! The command line: clap derive structs whose doc comments are the `--help` text.
//! Raw flags only; `commands::*` validate them into settings.
//! Long because each flag's doc comment is its `--help` text and each command's examples live
//! beside its struct: splitting the file would scatter one command's help over several.

use crate::api::{Api, MaxTokensField};
use crate::batch::Format as InputFormat;
use crate::scrape::MetricsSpec;
use crate::ui::ColorChoice;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

const EXAMPLES: &str = "\
Examples:
  # Everything on the built-in simulated GPU resource (no server needed):
  sizeup auto --input examples/prompts.jsonl --target-rpm 20000 --yes

  # Measure one GPU of your endpoint, then plan and run a batch:
  sizeup sweep --endpoint http://localhost:8000 --api chat --gpus 1 --out reports/h100
  sizeup plan --sweep reports/h100 --target-rpm 30000 --requests 60000 --gpu-hour-cost 2.5
  sizeup run --endpoint http://localhost:8000 --api chat --input jobs.jsonl --plan reports/plan.json

API keys come from SIZEUP_API_KEY, else OPENAI_API_KEY, and are never printed.
Exit codes: 0 ok, 1 some requests failed or a goal is unmet, 2 usage or input error,
3 endpoint unusable, 130 interrupted.";

/// Size, plan and run large batch jobs on LLM inference endpoints.
///
/// sweep measures requests per minute per GPU and the concurrency where the resource saturates
/// (with confidence intervals); plan turns a target rate into GPUs, concurrency, duration and
/// cost; run executes the batch at those settings, losing nothing and resumable; auto chains
/// all three. Without --endpoint every command uses a built-in simulated GPU resource.
#[derive(Parser, Debug)]
#[command(name = "sizeup", version = env!("SIZEUP_VERSION"), after_help = EXAMPLES, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// No progress or notices on stderr (errors and warnings still print).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// When to colour stderr: auto (a terminal without NO_COLOR), always, never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the built-in simulated GPU resource (OpenAI-compatible, continuous batching).
    Sim(SimArgs),
    /// Measure RPM per GPU, latency and the knee by sweeping concurrency levels.
    Sweep(SweepArgs),
    /// Turn sweeps into GPUs, concurrency, duration and cost for a target rate or deadline, and
    /// choose among several deployment options (no network).
    Plan(PlanArgs),
    /// Execute a batch at planned settings: every request answered once, resumable.
    Run(RunArgs),
    /// Sweep on a sample of the input, plan for the target rate, then run the batch.
    Auto(AutoArgs),
    /// Concatenate shard outputs and check that every input line is answered exactly once.
    Merge(MergeArgs),
    /// Print a shell completion script to stdout.
    Completions(CompletionsArgs),
    /// Print the man page (roff) to stdout, or write one page per command to a folder.
    Man(ManArgs),
}

/// `sizeup merge`
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  sizeup merge --input jobs.jsonl --output merged.jsonl out/part-*.jsonl
  sizeup merge --input jobs.jsonl.gz --check out/part-*.jsonl.zst     # verify only, write nothing

Every custom_id of --input must have exactly one successful record across the outputs. Exit 0
when it does; 1 naming the ids answered twice, missing (no record), failed (only failed
records: `sizeup run --resume` sends them again) or unknown to the input; 2 for bad input.
A record that failed and was answered on a later --resume counts once, as answered.
Memory stays flat in the job's size (ids are sorted in runs spilled beside --output, or in
the input's folder with --check). Compressed inputs and outputs (.gz, .zst) are read and
written as `run` does. stdout: one JSON object with the counts.")]
pub struct MergeArgs {
    /// The job's input (every line's custom_id is expected once).
    #[arg(long)]
    pub input: PathBuf,
    /// Force the input format instead of detecting it.
    #[arg(long, value_name = "openai-batch|jsonl|csv|text", value_parser = InputFormat::from_str)]
    pub format: Option<InputFormat>,
    /// Where the concatenated outputs go (refuses to overwrite; .gz/.zst compress).
    #[arg(long, required_unless_present = "check", conflicts_with = "check")]
    pub output: Option<PathBuf>,
    /// Verify only; write nothing.
    #[arg(long)]
    pub check: bool,
    /// The shard outputs, in the order to concatenate them.
    #[arg(required = true, value_name = "OUTPUT")]
    pub parts: Vec<PathBuf>,
}

/// `sizeup completions`
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  sizeup completions bash > ~/.local/share/bash-completion/completions/sizeup
  sizeup completions zsh > ~/.zfunc/_sizeup        # with fpath+=(~/.zfunc) before compinit
  sizeup completions fish > ~/.config/fish/completions/sizeup.fish
  sizeup completions powershell >> $PROFILE")]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `sizeup man`
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  sizeup man | man -l -                   # read it now
  sizeup man sweep | man -l -             # the page of one command, with all its flags
  sizeup man --dir ~/.local/share/man/man1   # sizeup.1, sizeup-sweep.1, ... for `man sizeup-sweep`")]
pub struct ManArgs {
    /// The page of this command (sweep, plan, ...) instead of the overview.
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
    /// Write every page (sizeup.1 and sizeup-<command>.1) into this folder instead.
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub dir: Option<PathBuf>,
}

/// Parses `30s`, `2m`, `500ms`, `1h 30m`; a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return if secs.is_finite() && secs >= 0.0 {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err(format!("`{s}` is not a duration; use e.g. 30s, 2m, 500ms"))
        };
    }
    humantime::parse_duration(t).map_err(|_| format!("`{s}` is not a duration; use e.g. 30s, 2m, 500ms"))
}

/// Where requests go.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Endpoint")]
pub struct EndpointArgs {
    /// Base URL (http://host:8000) or full URL of the inference route. Without it, the built-in
    /// simulated resource is started in-process on a free loopback port.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Protocol: completions (/v1/completions), chat (/v1/chat/completions), embeddings
    /// (/v1/embeddings), or forefront (POST {prompt, max_tokens} to the URL itself, answer
    /// {result:[{completion}]}). Default: what the input file names (an OpenAI Batch line's
    /// `url`, else the body's `messages`, `prompt` or `input`), else completions.
    #[arg(long = "api", value_enum, value_name = "API")]
    pub api_flag: Option<Api>,
    /// The `model` field. When absent, sizeup asks GET /v1/models and uses the first.
    #[arg(long)]
    pub model: Option<String>,
    /// A header every request carries, as 'Name: value'; repeat for more. `$NAME` or `${NAME}`
    /// in the value is that environment variable, expanded by sizeup, so a secret stays out of
    /// `ps` and shell history (single-quote the flag); `$$` is a literal dollar. Values from a
    /// variable, and those of credential-like names (…key, …token, authorization), are replaced
    /// by *** wherever an answer repeats them. A header named authorization replaces the API
    /// key's bearer token. Azure OpenAI:
    ///   --endpoint 'https://RES.openai.azure.com/openai/deployments/DEPLOY/chat/completions?api-version=2024-10-21'
    ///   --header 'api-key: $AZURE_OPENAI_KEY'
    #[arg(long = "header", value_name = "'NAME: VALUE'", verbatim_doc_comment)]
    pub headers: Vec<String>,
    /// PEM file of certificates to trust for HTTPS besides the bundled web roots and the
    /// system's store (which SSL_CERT_FILE and SSL_CERT_DIR also name, as for curl): the CA
    /// that signed an internal endpoint.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<std::path::PathBuf>,
    /// Limit for one whole request, from send to its last byte.
    #[arg(long, value_parser = parse_duration, default_value = "300s")]
    pub timeout: Duration,
    /// Limit from sending a request to its answer's headers (default: only --timeout).
    /// Streaming servers send headers at once, so this catches a stuck server early.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub first_byte_timeout: Option<Duration>,
    /// Limit for opening a connection (TCP and TLS).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub connect_timeout: Duration,
    /// After Ctrl-C or SIGTERM (`scancel`, a Kubernetes eviction), how long the requests in
    /// flight may take to finish before they are abandoned (a later --resume sends them).
    /// The default stays under Kubernetes' 30 s grace period; a second signal abandons at once.
    #[arg(long, value_parser = parse_duration, default_value = "20s", value_name = "DURATION")]
    pub drain_timeout: Duration,
    /// A kept-alive connection idle longer than this is closed, not used again: NAT gateways
    /// and load balancers silently forget idle flows (often after 60 to 350 s), and a request
    /// sent on a forgotten one waits for --timeout. 0 reuses no connection that went idle.
    #[arg(long, value_parser = parse_duration, default_value = "50s", value_name = "DURATION")]
    pub pool_idle_timeout: Duration,
    /// Which body field carries the output limit. Self-hosted servers (vLLM, TGI, llama.cpp)
    /// read max_tokens; OpenAI's newer chat models want max_completion_tokens.
    #[arg(long, value_enum, default_value_t = MaxTokensField::MaxTokens)]
    pub max_tokens_field: MaxTokensField,
    /// Stop when the last N finished requests all failed with the same answer that no retry
    /// changes (same status and error type: a wrong model name, a rejected field), instead of
    /// sending the whole job to fail the same way; exit 3. 0 never stops.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub stop_after_failures: u32,
    /// The server's Prometheus metrics, read during every sweep level and run: its running
    /// and waiting requests, KV cache usage, preemptions and token counters (vLLM, SGLang,
    /// TGI, llama.cpp started with --metrics). Default: <endpoint's scheme://host:port>/metrics.
    /// Give a URL where the server serves them elsewhere (TGI's --prometheus-port), or `off`.
    /// The API key is sent only when the URL has the endpoint's host and port.
    #[arg(long, value_name = "URL|off", default_value = "auto", value_parser = parse_metrics_spec)]
    pub server_metrics: MetricsSpec,
    /// How often to read --server-metrics.
    #[arg(long, value_parser = parse_duration, default_value = "1s", value_name = "DURATION")]
    pub scrape_interval: Duration,
    /// Threads that send the requests and read the answers. Default: 1 when --endpoint is on
    /// this machine (localhost, 127.x.x.x, ::1), where every cycle the client spends is taken
    /// from the server it measures (the whole client spends about 13 µs of CPU per request on
    /// loopback); the machine's cores otherwise, and for the built-in simulator, which shares
    /// the process.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub client_threads: Option<u16>,
}

fn parse_metrics_spec(s: &str) -> Result<MetricsSpec, String> {
    MetricsSpec::parse(s)
}

/// The simulated resource's shape: used by `sizeup sim` and by every command run without
/// --endpoint.
///
/// Throughput it gives (per GPU, n = sequences running on it = min(B, its share of C)):
///   RPM = 60000 * n / (prefill_ms_per_1k * P/1000 + T * (decode_step_ms + decode_step_ms_per_seq * n))
/// with P prompt tokens and T output tokens per request, summed over GPUs; the router spreads
/// C requests as evenly as it can, so n = min(B, C/G) when G divides C. Beyond G*B requests
/// wait in each GPU's queue: RPM stays flat and latency grows.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Simulated resource (used when there is no --endpoint)")]
pub struct SimModelArgs {
    /// Sequences one GPU decodes at once (B); more wait in its FIFO queue.
    #[arg(long, default_value_t = 8)]
    pub batch: u32,
    /// Prefill cost in ms per 1,000 prompt tokens, paid before a request's first token.
    #[arg(long, default_value_t = 10.0)]
    pub prefill_ms_per_1k: f64,
    /// Tokens of prompt each GPU's prefix cache holds, as vLLM's automatic prefix caching:
    /// prompts cut into blocks of 16 tokens (words) named by chained hashes, kept in an LRU
    /// pool; a request's leading blocks found there skip the prefill. Answers report them in
    /// usage.prompt_tokens_details.cached_tokens, /metrics in vllm:prefix_cache_hits_total and
    /// queries_total. 0: off.
    #[arg(long, value_name = "TOKENS", default_value_t = 0)]
    pub prefix_cache_tokens: u64,
    /// Fixed cost of one decode step in ms (each running sequence gets one token per step).
    #[arg(long, default_value_t = 5.0)]
    pub decode_step_ms: f64,
    /// Extra step cost in ms per running sequence (bigger batches step slower).
    #[arg(long, default_value_t = 0.05)]
    pub decode_step_ms_per_seq: f64,
    /// Relative spread of each request's service time: x U[1-j, 1+j] (0.5 = ±50%).
    #[arg(long, default_value_t = 0.0)]
    pub jitter: f64,
    /// Seed for the sample of --input, and for the simulator's jitter and faults: the same
    /// seed draws the same sample and replays the same sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output tokens when a request body has no max_tokens.
    #[arg(long, default_value_t = 16)]
    pub default_max_tokens: u32,
    /// Share of requests answered 500.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Share of requests answered 429 with Retry-After.
    #[arg(long, default_value_t = 0.0)]
    pub throttle_rate: f64,
    /// Share of requests whose connection is closed without an answer.
    #[arg(long, default_value_t = 0.0)]
    pub reset_rate: f64,
    /// Retry-After sent with simulated 429s.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub retry_after: Duration,
    /// Play a hosted API limited to N requests per minute: every answer carries OpenAI's
    /// x-ratelimit-{limit,remaining,reset}-requests headers, and a request past the limit is
    /// answered 429 with Retry-After. Enforced per second, as OpenAI quantizes its limits
    /// (600 = 10 in any second).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub rpm_limit: Option<u64>,
    /// The same for tokens per minute, each request charged as OpenAI charges it on arrival:
    /// its prompt tokens plus its max_tokens (x-ratelimit-*-tokens headers).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub tpm_limit: Option<u64>,
    /// Time from switching the resource on until it answers (503 meanwhile).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub start_delay: Duration,
    /// Floats in each vector POST /v1/embeddings answers (derived from the input's content).
    #[arg(long, default_value_t = 16)]
    pub embedding_dim: u32,
    /// How the router in front of the GPUs spreads requests: least-loaded (fewest running +
    /// waiting; the formula's best case), round-robin (in turn, whatever the load), or
    /// connection (each connection pinned to a GPU picked at random when it opens, as
    /// kube-proxy balances a Kubernetes Service).
    #[arg(long, value_enum, default_value_t = RouterChoice::LeastLoaded)]
    pub router: RouterChoice,
}

/// `--router`: the simulated router's policy.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterChoice {
    LeastLoaded,
    RoundRobin,
    Connection,
}

/// `sizeup sim`
#[derive(Args, Debug)]
#[command(
    after_help = "Throughput (per GPU; n = sequences running on it = min(B, its share of C)):
  RPM = 60000 * n / (prefill_ms_per_1k * P/1000 + T * (decode_step_ms + decode_step_ms_per_seq * n))
  P prompt tokens and T output tokens per request; summed over the G GPUs. The router spreads C
  requests evenly (least-loaded first), so n = min(B, C/G) when G divides C. Beyond G*B requests
  queue: RPM stays flat and latency grows. Each request's time is scaled by U[1-jitter, 1+jitter].
  With --router round-robin or connection the spread is uneven and RPM falls below the formula:
  under connection routing, a GPU that drew more kept-alive connections queues while another idles.

Examples:
  sizeup sim --gpus 2 --batch 8 --decode-step-ms 50 --default-max-tokens 1     # 9,600 RPM per GPU
  sizeup sim --gpus 2 --batch 4 --api-key k --fail-rate 0.05 --throttle-rate 0.05
  sizeup sim --gpus 8 --router connection     # a Kubernetes Service in front of 8 replicas
  curl -s localhost:8000/v1/completions -H 'content-type: application/json' \\
       -d '{\"prompt\":\"hello there\",\"max_tokens\":4}'
  curl -s -XPOST localhost:8000/resource -d '{\"state\":\"off\"}'   # inference now answers 503

Endpoints: POST /v1/completions, POST /v1/chat/completions (JSON or SSE with stream:true),
POST /v1/embeddings, POST / (forefront), GET /v1/models, GET /health, GET /metrics (Prometheus),
GET|POST /resource.
Tokens: a prompt has one token per whitespace-separated word; each output token is one word.
An embedding input is a prefill-only sequence: it holds a batch slot for its prefill time."
)]
pub struct SimArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub addr: String,
    /// GPUs (replicas) behind the router (G).
    #[arg(long, default_value_t = 1)]
    pub gpus: u32,
    /// Model name listed by /v1/models. Requests may name any model: the simulator stands in
    /// for your endpoint.
    #[arg(long, default_value = "sizeup-sim")]
    pub model: String,
    /// Serve only this model, as `vllm serve --served-model-name` does: a request naming any
    /// other gets vLLM's 404 "The model `X` does not exist.". Listed by /v1/models.
    #[arg(long, value_name = "NAME", conflicts_with = "model")]
    pub served_model_name: Option<String>,
    /// Require `Authorization: Bearer K` (401 otherwise).
    #[arg(long, value_name = "K")]
    pub api_key: Option<String>,
    /// Start switched off: inference answers 503 until POST /resource {"state":"on"}.
    #[arg(long)]
    pub start_off: bool,
    #[command(flatten)]
    pub model_args: SimModelArgs,
}

/// Service-level objectives: levels that break them are not used.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Service-level objectives")]
pub struct SloArgs {
    /// Highest acceptable p95 end-to-end latency in ms.
    #[arg(long, value_name = "MS")]
    pub max_latency_p95_ms: Option<f64>,
    /// Highest acceptable p95 time to first token in ms (needs streaming).
    #[arg(long, value_name = "MS")]
    pub max_ttft_p95_ms: Option<f64>,
    /// Highest acceptable share of failed requests (0..1).
    #[arg(long, value_name = "RATE")]
    pub max_error_rate: Option<f64>,
}

/// How each concurrency level is measured.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Measurement")]
pub struct MeasureArgs {
    /// Levels to measure: a list like 1,2,4,8 or `auto` (double until RPM stops growing, then
    /// bisect to the knee).
    #[arg(long, default_value = "auto", value_name = "LIST|auto")]
    pub concurrency: String,
    /// Highest level `auto` may try.
    #[arg(long, default_value_t = 512)]
    pub max_concurrency: u32,
    /// Warm-up per level: requests started in it are not measured (at least until the first
    /// C requests have finished).
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub warmup: Duration,
    /// Stop a level when the RPM 95% CI half-width is at most this share of the mean.
    #[arg(long, default_value_t = 0.05)]
    pub ci_width: f64,
    /// Measured requests per level before the CI may stop it.
    #[arg(long, default_value_t = 50)]
    pub min_requests: u64,
    /// Longest measurement per level (then the CI may be wider than asked; it is reported).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub max_duration: Duration,
    /// Send requests without streaming (no TTFT/TPOT).
    #[arg(long)]
    pub no_stream: bool,
    /// Before the first level, ask the server to empty its prefix cache (`POST
    /// /reset_prefix_cache`, which vLLM serves with VLLM_SERVER_DEV_MODE=1), so an earlier
    /// run's cached prompts do not make the sweep look faster than the job will be. A server
    /// without it is a warning, not a failure.
    #[arg(long)]
    pub reset_prefix_cache: bool,
}

/// `sizeup sweep`
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  sizeup sweep                                        # the built-in simulated resource
  sizeup sweep --endpoint http://localhost:8000 --api chat --gpus 2 --out reports/vllm-2xh100
  sizeup sweep --endpoint URL --concurrency 1,2,4,8,16 --prompt-tokens 512 --max-tokens 128
  sizeup sweep --endpoint URL --input jobs.jsonl --max-latency-p95-ms 8000

  # Two deployment options to compare with `plan --sweep A --sweep B --deadline 6h`:
  sizeup sweep --endpoint URL_A --gpus 2 --name h100 --gpu-hour-cost 4 --out reports/h100
  sizeup sweep --endpoint URL_B --gpus 2 --name a100 --gpu-hour-cost 1.5 --out reports/a100

Writes levels.csv, requests.csv, summary.json, throughput.svg and report.html to --out
(default reports/<UTC timestamp>/) and a table to stdout (--json: summary.json instead).")]
pub struct SweepArgs {
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// GPUs behind the endpoint; per-GPU figures divide by it.
    #[arg(long, default_value_t = 1)]
    pub gpus: u32,
    /// A label for this deployment option, recorded in summary.json for `plan` to show
    /// (default: the --out folder's name).
    #[arg(long, value_name = "LABEL")]
    pub name: Option<String>,
    /// Price of one of these GPUs for one hour in USD, recorded in summary.json: `plan` prices
    /// this option with it.
    #[arg(long, value_name = "USD")]
    pub gpu_hour_cost: Option<f64>,
    #[command(flatten)]
    pub measure: MeasureArgs,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub slo: SloArgs,
    /// Output folder (default reports/<UTC timestamp>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print summary.json to stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sim: SimModelArgs,
}

/// What requests a sweep sends.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Workload")]
pub struct WorkloadArgs {
    /// Sample real requests from this batch file (same formats as `run`).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Force the input format instead of detecting it.
    #[arg(long, value_name = "openai-batch|jsonl|csv|text", value_parser = InputFormat::from_str)]
    pub format: Option<InputFormat>,
    /// Lines of --input in the sweep's sample: a seeded (--seed) uniform sample of the whole
    /// file, each sent once before any is sent again.
    #[arg(long, default_value_t = 10_000)]
    pub sample: usize,
    /// Synthetic prompt length in words (≈ tokens) when there is no --input.
    #[arg(long, default_value_t = 256)]
    pub prompt_tokens: u32,
    /// Output tokens per synthetic request.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: u32,
    /// Start every prompt with a word of its own, so no two requests share a prefix a
    /// server's prefix cache could serve: the sweep then prices every prompt token as
    /// uncached (what a job that shares nothing costs). AIPerf uses the same name.
    #[arg(long)]
    pub cache_bust: bool,
}

/// Sizing knobs shared by `plan` and `auto`.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Planning")]
pub struct PlanTuning {
    /// Extra capacity on top of the target (0.1 = 10%): the plan's one safety margin, unless
    /// the plateau's CI (with --estimate low) reaches further below its mean; never both.
    #[arg(long, default_value_t = 0.1)]
    pub headroom: f64,
    /// low: size on the plateau's 95% CI low bound where it is below mean / (1 + headroom);
    /// mean: on the mean with the headroom alone.
    #[arg(long, value_enum, default_value_t = EstimateChoice::Low)]
    pub estimate: EstimateChoice,
    /// Most GPUs you can get; a target needing more exits 1 saying what is reachable.
    #[arg(long)]
    pub max_gpus: Option<u32>,
    /// Price of one GPU-hour in USD, for the cost estimate; overrides the price a sweep
    /// recorded (`sweep --gpu-hour-cost`).
    #[arg(long, value_name = "USD")]
    pub gpu_hour_cost: Option<f64>,
    /// Seconds to bring the GPUs up, billed in the cost.
    #[arg(long, default_value_t = 0.0)]
    pub startup_s: f64,
    /// A hosted API's price per million input (prompt) tokens, USD: the cost of a plan at the
    /// endpoint's rate limit (sweep verdict rate_limit), where there are no GPU-hours to bill.
    #[arg(long = "price-per-1m-input-tokens", value_name = "USD")]
    pub price_per_1m_input_tokens: Option<f64>,
    /// The same for output tokens.
    #[arg(long = "price-per-1m-output-tokens", value_name = "USD")]
    pub price_per_1m_output_tokens: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EstimateChoice {
    Low,
    Mean,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ObjectiveChoice {
    /// The cheapest option that meets the target (or deadline) and limits.
    Cost,
    /// The fastest option within --budget and the limits.
    Time,
}

/// `sizeup plan`
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  sizeup plan --sweep reports/example --target-rpm 30000
  sizeup plan --sweep reports/h100 --target-rpm 30000 --requests 60000 --gpu-hour-cost 2.5 --startup-s 300
  sizeup plan --sweep reports/h100 --target-rpm 30000 --input jobs.jsonl --max-latency-p95-ms 5000 --json

  # Which deployment, and how many GPUs, finish 60M requests in 2 days at the lowest cost?
  # (each sweep recorded its price: `sweep --name h100 --gpu-hour-cost 4 --out reports/h100`)
  sizeup plan --sweep reports/h100 --sweep reports/a100 --requests 60000000 --deadline 2d --startup-s 600
  # The fastest of them within $5,000:
  sizeup plan --sweep reports/h100 --sweep reports/a100 --requests 60000000 --deadline 2d \\
       --objective time --budget 5000

With several --sweep folders: a table, one row per option (the chosen one marked *), then why
each other lost; plan.json holds the chosen option's plan and `options`, every row.
With --deadline, the target rate is requests / (deadline - startup).
Never touches the network. Writes plan.json (--out, default reports/plan.json).")]
#[command(group(clap::ArgGroup::new("goal").required(true).args(["target_rpm", "deadline"])))]
pub struct PlanArgs {
    /// A sweep output folder (its summary.json). Repeat it to compare deployment options
    /// (GPU types, providers, shapes), each priced by its own `sweep --gpu-hour-cost`.
    #[arg(long, value_name = "DIR", required = true)]
    pub sweep: Vec<PathBuf>,
    /// Requests per minute the job must sustain.
    #[arg(long, value_name = "RPM")]
    pub target_rpm: Option<f64>,
    /// Instead of --target-rpm: when the job must be done (6h, 2d, 90m), from switching the
    /// GPUs on; needs --requests or --input. Target = requests / (deadline - startup).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub deadline: Option<Duration>,
    /// What to minimise: cost (the cheapest option meeting the target, deadline and limits) or
    /// time (the fastest within --budget and the limits).
    #[arg(long, value_enum, default_value_t = ObjectiveChoice::Cost)]
    pub objective: ObjectiveChoice,
    /// Most the job may cost in USD; dearer options lose (needs --requests and prices).
    #[arg(long, value_name = "USD")]
    pub budget: Option<f64>,
    /// Requests in the job, for duration and cost.
    #[arg(long, conflicts_with = "input")]
    pub requests: Option<u64>,
    /// Count the requests in this batch file instead of --requests.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Force the input format instead of detecting it.
    #[arg(long, value_name = "openai-batch|jsonl|csv|text", value_parser = InputFormat::from_str)]
    pub format: Option<InputFormat>,
    #[command(flatten)]
    pub slo: SloArgs,
    #[command(flatten)]
    pub tuning: PlanTuning,
    /// Tokens a replica's prefix cache holds: `plan --input` replays the job's lines in file
    /// order through a cache this size to estimate what share of their prompt it would serve
    /// (a vLLM replica's KV pool: num_gpu_blocks x block_size in its cache_config_info metric).
    /// With several replicas each has its own: a router that spreads related lines lowers the
    /// share. 0: no estimate. Default: what the sweep's server said, else 1,000,000.
    #[arg(long, value_name = "TOKENS")]
    pub prefix_cache_tokens: Option<u64>,
    /// The job will run as N shards (`run --shard auto` in a job array): recorded in plan.json,
    /// so each shard takes 1/N of the plan's concurrency and a re-run task knows the count.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub shards: Option<u64>,
    /// Where to write plan.json.
    #[arg(long, default_value = "reports/plan.json")]
    pub out: PathBuf,
    /// Print plan.json to stdout instead of the explanation.
    #[arg(long)]
    pub json: bool,
}

/// Knobs of the batch runner shared by `run` and `auto`.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Running")]
pub struct RunTuning {
    /// Force the input format instead of detecting it.
    #[arg(long, value_name = "openai-batch|jsonl|csv|text", value_parser = InputFormat::from_str)]
    pub format: Option<InputFormat>,
    /// Cap the send rate (requests per minute, token bucket). A hosted API's request limit
    /// goes here (`--max-requests-per-minute` is the same flag).
    #[arg(long, value_name = "RPM", visible_alias = "max-requests-per-minute")]
    pub rate: Option<f64>,
    /// Cap the tokens sent per minute, as a hosted API counts them: each request is charged
    /// its prompt (estimated from its text, 4 bytes a token until answers' `usage` say
    /// otherwise) plus its max_tokens before it is sent, and none starts that the budget
    /// cannot pay for. Under --shard each shard takes its share, as with --rate.
    /// Example: --max-tokens-per-minute 2000000 for a key limited to 2M TPM.
    #[arg(long, value_name = "TPM")]
    pub max_tokens_per_minute: Option<f64>,
    /// OpenAI Batch's completion window: this long after the command started, start no more
    /// requests, let those in flight finish, and write every line not answered to the errors
    /// file as `batch_expired` (finished work is kept; exit 1). `--resume` later sends them.
    /// Independent of `auto --deadline`, which sizes the fleet to finish in time: give both to
    /// size for a time and also stop at it. Example: --completion-window 24h.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub completion_window: Option<Duration>,
    /// Retries per request for 5xx, timeouts and connection errors (a 429 waits its
    /// Retry-After and goes again without using one).
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// First retry delay; doubles each time, with full jitter, capped by --retry-max.
    #[arg(long, value_parser = parse_duration, default_value = "500ms")]
    pub retry_base: Duration,
    /// Longest retry delay.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub retry_max: Duration,
    /// Go on past invalid input lines (listed in the errors file) instead of stopping.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Hold the plan's rate: when the run falls short of it (a router pinning connections, a
    /// fleet slower than the sweep's), raise the requests in flight step by step, within the
    /// latency limit (the SLO, and at most 1.5x the plan's p95), and take back a step that
    /// breaks it or buys no rate. On by default in `auto`, off in `run` (needs --plan);
    /// --hold-rate=off keeps the plan's concurrency fixed.
    #[arg(long, value_name = "on|off", num_args = 0..=1, require_equals = true,
          default_missing_value = "on", value_parser = clap::builder::BoolishValueParser::new())]
    pub hold_rate: Option<bool>,
    /// Output tokens for text and CSV prompts (bodies given in the input keep theirs).
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Switch the resource on before sending and off at the end: `sim` (the built-in one).
    #[arg(long, value_enum)]
    pub resource: Option<ResourceKind>,
    /// Command that switches the resource on; `{gpus}` is replaced by the GPU count.
    #[arg(long, value_name = "CMD")]
    pub resource_on: Option<String>,
    /// Command that switches the resource off (run at the end, on failure and on Ctrl-C).
    #[arg(long, value_name = "CMD")]
    pub resource_off: Option<String>,
    /// Poll this URL until it answers 200 before sending.
    #[arg(long, value_name = "URL")]
    pub ready_url: Option<String>,
    /// How long to wait for --ready-url (or the resource) to be ready.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub ready_timeout: Duration,
    /// No progress on stderr.
    #[arg(long, hide = true)]
    pub no_progress: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ResourceKind {
    /// The simulated resource's API (POST /resource), in-process or at --endpoint.
    Sim,
}

/// `sizeup run`
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  sizeup run --input examples/prompts.jsonl --concurrency 16
  sizeup run --endpoint http://localhost:8000 --api chat --input jobs.jsonl --plan reports/plan.json
  sizeup run --endpoint URL --input jobs.jsonl --concurrency 32 --resume      # after a crash or Ctrl-C
  sizeup run --endpoint URL --input jobs.jsonl --concurrency 8 --shard auto   # in a k8s Indexed Job
  sizeup run --endpoint URL --input jobs.jsonl --plan plan.json --shard auto/4 --resume \
      --output out/part-$SLURM_ARRAY_TASK_ID.jsonl   # a Slurm array task, re-runnable alone

Input: OpenAI Batch JSONL, plain JSONL bodies, CSV with a prompt column, or text lines (- = stdin);
gzip or zstd compressed files (jobs.jsonl.gz, jobs.jsonl.zst) are read as they are.
Output: OpenAI Batch output JSONL in completion order; failures also in <output>.errors.jsonl;
run-summary.json beside the output. An output named .gz or .zst is written compressed, one
complete member per write, so --resume after a kill -9 appends to it.
Afterwards, `sizeup merge` joins shard outputs and checks every line was answered once.")]
pub struct RunArgs {
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// The batch to run (- for stdin). A file is checked whole before anything is sent; stdin
    /// can be read only once, so there the run stops at the first bad line.
    #[arg(long)]
    pub input: PathBuf,
    /// Output JSONL (default <input stem>.output.jsonl beside the input; .gz/.zst compress).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// A plan.json from `sizeup plan` (uses its total_concurrency and predictions).
    #[arg(long, required_unless_present = "concurrency")]
    pub plan: Option<PathBuf>,
    /// Requests in flight (overrides the plan's).
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Skip custom_ids already answered in --output and append the rest.
    #[arg(long)]
    pub resume: bool,
    /// Run only lines whose index mod N == K (`K/N`). `auto`: K from JOB_COMPLETION_INDEX or
    /// SLURM_ARRAY_TASK_ID, N from the plan's `shards` (`plan --shards N`), SIZEUP_SHARDS or
    /// the scheduler; `auto/N` fixes N, which a re-run task (`sbatch --array=2`) needs. An
    /// ambiguous array (stepped, not from 0, a lone re-run without N) is refused, not guessed.
    #[arg(long, value_name = "K/N|auto|auto/N")]
    pub shard: Option<String>,
    /// Where to write run-summary.json (default beside the output).
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// GPUs of the built-in simulated resource (default: the plan's, else 1).
    #[arg(long)]
    pub gpus: Option<u32>,
    #[command(flatten)]
    pub tuning: RunTuning,
    #[command(flatten)]
    pub sim: SimModelArgs,
}

/// `sizeup auto`
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  sizeup auto --input examples/prompts.jsonl --target-rpm 20000 --yes
  sizeup auto --endpoint http://localhost:8000 --api chat --input jobs.jsonl --target-rpm 30000 \\
       --max-latency-p95-ms 8000 --gpu-hour-cost 2.5 --out reports/job-42
  sizeup auto --input examples/prompts.jsonl --deadline 30s --yes   # the rate a deadline needs

Sweeps on a sample of the input, plans, prints the plan and asks before running (--yes skips
the question; without a terminal and without --yes it stops after the plan).")]
#[command(group(clap::ArgGroup::new("goal").required(true).args(["target_rpm", "deadline"])))]
pub struct AutoArgs {
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// The batch to run.
    #[arg(long)]
    pub input: PathBuf,
    /// Requests per minute the job must sustain.
    #[arg(long, value_name = "RPM")]
    pub target_rpm: Option<f64>,
    /// Instead of --target-rpm: when the whole job must be done (30m, 6h), counted from now;
    /// the plan sizes for the requests the sweep leaves over the time it leaves, less startup.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub deadline: Option<Duration>,
    /// Folder for every artifact (default reports/<UTC timestamp>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Most input lines the sweep may send (default: --sweep-budget of the job, at most
    /// 100,000). The sweep is part of the job: each line it sends is answered into the output
    /// and not sent again by the run.
    #[arg(long)]
    pub sample: Option<usize>,
    /// Share of the job the sweep may use (0.2 = 20%; always at least 1,000 lines or the whole
    /// job). When it runs out before a level's CI is as narrow as --ci-width, the plan sizes on
    /// the CI it got (its low bound) and says so.
    #[arg(long, default_value_t = 0.2, value_name = "FRACTION")]
    pub sweep_budget: f64,
    /// GPUs behind the endpoint during the sweep.
    #[arg(long, default_value_t = 1)]
    pub gpus: u32,
    /// Run without asking.
    #[arg(long, short)]
    pub yes: bool,
    /// Before the batch, re-measure one level at the planned GPUs and concurrency, to check the
    /// linear-scaling assumption (when the resource can be resized: the built-in simulator or
    /// --resource).
    #[arg(long)]
    pub verify: bool,
    #[command(flatten)]
    pub measure: MeasureArgs,
    #[command(flatten)]
    pub slo: SloArgs,
    #[command(flatten)]
    pub plan: PlanTuning,
    #[command(flatten)]
    pub tuning: RunTuning,
    #[command(flatten)]
    pub sim: SimModelArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn input_format_is_typed_by_clap() {
        let run = |f: &str| Cli::try_parse_from(["sizeup", "run", "--input", "x", "--concurrency", "1", "--format", f]);
        match run("CSV").unwrap().command {
            Command::Run(a) => assert_eq!(a.tuning.format, Some(InputFormat::Csv)),
            other => panic!("{other:?}"),
        }
        let err = run("yaml").unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
