#!/bin/sh
# Runs inside the coMosix node image (chroot), after comosix.sh.
set -eu

# The kernel configured eth0 by DHCP (ip=) before the root existed, and the
# NFS root runs over that address: nothing may reconfigure it, so no
# systemd-networkd at all (its DHCP client would restart the lease, and a
# managed link loses the addresses it did not set).
systemctl disable systemd-networkd.service systemd-networkd.socket systemd-networkd-wait-online.service
rm /etc/systemd/network/20-eth0.network
systemctl enable slurmd.service comosix-fstab-local.service
