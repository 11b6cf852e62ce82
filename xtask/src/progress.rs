//! Progress for long work: a bar on a terminal, a log line every tenth in CI.

use std::cell::Cell;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Work smaller than this is over too soon for log lines to help.
const QUIET_BELOW: u64 = 64 << 20;

pub struct Reporter {
    label: String,
    bar: Option<ProgressBar>,
    total: Cell<u64>,
    logged_tenths: Cell<u64>,
}

impl Reporter {
    pub fn new(label: impl Into<String>) -> Reporter {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar
        });
        let label = label.into();
        if let Some(bar) = &bar {
            bar.set_message(label.clone());
        }
        Reporter {
            label,
            bar,
            total: Cell::new(0),
            logged_tenths: Cell::new(0),
        }
    }
}

impl images::Progress for Reporter {
    fn start(&self, total: u64) {
        self.total.set(total);
        self.logged_tenths.set(0);
        match &self.bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(0);
            }
            None if total >= QUIET_BELOW => tracing::info!("{}: 0%", self.label),
            None => {}
        }
    }

    fn update(&self, done: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None if self.total.get() >= QUIET_BELOW => {
                let total = self.total.get();
                let tenths = done.min(total) * 10 / total;
                if tenths > self.logged_tenths.get() {
                    self.logged_tenths.set(tenths);
                    tracing::info!("{}: {}%", self.label, tenths * 10);
                }
            }
            None => {}
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
