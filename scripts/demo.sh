#!/usr/bin/env bash
# felt's main job, on the embedded store: attach two pods to a bridge through felt's own CNI executables
# (bridge + host-local), show their addresses and the event log, ping pod->pod and pod->gateway, clean up.
# Everything happens in throwaway network namespaces; the machine's own network is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

id="felt-demo-$$"
host="$id-host"
pods=("$id-a" "$id-b")
data="$(mktemp -d /tmp/felt-demo.XXXXXX)"
conf=$(cat <<JSON
{"cniVersion":"1.1.0","name":"demo","type":"bridge","bridge":"cni0","isGateway":true,"isDefaultGateway":true,
 "ipMasq":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.88.0.0/24"}]],"dataDir":"$data"}}
JSON
)
cni() { # cni COMMAND POD
  CNI_COMMAND="$1" CNI_CONTAINERID="$2" CNI_NETNS="/var/run/netns/$2" CNI_IFNAME=eth0 CNI_PATH="$PWD/dist/cni" \
    ip netns exec "$host" dist/cni/bridge <<<"$conf"
}
cleanup() {
  for p in "${pods[@]}"; do cni DEL "$p" >/dev/null 2>&1 || true; ip netns del "$p" 2>/dev/null || true; done
  ip netns del "$host" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

echo "== a host namespace ($host) and two pod namespaces"
ip netns add "$host"
for p in "${pods[@]}"; do ip netns add "$p"; done

for p in "${pods[@]}"; do
  echo "== ADD $p through dist/cni/bridge + host-local"
  cni ADD "$p" | node -e 'const r=JSON.parse(require("fs").readFileSync(0,"utf8"));console.log(`   ${r.ips.map(i=>i.address+" gw "+i.gateway).join(", ")}  (interfaces: ${r.interfaces.map(i=>i.name).join(", ")})`)'
done

echo "== addresses"
for p in "${pods[@]}"; do echo "   $p: $(ip -n "$p" -br -4 addr show dev eth0 | awk '{print $3}')"; done
a_ip=$(ip -n "${pods[0]}" -br -4 addr show dev eth0 | awk '{print $3}' | cut -d/ -f1)
b_ip=$(ip -n "${pods[1]}" -br -4 addr show dev eth0 | awk '{print $3}' | cut -d/ -f1)

echo "== CHECK"
for p in "${pods[@]}"; do cni CHECK "$p" && echo "   $p: ok"; done

echo "== ping ${pods[0]} -> ${pods[1]} ($b_ip), ${pods[1]} -> ${pods[0]} ($a_ip), and both -> gateway (10.88.0.1)"
ip netns exec "${pods[0]}" ping -c 2 -W 2 -q "$b_ip" | tail -2 | sed 's/^/   /'
ip netns exec "${pods[1]}" ping -c 2 -W 2 -q "$a_ip" | tail -2 | sed 's/^/   /'
for p in "${pods[@]}"; do ip netns exec "$p" ping -c 1 -W 2 -q 10.88.0.1 | tail -1 | sed "s/^/   $p: /"; done

echo "== the event log (dist/bin/felt events) and who holds what (dist/bin/felt allocations)"
dist/bin/felt events --data-dir "$data" | sed 's/^/   /'
dist/bin/felt allocations --data-dir "$data" | sed 's/^/   /'

echo "== DEL both pods"
for p in "${pods[@]}"; do cni DEL "$p"; done
dist/bin/felt allocations --data-dir "$data" | sed 's/^/   /'
echo "== done; cleaning up"
