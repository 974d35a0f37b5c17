#!/usr/bin/env bash
# man-lint.sh PAGE...: `mandoc -T lint -W warning` on each page; any warning
# or error fails. Skips (exit 77) without mandoc (scripts/hopper-dev deps
# installs it).
set -euo pipefail
command -v mandoc >/dev/null || { echo "mandoc missing: skipped"; exit 77; }
status=0
for page in "$@"; do
    if mandoc -T lint -W warning "$page"; then
        echo "ok $page"
    else
        status=1
    fi
done
exit $status
