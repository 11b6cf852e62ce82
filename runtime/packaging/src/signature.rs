//! minisign signatures over the release artifacts.
