//! End-to-end benchmark: `cargo bench --bench e2e`.
//!
//! Runs the release `sizeup` binary (the one cargo builds for this bench) against an external
//! `sizeup sim` process on loopback, and prints one markdown table of ratios, each measured
//! against its reference in the same run: makespan against the physical limit (and against
//! naive waves), the client's request rate against `oha`, peak memory over input size,
//! sizing accuracy against the simulator's formula, `auto`'s predicted against achieved
//! duration, and the simulator's capacity for concurrent streams. The table, with the machine's
//! cores, load and the date, is written to `benches/RESULTS.md`.
//!
//! Timing figures are never pass/fail: the bench reports and always exits 0 when it could
//! measure. Knobs (environment):
//! - `SIZEUP_BENCH_QUICK=1`: small sizes everywhere (about a minute); results go to
//!   `$TMPDIR/sizeup-e2e-RESULTS.md` unless `SIZEUP_BENCH_OUT` is set.
//! - `SIZEUP_BENCH_ONLY=makespan,ceiling,memory,resume,sizing,fleet,auto,capacity`: a subset (same output
//!   rule as quick).
//! - `SIZEUP_BENCH_OUT=PATH`: where to write the markdown.
//! - `SIZEUP_BENCH_N` (makespan requests, 2000), `SIZEUP_BENCH_CEILING_N` (60000),
//!   `SIZEUP_BENCH_MEM_LINES` (`200000,1000000,10000000`; each input is generated into the
//!   bench's temporary folder, and a size its disk cannot hold is skipped),
//!   `SIZEUP_BENCH_RESUME_LINES` (`1000000,10000000`: `kill -9` near half, then `--resume`),
//!   `SIZEUP_BENCH_STREAMS` (10000),
//!   `SIZEUP_BENCH_REPEATS` (client-ceiling repetitions, medians reported: 5).
//! - `SIZEUP_BENCH_OHA=PATH`: the `oha` binary; else `oha` on PATH, else
//!   `$SIZEUP_BENCH_CACHE/bin/oha` (default cache `~/.cache/sizeup-bench`). Install it with
//!   `cargo install oha --locked --root ~/.cache/sizeup-bench` (a long build), or set
//!   `SIZEUP_BENCH_INSTALL_OHA=1` to let the bench do that.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use sizeup::client::sse::{SseDecoder, SseEvent};
use sizeup::sim::gpu::{expected_rpm, GpuParams};
use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_sizeup");
const ALL: [&str; 8] = [
    "makespan", "ceiling", "memory", "resume", "sizing", "fleet", "auto", "capacity",
];

fn main() {
    // `cargo bench` passes --bench; anything else (`cargo test --all-targets`) must not start a
    // ten-minute benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        println!("e2e: run it with `cargo bench --bench e2e` (skipped)");
        return;
    }
    let cfg = Config::from_env();
    if cfg.wants("capacity") {
        raise_nofile_or_continue(cfg.streams);
    }
    let mut bench = match Bench::new(cfg) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("e2e: cannot start: {e:#}");
            std::process::exit(1);
        }
    };
    let started = Instant::now();
    for name in ALL {
        if !bench.cfg.wants(name) {
            continue;
        }
        eprintln!("e2e: --- {name} (load {:.2}) ---", load1());
        let t = Instant::now();
        let result = match name {
            "makespan" => bench.makespan(),
            "ceiling" => bench.ceiling(),
            "memory" => bench.memory(),
            "resume" => bench.resume(),
            "sizing" => bench.sizing(),
            "fleet" => bench.fleet(),
            "auto" => bench.auto(),
            "capacity" => bench.capacity(),
            _ => unreachable!(),
        };
        if let Err(e) = result {
            eprintln!("e2e: {name} failed: {e:#}");
            bench.rows.push(Row::error(name, &format!("{e:#}")));
        }
        eprintln!("e2e: {name} took {:.0}s", t.elapsed().as_secs_f64());
    }
    bench.finish(started.elapsed());
}

// ---------------------------------------------------------------------------------------------
// Configuration

struct Config {
    quick: bool,
    only: Option<Vec<String>>,
    out: PathBuf,
    makespan_n: usize,
    ceiling_n: usize,
    mem_lines: Vec<usize>,
    resume_lines: Vec<usize>,
    streams: usize,
    repeats: usize,
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

impl Config {
    fn from_env() -> Config {
        let quick = std::env::var("SIZEUP_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let only = std::env::var("SIZEUP_BENCH_ONLY")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.split(',').map(|s| s.trim().to_lowercase()).collect::<Vec<_>>());
        let partial = quick || only.is_some();
        let out = std::env::var_os("SIZEUP_BENCH_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                if partial {
                    std::env::temp_dir().join("sizeup-e2e-RESULTS.md")
                } else {
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/RESULTS.md")
                }
            });
        let lines_list = |name: &str, quick_v: Vec<usize>, full: Vec<usize>| {
            std::env::var(name)
                .ok()
                .map(|v| {
                    v.split(',')
                        .filter_map(|s| s.trim().replace('_', "").parse().ok())
                        .collect::<Vec<usize>>()
                })
                .filter(|v| !v.is_empty())
                .unwrap_or(if quick { quick_v } else { full })
        };
        let mem_lines = lines_list(
            "SIZEUP_BENCH_MEM_LINES",
            vec![20_000, 100_000],
            vec![200_000, 1_000_000, 10_000_000],
        );
        let resume_lines = lines_list(
            "SIZEUP_BENCH_RESUME_LINES",
            vec![20_000, 200_000],
            vec![1_000_000, 10_000_000],
        );
        Config {
            quick,
            only,
            out,
            makespan_n: env_num("SIZEUP_BENCH_N", if quick { 480 } else { 2000 }),
            ceiling_n: env_num("SIZEUP_BENCH_CEILING_N", if quick { 20_000 } else { 60_000 }),
            mem_lines,
            resume_lines,
            streams: env_num("SIZEUP_BENCH_STREAMS", if quick { 2000 } else { 10_000 }),
            repeats: env_num("SIZEUP_BENCH_REPEATS", if quick { 1 } else { 5 }).max(1),
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.iter().any(|x| x == name))
    }
}

/// 10,000 streams need 10,000 sockets in this process (and as many in the simulator). When
/// the soft limit is lower than that but the hard one allows it, run again under
/// `ulimit -n <hard>` (Rust's std cannot call setrlimit, and this crate forbids unsafe code).
fn raise_nofile_or_continue(streams: usize) {
    let need = streams as u64 + 512;
    let Some((soft, hard)) = nofile_limits() else { return };
    if soft >= need || std::env::var_os("SIZEUP_BENCH_REEXEC").is_some() {
        return;
    }
    if hard < need {
        eprintln!("e2e: open-file limit {soft}/{hard} is below the {need} needed for {streams} streams");
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {hard} && exec \"$0\" \"$@\""))
        .args(&args)
        .env("SIZEUP_BENCH_REEXEC", "1")
        .status();
    match status {
        Ok(s) => std::process::exit(s.code().unwrap_or(1)),
        Err(e) => eprintln!("e2e: could not re-run under ulimit -n {hard}: {e}"),
    }
}

/// (soft, hard) RLIMIT_NOFILE from /proc/self/limits.
fn nofile_limits() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut nums = line["Max open files".len()..].split_whitespace();
    let parse = |s: Option<&str>| -> Option<u64> {
        match s? {
            "unlimited" => Some(u64::MAX),
            v => v.parse().ok(),
        }
    };
    Some((parse(nums.next())?, parse(nums.next())?))
}

// ---------------------------------------------------------------------------------------------
// Machine facts

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn cmd_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// (state, CPU seconds user+system) of a process, from /proc/<pid>/stat. A zombie (exited,
/// not yet reaped) still reports its final CPU times.
fn proc_stat(pid: u32, tck: f64) -> Option<(char, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let state = f.first()?.chars().next()?;
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((state, (ut + st) / tck))
}

/// Peak resident memory (VmHWM) of a live process, KiB.
fn proc_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What a finished child cost.
struct ChildStats {
    status: ExitStatus,
    wall_s: f64,
    cpu_s: f64,
    peak_rss_mib: f64,
}

/// Runs a command to the end, sampling its peak RSS every 10 ms and reading its final CPU
/// time from /proc while it is a zombie (before reaping it).
fn run_measured(cmd: &mut Command, tck: f64) -> Result<ChildStats> {
    let start = Instant::now();
    let mut child = cmd.spawn().context("spawn")?;
    let pid = child.id();
    let (mut hwm, mut cpu) = (0u64, 0.0f64);
    loop {
        if let Some(h) = proc_hwm_kib(pid) {
            hwm = hwm.max(h);
        }
        match proc_stat(pid, tck) {
            Some((state, c)) => {
                cpu = c;
                if state == 'Z' || state == 'X' {
                    break;
                }
            }
            None => break,
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = child.wait()?;
    Ok(ChildStats {
        status,
        wall_s: start.elapsed().as_secs_f64(),
        cpu_s: cpu,
        peak_rss_mib: hwm as f64 / 1024.0,
    })
}

// ---------------------------------------------------------------------------------------------
// The simulator as a separate process

struct Sim {
    child: Child,
    url: String,
    pid: u32,
}

impl Sim {
    fn start(rt: &tokio::runtime::Runtime, log: &Path, args: &[String]) -> Result<Sim> {
        let mut last = None;
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let log_file = std::fs::File::create(log)?;
            let child = Command::new(EXE)
                .arg("sim")
                .arg("--addr")
                .arg(format!("127.0.0.1:{port}"))
                .args(args)
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .context("spawn sizeup sim")?;
            let pid = child.id();
            let mut sim = Sim {
                child,
                url: format!("http://127.0.0.1:{port}"),
                pid,
            };
            match rt.block_on(wait_health(&sim.url)) {
                Ok(()) => return Ok(sim),
                Err(e) => {
                    last = Some(e);
                    sim.stop();
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("sim did not start")))
            .with_context(|| format!("sizeup sim did not come up (log: {})", log.display()))
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn wait_health(base: &str) -> Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("{base}/health")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("no answer on {base}/health within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The simulator's flags for the mixed jobs: 8 slots, 20 ms for a 20-word prompt, 0.5 ms per
/// output token.
const MIXED_SIM: &[&str] = &[
    "--batch",
    "8",
    "--decode-step-ms",
    "0.5",
    "--decode-step-ms-per-seq",
    "0",
    "--prefill-ms-per-1k",
    "1000",
];

/// A shuffled job of 20-word prompts whose max_tokens are drawn from {32, 64, 128, 256, 512};
/// returns the mean max_tokens.
fn write_mixed(path: &Path, lines: u64) -> Result<f64> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    let mut z = 7u64;
    let mut tokens_sum = 0u64;
    let prompt = vec!["word"; 20].join(" ");
    for i in 0..lines {
        z = z.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let t = [32u64, 64, 128, 256, 512][((z >> 33) % 5) as usize];
        tokens_sum += t;
        writeln!(
            w,
            r#"{{"custom_id":"m-{i}","method":"POST","url":"/v1/completions","body":{{"prompt":"{prompt}","max_tokens":{t}}}}}"#
        )?;
    }
    w.flush()?;
    Ok(tokens_sum as f64 / lines.max(1) as f64)
}

fn sim_args(gpus: usize, batch: usize, step_ms: f64, jitter: f64, tokens: u32) -> Vec<String> {
    [
        "--gpus",
        &gpus.to_string(),
        "--batch",
        &batch.to_string(),
        "--decode-step-ms",
        &step_ms.to_string(),
        "--decode-step-ms-per-seq",
        "0",
        "--prefill-ms-per-1k",
        "0",
        "--jitter",
        &jitter.to_string(),
        "--default-max-tokens",
        &tokens.to_string(),
        "--seed",
        "7",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// What the client-ceiling rows must reach.
const CEILING_TARGET: &str = ">= 100% of oha, CPU/req <= 1.5x oha's";

/// The memory rows' target: 48 MiB up to a million lines, 64 MiB beyond, where it must also
/// stay within 1.5x of the first (smallest) row.
fn mem_target(n: usize, is_first: bool) -> &'static str {
    match (n > 1_000_000, is_first) {
        (false, _) => "<= 48 MiB",
        (true, true) => "<= 64 MiB",
        (true, false) => "<= 64 MiB and flat (<= 1.5x)",
    }
}

/// Free bytes on the file system holding `dir` (`df`), if it can be read.
fn free_bytes(dir: &Path) -> Option<u64> {
    let out = Command::new("df").arg("-Pk").arg(dir).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let kib: u64 = text.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib * 1024)
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// N OpenAI-batch lines, each a tiny completion request for `max_tokens` tokens.
fn write_batch(path: &Path, n: usize, max_tokens: u32) -> Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    for i in 0..n {
        writeln!(
            w,
            "{{\"custom_id\":\"req-{i:08}\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{{\"prompt\":\"say hello to number {i}\",\"max_tokens\":{max_tokens}}}}}"
        )?;
    }
    w.flush()?;
    Ok(())
}

/// Newline-terminated lines of a file, streamed.
fn count_lines(path: &Path) -> Result<u64> {
    use std::io::BufRead;
    let mut r = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut n = 0u64;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(n);
        }
        n += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        let len = buf.len();
        r.consume(len);
    }
}

/// How many of the ids `req-00000000`.. of a `write_batch` job have exactly one successful
/// record in `out`, and how many have more (one byte per id, streamed).
fn successes_per_id(out: &Path, n: usize) -> Result<(u64, u64)> {
    use std::io::BufRead;
    let mut seen = vec![0u8; n];
    let r = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(out)?);
    for line in r.lines() {
        let line = line?;
        let v: Value = serde_json::from_str(&line).context("an output line that does not parse")?;
        if !(v["error"].is_null() && v["response"]["status_code"] == 200) {
            continue;
        }
        let id = v["custom_id"].as_str().unwrap_or_default();
        let i: usize = id.trim_start_matches("req-").parse().context("an unknown id")?;
        seen[i] = seen[i].saturating_add(1);
    }
    Ok((
        seen.iter().filter(|&&c| c == 1).count() as u64,
        seen.iter().filter(|&&c| c > 1).count() as u64,
    ))
}

// ---------------------------------------------------------------------------------------------
// The report

#[derive(Clone, Copy, PartialEq, Eq)]
enum Met {
    Yes,
    No,
    Info,
    NotRun,
}

impl Met {
    fn cell(self) -> &'static str {
        match self {
            Met::Yes => "met",
            Met::No => "**not met**",
            Met::Info => "-",
            Met::NotRun => "not run",
        }
    }
}

struct Row {
    figure: String,
    measured: String,
    reference: String,
    ratio: String,
    target: String,
    met: Met,
    load: f64,
}

impl Row {
    fn error(name: &str, msg: &str) -> Row {
        Row {
            figure: format!("{name}: failed"),
            measured: msg.chars().take(160).collect::<String>().replace('|', "/"),
            reference: String::new(),
            ratio: String::new(),
            target: String::new(),
            met: Met::NotRun,
            load: load1(),
        }
    }
}

struct Bench {
    cfg: Config,
    rt: tokio::runtime::Runtime,
    tmp: tempfile::TempDir,
    tck: f64,
    rows: Vec<Row>,
    notes: Vec<String>,
    load_start: String,
    seq: usize,
}

fn met(ok: bool) -> Met {
    if ok {
        Met::Yes
    } else {
        Met::No
    }
}

/// The median of `values` (the mean of the middle two for an even count); NaN for none.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn fmt_int(v: f64) -> String {
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

impl Bench {
    fn new(cfg: Config) -> Result<Bench> {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let tmp = tempfile::Builder::new().prefix("sizeup-e2e-").tempdir()?;
        Ok(Bench {
            cfg,
            rt,
            tmp,
            tck: clk_tck(),
            rows: Vec::new(),
            notes: Vec::new(),
            load_start: loadavg(),
            seq: 0,
        })
    }

    fn path(&mut self, name: &str) -> PathBuf {
        self.seq += 1;
        self.tmp.path().join(format!("{:02}-{name}", self.seq))
    }

    fn sim(&mut self, args: &[String]) -> Result<Sim> {
        let log = self.path("sim.log");
        Sim::start(&self.rt, &log, args)
    }

    fn row(&mut self, figure: &str, measured: String, reference: String, ratio: String, target: &str, m: Met) {
        let load = load1();
        eprintln!(
            "e2e:   {figure}: {measured} | {reference} | {ratio} | {target} | {} | load {load:.2}",
            m.cell()
        );
        self.rows.push(Row {
            figure: figure.into(),
            measured,
            reference,
            ratio,
            target: target.into(),
            met: m,
            load,
        });
    }

    /// Runs `sizeup` with `args` (stderr to a log), failing with the log's path.
    fn sizeup(&mut self, args: &[&str], what: &str) -> Result<ChildStats> {
        let log = self.path(&format!("{}.log", what.replace(' ', "-")));
        let mut cmd = Command::new(EXE);
        cmd.arg("--quiet")
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("SIZEUP_API_KEY")
            .env_remove("OPENAI_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        let stats = run_measured(&mut cmd, self.tck)?;
        if !stats.status.success() {
            bail!("{what} exited with {} (log {})", stats.status, log.display());
        }
        Ok(stats)
    }

    /// `sizeup run` against `url`; returns run-summary.json and what the process cost.
    fn sizeup_run(&mut self, url: &str, input: &Path, concurrency: usize) -> Result<(Value, ChildStats)> {
        let out = self.path("output.jsonl");
        let summary = self.path("run-summary.json");
        let (input, out_s, summary_s) = (
            input.display().to_string(),
            out.display().to_string(),
            summary.display().to_string(),
        );
        let concurrency = concurrency.to_string();
        let args = [
            "run",
            "--endpoint",
            url,
            "--input",
            &input,
            "--output",
            &out_s,
            "--summary",
            &summary_s,
            "--concurrency",
            &concurrency,
        ];
        let stats = self.sizeup(&args, "sizeup run")?;
        let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary)?)?;
        let _ = std::fs::remove_file(&out);
        Ok((s, stats))
    }

    // -----------------------------------------------------------------------------------------
    // 1. Makespan against the physical limit, and against naive waves

    fn makespan(&mut self) -> Result<()> {
        let (g, b, svc_s) = (2usize, 8usize, 0.050f64);
        let n = self.cfg.makespan_n;
        let input = self.path("makespan.jsonl");
        write_batch(&input, n, 1)?;
        let limit = n as f64 / (g * b) as f64 * svc_s;
        for (jitter, label, target) in [(0.0, "fixed 50 ms", 1.05), (0.5, "50 ms ±50% jitter", 1.12)] {
            let args = sim_args(g, b, svc_s * 1000.0, jitter, 1);
            let sim = self.sim(&args)?;
            let (summary, _) = self.sizeup_run(&sim.url, &input, g * b)?;
            drop(sim);
            let ok = summary["requests_ok"].as_u64().unwrap_or(0);
            let wall = summary["wall_time_s"].as_f64().unwrap_or(f64::NAN);
            if ok != n as u64 {
                bail!("sizeup run answered {ok} of {n} requests");
            }
            let ratio = wall / limit;
            self.row(
                &format!("Makespan, {n} req on {g}x{b}, {label}: `sizeup run -c {}`", g * b),
                format!("{wall:.2} s"),
                format!("limit {limit:.2} s"),
                format!("{ratio:.3}x"),
                &format!("<= {target:.2}x"),
                met(ratio <= target),
            );
            let sim = self.sim(&args)?;
            let waves = self.rt.block_on(waves(&sim.url, n, g * b))?;
            drop(sim);
            let wr = waves / limit;
            self.row(
                &format!("Makespan, same, naive waves of {} (contrast)", g * b),
                format!("{waves:.2} s"),
                format!("limit {limit:.2} s"),
                format!("{wr:.3}x"),
                "(none)",
                Met::Info,
            );
        }
        self.notes.push(format!(
            "Makespan: limit = N / (G·B) x mean service = {n} / {} x {:.0} ms. `sizeup run` \
             wall time is run-summary.json `wall_time_s` (first send to last answer); the waves \
             are timed the same way by the bench's own reqwest client (send {}, wait for all, \
             send the next {}). Both against a fresh `sizeup sim` with the same seed.",
            g * b,
            svc_s * 1000.0,
            g * b,
            g * b
        ));
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // 2. Client ceiling against oha

    fn ceiling(&mut self) -> Result<()> {
        let n = self.cfg.ceiling_n;
        let oha = find_oha();
        let input = self.path("ceiling.jsonl");
        write_batch(&input, n, 1)?;
        let body = r#"{"prompt":"say hello to number 1","max_tokens":1,"model":"sizeup-sim"}"#;
        let args = sim_args(1, 4096, 0.001, 0.0, 1);
        let oha_version = oha
            .as_ref()
            .and_then(|p| cmd_line(p.to_str()?, &["--version"]))
            .unwrap_or_default();
        for c in [64usize, 256, 1024] {
            // Per repetition: sizeup's (rate, CPU µs per request, simulator CPU µs per request),
            // oha's (rate, CPU µs per request) when it ran.
            type Rep = ((f64, f64, f64), Option<(f64, f64)>);
            let mut reps: Vec<Rep> = Vec::new();
            for rep in 0..self.cfg.repeats {
                // One simulator for both clients of a repetition: same server, same settings.
                // Who goes first alternates, so neither always meets the fresher server.
                let sim = self.sim(&args)?;
                let (mut mine, mut theirs) = (None, None);
                for oha_turn in [rep % 2 == 1, rep % 2 == 0] {
                    if !oha_turn {
                        let sim_cpu0 = proc_stat(sim.pid, self.tck).map_or(0.0, |s| s.1);
                        let (summary, stats) = self.sizeup_run(&sim.url, &input, c)?;
                        let sim_cpu = proc_stat(sim.pid, self.tck).map_or(0.0, |s| s.1) - sim_cpu0;
                        let ok = summary["requests_ok"].as_u64().unwrap_or(0) as f64;
                        let wall = summary["wall_time_s"].as_f64().unwrap_or(f64::NAN);
                        mine = Some((ok / wall, stats.cpu_s / n as f64 * 1e6, sim_cpu / n as f64 * 1e6));
                    } else if let Some(oha) = &oha {
                        match self.run_oha(oha, &sim.url, n, c, body) {
                            Ok(r) => theirs = Some(r),
                            Err(e) => self.notes.push(format!("oha at -c {c} failed: {e:#}")),
                        }
                    }
                }
                reps.push((mine.ok_or_else(|| anyhow!("no run"))?, theirs));
            }
            let figure = format!("Client ceiling, zero-service sim, `sizeup run -c {c}`");
            let (rate, cpu_us, sim_us) = (
                median(reps.iter().map(|r| r.0 .0)),
                median(reps.iter().map(|r| r.0 .1)),
                median(reps.iter().map(|r| r.0 .2)),
            );
            let measured = format!("{} req/s, {cpu_us:.0} µs CPU/req", fmt_int(rate));
            // Each repetition is a pair (one server, back to back): the ratio is taken within the
            // pair, and the median of the pairs is the figure. The best of each client's own
            // runs, as before, compared two different moments of a machine whose speed moves
            // by ±10% between runs, and one lucky run decided it.
            let pairs: Vec<(f64, f64)> = reps
                .iter()
                .filter_map(|(s, o)| o.map(|o| (s.0 / o.0, s.1 / o.1)))
                .collect();
            if pairs.is_empty() {
                self.row(
                    &figure,
                    measured,
                    "oha not available".into(),
                    String::new(),
                    CEILING_TARGET,
                    Met::NotRun,
                );
            } else {
                let ratio = median(pairs.iter().map(|p| p.0));
                let cpu_ratio = median(pairs.iter().map(|p| p.1));
                let (orate, ocpu) = (
                    median(reps.iter().filter_map(|r| r.1.map(|o| o.0))),
                    median(reps.iter().filter_map(|r| r.1.map(|o| o.1))),
                );
                self.row(
                    &figure,
                    measured,
                    format!("oha {} req/s, {ocpu:.0} µs CPU/req", fmt_int(orate)),
                    format!("{:.1}%, CPU {cpu_ratio:.2}x", ratio * 100.0),
                    CEILING_TARGET,
                    met(ratio >= 1.0 && cpu_ratio <= 1.5),
                );
                let each: Vec<String> = pairs
                    .iter()
                    .map(|(r, cpu)| format!("{:.0}% ({cpu:.2}x)", r * 100.0))
                    .collect();
                self.notes.push(format!(
                    "Client ceiling -c {c}, each repetition's rate ratio (CPU ratio), sizeup first in \
                     the 1st, 3rd, ...: {}.",
                    each.join(", ")
                ));
            }
            self.notes.push(format!(
                "Client ceiling -c {c}: the simulator spent {sim_us:.0} µs CPU per request \
                 in the sizeup run (client and server share the machine's cores)."
            ));
        }
        self.notes.push(format!(
            "Client ceiling: {n} non-streamed 1-token requests per client in each of {} \
             repetitions; a repetition runs sizeup and oha back to back (who goes first \
             alternates) against one fresh `sizeup sim --gpus 1 --batch 4096 \
             --decode-step-ms 0.001`. The figures are medians over the repetitions; the ratios \
             are the medians of the ratios within each repetition. sizeup's rate is requests_ok / \
             wall_time_s; its CPU per request is the whole process (user+system from \
             /proc/<pid>/stat, input validation, output writing and start-up included) over N. \
             oha: {} with `-n {n} -c C -m POST -H 'content-type: application/json' -d BODY`; \
             its CPU per request is measured the same way.",
            self.cfg.repeats,
            if oha_version.is_empty() {
                "not found (see the knobs at the top of benches/e2e.rs)".to_string()
            } else {
                format!("`{oha_version}`")
            }
        ));
        Ok(())
    }

    /// Requests per second oha reached, and its CPU per request in µs.
    fn run_oha(&mut self, oha: &Path, base: &str, n: usize, c: usize, body: &str) -> Result<(f64, f64)> {
        let out = self.path("oha.json");
        let mut cmd = Command::new(oha);
        cmd.args(["-n", &n.to_string(), "-c", &c.to_string(), "-m", "POST"])
            .args(["-H", "content-type: application/json", "-d", body])
            .args(["--no-tui", "--output-format", "json"])
            .arg(format!("{base}/v1/completions"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out)?)
            .stderr(Stdio::null());
        let stats = run_measured(&mut cmd, self.tck)?;
        if !stats.status.success() {
            bail!("oha exited with {}", stats.status);
        }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
        let rate = v
            .pointer("/summary/requestsPerSec")
            .and_then(Value::as_f64)
            .ok_or_else(|| anyhow!("no summary.requestsPerSec in oha's JSON"))?;
        let success = v.pointer("/summary/successRate").and_then(Value::as_f64).unwrap_or(0.0);
        let ok200 = v
            .pointer("/statusCodeDistribution/200")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if success < 1.0 || ok200 != n as u64 {
            bail!("oha: success rate {success}, {ok200} of {n} answered 200");
        }
        Ok((rate, stats.cpu_s / n as f64 * 1e6))
    }

    // -----------------------------------------------------------------------------------------
    // 3. Memory over input size

    fn memory(&mut self) -> Result<()> {
        let args = sim_args(1, 4096, 0.001, 0.0, 1);
        let lines = self.cfg.mem_lines.clone();
        let mut peaks = Vec::new();
        for &n in &lines {
            let figure = format!("Peak RSS of `sizeup run -c 256`, {} lines", fmt_int(n as f64));
            // The input (about 128 bytes a line) and the output (about 330) are on disk at once.
            let need = n as u64 * 460 + (64 << 20);
            match free_bytes(self.tmp.path()) {
                Some(free) if free < need => {
                    self.row(
                        &figure,
                        "skipped".into(),
                        format!(
                            "needs {} MiB free in {}, {} MiB there",
                            need >> 20,
                            self.tmp.path().display(),
                            free >> 20
                        ),
                        String::new(),
                        mem_target(n, peaks.is_empty()),
                        Met::NotRun,
                    );
                    continue;
                }
                _ => {}
            }
            let input = self.path("memory.jsonl");
            write_batch(&input, n, 1)?;
            let size_mib = std::fs::metadata(&input)?.len() as f64 / (1 << 20) as f64;
            let sim = self.sim(&args)?;
            let (summary, stats) = self.sizeup_run(&sim.url, &input, 256)?;
            drop(sim);
            let _ = std::fs::remove_file(&input);
            let ok = summary["requests_ok"].as_u64().unwrap_or(0);
            if ok != n as u64 {
                bail!("sizeup run answered {ok} of {n}");
            }
            let is_first = peaks.is_empty();
            peaks.push((n, stats.peak_rss_mib));
            let (n0, first) = peaks[0];
            let flat = stats.peak_rss_mib / first;
            let cap = if n > 1_000_000 { 64.0 } else { 48.0 };
            self.row(
                &format!("{figure} ({size_mib:.0} MiB input)"),
                format!("{:.1} MiB", stats.peak_rss_mib),
                if is_first {
                    format!("{cap:.0} MiB")
                } else {
                    format!("{first:.1} MiB at {} lines", fmt_int(n0 as f64))
                },
                if is_first {
                    format!("{:.2}x of {cap:.0} MiB", stats.peak_rss_mib / cap)
                } else {
                    format!("{flat:.2}x")
                },
                mem_target(n, is_first),
                met(stats.peak_rss_mib <= cap && (is_first || n <= 1_000_000 || flat <= 1.5)),
            );
            self.notes.push(format!(
                "Memory {} lines: {:.1} s wall for the whole process ({} req/s incl. the \
                 validation pass), {:.1} s CPU.",
                fmt_int(n as f64),
                stats.wall_s,
                fmt_int(n as f64 / stats.wall_s),
                stats.cpu_s
            ));
        }
        self.notes.push(
            "Memory: OpenAI-batch input (distinct custom_ids), zero-service simulator; peak RSS is \
             VmHWM from /proc/<pid>/status sampled every 10 ms until the process exits."
                .into(),
        );
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // 3b. Resume at scale: kill -9 near half, then --resume, in bounded memory, every id once

    fn resume(&mut self) -> Result<()> {
        let args = sim_args(1, 4096, 0.001, 0.0, 1);
        let mut peaks: Vec<(usize, f64)> = Vec::new();
        for n in self.cfg.resume_lines.clone() {
            let figure = format!(
                "Peak RSS of `sizeup run --resume` after `kill -9` near half, {} lines",
                fmt_int(n as f64)
            );
            let need = n as u64 * 460 + (64 << 20);
            if free_bytes(self.tmp.path()).is_some_and(|free| free < need) {
                self.row(
                    &figure,
                    "skipped".into(),
                    format!("needs {} MiB free", need >> 20),
                    String::new(),
                    "<= 64 MiB",
                    Met::NotRun,
                );
                continue;
            }
            let input = self.path("resume.jsonl");
            write_batch(&input, n, 1)?;
            let out = self.path("resume-output.jsonl");
            let summary = self.path("resume-summary.json");
            let sim = self.sim(&args)?;
            let command = |resume: bool, log: &Path| -> Result<Command> {
                let mut cmd = Command::new(EXE);
                cmd.args([
                    "--quiet",
                    "run",
                    "--endpoint",
                    &sim.url,
                    "--concurrency",
                    "64",
                    "--input",
                ])
                .arg(&input)
                .arg("--output")
                .arg(&out)
                .arg("--summary")
                .arg(&summary)
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log)?);
                if resume {
                    cmd.arg("--resume");
                }
                Ok(cmd)
            };
            // The first run is killed once its output holds about half the lines (by size:
            // an output line of this job is about 330 bytes, measured from its first lines).
            let mut first = command(false, &self.path("resume-first.log"))?.spawn()?;
            let started = Instant::now();
            let mut per_line = None;
            loop {
                std::thread::sleep(Duration::from_millis(20));
                if first.try_wait()?.is_some() {
                    bail!("the first run ended before it was killed");
                }
                let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
                if per_line.is_none() && size > 1 << 20 {
                    let text = std::fs::read(&out)?;
                    let whole = text.iter().filter(|&&b| b == b'\n').count().max(1);
                    per_line = Some(text.len() as f64 / whole as f64);
                }
                if per_line.is_some_and(|b| size as f64 >= b * n as f64 / 2.0) {
                    break;
                }
                if started.elapsed() > Duration::from_secs(1800) {
                    bail!("the first run did not reach half in 30 min");
                }
            }
            first.kill()?; // SIGKILL
            first.wait()?;
            let killed_at = count_lines(&out)?;
            let log = self.path("resume.log");
            let stats = run_measured(&mut command(true, &log)?, self.tck)?;
            if !stats.status.success() {
                bail!(
                    "sizeup run --resume exited with {} (log: {})",
                    stats.status,
                    log.display()
                );
            }
            let served = self
                .rt
                .block_on(sim_metric(&sim.url, "sizeup_sim_requests_total{outcome=\"ok\"}"))?;
            drop(sim);
            let (once, twice) = successes_per_id(&out, n)?;
            // `sizeup merge --check` of the same output verifies the job in bounded memory too.
            let merge_log = self.path("merge.log");
            let mut merge = Command::new(EXE);
            merge
                .args(["--quiet", "merge", "--check", "--input"])
                .arg(&input)
                .arg(&out)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&merge_log)?);
            let merged = run_measured(&mut merge, self.tck)?;
            let _ = std::fs::remove_file(&input);
            let _ = std::fs::remove_file(&out);
            if once != n as u64 || twice != 0 {
                bail!("after resume: {once} of {n} ids answered once, {twice} more than once");
            }
            let is_first = peaks.is_empty();
            peaks.push((n, stats.peak_rss_mib));
            let (n0, first_peak) = peaks[0];
            let flat = stats.peak_rss_mib / first_peak;
            self.row(
                &format!("{figure} (killed at {})", fmt_int(killed_at as f64)),
                format!("{:.1} MiB", stats.peak_rss_mib),
                if is_first {
                    "64 MiB".into()
                } else {
                    format!("{first_peak:.1} MiB at {} lines", fmt_int(n0 as f64))
                },
                if is_first {
                    format!("{:.2}x of 64 MiB", stats.peak_rss_mib / 64.0)
                } else {
                    format!("{flat:.2}x")
                },
                if is_first {
                    "<= 64 MiB"
                } else {
                    "<= 64 MiB and flat (<= 1.5x)"
                },
                met(stats.peak_rss_mib <= 64.0 && (is_first || flat <= 1.5)),
            );
            self.row(
                &format!(
                    "Peak RSS of `sizeup merge --check` of that job, {} lines",
                    fmt_int(n as f64)
                ),
                format!("{:.1} MiB", merged.peak_rss_mib),
                "64 MiB".into(),
                format!(
                    "{:.2}x of 64 MiB (exit {}, {:.1} s)",
                    merged.peak_rss_mib / 64.0,
                    merged.status.code().unwrap_or(-1),
                    merged.wall_s
                ),
                "<= 64 MiB, exit 0",
                met(merged.peak_rss_mib <= 64.0 && merged.status.success()),
            );
            self.notes.push(format!(
                "Resume {} lines: killed at {} answered; the resuming process took {:.1} s wall, {:.1} s CPU; \
                 every id answered exactly once in the output (checked), the server answered {} requests \
                 ({} beyond the job: the ones in flight at the kill).",
                fmt_int(n as f64),
                fmt_int(killed_at as f64),
                stats.wall_s,
                stats.cpu_s,
                fmt_int(served),
                fmt_int(served - n as f64),
            ));
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // 4. Sizing accuracy: sweep against the formula, and auto's prediction

    fn sizing(&mut self) -> Result<()> {
        let step = 50.0;
        for (g, b, jitter) in [(2usize, 8usize, 0.0f64), (1, 5, 0.5), (3, 4, 0.0)] {
            let sim = self.sim(&sim_args(g, b, step, jitter, 1))?;
            let out = self.path("sweep");
            let (url, out_s) = (sim.url.clone(), out.display().to_string());
            let (gpus, max_c) = (g.to_string(), (4 * g * b).to_string());
            let args = [
                "sweep",
                "--endpoint",
                &url,
                "--gpus",
                &gpus,
                "--concurrency",
                "auto",
                "--max-concurrency",
                &max_c,
                "--warmup",
                "1s",
                "--max-duration",
                "20s",
                "--prompt-tokens",
                "8",
                "--max-tokens",
                "1",
                "--out",
                &out_s,
            ];
            let stats = self.sizeup(&args, &format!("sweep {g}x{b}"))?;
            drop(sim);
            let s: Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json"))?)?;
            let knee_c = s.pointer("/knee/concurrency").and_then(Value::as_u64).unwrap_or(0) as usize;
            let knee_rpm_gpu = s
                .pointer("/knee/rpm_per_gpu")
                .and_then(Value::as_f64)
                .unwrap_or(f64::NAN);
            let levels: Vec<String> = s["levels"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(|x| x["concurrency"].as_u64())
                        .map(|c| c.to_string())
                        .collect()
                })
                .unwrap_or_default();
            let p = GpuParams {
                batch: b,
                prefill_ms_per_1k: 0.0,
                decode_step_ms: step,
                decode_step_ms_per_seq: 0.0,
                prefix_cache_tokens: 0,
            };
            let want = expected_rpm(&p, g, g * b, 8, 1) / g as f64;
            let err = knee_rpm_gpu / want - 1.0;
            let shape = format!(
                "{g}x{b}, {step:.0} ms{}",
                if jitter > 0.0 {
                    format!(" ±{:.0}%", jitter * 100.0)
                } else {
                    String::new()
                }
            );
            self.row(
                &format!("Sweep {shape}: RPM per GPU at the knee"),
                format!("{} RPM/GPU", fmt_int(knee_rpm_gpu)),
                format!("formula {} RPM/GPU", fmt_int(want)),
                format!("{:+.1}%", err * 100.0),
                "±5%",
                met(err.abs() <= 0.05),
            );
            self.row(
                &format!("Sweep {shape}: knee concurrency"),
                format!("{knee_c}"),
                format!("G·B = {}", g * b),
                if knee_c == g * b {
                    "exact".into()
                } else {
                    format!("{:+}", knee_c as i64 - (g * b) as i64)
                },
                "exact",
                met(knee_c == g * b),
            );
            self.notes.push(format!(
                "Sweep {shape}: levels {} measured in {:.0} s.",
                levels.join(","),
                stats.wall_s
            ));
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // 4b. Sizing a fleet: a mixed-length job's plan and run, and the GPU count over repeats

    fn fleet(&mut self) -> Result<()> {
        // A shuffled job of max_tokens drawn from {32..512} on 2 GPUs x 8 slots, service
        // 20 ms (20 prompt words at 1 ms each) + 0.5 ms per output token: truth 8 / E[service].
        let lines = if self.cfg.quick { 4_000 } else { 20_000 };
        let input = self.path("mixed.jsonl");
        let mean_service_ms = 20.0 + 0.5 * write_mixed(&input, lines)?;
        let truth = 60_000.0 * 8.0 / mean_service_ms;
        let mixed_sim: Vec<String> = ["--gpus", "2"]
            .iter()
            .chain(MIXED_SIM)
            .chain(&["--seed", "7"])
            .map(|s| s.to_string())
            .collect();
        let sim = self.sim(&mixed_sim)?;
        let out = self.path("mixed-auto");
        let url = sim.url.clone();
        let (input_s, out_s) = (input.display().to_string(), out.display().to_string());
        let args = [
            "auto",
            "--endpoint",
            &url,
            "--gpus",
            "2",
            "--target-rpm",
            "6000",
            "--yes",
            "--input",
            &input_s,
            "--out",
            &out_s,
        ];
        let stats = self.sizeup(&args, "mixed-auto")?;
        drop(sim);
        let plan: Value = serde_json::from_str(&std::fs::read_to_string(out.join("plan.json"))?)?;
        let run: Value = serde_json::from_str(&std::fs::read_to_string(out.join("run-summary.json"))?)?;
        let sweep: Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json"))?)?;
        let per_gpu = plan["rpm_per_gpu"].as_f64().unwrap_or(f64::NAN);
        let err = per_gpu / truth - 1.0;
        self.row(
            &format!("Mixed job ({lines} lines, max_tokens 32-512) on 2x8: planned RPM per GPU"),
            format!("{} RPM/GPU", fmt_int(per_gpu)),
            format!("truth {} RPM/GPU", fmt_int(truth)),
            format!("{:+.1}%", err * 100.0),
            "±5%",
            met(err.abs() <= 0.05),
        );
        let predicted = run["predicted_duration_s"].as_f64().unwrap_or(f64::NAN);
        let achieved = run["achieved_duration_s"].as_f64().unwrap_or(f64::NAN);
        let derr = achieved / predicted - 1.0;
        self.row(
            "Mixed job on 2x8: the run's duration",
            format!("achieved {achieved:.1} s"),
            format!("predicted {predicted:.1} s"),
            format!("{:+.1}%", derr * 100.0),
            "±7%",
            met(derr.abs() <= 0.07),
        );
        let spent: f64 = sweep["level_spend"]
            .as_array()
            .map(|l| l.iter().filter_map(|x| x["seconds"].as_f64()).sum())
            .unwrap_or(f64::NAN);
        self.notes.push(format!(
            "Mixed job: `sizeup auto --endpoint URL --gpus 2 --target-rpm 6000 --yes` against `sizeup sim {}`; \
             its levels took {spent:.0} s, the whole command {:.0} s; truth = 60,000 x 8 / (20 + 0.5 x mean max_tokens) ms.",
            mixed_sim.join(" "),
            stats.wall_s
        ));

        // The GPU count of one resource over repeated sweeps: 2 GPUs x 4 slots x 50 ms (4,800
        // RPM per GPU), 120,000 requests in 10 minutes (12,000 RPM x 1.10: 3 GPUs, clear of a
        // boundary).
        let repeats = if self.cfg.quick { 2 } else { 5 };
        let mut counts = Vec::new();
        let mut rates = Vec::new();
        for k in 0..repeats {
            let sim = self.sim(&sim_args(2, 4, 50.0, 0.0, 1))?;
            let url = sim.url.clone();
            let dir = self.path(&format!("repeat-{k}"));
            let d = dir.display().to_string();
            let sweep = [
                "sweep",
                "--endpoint",
                &url,
                "--gpus",
                "2",
                "--max-tokens",
                "1",
                "--out",
                &d,
            ];
            self.sizeup(&sweep, &format!("repeat-{k}-sweep"))?;
            drop(sim);
            let plan_path = dir.join("plan.json").display().to_string();
            let plan = [
                "plan",
                "--sweep",
                &d,
                "--requests",
                "120000",
                "--deadline",
                "10m",
                "--out",
                &plan_path,
            ];
            self.sizeup(&plan, &format!("repeat-{k}-plan"))?;
            let p: Value = serde_json::from_str(&std::fs::read_to_string(&plan_path)?)?;
            counts.push(p["gpus"].as_u64().unwrap_or(0));
            rates.push(p["rpm_per_gpu"].as_f64().unwrap_or(f64::NAN));
        }
        let same = counts.iter().all(|&c| c == 3);
        let (lo, hi) = rates
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &r| (a.min(r), b.max(r)));
        let mean = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
        self.row(
            &format!("GPU count over {repeats} sweeps + plans of 2x4, 50 ms (120,000 requests in 10 min)"),
            format!("{counts:?}"),
            "truth 3 GPUs".into(),
            format!(
                "RPM/GPU {}-{} ({:.1}% spread)",
                fmt_int(lo),
                fmt_int(hi),
                (hi - lo) / mean * 100.0
            ),
            "the same count every time",
            met(same),
        );
        self.fleet_pinned()
    }

    /// Behind a router that pins each connection to a replica (as kube-proxy does): the plan
    /// from a 1-GPU sweep against the run on the planned fleet, without and with
    /// `--hold-rate`.
    fn fleet_pinned(&mut self) -> Result<()> {
        let lines = if self.cfg.quick { 10_000 } else { 60_000 };
        let input = self.path("mixed-pinned.jsonl");
        write_mixed(&input, lines)?;
        let input_s = input.display().to_string();
        let mut got = Vec::new();
        for hold in ["off", "on"] {
            let out = self.path(&format!("pinned-{hold}"));
            let out_s = out.display().to_string();
            let flag = format!("--hold-rate={hold}");
            let mut args = vec![
                "auto",
                "--target-rpm",
                "28000",
                "--yes",
                "--input",
                &input_s,
                "--out",
                &out_s,
                &flag,
                "--router",
                "connection",
                "--seed",
                "1",
            ];
            args.extend(MIXED_SIM);
            self.sizeup(&args, &format!("pinned-{hold}"))?;
            let plan: Value = serde_json::from_str(&std::fs::read_to_string(out.join("plan.json"))?)?;
            let run: Value = serde_json::from_str(&std::fs::read_to_string(out.join("run-summary.json"))?)?;
            let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            let share = f(&run, "achieved_rpm") / f(&run, "planned_rpm");
            let p95 = f(&run, "latency_p95_ms") / f(&plan, "expected_latency_p95_ms");
            let held = run["hold"]["max_concurrency"].as_u64();
            got.push((hold, plan["gpus"].as_u64().unwrap_or(0), share, p95, held));
        }
        for (hold, gpus, share, p95, held) in got {
            let (target, m) = if hold == "on" {
                ("≥97% of planned, p95 ≤1.5x", met(share >= 0.97 && p95 <= 1.5))
            } else {
                ("baseline (reported)", Met::Info)
            };
            let reached = held.map_or(String::new(), |c| format!(", up to {c} in flight"));
            self.row(
                &format!("Pinned connections, 1-GPU sweep, run on {gpus} GPUs: --hold-rate={hold}"),
                format!("{:.1}% of planned RPM", share * 100.0),
                format!("p95 {p95:.2}x the plan's{reached}"),
                format!("{share:.3}"),
                target,
                m,
            );
        }
        self.notes.push(format!(
            "Pinned connections: `sizeup auto --input mixed.jsonl ({lines} lines) --target-rpm 28000 --yes --router connection --seed 1 {}` with `--hold-rate=off`, then `on`.",
            MIXED_SIM.join(" ")
        ));
        Ok(())
    }

    fn auto(&mut self) -> Result<()> {
        let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/prompts.jsonl");
        let out = self.path("auto");
        let (input_s, out_s) = (input.display().to_string(), out.display().to_string());
        let args = [
            "auto",
            "--input",
            &input_s,
            "--target-rpm",
            "20000",
            "--yes",
            "--warmup",
            "1s",
            "--max-concurrency",
            "16",
            "--out",
            &out_s,
        ];
        let stats = self.sizeup(&args, "auto")?;
        let s: Value = serde_json::from_str(&std::fs::read_to_string(out.join("run-summary.json"))?)?;
        let predicted = s["predicted_duration_s"]
            .as_f64()
            .ok_or_else(|| anyhow!("no predicted_duration_s"))?;
        let achieved = s["achieved_duration_s"].as_f64().unwrap_or(f64::NAN);
        let err = achieved / predicted - 1.0;
        self.row(
            "`sizeup auto` (README demo: examples/prompts.jsonl, 20,000 RPM): duration",
            format!("achieved {achieved:.2} s"),
            format!("predicted {predicted:.2} s"),
            format!("{:+.1}%", err * 100.0),
            "±8%",
            met(err.abs() <= 0.08),
        );
        self.notes.push(format!(
            "auto: built-in simulator, `--warmup 1s --max-concurrency 16`; {:.0} s in all \
             (sweep, plan and run).",
            stats.wall_s
        ));
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // 5. Simulator capacity: concurrent streaming connections

    fn capacity(&mut self) -> Result<()> {
        let streams = self.cfg.streams;
        let tokens = 30u32;
        let gpus = 10usize;
        let batch = streams.div_ceil(gpus);
        let step_ms = 100.0;
        let sim = self.sim(&sim_args(gpus, batch, step_ms, 0.0, tokens))?;
        let url = sim.url.clone();
        let (report, took) = self.rt.block_on(async {
            let t = Instant::now();
            let r = open_streams(&url, streams, tokens).await;
            (r, t.elapsed().as_secs_f64())
        });
        let report = report?;
        let max_in_flight = self
            .rt
            .block_on(sim_metric(&url, "sizeup_sim_requests_in_flight_max"))?;
        drop(sim);
        let all_ok = report.complete == streams && max_in_flight as usize >= streams;
        let limits = nofile_limits().map_or("?".into(), |(s, h)| format!("{s}/{h}"));
        self.row(
            &format!(
                "Sim capacity: {} concurrent streams ({gpus}x{batch}, {tokens} tokens)",
                fmt_int(streams as f64)
            ),
            format!(
                "{} complete, {} at once",
                fmt_int(report.complete as f64),
                fmt_int(max_in_flight)
            ),
            format!("{} opened", fmt_int(streams as f64)),
            format!("{:.0}%", report.complete as f64 / streams as f64 * 100.0),
            "100%, all at once, no errors",
            met(all_ok),
        );
        let mut note = format!(
            "Capacity: {} streams opened at once by the bench (reqwest, one connection each), \
             each `stream: true` with usage, {tokens} tokens at {step_ms:.0} ms per step; a \
             stream counts as complete with status 200, {tokens} non-empty token events, usage \
             completion_tokens = {tokens} and `[DONE]`. All done in {took:.1} s (ideal {:.1} s). \
             'at once' is the simulator's own `sizeup_sim_requests_in_flight_max`. Open-file \
             limit (soft/hard) {limits}: the bench and the simulator are separate processes, \
             each needing one descriptor per stream.",
            fmt_int(streams as f64),
            f64::from(tokens) * step_ms / 1000.0
        );
        if !report.errors.is_empty() {
            let _ = write!(note, " Errors: {}.", report.errors.join("; "));
        }
        self.notes.push(note);
        Ok(())
    }

    // -----------------------------------------------------------------------------------------

    fn finish(&mut self, took: Duration) {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let commit = cmd_line(
            "git",
            &["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"],
        )
        .unwrap_or_default();
        let dirty = cmd_line(
            "git",
            &[
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "status",
                "--porcelain",
                "--",
                "src",
                "Cargo.toml",
            ],
        )
        .is_some_and(|s| !s.is_empty());
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| "?".into());
        let mut md = String::new();
        let _ = writeln!(md, "# sizeup end-to-end benchmark results\n");
        let _ = writeln!(
            md,
            "Made by `cargo bench --bench e2e`{} on {date}: {cores} cores ({cpu}), load average \
             {} at the start and {} at the end, {:.0} s in all; sizeup {}{}{}. Every ratio is \
             measured against its reference in the same run; the load column is the 1-minute \
             load average when the figure was taken (other work shares this machine). Timing \
             figures are reports, not pass/fail tests.\n",
            if self.cfg.quick {
                " (SIZEUP_BENCH_QUICK=1: reduced sizes)"
            } else {
                ""
            },
            self.load_start,
            loadavg(),
            took.as_secs_f64(),
            env!("CARGO_PKG_VERSION"),
            if commit.is_empty() {
                String::new()
            } else {
                format!(" at {commit}")
            },
            if dirty { " with uncommitted changes in src/" } else { "" },
        );
        let _ = writeln!(
            md,
            "| Figure | Measured | Reference (same run) | Ratio | Target | Status | Load |"
        );
        let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- | --- |");
        for r in &self.rows {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {:.2} |",
                r.figure,
                r.measured,
                r.reference,
                r.ratio,
                r.target,
                r.met.cell(),
                r.load
            );
        }
        let _ = writeln!(md, "\nHow each figure was taken:\n");
        for n in &self.notes {
            let _ = writeln!(md, "- {n}");
        }
        println!("{md}");
        match std::fs::write(&self.cfg.out, &md) {
            Ok(()) => eprintln!("e2e: wrote {}", self.cfg.out.display()),
            Err(e) => eprintln!("e2e: cannot write {}: {e}", self.cfg.out.display()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Network clients written inside the bench

/// The naive method: send `wave` requests, wait for all of them, send the next `wave`.
async fn waves(base: &str, n: usize, wave: usize) -> Result<f64> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(wave)
        .tcp_nodelay(true)
        .build()?;
    let url = format!("{base}/v1/completions");
    let start = Instant::now();
    let mut sent = 0usize;
    while sent < n {
        let end = (sent + wave).min(n);
        let mut set = tokio::task::JoinSet::new();
        for i in sent..end {
            let (http, url) = (http.clone(), url.clone());
            set.spawn(async move {
                let body = format!(r#"{{"prompt":"say hello to number {i}","max_tokens":1,"model":"sizeup-sim"}}"#);
                let r = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = r.status();
                let _ = r.bytes().await?;
                anyhow::ensure!(status.is_success(), "HTTP {status}");
                Ok::<_, anyhow::Error>(())
            });
        }
        sent = end;
        while let Some(r) = set.join_next().await {
            r??;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

struct StreamReport {
    complete: usize,
    errors: Vec<String>,
}

/// Opens `n` streaming requests at once and checks every one to the end.
async fn open_streams(base: &str, n: usize, tokens: u32) -> Result<StreamReport> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(120))
        .build()?;
    let url = Arc::new(format!("{base}/v1/completions"));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let (http, url) = (http.clone(), url.clone());
        set.spawn(async move { one_stream(&http, &url, i, tokens).await });
    }
    let mut complete = 0usize;
    let mut errors: Vec<(String, usize)> = Vec::new();
    while let Some(r) = set.join_next().await {
        match r.map_err(anyhow::Error::from).and_then(|x| x) {
            Ok(()) => complete += 1,
            Err(e) => {
                let msg = format!("{e:#}");
                match errors.iter_mut().find(|(m, _)| *m == msg) {
                    Some((_, c)) => *c += 1,
                    None => errors.push((msg, 1)),
                }
            }
        }
    }
    Ok(StreamReport {
        complete,
        errors: errors.into_iter().map(|(m, c)| format!("{c} x {m}")).collect(),
    })
}

async fn one_stream(http: &reqwest::Client, url: &str, i: usize, tokens: u32) -> Result<()> {
    let body = json!({"model": "sizeup-sim", "prompt": format!("stream number {i}"), "max_tokens": tokens,
        "stream": true, "stream_options": {"include_usage": true}});
    let mut resp = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    anyhow::ensure!(resp.status().as_u16() == 200, "HTTP {}", resp.status());
    let mut dec = SseDecoder::new();
    let mut events = Vec::new();
    let (mut seen, mut usage, mut done) = (0u32, None, false);
    while let Some(chunk) = resp.chunk().await? {
        dec.push(&chunk, &mut events)?;
        for ev in events.drain(..) {
            match ev {
                SseEvent::Done => done = true,
                SseEvent::Data(d) => {
                    let v: Value = serde_json::from_str(&d)?;
                    if v.pointer("/choices/0/text")
                        .and_then(Value::as_str)
                        .is_some_and(|t| !t.is_empty())
                    {
                        seen += 1;
                    }
                    if let Some(u) = v.pointer("/usage/completion_tokens").and_then(Value::as_u64) {
                        usage = Some(u);
                    }
                }
            }
        }
    }
    dec.finish()?;
    anyhow::ensure!(done, "no [DONE]");
    anyhow::ensure!(seen == tokens, "{seen} token events, want {tokens}");
    anyhow::ensure!(usage == Some(u64::from(tokens)), "usage {usage:?}, want {tokens}");
    Ok(())
}

async fn sim_metric(base: &str, name: &str) -> Result<f64> {
    let text = reqwest::get(format!("{base}/metrics")).await?.text().await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().parse().ok()))
        .ok_or_else(|| anyhow!("{name} not in /metrics"))
}

fn find_oha() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SIZEUP_BENCH_OHA") {
        return Some(PathBuf::from(p));
    }
    if cmd_line("oha", &["--version"]).is_some() {
        return Some(PathBuf::from("oha"));
    }
    let cache = std::env::var_os("SIZEUP_BENCH_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sizeup-bench")))?;
    let bin = cache.join("bin/oha");
    if bin.exists() {
        return Some(bin);
    }
    if std::env::var("SIZEUP_BENCH_INSTALL_OHA").is_ok_and(|v| v == "1") {
        eprintln!("e2e: installing oha into {} (a long build)", cache.display());
        let ok = Command::new("cargo")
            .args(["install", "oha", "--locked", "--root"])
            .arg(&cache)
            .status()
            .is_ok_and(|s| s.success());
        if ok && bin.exists() {
            return Some(bin);
        }
    }
    None
}
