#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "T: uptime at init: $(cut -d' ' -f1 /proc/uptime)"
echo "T: uname -r = $(uname -r)"
echo "T: /proc/devices block cobd: $(grep cobd /proc/devices)"
echo "T: /sys/block: $(ls /sys/block | tr '\n' ' ')"
for d in cobd0 cobd1; do
  echo "T: $d sysfs dev=$(cat /sys/block/$d/dev) ext_range=$(cat /sys/block/$d/ext_range) range=$(cat /sys/block/$d/range)"
  echo "T: $d node: $(ls -l /dev/$d)"
done
echo "T: /dev/cobd*: $(ls /dev | grep cobd | tr '\n' ' ')"
echo "T: cobd1 first bytes: $(dd if=/dev/cobd1 bs=16 count=1 2>/dev/null)"
mkdir -p /mnt/disk /mnt/c /mnt/c2 /mnt/c3 /mnt/c4
mount -t ext4 /dev/cobd0 /mnt/disk && echo "T: cobd0 ext4 mount ok: $(cat /mnt/disk/hello.txt)"
grep cobd0 /proc/mounts | sed 's/^/T: /'
umount /mnt/disk

echo "== cofs basic"
mount -t cofs cofs0 /mnt/c; echo "T: mount cofs0 rc=$?"
ls -ln /mnt/c | sed 's/^/T: /'
echo "T: host.txt: $(cat /mnt/c/host.txt)"
echo "T: exec script from cofs: $(/mnt/c/exec.sh)"
echo "T: exec binary from cofs: $(/mnt/c/busybox echo works)"
echo "from guest" > /mnt/c/guest.txt && echo "T: wrote guest.txt rc=$?"
mkdir /mnt/c/guestdir && echo "T: mkdir rc=$?"
grep cofs /proc/mounts | sed 's/^/T: /'

echo "== cofs subdir"
mount -t cofs cofs0:sub /mnt/c2; echo "T: mount cofs0:sub rc=$?"
ls -ln /mnt/c2 | sed 's/^/T: /'
echo "T: sub/subfile.txt: $(cat /mnt/c2/subfile.txt)"
echo "T: ls /mnt/c2/.. (mount parent, must be /mnt): $(ls /mnt/c2/.. | tr '\n' ' ')"
mount -t cofs cofs0:/sub/deeper/ /mnt/c4; echo "T: mount cofs0:/sub/deeper/ rc=$?"
ls -ln /mnt/c4 | sed 's/^/T: /'
umount /mnt/c4
# a second user attaches separately: must still see the subdir
su -s /bin/sh u1000 -c 'ls /mnt/c2' | sed 's/^/T: as uid 1000 in c2: /'

echo "== cofs uid/gid/fmask/dmask"
mount -t cofs -o uid=1000,gid=100,fmask=0133,dmask=0027 cofs0 /mnt/c3; echo "T: mount with uid/gid/masks rc=$?"
ls -ln /mnt/c3 | sed 's/^/T: /'
stat -c 'T: stat %n %u:%g %a' /mnt/c3 /mnt/c3/host.txt /mnt/c3/sub /mnt/c3/exec.sh /mnt/c3/sub/subfile.txt
grep c3 /proc/mounts | sed 's/^/T: /'
chmod 777 /mnt/c3/host.txt; stat -c 'T: after chmod 777 %n %u:%g %a' /mnt/c3/host.txt
chmod 644 /mnt/c3/host.txt
su -s /bin/sh u1000 -c 'echo owner-write > /mnt/c3/byuser.txt && echo "T: uid 1000 write in c3 ok"'
su -s /bin/sh u1001 -c 'echo x > /mnt/c3/byother.txt' 2>/dev/null || echo "T: uid 1001 write in c3 denied (expected)"
umount /mnt/c3

echo "== cofs bad options"
dmesg -c > /dev/null
mount -t cofs -o uid=0,bogus=1 cofs0 /mnt/c3; echo "T: mount bogus rc=$?"
mount -t cofs -o fmask=99 cofs0 /mnt/c3; echo "T: mount fmask=99 rc=$?"
mount -t cofs -o uid=abc cofs0 /mnt/c3; echo "T: mount uid=abc rc=$?"
mount -t cofs cofs0:nonexistent /mnt/c3; echo "T: mount nonexistent subdir rc=$?"
mount -t cofs cofs0:host.txt /mnt/c3; echo "T: mount file as subdir rc=$?"
mount -t cofs cofs0:../etc /mnt/c3; echo "T: mount ../etc rc=$?"
mount -t cofs nosuchtag /mnt/c3; echo "T: mount nosuchtag rc=$?"
dmesg | sed 's/^/T: dmesg: /'
umount /mnt/c2; echo "T: umount c2 rc=$?; c still readable: $(cat /mnt/c/host.txt)"
umount /mnt/c; echo "T: umount c rc=$?"
mount -t 9p -o trans=virtio,version=9p2000.L cofs0 /mnt/c; echo "T: plain 9p mount after last cofs umount (channel released) rc=$?"
umount /mnt/c
sync
echo "T: uptime before poweroff: $(cut -d' ' -f1 /proc/uptime)"
poweroff -f
