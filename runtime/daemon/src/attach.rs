//! `colinux-console`: attaches to the console of a guest that
//! `colinux-daemon -d` runs, detaches with Ctrl-], and re-attaches later.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc;

use clap::Parser;
use interprocess::local_socket::{prelude::*, GenericFilePath, Stream};

use crate::console::{self, GREETING_BUSY, GREETING_OK};
use crate::host;

/// Ctrl-]: the detach key, as in telnet.
const DETACH_KEY: u8 = 0x1d;

pub mod exit {
    /// Detached, or the guest stopped.
    pub const DONE: u8 = 0;
    /// No such guest, or its daemon did not answer.
    pub const NO_GUEST: u8 = 1;
    /// Another console holds this guest's console.
    pub const BUSY: u8 = 3;
}

const AFTER_HELP: &str = "\
On a terminal, keys go to the guest (Ctrl-C too); Ctrl-] detaches and the
guest keeps running. With input from a pipe, the end of the input detaches.
The scrollback is replayed on attach.

Exit codes:
  0  detached, or the guest stopped
  1  no such guest (is colinux-daemon -d running with that --name?)
  3  another colinux-console is attached to this guest";

/// Attaches to the console of a guest run by `colinux-daemon -d`.
#[derive(Parser, Debug)]
#[command(name = "colinux-console", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// The guest's name (colinux-daemon --name, or its config file's name)
    #[arg(default_value = "colinux")]
    pub name: String,

    /// Connect to this console socket (Unix) or named pipe (Windows, \\.\pipe\NAME) instead of the named guest's
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

enum Event {
    Detach,
    GuestGone,
}

/// The command line definition, for man pages and shell completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

pub fn main(args: Vec<std::ffi::OsString>) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    match attach(&cli) {
        Ok(code) => code,
        Err((code, message)) => {
            eprintln!("colinux-console: {message}");
            code
        }
    }
}

fn attach(cli: &Cli) -> Result<u8, (u8, String)> {
    host::check_name(&cli.name).map_err(|m| (exit::NO_GUEST, m))?;
    let name = match &cli.socket {
        Some(path) => path.clone().to_fs_name::<GenericFilePath>(),
        None => console::socket_name(&host::runtime_dir(&cli.name), &cli.name),
    }
    .map_err(|e| (exit::NO_GUEST, format!("bad console name: {e}")))?;
    let stream = Stream::connect(name).map_err(|e| {
        (
            exit::NO_GUEST,
            format!(
                "no guest {:?} to attach to ({e}); is `colinux-daemon -d --name {}` running?",
                cli.name, cli.name
            ),
        )
    })?;
    let shared = console::Shared(std::sync::Arc::new(stream));
    let (input, mut output) = (shared.clone(), shared);
    let mut input = BufReader::new(input);
    let mut greeting = String::new();
    input
        .read_line(&mut greeting)
        .map_err(|e| (exit::NO_GUEST, format!("the daemon did not answer: {e}")))?;
    if let Some(reason) = greeting.strip_prefix(GREETING_BUSY) {
        return Err((exit::BUSY, reason.trim().to_string()));
    }
    if greeting.trim_end() != GREETING_OK {
        return Err((
            exit::NO_GUEST,
            format!("not a colinux console: {:?}", greeting.trim_end()),
        ));
    }

    let raw = crate::terminal::RawMode::enter(false);
    let interactive = raw.is_some();
    if interactive {
        eprint!(
            "colinux-console: attached to {:?}; Ctrl-] detaches\r\n",
            cli.name
        );
    }
    let (tx, rx) = mpsc::channel();
    let keys = tx.clone();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 1024];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let typed = &buf[..n];
            let (send, detach) = match typed.iter().position(|&b| interactive && b == DETACH_KEY) {
                Some(at) => (&typed[..at], true),
                None => (typed, false),
            };
            if output.write_all(send).and_then(|_| output.flush()).is_err() || detach {
                break;
            }
        }
        let _ = keys.send(Event::Detach);
    });
    std::thread::spawn(move || {
        let mut stdout = std::io::stdout();
        let mut buf = [0u8; 8192];
        while let Ok(n) = input.read(&mut buf) {
            if n == 0
                || stdout
                    .write_all(&buf[..n])
                    .and_then(|_| stdout.flush())
                    .is_err()
            {
                break;
            }
        }
        let _ = tx.send(Event::GuestGone);
    });
    let event = rx.recv().unwrap_or(Event::GuestGone);
    drop(raw);
    match event {
        Event::Detach if interactive => {
            eprintln!("\ncolinux-console: detached; the guest keeps running")
        }
        Event::Detach => {}
        Event::GuestGone => eprintln!("\ncolinux-console: the guest stopped"),
    }
    Ok(exit::DONE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_names_the_detach_key_and_exit_codes() {
        let help = Cli::try_parse_from(["colinux-console", "--help"])
            .unwrap_err()
            .to_string();
        assert!(
            help.contains("Ctrl-] detaches") && help.contains("3  another colinux-console"),
            "{help}"
        );
    }

    #[test]
    fn no_guest_is_a_clear_error() {
        let cli = Cli {
            name: "nobody-e2e-none".into(),
            socket: None,
        };
        let (code, message) = attach(&cli).unwrap_err();
        assert_eq!(code, exit::NO_GUEST);
        assert!(
            message.contains("no guest \"nobody-e2e-none\""),
            "{message}"
        );
    }
}
