#!/usr/bin/env bash
# Set up everything, then run felt's whole test suite: type check, core properties, kernel and
# differential tests in throwaway network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
npx tsc --noEmit
npx prettier --check "**/*.{ts,mjs}"
# Lint: unused imports, variables and exports fail; functions over 80 lines are flagged (warnings).
npm run --silent lint
npx vitest run "$@"
