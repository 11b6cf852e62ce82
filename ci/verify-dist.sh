#!/usr/bin/env bash
# Checks a `cargo xtask dist` bundle with tools we did not write: every
# checksum (sha256sum), every minisign signature against the published key
# (minisign), the Authenticode signature of every Windows executable against
# a CA (osslsigncode), and the Debian package (lintian). Shared by the dist
# test and the release workflow.
# Usage: ci/verify-dist.sh DIR [AUTHENTICODE_CA_PEM]
set -euo pipefail
dir=${1:?usage: ci/verify-dist.sh DIR [AUTHENTICODE_CA_PEM]}
ca=${2:-/etc/ssl/certs/ca-certificates.crt}
cd "$dir"
sha256sum --quiet --strict -c SHA256SUMS
signed=0
for sig in *.minisig; do
    minisign -Vq -p colinux-release.pub -m "${sig%.minisig}" -x "$sig"
    signed=$((signed + 1))
done
exes=0
for exe in *.exe; do
    osslsigncode verify -CAfile "$ca" -in "$exe" >/dev/null
    exes=$((exes + 1))
done
lintian --fail-on error --no-tag-display-limit ./*.deb
echo "verify-dist: $(wc -l < SHA256SUMS) checksums, $signed minisign signatures, $exes Authenticode signatures and lintian: all good"
