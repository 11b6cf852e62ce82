#!/bin/bash
# Boot test of a kernel built from this series under QEMU TCG.
# usage: boot-test.sh BZIMAGE WORKDIR [i386|x86_64]
# Needs qemu-system-x86, e2fsprogs (mke2fs -d), cpio, gzip and a static
# busybox that the kernel can run (BUSYBOX, default /bin/busybox; Debian's
# busybox-static:i386 runs on both i386 and x86_64 with IA32_EMULATION).
# Prints one line per check and "N passed, N failed"; exits 1 on failure.
set -u
KERNEL=$(realpath "$1")
W=$2
ARCH=${3:-i386}
BUSYBOX=${BUSYBOX:-/bin/busybox}
HERE=$(cd "$(dirname "$0")" && pwd)
QEMU="qemu-system-$ARCH -accel tcg -m 256 -nographic -no-reboot -kernel $KERNEL"

rm -rf "$W"
mkdir -p "$W"
cd "$W" || exit 1

# initramfs: busybox, the test init, users for the permission checks
mkdir -p initramfs/bin initramfs/etc initramfs/proc initramfs/sys \
	initramfs/dev initramfs/mnt initramfs/tmp
cp "$BUSYBOX" initramfs/bin/busybox
cp "$HERE/guest-init.sh" initramfs/init
printf 'root:x:0:0:root:/:/bin/sh\nu1000:x:1000:100::/:/bin/sh\nu1001:x:1001:1001::/:/bin/sh\n' \
	> initramfs/etc/passwd
printf 'root:x:0:\nusers:x:100:\ng1001:x:1001:\n' > initramfs/etc/group
(cd initramfs && find . | cpio -o -H newc 2> /dev/null | gzip -1) > initramfs.cpio.gz

# cobd0: ext4 with busybox and an init for the root=/dev/cobd0 boot
mkdir -p rootfs/bin rootfs/sbin rootfs/proc rootfs/sys rootfs/dev rootfs/mnt
cp "$BUSYBOX" rootfs/bin/busybox
cp "$HERE/root-init.sh" rootfs/sbin/testinit
echo "hello from ext4 on cobd0" > rootfs/hello.txt
mke2fs -q -t ext4 -d rootfs disk0.img 32M
# cobd1: raw, starts with a marker
(printf 'DISK1-MARKER....'; head -c 4194288 /dev/zero) > disk1.img

# the host folder shared as cofs0
mkdir -p share/sub/deeper
echo "hello from host" > share/host.txt
echo "sub content" > share/sub/subfile.txt
echo deep > share/sub/deeper/d.txt
printf '#!/bin/sh\necho exec\n' > share/exec.sh
cp "$BUSYBOX" share/busybox
chmod 755 share share/sub share/exec.sh
chmod 644 share/host.txt share/sub/subfile.txt

disks="-drive file=disk0.img,if=virtio,format=raw -drive file=disk1.img,if=virtio,format=raw"

start=$(date +%s.%N)
timeout 300 $QEMU -initrd initramfs.cpio.gz -append "console=ttyS0 panic=-1" $disks \
	-fsdev local,id=f0,path="$PWD/share",security_model=none \
	-device virtio-9p-pci,fsdev=f0,mount_tag=cofs0 > initrd.log 2>&1
initrd_rc=$?
initrd_wall=$(echo "$(date +%s.%N) - $start" | bc)

start=$(date +%s.%N)
timeout 300 $QEMU -append "console=ttyS0 root=/dev/cobd0 rw init=/sbin/testinit panic=-1" \
	$disks > root.log 2>&1
root_rc=$?
root_wall=$(echo "$(date +%s.%N) - $start" | bc)

# the serial console ends lines with CR LF
sed -i 's/\r$//' initrd.log root.log

pass=0
fail=0
check() {	# check NAME LOG EXTENDED-REGEX
	if grep -aEq -- "$3" "$2"; then
		echo "PASS $1"
		pass=$((pass + 1))
	else
		echo "FAIL $1 (no /$3/ in $2)"
		fail=$((fail + 1))
	fi
}
is() {		# is NAME ACTUAL EXPECTED
	if [ "$2" = "$3" ]; then
		echo "PASS $1"
		pass=$((pass + 1))
	else
		echo "FAIL $1: got '$2', want '$3'"
		fail=$((fail + 1))
	fi
}

L=initrd.log
is   "initramfs boot: QEMU exits 0 after poweroff -f" "$initrd_rc" 0
check "release is 6.1.N-co-VERSION" $L '^T: uname -r = 6\.1\.[0-9]+-co-'
check "/proc/devices has 117 cobd" $L '^T: /proc/devices block cobd: 117 cobd'
check "/sys/block is cobd0 cobd1" $L '^T: /sys/block: cobd0 cobd1 $'
check "cobd0 is 117:0, one minor" $L '^T: cobd0 sysfs dev=117:0 ext_range=1 range=1'
check "cobd1 is 117:1, one minor" $L '^T: cobd1 sysfs dev=117:1 ext_range=1 range=1'
check "devtmpfs /dev/cobd0 117,0" $L '^T: cobd0 node: b.* 117, +0 '
check "devtmpfs /dev/cobd1 117,1" $L '^T: cobd1 node: b.* 117, +1 '
check "cobd1 is the second -drive" $L '^T: cobd1 first bytes: DISK1-MARKER'
check "cobd0 mounts as ext4" $L '^T: cobd0 ext4 mount ok: hello from ext4 on cobd0'
check "mount -t cofs cofs0" $L '^T: mount cofs0 rc=0'
check "host file visible" $L '^T: host.txt: hello from host'
check "script runs from cofs" $L '^T: exec script from cofs: exec$'
check "binary runs from cofs" $L '^T: exec binary from cofs: works$'
check "cofs0:sub mounts alongside" $L '^T: mount cofs0:sub rc=0'
check "cofs0:sub shows the subdir" $L '^T: sub/subfile.txt: sub content'
check "cofs0:/sub/deeper/ mounts" $L '^T: mount cofs0:/sub/deeper/ rc=0'
check "second user's attach sees the subdir" $L '^T: as uid 1000 in c2: subfile.txt'
check "mount with uid/gid/fmask/dmask" $L '^T: mount with uid/gid/masks rc=0'
check "uid/gid/dmask on the root" $L '^T: stat /mnt/c3 1000:100 750$'
check "fmask on a 755 file" $L '^T: stat /mnt/c3/exec.sh 1000:100 644$'
check "dmask on a subdir" $L '^T: stat /mnt/c3/sub 1000:100 750$'
check "options in /proc/mounts" $L 'cofs rw,.*uid=1000,gid=100,fmask=0133,dmask=0027'
check "owner (uid=) may write" $L '^T: uid 1000 write in c3 ok'
check "others denied by dmask" $L '^T: uid 1001 write in c3 denied'
check "unknown option refused" $L '^T: mount bogus rc=[1-9]'
check "unknown option named in log" $L 'cofs: unknown mount option "bogus=1"'
check "bad fmask named in log" $L 'cofs: bad value in mount option "fmask=99"'
check "missing subdir: ENOENT" $L 'cofs0:nonexistent on /mnt/c3 failed: No such file'
check "file as subdir: ENOTDIR" $L 'cofs0:host.txt on /mnt/c3 failed: Not a directory'
check ".. refused" $L 'cofs: ".." not allowed in share path "../etc"'
check "one umount keeps the shared client" $L '^T: umount c2 rc=0; c still readable: hello from host'
check "channel released after last umount" $L '^T: plain 9p mount after last cofs umount \(channel released\) rc=0'
check "ACPI power-off" $L 'reboot: Power down'
is   "guest write reached the host" "$(cat share/guest.txt 2> /dev/null)" "from guest"
is   "uid 1000 write reached the host" "$(cat share/byuser.txt 2> /dev/null)" "owner-write"

L=root.log
is   "root=/dev/cobd0 boot: QEMU exits 0" "$root_rc" 0
check "root mounted from 117:0" $L 'VFS: Mounted root \(ext4 filesystem\) on device 117:0'
check "devtmpfs automounted" $L 'devtmpfs: mounted'
check "init ran from cobd0" $L '^R: hello: hello from ext4 on cobd0'
check "root boot powers off" $L 'reboot: Power down'

echo "initramfs run: $(grep -a '^T: uptime at init' initrd.log), wall ${initrd_wall}s"
echo "root run: $(grep -a '^R: uptime at init' root.log), wall ${root_wall}s"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
