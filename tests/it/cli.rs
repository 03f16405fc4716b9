//! The command line itself: help teaches with examples, bad flags (an unknown `--format` too)
//! exit 2 with a hint, `--version` names the release, stdout carries data only (and a reader that
//! goes away is no error), completions and man pages come from the same definitions, and nothing
//! panics.

use crate::util::{sizeup, sizeup_command, sweep_dir};

#[test]
fn help_for_every_command_teaches_with_examples() {
    for cmd in ["sim", "sweep", "plan", "run", "auto", "completions", "man"] {
        let out = sizeup().args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success(), "{cmd} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Examples:"), "{cmd} --help has no examples:\n{text}");
        assert!(text.contains("sizeup "), "{cmd}");
    }
    let out = sizeup().arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("SIZEUP_API_KEY"));
    // The formula a user checks a sweep against.
    let out = sizeup().args(["sim", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("RPM = 60000 * n /"));
}

#[test]
fn bad_flags_exit_2_with_a_hint() {
    let cases: &[&[&str]] = &[
        &["sweep", "--no-such-flag"],
        &["sweep", "--concurrency", "1,x"],
        &["sweep", "--ci-width", "2"],
        &["sweep", "--warmup", "soon"],
        &["sweep", "--fail-rate", "1.5"],
        &["sweep", "--endpoint", "ftp://example"],
        &["plan", "--target-rpm", "100"],
        &["plan", "--sweep", "/nonexistent/sweep", "--target-rpm", "100"],
        &["run", "--input", "/nonexistent/in.jsonl", "--concurrency", "2"],
        &["run", "--input", "x.jsonl"],
        &["auto", "--input", "/nonexistent/in.jsonl", "--target-rpm", "0"],
        &["sim", "--addr", "not-an-address"],
    ];
    for args in cases {
        let out = sizeup().args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("error"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: stdout must carry data only");
    }
    // Our own errors carry a hint line.
    let out = sizeup().args(["sweep", "--concurrency", "1,x"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("hint: give a list like --concurrency 1,2,4,8"));
}

#[test]
fn version() {
    let out = sizeup().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("sizeup {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
}

#[test]
fn closed_stdout_is_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = sweep_dir(tmp.path());
    let mut child = sizeup_command()
        .args(["plan", "--sweep"])
        .arg(&sweep)
        .args(["--target-rpm", "30000", "--out"])
        .arg(tmp.path().join("p.json"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before anything is written
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn completions_and_man_pages() {
    let stdout = |args: &[&str]| {
        let out = sizeup().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let bash = stdout(&["completions", "bash"]);
    assert!(bash.contains("_sizeup"), "{bash}");
    assert!(bash.contains("--served-model-name"), "every flag completes");
    assert!(stdout(&["completions", "zsh"]).starts_with("#compdef sizeup"));
    assert!(stdout(&["completions", "fish"]).contains("complete -c sizeup"));
    assert!(stdout(&["completions", "powershell"]).contains("Register-ArgumentCompleter"));

    let man = stdout(&["man"]);
    assert!(man.starts_with(".TH") || man.starts_with(".ie"), "{man}");
    assert!(man.contains(".TH sizeup 1"), "{man}");
    let sweep = stdout(&["man", "sweep"]);
    assert!(
        sweep.contains(".TH sizeup-sweep 1") && sweep.contains("concurrency"),
        "{sweep}"
    );

    let out = sizeup().args(["man", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hint: pick one of: sim, sweep"));

    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let out = sizeup().args(["man", "--dir"]).arg(&pages).output().unwrap();
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    for page in ["sizeup.1", "sizeup-sweep.1", "sizeup-run.1"] {
        let text = std::fs::read_to_string(pages.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".SH OPTIONS"), "{page}");
    }
}

#[test]
fn unknown_input_format_exits_2_naming_the_formats() {
    let cases: &[&[&str]] = &[
        &["sweep", "--input", "in.jsonl"],
        &["plan", "--sweep", "s", "--target-rpm", "100", "--input", "in.jsonl"],
        &["run", "--input", "in.jsonl", "--concurrency", "2"],
        &["auto", "--input", "in.jsonl", "--target-rpm", "100"],
    ];
    for args in cases {
        let out = sizeup().args(*args).args(["--format", "yaml"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("unknown format \"yaml\""), "{args:?}: {err}");
        assert!(err.contains("openai-batch|jsonl|csv|text"), "{args:?}: {err}");
    }
}
