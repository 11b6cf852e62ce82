//! `colinux-daemon` and `colinux-console`: a coLinux guest on QEMU, its
//! console, and its services (DESIGN.md §6).

pub mod attach;
pub mod console;
pub mod daemon;
pub mod engine;
pub mod host;
pub mod qmp;
pub mod service;
pub mod supervise;
mod terminal;
