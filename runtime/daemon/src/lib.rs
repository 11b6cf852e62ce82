//! `colinux-daemon` and `colinux-console`: a coLinux guest on QEMU, its
//! console, and its services (docs/design.md §6).

pub mod attach;
pub mod closed_pipe;
pub mod console;
pub mod create;
pub mod daemon;
pub mod engine;
pub mod from_ini;
pub mod host;
pub mod qmp;
pub mod seed;
pub mod service;
pub mod supervise;
#[cfg(target_os = "linux")]
pub mod tap;
mod terminal;

/// A writer whose bytes a test reads back.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct TestSink(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl std::io::Write for TestSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl TestSink {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}
