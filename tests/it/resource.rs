//! The resource is switched on before a run, with the GPUs the run asks for, and off after it,
//! even when the run fails: GPUs are paid for only while a job needs them.

use crate::util::{batch_file, sizeup, SIM};

#[test]
fn run_switches_the_resource_on_and_off() {
    let tmp = tempfile::tempdir().unwrap();
    let input = batch_file(tmp.path(), 40, 2);
    // The built-in resource starts off with --resource sim: run must switch it on first.
    let assert = sizeup()
        .args([
            "run",
            "--resource",
            "sim",
            "--gpus",
            "2",
            "--concurrency",
            "4",
            "--input",
        ])
        .arg(&input)
        .arg("--output")
        .arg(tmp.path().join("a.jsonl"))
        .args(SIM)
        .assert()
        .success();
    let err = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert!(
        err.contains("switching the resource on with 2 GPUs") && err.contains("switching the resource off"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("a.jsonl"))
            .unwrap()
            .lines()
            .count(),
        40
    );

    // Hooks: {gpus} substituted; the off hook runs even when the run fails (here the endpoint
    // refuses connections).
    let log = tmp.path().join("hooks.log");
    let on = format!("echo on {{gpus}} >> {}", log.display());
    let off = format!("echo off >> {}", log.display());
    sizeup()
        .args([
            "run",
            "--gpus",
            "3",
            "--concurrency",
            "4",
            "--resource-on",
            &on,
            "--resource-off",
            &off,
            "--input",
        ])
        .arg(&input)
        .arg("--output")
        .arg(tmp.path().join("b.jsonl"))
        .args(SIM)
        .assert()
        .success();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "on 3\noff\n");
    let out = sizeup()
        .args([
            "run",
            "--endpoint",
            "http://127.0.0.1:1",
            "--model",
            "m",
            "--concurrency",
            "2",
            "--resource-on",
            &on,
        ])
        .args(["--resource-off", &off, "--input"])
        .arg(&input)
        .arg("--output")
        .arg(tmp.path().join("c.jsonl"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "on 3\noff\non 1\noff\n",
        "switched off after a failure too"
    );
}
