#!/usr/bin/env bash
# docs/config.md carries the table `engram config --keys` prints, so the docs name every key with
# its real default. Regenerate the table with: ./build/engram config --keys
set -euo pipefail
engram=$1
src=$(cd "$(dirname "$0")/../.." && pwd)
missing=$("$engram" config --keys | grep -vxF -f "$src/docs/config.md" || true)
if [[ -n "$missing" ]]; then echo "FAIL: docs/config.md lacks these rows:"; echo "$missing"; exit 1; fi
echo "docs/config.md lists all $("$engram" config --keys | tail -n +3 | wc -l) keys"
