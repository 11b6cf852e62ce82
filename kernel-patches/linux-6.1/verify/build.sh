#!/bin/bash
# Fresh extract of the Debian tarball, each patch dry-run alone on the
# pristine tree, the series applied in order, tinyconfig + fragments, every
# fragment line checked, then a timed "make -j2 bzImage".
# usage: build.sh i386|x86_64 WORKDIR    (result: WORKDIR/linux-source-6.1/build)
set -eu
ARCH=$1
W=$2
P=$(cd "$(dirname "$0")/.." && pwd)
TARBALL=${TARBALL:-/usr/src/linux-source-6.1.tar.xz}

rm -rf "$W"
mkdir -p "$W"
cd "$W"
echo "== extract $TARBALL"
tar xf "$TARBALL"
cd linux-source-6.1

patches=$(grep -Ev '^[[:space:]]*(#|$)' "$P/series")
echo "== dry-run of every patch alone on the pristine tree"
echo "$patches" | while read -r pf opt; do
	patch ${opt:--p1} --dry-run --batch --forward < "$P/$pf" > /dev/null
	echo "ok   $pf"
done
echo "== apply the series in order"
echo "$patches" | while read -r pf opt; do
	patch ${opt:--p1} --batch --forward < "$P/$pf" > /dev/null
	echo "applied $pf ${opt:--p1}"
done

echo "== config"
make O=build ARCH="$ARCH" tinyconfig > /dev/null
scripts/kconfig/merge_config.sh -m -O build build/.config \
	"$P/config/common.config" "$P/config/$ARCH.config" > /dev/null
make O=build ARCH="$ARCH" olddefconfig > /dev/null

echo "== check that every fragment line holds"
bad=0
for f in "$P/config/common.config" "$P/config/$ARCH.config"; do
	while IFS= read -r line; do
		case "$line" in
		"# CONFIG_"*" is not set")
			sym=${line#\# }
			sym=${sym%% *}
			if grep -q "^$sym=" build/.config; then
				echo "MISMATCH $line -> $(grep "^$sym=" build/.config)"
				bad=1
			fi
			;;
		CONFIG_*=*)
			if ! grep -qxF "$line" build/.config; then
				echo "MISMATCH $line -> $(grep "^${line%%=*}=" build/.config || echo unset)"
				bad=1
			fi
			;;
		esac
	done < "$f"
done
[ "$bad" = 0 ] || exit 1
echo "all fragment lines hold"

echo "== build"
start=$(date +%s)
make O=build ARCH="$ARCH" -j2 bzImage > ../build.log 2>&1
end=$(date +%s)
echo "build seconds: $((end - start))"
grep -E "warning:|error:" ../build.log || true
ls -l build/arch/x86/boot/bzImage
cat build/include/config/kernel.release
