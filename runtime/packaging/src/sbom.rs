//! The software bill of materials (CycloneDX 1.5 JSON): the Rust crates
//! the binaries are built from (from Cargo.lock) and the Debian packages in
//! each image (from its package list). Deterministic: sorted components, no
//! timestamp, a serial number derived from the content.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Cargo.lock, package {0}: no version")]
    LockPackage(String),
    #[error("{image}.packages, line {line}: not \"name<TAB>version<TAB>architecture\"")]
    PackageLine { image: String, line: usize },
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
    cargo_lock: &str,
    images: &[ImagePackages],
) -> Result<String, Error> {
    let mut components = crates(cargo_lock)?;
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

/// The third-party crates of Cargo.lock (workspace members have no source).
fn crates(lock: &str) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    for block in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            block.lines().find_map(|l| {
                let (k, v) = l.split_once(" = ")?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
            })
        };
        let Some(name) = field("name") else { continue };
        let Some(source) = field("source") else {
            continue;
        };
        let version = field("version").ok_or_else(|| Error::LockPackage(name.clone()))?;
        let purl = format!("pkg:cargo/{name}@{}", encode(&version));
        let mut component = json!({
            "type": "library",
            "bom-ref": purl,
            "name": name,
            "version": version,
            "purl": purl,
            "properties": [{ "name": "cargo:source", "value": source }],
        });
        if let Some(checksum) = field("checksum") {
            component["hashes"] = json!([{ "alg": "SHA-256", "content": checksum }]);
        }
        out.push(component);
    }
    Ok(out)
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

    #[test]
    fn crates_and_packages_become_sorted_components_with_purls() {
        let packages = "libc6\t2.36-9+deb12u4\ti386\nsystemd\t252.19-1~deb12u1\ti386\n";
        let images = [ImagePackages {
            image: "debian",
            distro: "debian",
            packages,
        }];
        let text = cyclonedx("colinux", "0.1.0", LOCK, &images).unwrap();
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
        // The same inputs give the same bytes, serial number included.
        assert_eq!(cyclonedx("colinux", "0.1.0", LOCK, &images).unwrap(), text);
        let other = cyclonedx("colinux", "0.1.1", LOCK, &images).unwrap();
        let other: Value = serde_json::from_str(&other).unwrap();
        assert_ne!(other["serialNumber"], sbom["serialNumber"]);
    }

    #[test]
    fn a_bad_package_line_names_the_image_and_line() {
        let images = [ImagePackages {
            image: "debian",
            distro: "debian",
            packages: "libc6\t2.36\ti386\nbroken line\n",
        }];
        let err = cyclonedx("colinux", "0.1.0", LOCK, &images).unwrap_err();
        assert_eq!(
            err.to_string(),
            "debian.packages, line 2: not \"name<TAB>version<TAB>architecture\""
        );
    }
}
