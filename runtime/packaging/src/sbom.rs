//! The software bill of materials (CycloneDX 1.5 JSON): the Rust crates
//! linked into the shipped binaries, per target (the caller finds them;
//! [`lock_packages`] gives their sources and checksums), and the Debian
//! packages in each image (from its package list). Deterministic: sorted
//! components, no timestamp, a serial number derived from the content.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Cargo.lock has no checksum for {name} {version} from {registry}")]
    NoChecksum {
        name: String,
        version: String,
        registry: String,
    },
    #[error("{image}.packages, line {line}: not \"name<TAB>version<TAB>architecture\"")]
    PackageLine { image: String, line: usize },
}

/// A third-party crate linked into a shipped binary.
pub struct Crate {
    pub name: String,
    pub version: String,
    /// Where cargo takes it from (`registry+https://…`).
    pub source: String,
    /// Its sha256, as Cargo.lock records it (a registry crate has one).
    pub checksum: Option<String>,
    /// The targets (triples) whose binaries link it.
    pub targets: BTreeSet<String>,
}

/// One image's Debian packages: its name and its `.packages` file, one
/// "name\tversion\tarchitecture" line each.
pub struct ImagePackages<'a> {
    pub image: &'a str,
    pub distro: &'a str,
    pub packages: &'a str,
}

/// The SBOM of release `version`, as pretty JSON ending in a newline.
pub fn cyclonedx(
    product: &str,
    version: &str,
    crates: &[Crate],
    images: &[ImagePackages],
) -> Result<String, Error> {
    let mut components = crates
        .iter()
        .map(crate_component)
        .collect::<Result<Vec<_>, _>>()?;
    for image in images {
        components.extend(debian_packages(image)?);
    }
    components.sort_by(|a, b| a["bom-ref"].as_str().cmp(&b["bom-ref"].as_str()));
    components.dedup_by(|a, b| a["bom-ref"] == b["bom-ref"]);
    let body = json!({
        "metadata": {
            "component": {
                "type": "application",
                "name": product,
                "version": version,
                "bom-ref": format!("{product}@{version}"),
            },
        },
        "components": components,
    });
    let digest = Sha256::digest(body.to_string().as_bytes());
    let mut sbom = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{}", uuid_from(&digest)),
        "version": 1,
    });
    if let (Value::Object(sbom), Value::Object(body)) = (&mut sbom, body) {
        sbom.extend(body);
    }
    Ok(serde_json::to_string_pretty(&sbom).expect("JSON values serialize") + "\n")
}

/// A `[[package]]` of Cargo.lock, as far as the SBOM needs it.
pub struct LockPackage {
    pub name: Option<String>,
    pub version: Option<String>,
    /// None for a workspace crate.
    pub source: Option<String>,
    pub checksum: Option<String>,
}

/// Cargo.lock's packages.
pub fn lock_packages(lock: &str) -> impl Iterator<Item = LockPackage> + '_ {
    lock.split("[[package]]").skip(1).map(|block| {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                let (k, v) = l.split_once(" = ")?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        LockPackage {
            name: field("name"),
            version: field("version"),
            source: field("source"),
            checksum: field("checksum"),
        }
    })
}

/// A crate's component: its purl, its source, its checksum (a registry
/// crate must have one), and a `colinux:target` property per target.
fn crate_component(c: &Crate) -> Result<Value, Error> {
    let purl = format!("pkg:cargo/{}@{}", c.name, encode(&c.version));
    let mut properties = vec![json!({ "name": "cargo:source", "value": c.source })];
    properties.extend(
        c.targets
            .iter()
            .map(|t| json!({ "name": "colinux:target", "value": t })),
    );
    let mut component = json!({
        "type": "library",
        "bom-ref": purl,
        "name": c.name,
        "version": c.version,
        "purl": purl,
        "properties": properties,
    });
    match &c.checksum {
        Some(checksum) => {
            component["hashes"] = json!([{ "alg": "SHA-256", "content": checksum }]);
        }
        None if c.source.starts_with("registry+") => {
            return Err(Error::NoChecksum {
                name: c.name.clone(),
                version: c.version.clone(),
                registry: c.source.clone(),
            })
        }
        None => {}
    }
    Ok(component)
}

fn debian_packages(image: &ImagePackages) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    for (n, line) in image.packages.lines().enumerate() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [name, version, arch] = fields[..] else {
            return Err(Error::PackageLine {
                image: image.image.to_string(),
                line: n + 1,
            });
        };
        let purl = format!(
            "pkg:deb/{}/{name}@{}?arch={arch}",
            image.distro,
            encode(version)
        );
        out.push(json!({
            "type": "library",
            "bom-ref": purl,
            "name": name,
            "version": version,
            "purl": purl,
            "properties": [{ "name": "colinux:image", "value": image.image }],
        }));
    }
    Ok(out)
}

/// Percent-encodes what a purl version may not hold as is (epochs' ':',
/// Debian's '+' and '~').
fn encode(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '-' | '_' => c.to_string(),
            _ => format!("%{:02X}", c as u32),
        })
        .collect()
}

/// An RFC 4122 UUID (version 8: custom) from the first 16 bytes of a hash.
fn uuid_from(hash: &[u8]) -> String {
    let mut b: [u8; 16] = hash[..16].try_into().expect("16 bytes");
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"version = 4

[[package]]
name = "zstd"
version = "0.13.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "abcd"

[[package]]
name = "colinux-daemon"
version = "0.1.0"
dependencies = [
 "zstd",
]

[[package]]
name = "adler2"
version = "2.0.1"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "3201"
"#;

    const REGISTRY: &str = "registry+https://github.com/rust-lang/crates.io-index";

    /// A crate as a caller makes one: its checksum from [`LOCK`].
    fn linked(name: &str, version: &str, targets: &[&str]) -> Crate {
        let checksum = lock_packages(LOCK)
            .find(|p| p.name.as_deref() == Some(name) && p.version.as_deref() == Some(version))
            .and_then(|p| p.checksum);
        Crate {
            name: name.into(),
            version: version.into(),
            source: REGISTRY.into(),
            checksum,
            targets: targets.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn crates_and_packages_become_sorted_components_with_purls() {
        let packages = "libc6\t2.36-9+deb12u4\ti386\nsystemd\t252.19-1~deb12u1\ti386\n";
        let images = [ImagePackages {
            image: "debian",
            distro: "debian",
            packages,
        }];
        let crates = [
            linked("zstd", "0.13.0", &["linux"]),
            linked("adler2", "2.0.1", &["linux", "windows"]),
        ];
        let text = cyclonedx("colinux", "0.1.0", &crates, &images).unwrap();
        let sbom: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(sbom["bomFormat"], "CycloneDX");
        assert_eq!(sbom["metadata"]["component"]["version"], "0.1.0");
        let purls: Vec<&str> = sbom["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["purl"].as_str().unwrap())
            .collect();
        assert_eq!(
            purls,
            [
                "pkg:cargo/adler2@2.0.1",
                "pkg:cargo/zstd@0.13.0",
                "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=i386",
                "pkg:deb/debian/systemd@252.19-1%7Edeb12u1?arch=i386",
            ]
        );
        assert_eq!(sbom["components"][1]["hashes"][0]["content"], "abcd");
        assert_eq!(
            sbom["components"][0]["properties"],
            json!([
                { "name": "cargo:source", "value": REGISTRY },
                { "name": "colinux:target", "value": "linux" },
                { "name": "colinux:target", "value": "windows" },
            ])
        );
        // The same inputs give the same bytes, serial number included.
        assert_eq!(
            cyclonedx("colinux", "0.1.0", &crates, &images).unwrap(),
            text
        );
        let other = cyclonedx("colinux", "0.1.1", &crates, &images).unwrap();
        let other: Value = serde_json::from_str(&other).unwrap();
        assert_ne!(other["serialNumber"], sbom["serialNumber"]);
    }

    #[test]
    fn a_registry_crate_without_a_checksum_is_an_error() {
        let err = cyclonedx(
            "colinux",
            "0.1.0",
            &[linked("zstd", "9.9.9", &["linux"])],
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("Cargo.lock has no checksum for zstd 9.9.9 from {REGISTRY}")
        );
    }

    #[test]
    fn a_bad_package_line_names_the_image_and_line() {
        let images = [ImagePackages {
            image: "debian",
            distro: "debian",
            packages: "libc6\t2.36\ti386\nbroken line\n",
        }];
        let err = cyclonedx("colinux", "0.1.0", &[], &images).unwrap_err();
        assert_eq!(
            err.to_string(),
            "debian.packages, line 2: not \"name<TAB>version<TAB>architecture\""
        );
    }
}
