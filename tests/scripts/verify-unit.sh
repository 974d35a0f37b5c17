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
grep -q '^ProtectProc=invisible' "$unit"
grep -q '^ProcSubset=pid' "$unit"
grep -q '^PrivateUsers=' "$unit"
# The configuration the unit reads (the installed example's destination).
grep -q '^ExecStart=/usr/sbin/hopperd -f /etc/hopperd.conf$' "$unit"
grep -q '^ExecStartPre=/usr/sbin/hopperd -n -f /etc/hopperd.conf$' "$unit"
# The exposure score, offline (systemd >= 250; no running manager needed).
# The shipped unit scores 1.2 (systemd 252); fail if hardening is lost.
if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
    sec=$(systemd-analyze security --offline=yes "$tmp/hopperd.service" 2>&1) || true
    score=$(sed -n 's/.*Overall exposure level for hopperd.service: \([0-9.]*\).*/\1/p' <<<"$sec")
    [ -n "$score" ] || { echo "$sec"; echo "no exposure level in systemd-analyze security"; exit 1; }
    echo "systemd-analyze security: exposure $score"
    awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || { echo "$sec"; echo "exposure $score > 2.0"; exit 1; }
fi
echo "unit OK"
