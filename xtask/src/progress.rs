//! Progress for long work: a bar on a terminal, a log line every tenth in CI.

use std::cell::Cell;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use std::time::{Duration, Instant};

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

    fn cancelled(&self) -> bool {
        CANCELLED.load(Ordering::SeqCst)
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

/// Set by SIGINT and SIGTERM; long work checks it and unwinds cleanly.
static CANCELLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    CANCELLED.store(true, Ordering::SeqCst);
}

/// Turns Ctrl-C and SIGTERM into a request to stop, so a stage removes its
/// temporary files on the way out instead of dying mid-write. Only stages
/// whose long loops check [`images::Progress::cancelled`] may call it.
pub fn catch_interrupts() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// One phase of a stage (fetch, patch, build…): a spinner with the elapsed
/// time on a terminal, a start and an end line otherwise.
pub struct Phase {
    name: &'static str,
    started: Instant,
    last_log: Instant,
    spinner: Option<ProgressBar>,
}

impl Phase {
    pub fn start(name: &'static str) -> Phase {
        let spinner = std::io::stderr().is_terminal().then(|| {
            let s = ProgressBar::new_spinner();
            s.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .expect("a valid template"),
            );
            s.set_message(name);
            s.enable_steady_tick(Duration::from_millis(120));
            s
        });
        if spinner.is_none() {
            tracing::info!("{name}: started");
        }
        Phase {
            name,
            started: Instant::now(),
            last_log: Instant::now(),
            spinner,
        }
    }

    /// Shows how far the phase is: on the spinner, or (without a
    /// terminal) a log line at most every ten seconds.
    pub fn update(&mut self, detail: &str) {
        match &self.spinner {
            Some(s) => s.set_message(format!("{}: {detail}", self.name)),
            None if self.last_log.elapsed() >= Duration::from_secs(10) => {
                self.last_log = Instant::now();
                tracing::info!("{}: {detail}", self.name);
            }
            None => {}
        }
    }

    pub fn done(self, detail: &str) {
        if let Some(s) = &self.spinner {
            s.finish_and_clear();
        }
        tracing::info!(
            "{}: done in {:.1} s: {detail}",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
    }
}
