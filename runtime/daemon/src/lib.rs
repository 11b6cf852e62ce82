//! colinux-daemon
