//! Shards split a job into disjoint parts that together cover every line (`--shard k/n`, or
//! `auto` from a Kubernetes Indexed Job or a Slurm array), and `merge` puts their outputs back
//! together, naming any id answered twice or missing.

use crate::util::run::{assert_each_once_ok, custom_id, read_records, run_sync, s, u, write_batch};
use crate::util::{batch_file, fast_sim, read_json, sizeup};
use sizeup::sim::SimHandle;
use std::collections::{BTreeMap, BTreeSet};

#[test]
fn shards_are_disjoint_and_cover_every_id() {
    let dir = tempfile::tempdir().unwrap();
    let (input, want) = write_batch(dir.path(), "jobs.jsonl", 101, 1);
    let sim_flags = ["--concurrency", "8", "--decode-step-ms", "1"];
    let mut union: BTreeMap<String, usize> = BTreeMap::new();
    let mut shard1 = BTreeSet::new();
    for k in 0..4u64 {
        let out = dir.path().join(format!("out-{k}.jsonl"));
        let summary = dir.path().join(format!("summary-{k}.json"));
        let shard = format!("{k}/4");
        let mut args = vec![
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--summary",
            s(&summary),
            "--shard",
            &shard,
        ];
        args.extend(sim_flags);
        let r = run_sync(&args, &[]);
        assert_eq!(r.code, Some(0), "shard {shard}: {r:?}");
        let recs = read_records(&out);
        let expect: Vec<String> = (0..101u64).filter(|i| i % 4 == k).map(|i| format!("id-{i}")).collect();
        assert_each_once_ok(&recs, &expect, &format!("shard {shard}"));
        let sm = read_json(&summary);
        assert_eq!(u(&sm, "requests_ok"), expect.len() as u64, "{sm}");
        assert_eq!(u(&sm, "skipped_other_shards"), 101 - expect.len() as u64, "{sm}");
        for r in &recs {
            *union.entry(custom_id(r)).or_insert(0) += 1;
        }
        if k == 1 {
            shard1 = recs.iter().map(custom_id).collect();
        }
    }
    assert!(union.values().all(|&n| n == 1), "shards overlap: {union:?}");
    let all: BTreeSet<&String> = union.keys().collect();
    assert_eq!(
        all,
        want.iter().collect::<BTreeSet<_>>(),
        "union of shards is the whole input"
    );

    // --shard auto from a Kubernetes Indexed Job's environment = --shard 1/4.
    let out = dir.path().join("out-auto.jsonl");
    let mut args = vec!["--input", s(&input), "--output", s(&out), "--shard", "auto"];
    args.extend(sim_flags);
    let r = run_sync(&args, &[("JOB_COMPLETION_INDEX", "1"), ("JOB_COMPLETION_COUNT", "4")]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let auto: BTreeSet<String> = read_records(&out).iter().map(custom_id).collect();
    assert_eq!(
        auto, shard1,
        "--shard auto with JOB_COMPLETION_INDEX=1/COUNT=4 equals --shard 1/4"
    );

    // Slurm array `--array=0-3`: task 1 is shard 1/4.
    let out = dir.path().join("out-slurm.jsonl");
    let mut args = vec!["--input", s(&input), "--output", s(&out), "--shard", "auto"];
    args.extend(sim_flags);
    let array = |id: &'static str| {
        vec![
            ("SLURM_ARRAY_TASK_ID", id),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "3"),
            ("SLURM_ARRAY_TASK_STEP", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]
    };
    let r = run_sync(&args, &array("1"));
    assert_eq!(r.code, Some(0), "{r:?}");
    let slurm: BTreeSet<String> = read_records(&out).iter().map(custom_id).collect();
    assert_eq!(slurm, shard1, "SLURM_ARRAY_TASK_ID=1 of 0-3 is shard 1/4");

    // A re-run of task 1 the Slurm way (`sbatch --array=1`) is an array of one: with
    // `auto/4` it resumes its own shard and sends nothing more; the count from the array
    // alone (1) is refused rather than read as "the whole job".
    let rerun = [
        ("SLURM_ARRAY_TASK_ID", "1"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
        ("SLURM_ARRAY_TASK_MAX", "1"),
        ("SLURM_ARRAY_TASK_STEP", "1"),
        ("SLURM_ARRAY_TASK_COUNT", "1"),
    ];
    let mut resume = vec!["--input", s(&input), "--output", s(&out), "--resume", "--shard"];
    let r = run_sync(&[&resume[..], &["auto"], &sim_flags[..]].concat(), &rerun);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("one-task array"), "{r:?}");
    resume.push("auto/4");
    resume.extend(sim_flags);
    let r = run_sync(&resume, &rerun);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(
        read_records(&out).len(),
        shard1.len(),
        "the re-run sent nothing twice: {r:?}"
    );
    // The layout is recorded beside the output: resuming it as another shard is refused.
    for other in ["0/1", "1/3"] {
        let mut args = vec!["--input", s(&input), "--output", s(&out), "--resume", "--shard", other];
        args.extend(sim_flags);
        let r = run_sync(&args, &[]);
        assert_eq!(r.code, Some(2), "--shard {other}: {r:?}");
        assert!(r.stderr.contains("was written as shard 1/4"), "{r:?}");
    }
    let mut args = vec!["--input", s(&input), "--output", s(&out), "--resume"];
    args.extend(sim_flags);
    assert_eq!(
        run_sync(&args, &[]).code,
        Some(2),
        "unsharded resume of a shard's output"
    );
    assert_eq!(read_records(&out).len(), shard1.len());

    // A stepped array (`--array=0-6:2`) is refused by every task, before anything is sent.
    for id in ["0", "2", "4", "6"] {
        let stepped = [
            ("SLURM_ARRAY_TASK_ID", id),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "6"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        let o = dir.path().join(format!("out-step-{id}.jsonl"));
        for shard in ["auto", "auto/4"] {
            let mut args = vec!["--input", s(&input), "--output", s(&o), "--shard", shard];
            args.extend(sim_flags);
            let r = run_sync(&args, &stepped);
            assert_eq!(r.code, Some(2), "task {id} --shard {shard}: {r:?}");
            assert!(!o.exists(), "task {id}: nothing written");
        }
    }

    // Invalid shards: exit 2, nothing written.
    let bad = dir.path().join("out-bad.jsonl");
    for (shard, env) in [
        ("4/4", vec![]),
        ("1/0", vec![]),
        ("x", vec![]),
        ("auto", vec![]),
        ("auto/0", vec![("JOB_COMPLETION_INDEX", "0")]),
        ("auto/x", vec![("JOB_COMPLETION_INDEX", "0")]),
        ("autox", vec![("JOB_COMPLETION_INDEX", "0")]),
        (
            "auto",
            vec![("JOB_COMPLETION_INDEX", "4"), ("JOB_COMPLETION_COUNT", "4")],
        ),
    ] {
        let mut args = vec!["--input", s(&input), "--output", s(&bad), "--shard", shard];
        args.extend(sim_flags);
        let r = run_sync(&args, &env);
        assert_eq!(r.code, Some(2), "--shard {shard} {env:?}: {r:?}");
        assert!(r.stderr.contains("--shard"), "{r:?}");
        assert!(!bad.exists(), "--shard {shard}: nothing written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_of_shard_outputs_names_a_duplicate_and_a_missing_id() {
    let sim = SimHandle::start(fast_sim(1, 8, 1.0, 0.0)).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let input = batch_file(tmp.path(), 90, 2);
    let parts: Vec<_> = (0..3).map(|k| tmp.path().join(format!("part-{k}.jsonl.gz"))).collect();
    for (k, part) in parts.iter().enumerate() {
        let out = sizeup()
            .args(["run", "--quiet", "--endpoint", &sim.url(), "--concurrency", "8"])
            .args(["--shard", &format!("{k}/3"), "--input"])
            .arg(&input)
            .arg("--output")
            .arg(part)
            .arg("--summary")
            .arg(tmp.path().join(format!("summary-{k}.json")))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let merged = tmp.path().join("merged.jsonl");
    let ok = sizeup()
        .args(["merge", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&merged)
        .args(&parts)
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    let counts: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(
        (counts["input_ids"].as_u64(), counts["answered"].as_u64()),
        (Some(90), Some(90))
    );
    let text = std::fs::read_to_string(&merged).unwrap();
    assert_eq!(text.lines().count(), 90);

    // A shard re-run from scratch sends a line twice; another loses one.
    let lines: Vec<&str> = text.lines().collect();
    let twice = lines[0];
    let twice_id = serde_json::from_str::<serde_json::Value>(twice).unwrap()["custom_id"]
        .as_str()
        .unwrap()
        .to_string();
    let lost_id = serde_json::from_str::<serde_json::Value>(lines[1]).unwrap()["custom_id"]
        .as_str()
        .unwrap()
        .to_string();
    let a = tmp.path().join("a.jsonl");
    let b = tmp.path().join("b.jsonl");
    std::fs::write(&a, lines[2..50].join("\n") + "\n" + twice + "\n").unwrap();
    std::fs::write(&b, twice.to_string() + "\n" + &lines[50..].join("\n") + "\n").unwrap();
    let bad = sizeup()
        .args(["merge", "--check", "--input"])
        .arg(&input)
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "1 answered twice: \"{twice_id}\" ({}:49, {}:1)",
            a.display(),
            b.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("1 missing (no record in any output): \"{lost_id}\"")),
        "{stderr}"
    );
    let counts: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(counts["answered"].as_u64(), Some(88));
    assert!(!tmp.path().join("merged2.jsonl").exists());
    sim.shutdown().await;
}
