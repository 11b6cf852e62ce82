//! Authenticode signatures on Windows executables, with osslsigncode.
