#!/bin/sh
# Runs inside a coMosix image (chroot), head or node. Each machine's
# identity comes from its seed disk (comosix-seed.service), not from the
# image or a first boot.
set -eu

# The hostname is the seed's, set at boot: none in the image.
rm -f /etc/hostname
# No first-boot keys: the SSH host key comes from the seed, and systemd
# makes the machine-id itself (a node's root is read-only).
# Root's key comes from the seed too, by comosix-seed.service.
systemctl disable colinux-firstboot.service colinux-credentials.service
rm /etc/systemd/system/colinux-firstboot.service /etc/systemd/system/colinux-credentials.service \
    /usr/lib/colinux/credentials
# The munge key is the cluster's, from the seed: never one in the image.
rm -f /etc/munge/munge.key
systemctl enable comosix-seed.service munge.service
