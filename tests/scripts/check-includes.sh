#!/usr/bin/env bash
# check-includes.sh SRC_DIR: the structural check of the include graph.
#
# Reads every `#include "..."` under src/ and checks the rules of STYLE.md §3:
#   - no cycles between modules (a module is a file name without .c/.h);
#   - the low library modules include only what the table below allows, so
#     nothing reaches up into the queue layer;
#   - the daemon and hopperctl include <hopper.h> and their own headers only
#     (never ../lib), and hopperctl never includes the daemon's run-time
#     modules (only the wire codec and socket helpers).
# With -v it prints the graph in words: one line per module, what it includes.
set -euo pipefail

verbose=0
if [ "${1:-}" = -v ]; then
    verbose=1
    shift
fi
src=${1:?usage: check-includes.sh [-v] SRC_DIR}
fail=0
err() {
    echo "check-includes: $*" >&2
    fail=1
}

# edges: "FROM_DIR FROM_MODULE TO_MODULE" for every quoted include.
shopt -s nullglob
files=()
for f in "$src"/lib/*.[ch] "$src"/hopperd/*.[ch] "$src"/hopperctl/*.[ch]; do
    files+=("${f#"$src"/}")
done
edges=$(cd "$src" && grep -H '^#include "' "${files[@]}" |
    sed -E 's|^([a-z]+)/([A-Za-z0-9_]+)\.[ch]:#include "([^"]+)".*|\1 \2 \3|' |
    awk '{ to = $3; sub(/\.h$/, "", to); n = split(to, p, "/"); print $1, $2, p[n], to }' |
    sort -u)
[ -n "$edges" ] || {
    err "no includes found under $src"
    exit 1
}

# 1. No cycles: tsort fails and names the loop when there is one.
if ! loops=$(awk '$2 != $3 { print $2, $3 }' <<<"$edges" | tsort 2>&1 >/dev/null); then
    err "include cycle: $loops"
fi

# 2. The library's low modules: what each may include (besides itself).
declare -A allow=(
    [internal]="hopper hopper_version"
    [error]="internal"
    [crc32c]="internal"
    [buf]="internal"
    [sync]="internal"
    [deque]="internal"
    [fsio]="internal"
    [record]="internal buf crc32c"
    [segment]="internal buf crc32c record fsio"
    [segindex]="segment internal buf crc32c record fsio"
)
while read -r dir from to path; do
    [ "$dir" = lib ] || continue
    [ "$from" = "$to" ] && continue
    [ -n "${allow[$from]+x}" ] || continue
    case " ${allow[$from]} " in
    *" $to "*) ;;
    *) err "lib/$from includes $path: ${from} may include only: ${allow[$from]}" ;;
    esac
done <<<"$edges"

# 3. Daemon and hopperctl: public header and their own headers only; the
#    daemon's codec and socket helpers are leaves that never include its
#    run-time modules, and hopperctl links only those leaves.
runtime=" config daemon listener loop loop_ctx conn connlimit ingest native subscribe commit relay sink_jetstream metrics signals notify reload preflight auth tlsconf main "
leaves=" log clock framer wire proto netutil tls "
while read -r dir from to path; do
    case "$dir" in hopperd | hopperctl) ;; *) continue ;; esac
    case "$path" in
    ../* | */lib/*) err "$dir/$from includes $path (outside its own folder)" ;;
    esac
    [ "$from" = "$to" ] && continue
    if [ "$dir" = hopperd ] && [[ $leaves == *" $from "* ]] && [[ $runtime == *" $to "* ]]; then
        err "hopperd/$from (a codec/socket leaf) includes the run-time module $path"
    fi
    if [ "$dir" = hopperctl ] && [[ $runtime == *" $to "* ]]; then
        err "hopperctl/$from includes the daemon's run-time module $path"
    fi
done <<<"$edges"

if [ "$verbose" -eq 1 ]; then
    awk '$2 != $3 { d[$1 "/" $2] = d[$1 "/" $2] " " $3 } END { for (k in d) print k ":" d[k] }' \
        <<<"$edges" | sort
fi
[ "$fail" -eq 0 ] && echo "check-includes: ok ($(wc -l <<<"$edges") include edges, no cycles)"
exit "$fail"
