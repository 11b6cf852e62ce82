//! Output into a closed pipe (`colinux-daemon --dry-run … | head -1`) ends
//! a program quietly, as coreutils do, not with a panic and a backtrace.
//!
//! Not by restoring SIGPIPE's default: the daemon writes to sockets whose
//! clients may leave, and must live through that. Only a failed print to
//! stdout or stderr (Rust's `println!` panics on it) ends the program.

/// Installs the panic hook; call it first in `main`.
pub fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or_default();
        if is_closed_pipe(message) {
            end_as_closed_pipe();
        }
        default(info);
    }));
}

/// Rust's message for a print that failed because the reader is gone
/// (EPIPE on Unix; ERROR_NO_DATA or ERROR_BROKEN_PIPE on Windows).
fn is_closed_pipe(message: &str) -> bool {
    message.starts_with("failed printing to std")
        && ["os error 32)", "os error 232)", "os error 109)"]
            .iter()
            .any(|code| message.ends_with(code))
}

fn end_as_closed_pipe() -> ! {
    #[cfg(unix)]
    // SAFETY: restores SIGPIPE's default action and raises it, so the
    // program ends as coreutils' do (the shell sees 128 + SIGPIPE).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(141)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_print_into_a_closed_pipe_counts() {
        assert!(is_closed_pipe(
            "failed printing to stdout: Broken pipe (os error 32)"
        ));
        assert!(is_closed_pipe(
            "failed printing to stdout: The pipe is being closed. (os error 232)"
        ));
        assert!(!is_closed_pipe(
            "failed printing to stdout: No space left on device (os error 28)"
        ));
        assert!(!is_closed_pipe("index out of bounds"));
    }
}
