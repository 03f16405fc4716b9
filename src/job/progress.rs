//! Progress of a run on stderr: a bar on a terminal, a plain line every few seconds otherwise.

use crate::ui;
use std::time::Duration;
use tokio::time::Instant;

/// Progress on stderr: a bar on a terminal, a plain line every few seconds otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: Option<u64>,
    done: u64,
    failed: u64,
    pub retries: u64,
    planned_rpm: Option<f64>,
    concurrency: u32,
    last_line: f64,
    recent: std::collections::VecDeque<(Instant, u64)>,
}

impl Progress {
    pub fn new(total: Option<u64>, concurrency: u32, planned_rpm: Option<f64>) -> Progress {
        let bar = (ui::stderr_is_tty() && !ui::quiet()).then(|| {
            let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress {
            bar,
            total,
            done: 0,
            failed: 0,
            retries: 0,
            planned_rpm,
            concurrency,
            last_line: 0.0,
            recent: Default::default(),
        }
    }

    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
        if let Some(b) = &self.bar {
            b.set_length(total);
        }
    }

    /// Requests not yet answered, when the total is known.
    pub fn remaining(&self) -> Option<u64> {
        self.total.map(|t| t.saturating_sub(self.done))
    }

    /// The requests in flight now (holding the rate moves it).
    pub fn set_concurrency(&mut self, n: u32) {
        self.concurrency = n;
    }

    pub fn update(&mut self, ok: u64, failed: u64) {
        self.done = ok + failed;
        self.failed = failed;
        if let Some(b) = &self.bar {
            b.set_position(self.done);
        }
    }

    /// RPM over the last ~10 s.
    fn rpm_now(&mut self) -> f64 {
        let now = Instant::now();
        self.recent.push_back((now, self.done));
        while self.recent.len() > 2 && now - self.recent[0].0 > Duration::from_secs(10) {
            self.recent.pop_front();
        }
        let (t0, d0) = self.recent[0];
        let dt = (now - t0).as_secs_f64();
        if dt > 0.0 {
            (self.done - d0) as f64 / dt * 60.0
        } else {
            0.0
        }
    }

    pub fn tick(&mut self, start: Instant, retries: u64) {
        self.retries = retries;
        let rpm = self.rpm_now();
        let planned = self
            .planned_rpm
            .map_or(String::new(), |p| format!(" / {} planned", ui::thousands(p)));
        let msg = format!(
            "{} RPM{planned}, {} failed, {} retries, {} in flight max",
            ui::thousands(rpm),
            self.failed,
            self.retries,
            self.concurrency
        );
        if let Some(b) = &self.bar {
            b.set_message(msg);
            b.tick();
            return;
        }
        let elapsed = (Instant::now() - start).as_secs_f64();
        if ui::quiet() || elapsed - self.last_line < 5.0 {
            return;
        }
        self.last_line = elapsed;
        let total = self.total.map_or("?".to_string(), |t| t.to_string());
        let eta = match self.total {
            Some(t) if rpm > 0.0 && t >= self.done => format!(", ETA {:.0}s", (t - self.done) as f64 / rpm * 60.0),
            _ => String::new(),
        };
        ui::info(format!("progress: {}/{total} done, {msg}{eta}", self.done));
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
