//! The guest console, multiplexed by the daemon: the engine's serial port
//! goes to a scrollback buffer and to whoever is attached, the daemon's
//! terminal or one `colinux-console`.
//!
//! The console socket speaks raw bytes after a one-line greeting from the
//! daemon, [`GREETING_OK`] or [`GREETING_BUSY`] followed by a reason; a busy
//! console answers a second client and closes only that connection.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use interprocess::local_socket::{
    prelude::*, GenericFilePath, GenericNamespaced, ListenerOptions, Name, Stream,
};

pub const GREETING_OK: &str = "COLINUX-CONSOLE 1 OK";
pub const GREETING_BUSY: &str = "COLINUX-CONSOLE 1 BUSY";

/// Scrollback kept for a console that attaches later, in bytes.
pub const DEFAULT_SCROLLBACK_BYTES: usize = 256 * 1024;

/// The scrollback for `cocon=COLSxROWSxLINES`: LINES full lines, else the default.
pub fn scrollback_bytes(cocon: Option<&colinux_config::Cocon>) -> usize {
    cocon
        .and_then(|c| Some(usize::from(c.cols) * usize::try_from(c.scrollback?).ok()?))
        .filter(|&bytes| bytes > 0)
        .unwrap_or(DEFAULT_SCROLLBACK_BYTES)
}

/// What the guest's kernel says on the console that the daemon acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelSign {
    /// It gave up.
    Panic,
    /// An NFS root and no address by DHCP: it would retry forever.
    NfsRootNoAddress,
    /// It tried to mount its NFS root several times and gave up.
    NfsRootUnmounted,
}

/// The kernel 6.1's own lines (kernel/panic.c, net/ipv4/ipconfig.c,
/// init/do_mounts.c).
const KERNEL_SIGNS: [(&[u8], KernelSign); 3] = [
    (b"Kernel panic - not syncing", KernelSign::Panic),
    (
        b"IP-Config: Retrying forever (NFS root)",
        KernelSign::NfsRootNoAddress,
    ),
    (
        b"VFS: Unable to mount root fs via NFS",
        KernelSign::NfsRootUnmounted,
    ),
];

/// The console socket's name: a file in the runtime directory on Unix, a
/// named pipe (`\\.\pipe\colinux-NAME-console`) on Windows.
pub fn socket_name(runtime_dir: &Path, name: &str) -> io::Result<Name<'static>> {
    if cfg!(windows) {
        format!("colinux-{name}-console").to_ns_name::<GenericNamespaced>()
    } else {
        socket_path(runtime_dir).to_fs_name::<GenericFilePath>()
    }
}

pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("console.sock")
}

/// Who holds the console now.
enum Holder {
    Nobody,
    /// The daemon's own terminal (attached mode); nobody else may attach.
    Terminal,
    Client {
        id: u64,
        out: Box<dyn Write + Send>,
    },
}

struct State {
    scrollback: VecDeque<u8>,
    capacity: usize,
    holder: Holder,
    next_id: u64,
    filter: KernelFilter,
    quiet_kernel: bool,
    signs: SignScan,
}

/// The console hub. Cheap to clone; every clone is the same console.
#[derive(Clone)]
pub struct Hub {
    state: Arc<Mutex<State>>,
    engine_in: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl Hub {
    /// `engine_in` is the engine's console input. With `terminal`, the
    /// daemon's stdout is the console; `quiet_kernel` drops kernel log
    /// lines from it (`-k`), while the scrollback keeps them.
    pub fn new(
        engine_in: Box<dyn Write + Send>,
        terminal: bool,
        quiet_kernel: bool,
        capacity: usize,
    ) -> Hub {
        Hub {
            state: Arc::new(Mutex::new(State {
                scrollback: VecDeque::with_capacity(capacity.min(64 * 1024)),
                capacity,
                holder: if terminal {
                    Holder::Terminal
                } else {
                    Holder::Nobody
                },
                next_id: 0,
                filter: KernelFilter::default(),
                quiet_kernel,
                signs: SignScan::default(),
            })),
            engine_in: Arc::new(Mutex::new(engine_in)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes the guest printed. Returns the kernel signs seen in them,
    /// each the first time it is seen.
    pub fn from_engine(&self, bytes: &[u8]) -> Vec<KernelSign> {
        let mut state = self.lock();
        let state = &mut *state;
        state.scrollback.extend(bytes);
        let excess = state.scrollback.len().saturating_sub(state.capacity);
        state.scrollback.drain(..excess);
        match &mut state.holder {
            Holder::Nobody => {}
            Holder::Terminal => {
                let shown = if state.quiet_kernel {
                    state.filter.feed(bytes)
                } else {
                    bytes.to_vec()
                };
                let mut out = io::stdout().lock();
                let _ = out.write_all(&shown).and_then(|_| out.flush());
            }
            Holder::Client { out, .. } => {
                if out.write_all(bytes).and_then(|_| out.flush()).is_err() {
                    state.holder = Holder::Nobody;
                }
            }
        }
        state.signs.feed(bytes)
    }

    /// Bytes typed at the console.
    pub fn to_engine(&self, bytes: &[u8]) -> io::Result<()> {
        let mut engine_in = self.engine_in.lock().unwrap_or_else(|e| e.into_inner());
        engine_in.write_all(bytes)?;
        engine_in.flush()
    }

    /// A new console connection: greets it, replays the scrollback and
    /// makes it the console, or tells it who holds the console and lets it go.
    pub fn attach<R, W>(&self, input: R, mut output: W)
    where
        R: Read + Send + 'static,
        W: Write + Send + 'static,
    {
        let id = {
            let mut state = self.lock();
            let busy = match state.holder {
                Holder::Nobody => None,
                Holder::Terminal => Some(
                    "the console is on colinux-daemon's own terminal (it was started without -d)",
                ),
                Holder::Client { .. } => Some(
                    "another colinux-console is attached; detach it first (Ctrl-] in that console)",
                ),
            };
            if let Some(reason) = busy {
                let _ = writeln!(output, "{GREETING_BUSY} {reason}");
                return;
            }
            let (front, back) = state.scrollback.as_slices();
            let replay = writeln!(output, "{GREETING_OK}")
                .and_then(|_| output.write_all(front))
                .and_then(|_| output.write_all(back))
                .and_then(|_| output.flush());
            if replay.is_err() {
                return;
            }
            state.next_id += 1;
            let id = state.next_id;
            state.holder = Holder::Client {
                id,
                out: Box::new(output),
            };
            id
        };
        let hub = self.clone();
        std::thread::spawn(move || {
            let mut input = input;
            let mut buf = [0u8; 4096];
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if hub.to_engine(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let mut state = hub.lock();
            if matches!(state.holder, Holder::Client { id: current, .. } if current == id) {
                state.holder = Holder::Nobody;
            }
        });
    }

    /// Accepts console connections until the process ends.
    pub fn serve(&self, name: Name<'static>) -> io::Result<()> {
        let listener = ListenerOptions::new().name(name).create_sync()?;
        let hub = self.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let conn = Shared(Arc::new(conn));
                hub.attach(conn.clone(), conn);
            }
        });
        Ok(())
    }
}

/// One console connection, read by one thread and written by another.
#[derive(Clone)]
pub struct Shared(pub Arc<Stream>);

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

/// `-k`: drops kernel log lines (`[    1.234567] …`, the kernel prints
/// its time on every line) from a byte stream cut at arbitrary places.
#[derive(Default)]
struct KernelFilter {
    state: FilterState,
}

#[derive(Default)]
enum FilterState {
    /// At the start of a line.
    #[default]
    LineStart,
    /// The line so far might be a kernel line: held back until it is known.
    Holding(Vec<u8>),
    /// Passing the rest of an ordinary line.
    Passing,
    /// Dropping the rest of a kernel line.
    Dropping,
}

impl KernelFilter {
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        for &b in bytes {
            self.state = match std::mem::take(&mut self.state) {
                FilterState::LineStart if b == b'[' => FilterState::Holding(vec![b]),
                FilterState::LineStart | FilterState::Passing => {
                    out.push(b);
                    if b == b'\n' {
                        FilterState::LineStart
                    } else {
                        FilterState::Passing
                    }
                }
                FilterState::Dropping => {
                    if b == b'\n' {
                        FilterState::LineStart
                    } else {
                        FilterState::Dropping
                    }
                }
                FilterState::Holding(mut held) => {
                    held.push(b);
                    match kernel_prefix(&held) {
                        Some(true) => FilterState::Dropping,
                        Some(false) => {
                            out.extend_from_slice(&held);
                            if b == b'\n' {
                                FilterState::LineStart
                            } else {
                                FilterState::Passing
                            }
                        }
                        None => FilterState::Holding(held),
                    }
                }
            };
        }
        out
    }
}

/// Whether `line` starts like `[  12.345678] `: `Some(true)` yes,
/// `Some(false)` no, `None` not known yet.
fn kernel_prefix(line: &[u8]) -> Option<bool> {
    let rest = &line[1..];
    let mut seen_digit = false;
    let mut seen_dot = false;
    for &b in rest {
        match b {
            b' ' if !seen_digit => {}
            b'0'..=b'9' => seen_digit = true,
            b'.' if seen_digit && !seen_dot => seen_dot = true,
            b']' => return Some(seen_dot),
            _ => return Some(false),
        }
    }
    None
}

/// Finds the kernel's [`KERNEL_SIGNS`] in the console stream, even when a
/// line comes in pieces.
#[derive(Default)]
struct SignScan {
    tail: Vec<u8>,
    seen: Vec<KernelSign>,
}

impl SignScan {
    fn feed(&mut self, bytes: &[u8]) -> Vec<KernelSign> {
        self.tail.extend_from_slice(bytes);
        let mut found = Vec::new();
        for (marker, sign) in KERNEL_SIGNS {
            if !self.seen.contains(&sign) && self.tail.windows(marker.len()).any(|w| w == marker) {
                self.seen.push(sign);
                found.push(sign);
            }
        }
        let keep = KERNEL_SIGNS.iter().map(|(m, _)| m.len()).max().unwrap_or(1) - 1;
        let cut = self.tail.len().saturating_sub(keep);
        self.tail.drain(..cut);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestSink;

    fn filtered(chunks: &[&str]) -> String {
        let mut filter = KernelFilter::default();
        let out: Vec<u8> = chunks
            .iter()
            .flat_map(|c| filter.feed(c.as_bytes()))
            .collect();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_kernel_filter_drops_only_timestamped_lines_wherever_chunks_break() {
        let text = "[    0.000000] Linux version 6.1\r\nWelcome to Debian!\r\n[ok] not kernel\n[   12.5] virtio\ncolinux login: ";
        let want = "Welcome to Debian!\r\n[ok] not kernel\ncolinux login: ";
        assert_eq!(filtered(&[text]), want);
        // Every split point gives the same result.
        for cut in 0..text.len() {
            assert_eq!(
                filtered(&[&text[..cut], &text[cut..]]),
                want,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn cocon_sets_the_scrollback() {
        let cocon = |scrollback| colinux_config::Cocon {
            cols: 80,
            rows: 25,
            scrollback,
        };
        assert_eq!(scrollback_bytes(Some(&cocon(Some(1000)))), 80_000);
        assert_eq!(
            scrollback_bytes(Some(&cocon(None))),
            DEFAULT_SCROLLBACK_BYTES
        );
        assert_eq!(scrollback_bytes(None), DEFAULT_SCROLLBACK_BYTES);
    }

    #[test]
    fn kernel_signs_are_seen_once_even_across_chunks() {
        let mut scan = SignScan::default();
        assert_eq!(scan.feed(b"[ 1.0] Kernel pan"), []);
        assert_eq!(
            scan.feed(b"ic - not syncing: VFS: Unable to mount root fs"),
            [KernelSign::Panic]
        );
        assert_eq!(scan.feed(b"Kernel panic - not syncing"), []);
        assert_eq!(scan.feed(b"[ 80.1] IP-Config: Retrying forever (NF"), []);
        assert_eq!(
            scan.feed(b"S root)...\r\n[ 99.0] VFS: Unable to mount root fs via NFS.\r\n"),
            [KernelSign::NfsRootNoAddress, KernelSign::NfsRootUnmounted]
        );
        let mut block = SignScan::default();
        assert_eq!(
            block.feed(b"VFS: Unable to mount root fs on unknown-block(0,0)"),
            [],
            "a disk root is not an NFS root"
        );
    }

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !cond() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn one_client_at_a_time_with_scrollback_replay() {
        let engine_in = TestSink::default();
        let hub = Hub::new(Box::new(engine_in.clone()), false, false, 16);
        hub.from_engine(b"0123456789abcdefXYZ");

        // The first client gets the last 16 bytes, then live output; its
        // input reaches the engine.
        let (first_in, first_writer) = std::io::pipe().unwrap();
        let first = TestSink::default();
        hub.attach(first_in, first.clone());
        hub.from_engine(b"!");
        assert_eq!(first.text(), format!("{GREETING_OK}\n3456789abcdefXYZ!"));
        let mut first_writer = first_writer;
        first_writer.write_all(b"ls\n").unwrap();
        wait_until("typed input", || engine_in.text() == "ls\n");

        // A second one is told and let go; the first keeps the console.
        let second = TestSink::default();
        hub.attach(io::empty(), second.clone());
        assert!(
            second.text().starts_with(GREETING_BUSY),
            "{}",
            second.text()
        );
        assert!(second
            .text()
            .contains("another colinux-console is attached"));
        hub.from_engine(b"?");
        assert!(first.text().ends_with("!?"));

        // Detach (the client's input closes), then re-attach.
        drop(first_writer);
        wait_until("detach", || matches!(hub.lock().holder, Holder::Nobody));
        let third = TestSink::default();
        hub.attach(io::empty(), third.clone());
        assert!(third.text().starts_with(GREETING_OK));
        assert!(third.text().ends_with("XYZ!?"), "{}", third.text());
    }

    /// The real transport: a Unix socket here, a named pipe on Windows (Wine).
    #[test]
    fn clients_connect_over_the_console_socket() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("unit-{}", std::process::id());
        let hub = Hub::new(Box::new(io::sink()), false, false, 1024);
        hub.from_engine(b"login: ");
        hub.serve(socket_name(dir.path(), &name).unwrap()).unwrap();
        let connect = || {
            let stream = Stream::connect(socket_name(dir.path(), &name).unwrap()).unwrap();
            let mut reader = io::BufReader::new(Shared(Arc::new(stream)));
            let mut greeting = String::new();
            io::BufRead::read_line(&mut reader, &mut greeting).unwrap();
            (reader, greeting)
        };
        let (mut first, greeting) = connect();
        assert_eq!(greeting, format!("{GREETING_OK}\n"));
        let mut replay = [0u8; 7];
        first.read_exact(&mut replay).unwrap();
        assert_eq!(&replay, b"login: ");
        let (_, busy) = connect();
        assert!(busy.starts_with(GREETING_BUSY), "{busy}");
    }

    #[test]
    fn nobody_attaches_over_the_terminal() {
        let hub = Hub::new(Box::new(io::sink()), true, false, 16);
        let client = TestSink::default();
        hub.attach(io::empty(), client.clone());
        assert!(
            client.text().contains("colinux-daemon's own terminal"),
            "{}",
            client.text()
        );
    }
}
