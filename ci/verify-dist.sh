#!/usr/bin/env bash
# Checks a `cargo xtask dist` bundle with tools we did not write: every
# checksum (sha256sum), every minisign signature against the published key
# (minisign), the Authenticode signature of every Windows executable against
# a CA (osslsigncode), and the Debian package (lintian). Shared by the dist
# test and the release workflow.
# Usage: ci/verify-dist.sh DIR [AUTHENTICODE_CA_PEM]
set -euo pipefail
dir=${1:?usage: ci/verify-dist.sh DIR [AUTHENTICODE_CA_PEM]}
ca=$(realpath "${2:-/etc/ssl/certs/ca-certificates.crt}")
cd "$dir"
sha256sum --quiet --strict -c SHA256SUMS
signed=0
for sig in *.minisig; do
    minisign -Vq -p colinux-release.pub -m "${sig%.minisig}" -x "$sig"
    signed=$((signed + 1))
done
exes=0
for exe in *.exe; do
    if ! out=$(osslsigncode verify -CAfile "$ca" -in "$exe" 2>&1); then
        printf '%s\n' "$out" >&2
        echo "verify-dist: $exe: the Authenticode signature does not verify against $ca" >&2
        exit 1
    fi
    exes=$((exes + 1))
done
lintian --fail-on error --tag-display-limit 0 ./*.deb
echo "verify-dist: $(wc -l < SHA256SUMS) checksums, $signed minisign signatures, $exes Authenticode signatures and lintian: all good"
