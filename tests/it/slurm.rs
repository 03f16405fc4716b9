//! The README's Slurm array on a real one-node Slurm cluster (slurmctld, slurmd and munged from
//! Debian's `slurm-wlm` and `munge`, started by the test in a temporary folder, on free ports):
//! 4 array tasks share one plan (`plan --shards 4`, `--shard auto`); task 2 is cancelled
//! mid-run (`scancel`, SIGTERM: it drains), re-run alone the Slurm way (`sbatch --array=2`),
//! and `sizeup merge --check` then finds every line answered once, while a server started
//! here counts each prompt it answered: none more than once beyond the cancelled task's
//! in-flight requests. A stepped array (`--array=0-6:2`) is refused by every task before it
//! sends. Skipped where Slurm is not installed, except under `CI=true`, where
//! `.ci/run` installs it and its absence is a failure.

use crate::util::{sizeup, sweep_dir};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LINES: usize = 4000;
/// How long the server takes per answer: long enough that a task is still running when it is
/// cancelled, short enough that the whole test stays well under two minutes.
const SERVICE: Duration = Duration::from_millis(40);

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A free local TCP port (bound, then released for the daemon to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The three daemons, killed when the test ends however it ends.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
    daemons: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Jobs first (slurmd's step daemons end with them), then the daemons.
        let _ = self.command("scancel").arg("--user=root").status();
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let host = String::from_utf8(Command::new("hostname").arg("-s").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let key = dir.join("munge.key");
        let random: Vec<u8> = (0..1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        std::fs::write(&key, random).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let socket = dir.join("munge.socket");
        let p = |name: &str| dir.join(name).display().to_string();
        let munged = Command::new("munged")
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--key-file={}", key.display()))
            .arg(format!("--pid-file={}", p("munged.pid")))
            .arg(format!("--log-file={}", p("munged.log")))
            .arg(format!("--seed-file={}", p("munged.seed")))
            .args(["-F", "-f"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start munged");
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            conf: dir.join("slurm.conf"),
            daemons: vec![munged],
        };
        wait_until(Duration::from_secs(10), "munged's socket", || socket.exists());
        for d in ["state", "spool"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let conf = format!(
            "ClusterName=sizeup-test\nSlurmctldHost={host}\nSlurmUser=root\nSlurmdUser=root\n\
             SlurmctldPort={}\nSlurmdPort={}\nAuthType=auth/munge\nAuthInfo=socket={}\n\
             StateSaveLocation={}\nSlurmdSpoolDir={}\nSlurmctldPidFile={}\nSlurmdPidFile={}\n\
             SlurmctldLogFile={}\nSlurmdLogFile={}\nProctrackType=proctrack/linuxproc\n\
             TaskPlugin=task/none\nSwitchType=switch/none\nMpiDefault=none\n\
             SchedulerType=sched/builtin\nSelectType=select/cons_tres\nSelectTypeParameters=CR_Core\n\
             ReturnToService=2\nJobAcctGatherType=jobacct_gather/none\n\
             AccountingStorageType=accounting_storage/none\n\
             NodeName={host} CPUs={cpus} State=UNKNOWN\n\
             PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8\n",
            free_port(),
            free_port(),
            socket.display(),
            p("state"),
            p("spool"),
            p("slurmctld.pid"),
            p("slurmd.pid"),
            p("slurmctld.log"),
            p("slurmd.log"),
        );
        std::fs::write(&cluster.conf, conf).unwrap();
        for daemon in ["slurmctld", "slurmd"] {
            let child = cluster
                .command(daemon)
                .arg("-D")
                .arg("-f")
                .arg(&cluster.conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("start {daemon}: {e}"));
            cluster.daemons.push(child);
        }
        wait_until(Duration::from_secs(30), "the node to be idle", || {
            cluster
                .command("sinfo")
                .args(["-h", "-o", "%T"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
        });
        cluster
    }

    /// A Slurm client or daemon command aimed at this cluster.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf).current_dir(&self.dir);
        c
    }

    /// `sbatch` with `args`; the job id.
    fn sbatch(&self, args: &[&str]) -> String {
        let out = self.command("sbatch").arg("--parsable").args(args).output().unwrap();
        assert!(out.status.success(), "sbatch {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Waits until the job has left the queue (every array task ended).
    fn wait_gone(&self, job: &str, limit: Duration) {
        wait_until(limit, &format!("job {job} to end"), || {
            self.command("squeue")
                .args(["-h", "-j", job])
                .output()
                .is_ok_and(|o| o.status.success() && o.stdout.is_empty())
        });
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for name in ["slurmctld.log", "slurmd.log"] {
            all += &std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        }
        all
    }
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "gave up waiting for {what} after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An OpenAI-style completions server that counts how often it answered each prompt. Each
/// connection has its own thread; the threads end with the test process.
fn counting_server() -> (String, Arc<Mutex<HashMap<String, u32>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let shared = counts.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            let counts = shared.clone();
            std::thread::spawn(move || serve(sock, &counts));
        }
    });
    (url, counts)
}

/// Answers the requests of one kept-alive connection until the client closes it.
fn serve(sock: TcpStream, counts: &Mutex<HashMap<String, u32>>) {
    let mut out = sock.try_clone().unwrap();
    let mut reader = BufReader::new(sock);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        std::thread::sleep(SERVICE);
        let prompt = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["prompt"].as_str().map(str::to_string))
            .unwrap_or_default();
        // Only the job's requests (not a `GET /v1/models` asking for the model's name).
        if !prompt.is_empty() {
            *counts.lock().unwrap().entry(prompt).or_default() += 1;
        }
        let answer = r#"{"id":"c","object":"text_completion","model":"m","choices":[{"index":0,"text":" ok","finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            answer.len()
        );
        if out
            .write_all(head.as_bytes())
            .and_then(|_| out.write_all(answer.as_bytes()))
            .is_err()
        {
            return;
        }
    }
}

fn counts_of(counts: &Mutex<HashMap<String, u32>>) -> HashMap<String, u32> {
    counts.lock().unwrap().clone()
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[test]
fn a_cancelled_array_task_re_run_alone_sends_only_its_own_lines() {
    let missing: Vec<&str> = ["munged", "slurmctld", "slurmd", "sbatch"]
        .into_iter()
        .filter(|p| !installed(p))
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run this test: {missing:?} not installed (.ci/run installs slurm-wlm and munge)"
        );
        eprintln!("skipped: {missing:?} not installed (apt-get install slurm-wlm munge)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cluster = Cluster::start(dir);
    let (url, server_counts) = counting_server();

    // The job: each line's prompt is its id, so the server counts answers per id.
    let input = dir.join("jobs.jsonl");
    let text: String = (0..LINES)
        .map(|i| {
            format!(
                "{{\"custom_id\":\"id-{i}\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{{\"model\":\"m\",\"prompt\":\"id-{i}\",\"max_tokens\":1}}}}\n"
            )
        })
        .collect();
    std::fs::write(&input, text).unwrap();
    // The README's plan step: a plan for 4 shards (32 in flight in all, 8 per task).
    let plan = dir.join("plan.json");
    sizeup()
        .args([
            "plan",
            "--target-rpm",
            "30000",
            "--requests",
            "4000",
            "--shards",
            "4",
            "--sweep",
        ])
        .arg(sweep_dir(dir))
        .arg("--out")
        .arg(&plan)
        .assert()
        .success();

    // The README's job script, word for word but for the paths.
    let bin = assert_cmd::cargo::cargo_bin("sizeup");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let script = dir.join("job.sbatch");
    std::fs::write(
        &script,
        format!(
            "#!/bin/bash\n#SBATCH --array=0-3\n#SBATCH --output={dir}/slurm-%A_%a.log\n\
             unset SIZEUP_API_KEY OPENAI_API_KEY SIZEUP_SHARDS JOB_COMPLETION_INDEX HTTP_PROXY http_proxy\n\
             {bin} run --endpoint {url} --input {input} --plan {plan} --shard auto \\\n\
             --server-metrics off --output {out}/part-$SLURM_ARRAY_TASK_ID.jsonl \\\n\
             --summary {out}/run-summary-$SLURM_ARRAY_TASK_ID.json --resume\n",
            dir = dir.display(),
            bin = bin.display(),
            input = input.display(),
            plan = plan.display(),
            out = out.display(),
        ),
    )
    .unwrap();
    let script = script.to_str().unwrap();

    let job = cluster.sbatch(&[script]);
    let part2 = out.join("part-2.jsonl");
    wait_until(Duration::from_secs(60), "task 2 to answer 100 lines", || {
        count_lines(&part2) >= 100
    });
    let cancel = cluster.command("scancel").arg(format!("{job}_2")).status().unwrap();
    assert!(cancel.success());
    cluster.wait_gone(&job, Duration::from_secs(90));
    let cut = count_lines(&part2);
    assert!(cut < LINES / 4, "task 2 finished before it was cancelled ({cut} lines)");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run-summary-2.json")).unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true, "SIGTERM drained task 2: {summary}");

    // The usual Slurm re-run of one task: SLURM_ARRAY_TASK_COUNT=1 there; the count comes
    // from the plan.
    let rerun = cluster.sbatch(&["--array=2", script]);
    cluster.wait_gone(&rerun, Duration::from_secs(90));
    let logs = || {
        let mut all = cluster.logs();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with("slurm-") {
                all += &std::fs::read_to_string(e.path()).unwrap_or_default();
            }
        }
        all
    };
    let parts: Vec<PathBuf> = (0..4).map(|k| out.join(format!("part-{k}.jsonl"))).collect();
    let merged = sizeup()
        .args(["merge", "--check", "--input"])
        .arg(&input)
        .args(&parts)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&merged.stdout).unwrap_or(Value::Null);
    assert_eq!(merged.status.code(), Some(0), "merge --check: {report}\n{}", logs());
    assert_eq!(report["answered"], LINES, "{report}");
    let records: usize = parts.iter().map(|p| count_lines(p)).sum();
    assert_eq!(records, LINES, "one record per line\n{}", logs());

    // At the server: every id answered, and none twice but for task 2's in-flight requests
    // at the cancel (8); a drain that finished them leaves none.
    let counts = counts_of(&server_counts);
    assert_eq!(counts.len(), LINES, "ids answered at the server");
    let twice = counts.values().filter(|&&n| n > 1).count();
    assert!(twice <= 8, "{twice} ids answered more than once at the server");
    let answered: u32 = counts.values().sum();

    // A stepped array (ids 0, 2, 4, 6) names no shard layout: every task refuses before it
    // sends, none serves half the job.
    let stepped = cluster.sbatch(&["--array=0-6:2", script]);
    cluster.wait_gone(&stepped, Duration::from_secs(90));
    for id in [0, 2, 4, 6] {
        let log = std::fs::read_to_string(dir.join(format!("slurm-{stepped}_{id}.log"))).unwrap_or_default();
        assert!(
            log.contains("error:") && log.contains("step 2"),
            "task {id} of the stepped array: {log}"
        );
    }
    let after: u32 = counts_of(&server_counts).values().sum();
    assert_eq!(after, answered, "the stepped array sent requests");
    eprintln!(
        "slurm: task 2 cut at {cut} lines; server answered {answered} requests for {LINES} lines ({twice} twice)"
    );
}
