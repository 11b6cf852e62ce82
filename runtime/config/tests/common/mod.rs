//! What the config-language test files share: a config parsed from text
//! as if it were read from `FILE`, and the one-line error it gives.

use std::path::Path;

use colinux_config::{parse_str, Settings};

pub const FILE: &str = "/etc/colinux/my.conf";

pub fn parse(text: &str) -> Settings {
    parse_str(text, Path::new(FILE)).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
}

/// The one-line message of the error `text` gives.
pub fn error(text: &str) -> String {
    let message = match parse_str(text, Path::new(FILE)) {
        Ok(_) => panic!("{text:?} should fail"),
        Err(e) => e.to_string(),
    };
    assert!(!message.contains('\n'), "one line: {message}");
    message
}
