//! The host terminal in "console" mode: keys go to the guest as typed
//! (the guest echoes them), and the old mode comes back on drop.

/// Raw input on stdin while alive; `None` from [`RawMode::enter`] when
/// stdin is not a terminal (a pipe, a service), where nothing needs changing.
pub struct RawMode {
    #[cfg(unix)]
    saved: libc::termios,
}

impl RawMode {
    /// With `keep_signals`, Ctrl-C still raises SIGINT (the daemon turns it
    /// into a clean guest power-off); without, Ctrl-C goes to the guest.
    #[cfg(unix)]
    pub fn enter(keep_signals: bool) -> Option<RawMode> {
        // SAFETY: termios calls on fd 0 with properly sized, initialised structs.
        unsafe {
            if libc::isatty(0) != 1 {
                return None;
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return None;
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            // Our own log lines end in \n alone: keep output processing.
            raw.c_oflag |= libc::OPOST | libc::ONLCR;
            if keep_signals {
                raw.c_lflag |= libc::ISIG;
            }
            if libc::tcsetattr(0, libc::TCSANOW, &raw) != 0 {
                return None;
            }
            Some(RawMode { saved })
        }
    }

    #[cfg(windows)]
    pub fn enter(_keep_signals: bool) -> Option<RawMode> {
        // The Windows console stays in line mode: input is sent per line.
        None
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        #[cfg(unix)]
        // SAFETY: restores the settings read in `enter`.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
    }
}
