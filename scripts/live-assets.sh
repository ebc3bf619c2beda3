#!/usr/bin/env bash
# Refreshes the live page's third-party assets from the npm registry: installs the exact
# versions pinned in live/package-lock.json and copies their browser builds into
# live/assets/vendor/ (committed, embedded in the binary: nothing is fetched at run
# time), then checks them against live/assets/vendor/SHA256SUMS.
#   scripts/live-assets.sh           # verify the vendored files match npm's
#   scripts/live-assets.sh --update  # also rewrite SHA256SUMS (after bumping a version)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/live"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp package.json package-lock.json "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund >/dev/null)
cp "$work/node_modules/d3/dist/d3.min.js" "$work/d3.min.js"
if [[ "${1:-}" == "--update" ]]; then
  cp "$work/d3.min.js" assets/vendor/d3.min.js
  (cd assets/vendor && sha256sum d3.min.js >SHA256SUMS)
fi
(cd "$work" && sha256sum -c "$ROOT/live/assets/vendor/SHA256SUMS")
cmp "$work/d3.min.js" assets/vendor/d3.min.js
echo "live assets: vendored files match the npm registry's" >&2
