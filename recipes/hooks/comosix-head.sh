#!/bin/sh
# Runs inside the coMosix head image (chroot), after comosix.sh.
set -eu

# eth0 gets the head's static address from comosix-head-config.service.
rm /etc/systemd/network/20-eth0.network
mkdir -p /srv/comosix/node /etc/exports.d /etc/dnsmasq.d
systemctl enable comosix-head-config.service srv-comosix-node.mount \
    slurmctld.service dnsmasq.service nfs-server.service
# systemd-resolved, not resolvconf, points the head at its own dnsmasq
# (comosix-seed.service): dnsmasq's helper must not try to.
printf '\n# coMosix: resolved points the head at this dnsmasq.\nDNSMASQ_EXCEPT="lo"\nIGNORE_RESOLVCONF=yes\n' >>/etc/default/dnsmasq
