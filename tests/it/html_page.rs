//! report.html in a real browser: headless Chromium (Debian's `chromium`, which `.ci/run`
//! installs) loads the page a sweep wrote, with the network off, renders it to a screenshot
//! and gives back the DOM it built; the page's text is checked there.

use crate::util::sizeup;
use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        })
}

fn headless(browser: &Path, profile: &Path, extra: &[&str], page: &Path) -> std::process::Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
        ])
        // No network: a self-contained page needs none, and a test must not reach out.
        .args(["--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("start chromium")
}

#[test]
fn the_report_page_renders_in_chromium_with_its_figures() {
    let Some(browser) = chromium() else {
        // CI installs it (.ci/run); a developer's machine may not have it.
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed: .ci/run installs Debian's `chromium`"
        );
        eprintln!("skipped: no chromium on PATH (apt-get install chromium)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let output = sizeup()
        .args([
            "sweep",
            "--gpus",
            "2",
            "--batch",
            "2",
            "--decode-step-ms",
            "5",
            "--max-tokens",
            "4",
        ])
        .args(["--concurrency", "2,4,8", "--warmup", "200ms", "--max-duration", "2s"])
        .args(["--scrape-interval", "100ms", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let page = out.join("report.html");
    let profile = tmp.path().join("profile");

    let shot = tmp.path().join("shot.png");
    let r = headless(
        &browser,
        &profile,
        &["--window-size=1280,1600", &format!("--screenshot={}", shot.display())],
        &page,
    );
    assert!(shot.is_file(), "no screenshot: {}", String::from_utf8_lossy(&r.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    // IHDR: width and height, big-endian, at bytes 16..24.
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    assert_eq!(width, 1280);
    // A blank page compresses to almost nothing; a plot and tables do not.
    assert!(png.len() > 20_000, "screenshot of {} bytes looks blank", png.len());

    let r = headless(&browser, &profile, &["--dump-dom"], &page);
    let dom = String::from_utf8_lossy(&r.stdout);
    assert!(dom.contains("<svg"), "the plot is in the page");
    for text in [
        "Knee at concurrency",
        "RPM per GPU",
        "The knee and its evidence",
        "Server side: vllm metrics",
        "Verdict:",
        "server running (mean/max)",
        "Workload mix",
    ] {
        assert!(dom.contains(text), "rendered page lacks {text:?}:\n{dom}");
    }
    // The browser built the table as written: one row per level, plus the header.
    let summary = crate::util::read_json(&out.join("summary.json"));
    let levels = summary["levels"].as_array().unwrap().len();
    let table = dom
        .split("<h2>Levels</h2>")
        .nth(1)
        .unwrap()
        .split("</table>")
        .next()
        .unwrap();
    assert_eq!(table.matches("<tr").count(), levels + 1, "{table}");
}
