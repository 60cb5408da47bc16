#!/usr/bin/env bash
# Install everything felt needs on a Debian machine (run as root), then build.
# Idempotent: safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "setup: run as root (felt configures network namespaces and iptables)" >&2; exit 1; }

# chromium (and a font for its screenshots): the status page test, test/apps/status-page.test.ts.
# podman, runc and busybox-static: the podman runtime test (runc because crun refuses hybrid cgroup layouts;
# busybox is the whole image, imported from a tarball). The deploy test uses systemd-analyze when systemd is there.
# gcc and libc6-dev: npm run build compiles the CNI forwarders (apps/cni/forwarder/forwarder.c).
packages=(gcc libc6-dev iproute2 iptables nftables util-linux iputils-ping containernetworking-plugins etcd-server etcd-client procps conntrack dnsmasq-base chromium fonts-dejavu-core podman runc busybox-static)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
  }
fi
node -e 'if (+process.versions.node.split(".")[0] < 20) { console.error("setup: felt needs Node.js 20 or later, found " + process.version); process.exit(1) }'

# The Debian etcd package may start a system etcd on 2379; felt's tests start their own inside namespaces.
if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then systemctl stop etcd || true; fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run --silent build
