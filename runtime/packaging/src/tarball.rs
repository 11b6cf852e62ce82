//! Deterministic tar.gz archives: sorted entries, owner 0, clamped mtimes.
