#!/usr/bin/env bash
# felt's main job, on the embedded store: a three-node cluster in throwaway network namespaces, one feltd per
# node, two pods per node attached through felt's flannel CNI plugin, the node subnets and a cross-node ping
# matrix, then everything is removed. The machine's own network is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec node --import tsx scripts/demo.ts
