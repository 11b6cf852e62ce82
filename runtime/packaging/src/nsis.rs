//! The Windows installer, built with Debian's native makensis.
