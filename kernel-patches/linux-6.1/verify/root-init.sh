#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
echo "R: uptime at init: $(cut -d' ' -f1 /proc/uptime)"
echo "R: cmdline: $(cat /proc/cmdline)"
echo "R: root mount: $(grep ' / ' /proc/mounts)"
echo "R: /dev mounted by kernel (devtmpfs automount): $(grep ' /dev ' /proc/mounts)"
echo "R: /dev/cobd*: $(ls -l /dev/cobd* | tr '\n' ';')"
echo "R: hello: $(cat /hello.txt)"
echo "R: uname: $(uname -r)"
poweroff -f
