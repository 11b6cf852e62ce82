//! The Debian package (.deb) for Linux hosts.
