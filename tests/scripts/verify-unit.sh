#!/usr/bin/env bash
# verify-unit.sh UNIT HOPPERD: systemd-analyze verify of the shipped unit, with
# ExecStart pointed at the built binary (the unit names /usr/sbin/hopperd,
# which a build tree does not install). Skips (exit 77) without systemd-analyze.
set -euo pipefail
unit=$1
bin=$2
command -v systemd-analyze >/dev/null || { echo "systemd-analyze missing: skipped"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|/usr/sbin/hopperd|$bin|g" "$unit" > "$tmp/hopperd.service"
out=$(systemd-analyze verify "$tmp/hopperd.service" 2>&1) || { echo "$out"; exit 1; }
# verify exits 0 on some warnings: treat any line about our unit as a failure.
if echo "$out" | grep -q "hopperd.service"; then
    echo "$out"
    exit 1
fi
grep -q '^Type=notify' "$unit"
grep -q '^ExecReload=.*-HUP' "$unit"
grep -q '^StateDirectory=hopperd' "$unit"
grep -q '^NoNewPrivileges=yes' "$unit"
grep -q '^ProtectSystem=strict' "$unit"
echo "unit OK"
