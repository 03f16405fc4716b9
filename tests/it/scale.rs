//! Job files at scale: compressed inputs (a truncated one refused before anything is sent)
//! and `sizeup merge` over shard outputs.

use crate::util::{batch_file, fast_sim, sim_metric, sizeup};
use sizeup::sim::SimHandle;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_gzip_input_is_named_and_nothing_is_sent() {
    let sim = SimHandle::start(fast_sim(1, 4, 1.0, 0.0)).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let plain = std::fs::read(batch_file(tmp.path(), 2_000, 2)).unwrap();
    let mut gz = Vec::new();
    sizeup::batch::compress::encode(sizeup::batch::Compression::Gzip, &plain, &mut gz).unwrap();
    gz.truncate(gz.len() * 2 / 3);
    let input = tmp.path().join("jobs.jsonl.gz");
    std::fs::write(&input, gz).unwrap();
    let out = sizeup()
        .args(["run", "--endpoint", &sim.url(), "--concurrency", "4", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(tmp.path().join("out.jsonl"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // The file, the line reached, and what is wrong.
    assert!(stderr.contains(&format!("{}:", input.display())), "{stderr}");
    assert!(stderr.contains(": read error: truncated gzip data"), "{stderr}");
    let sent = sim_metric(&sim.url(), "sizeup_sim_requests_total{outcome=\"ok\"}").await;
    assert_eq!(sent, 0.0, "nothing sent past a corrupt input");
    sim.shutdown().await;
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

/// Resume joins the output with the input's lines by their index as the feed reads them: with
/// a bad line and a duplicate id skipped (`--skip-invalid`), the indices must still agree, so
/// exactly the lines not in the output are sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_skipped_lines_sends_exactly_the_unanswered_ones() {
    let sim = SimHandle::start(fast_sim(1, 2, 1.0, 0.0)).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let line = |id: &str| {
        format!("{{\"custom_id\":\"{id}\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{{\"prompt\":\"hi {id}\",\"max_tokens\":2}}}}\n")
    };
    let mut text = String::new();
    for id in ["id-1", "id-2"] {
        text += &line(id);
    }
    text += "{\"custom_id\":\"id-3\",\"method\":\"POST\"\n"; // broken
    for id in ["id-4", "id-2", "id-6", "id-7", "id-8"] {
        text += &line(id); // line 5 repeats id-2
    }
    let input = tmp.path().join("jobs.jsonl");
    std::fs::write(&input, text).unwrap();
    let out = tmp.path().join("out.jsonl");
    let run = |resume: bool| {
        let mut c = sizeup();
        c.args([
            "run",
            "--quiet",
            "--endpoint",
            &sim.url(),
            "--concurrency",
            "2",
            "--skip-invalid",
            "--input",
        ])
        .arg(&input)
        .arg("--output")
        .arg(&out);
        if resume {
            c.arg("--resume");
        }
        c.output().unwrap()
    };
    let first = run(false);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let all = std::fs::read_to_string(&out).unwrap();
    assert_eq!(all.lines().count(), 6);
    // Keep three answers, as a kill would.
    let kept: Vec<&str> = all.lines().take(3).collect();
    std::fs::write(&out, kept.join("\n") + "\n").unwrap();
    let again = run(true);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let mut ids: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["custom_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["id-1", "id-2", "id-4", "id-6", "id-7", "id-8"]);
    let sent = sim_metric(&sim.url(), "sizeup_sim_requests_total{outcome=\"ok\"}").await;
    assert_eq!(sent, 9.0, "6, then the 3 not kept");
    sim.shutdown().await;
}
