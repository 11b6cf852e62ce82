//! Kconfig fragments and the check that what they ask for really holds in
//! the final `.config`. olddefconfig silently drops an option whose
//! dependencies are missing; this is where we notice.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};

/// `CONFIG_X` → its value: `y`, `m`, a number, a quoted string, or `n` for
/// "# CONFIG_X is not set".
pub type Config = BTreeMap<String, String>;

/// Parses a `.config` or a fragment.
pub fn parse(text: &str, origin: &Path) -> Result<Config> {
    let mut config = Config::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(rest) = line.strip_prefix("# ") {
            if let Some(name) = rest.strip_suffix(" is not set") {
                if name.starts_with("CONFIG_") {
                    config.insert(name.to_string(), "n".into());
                }
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            bail!(
                "{}:{}: expected CONFIG_NAME=value, found {line:?}",
                origin.display(),
                i + 1
            );
        };
        if !name.starts_with("CONFIG_") || value.is_empty() {
            bail!(
                "{}:{}: expected CONFIG_NAME=value, found {line:?}",
                origin.display(),
                i + 1
            );
        }
        config.insert(name.to_string(), value.to_string());
    }
    Ok(config)
}

/// One option a fragment asked for that the final config does not have.
#[derive(Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub name: String,
    pub wanted: String,
    pub got: String,
}

/// Every option in `wanted` must hold in `actual`; "n" also matches absent.
pub fn check(wanted: &Config, actual: &Config) -> Vec<Mismatch> {
    wanted
        .iter()
        .filter_map(|(name, value)| {
            let got = actual.get(name).map_or("n", String::as_str);
            (got != value).then(|| Mismatch {
                name: name.clone(),
                wanted: value.clone(),
                got: got.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values_and_unset() {
        let c = parse(
            "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\n# comment\nCONFIG_D=0x10\n",
            Path::new("f"),
        )
        .unwrap();
        assert_eq!(c["CONFIG_A"], "y");
        assert_eq!(c["CONFIG_B"], "n");
        assert_eq!(c["CONFIG_C"], "\"x y\"");
        assert_eq!(c["CONFIG_D"], "0x10");
    }

    #[test]
    fn bad_lines_are_named() {
        let err = parse("CONFIG_A=y\nVIRTIO=y\n", Path::new("common.config")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "common.config:2: expected CONFIG_NAME=value, found \"VIRTIO=y\""
        );
    }

    #[test]
    fn check_reports_what_did_not_stick() {
        let wanted = parse(
            "CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=y\n",
            Path::new("f"),
        )
        .unwrap();
        let actual = parse("CONFIG_A=y\nCONFIG_B=y\n", Path::new(".config")).unwrap();
        let got = check(&wanted, &actual);
        assert_eq!(
            got,
            vec![
                Mismatch {
                    name: "CONFIG_B".into(),
                    wanted: "m".into(),
                    got: "y".into()
                },
                Mismatch {
                    name: "CONFIG_D".into(),
                    wanted: "y".into(),
                    got: "n".into()
                },
            ]
        );
    }
}
