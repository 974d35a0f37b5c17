#!/usr/bin/env bash
# docs-in-step.sh: the man pages (docs/man/, the reference) and the other
# documents still describe the code. Run by ctest (tests/CMakeLists.txt):
#
#   docs-in-step.sh --header include/hopper.h --libman docs/man/libhopper.3
#       [--config-c src/hopperd/config.c --confman docs/man/hopperd.conf.5
#        --conf conf/hopperd.conf --guide docs/hopperd.md
#        --hopperd BIN --hopperd-man docs/man/hopperd.8
#        --hopperctl BIN --hopperctl-man docs/man/hopperctl.1]
#
# Checks, each naming what is missing or stale:
# - every HOPPER_API function of hopper.h has .Fn/.Fo in libhopper.3, every
#   HOPPER_E* code is named there, and every hopper_* function documented
#   there exists;
# - every directive of config.c's table is an `.It Ic KEY` of its section in
#   hopperd.conf.5, with `Default: VALUE` (or "Required"), `Range: MIN to MAX`
#   for numbers, and "Applied on reload" exactly when SIGHUP applies it; and
#   no directive is documented that the table lacks;
# - every directive appears in its section of conf/hopperd.conf with its
#   default value, and in its section's table in docs/hopperd.md;
# - every option in `hopperd -h` is an `.It Fl X` of hopperd.8 and in
#   docs/hopperd.md, and hopperd.8 has no other `.It Fl X`;
# - every command and option in hopperctl's usage is in hopperctl.1 (commands
#   as `.It Cm CMD`) and every command in docs/hopperd.md.
set -euo pipefail

header='' libman='' configc='' confman='' conf='' guide=''
hopperd='' hopperd_man='' hopperctl='' hopperctl_man=''
while [ $# -gt 0 ]; do
    case $1 in
    --header) header=$2 ;;
    --libman) libman=$2 ;;
    --config-c) configc=$2 ;;
    --confman) confman=$2 ;;
    --conf) conf=$2 ;;
    --guide) guide=$2 ;;
    --hopperd) hopperd=$2 ;;
    --hopperd-man) hopperd_man=$2 ;;
    --hopperctl) hopperctl=$2 ;;
    --hopperctl-man) hopperctl_man=$2 ;;
    *) echo "docs-in-step: unknown argument $1" >&2; exit 2 ;;
    esac
    shift 2
done
for f in "$header" "$libman" $configc $confman $conf $guide $hopperd_man $hopperctl_man; do
    [ -r "$f" ] || { echo "docs-in-step: cannot read '$f'" >&2; exit 2; }
done

fail=0
bad() {
    echo "STALE: $*"
    fail=1
}

# ---- libhopper.3 vs hopper.h -------------------------------------------
funcs=$(sed -n 's/^HOPPER_API[^(]*[ *]\([a-z_0-9]*\)(.*/\1/p' "$header")
codes=$(sed -n 's/^ *XX(\([A-Z]*\),.*/HOPPER_\1/p' "$header")
if [ -z "$funcs" ] || [ -z "$codes" ]; then
    echo "docs-in-step: no HOPPER_API function or error code found in $header" >&2
    exit 2
fi
for f in $funcs; do
    grep -Eq "^\.F[no] $f( |\$)" "$libman" || bad "$libman: no .Fn/.Fo $f (hopper.h declares it)"
done
for c in $codes; do
    grep -Eq "(^| )$c( |\$)" "$libman" || bad "$libman: error code $c is not named"
done
for f in $(sed -n 's/^\.F[no] \(hopper_[a-z_0-9]*\).*/\1/p' "$libman" | sort -u); do
    grep -qx "$f" <<<"$funcs" || bad "$libman: documents $f, which hopper.h does not declare"
done
echo "libhopper.3: $(wc -w <<<"$funcs") functions, $(wc -w <<<"$codes") error codes checked"

# ---- hopperd.conf.5, conf/hopperd.conf, docs/hopperd.md vs config.c ------
if [ -n "$configc" ]; then
    # One line per directive: SECTION KEY TYPE DEFAULT RANGE RELOAD, where
    # DEFAULT is "-" for none (required) or "(empty)", RANGE "MIN to
    # MAX" in the units the documents use (KiB.., ms/s/m) or "-".
    table=$(awk '
    function die(m) { print "docs-in-step: " FILENAME ": " m > "/dev/stderr"; bad = 1; exit 2 }
    function num(x,   a) {
        if (x ~ /^[0-9]+\*(KiB|MiB|GiB)$/) {
            a = x; sub(/\*.*/, "", a)
            return a * (x ~ /KiB/ ? 1024 : x ~ /MiB/ ? 1048576 : 1073741824)
        }
        if (x ~ /^UINT64_C\([0-9]+\)<<[0-9]+$/) {
            a = x; sub(/^UINT64_C\(/, "", a); sub(/\).*/, "", a)
            sub(/.*<</, "", x)
            return a * 2 ^ x
        }
        if (x ~ /^0[0-7]+$/) { a = 0; while (length(x)) { a = a * 8 + substr(x, 1, 1); x = substr(x, 2) } return a }
        if (x ~ /^[0-9]+$/) return x + 0
        die("cannot evaluate bound \"" x "\"")
    }
    function size(v) {
        if (v % 1073741824 == 0) return sprintf("%.0fGiB", v / 1073741824)
        if (v % 1048576 == 0) return sprintf("%.0fMiB", v / 1048576)
        if (v % 1024 == 0) return sprintf("%.0fKiB", v / 1024)
        return sprintf("%.0fB", v)
    }
    function dur(v) {
        if (v % 60000 == 0) return sprintf("%.0fm", v / 60000)
        if (v % 1000 == 0) return sprintf("%.0fs", v / 1000)
        return sprintf("%.0fms", v)
    }
    /directives\[\] = \{/ { on = 1; next }
    on && /^};/ { on = 0 }
    on {
        line = $0
        gsub(/\/\*.*\*\//, "", line)
        body = body line
    }
    END {
        if (bad) exit 2
        n = split(body, ent, /\},/)
        for (i = 1; i <= n; i++) {
            e = ent[i]
            gsub(/[ \t]/, "", e)
            if (e == "" || e == "}") continue
            sub(/^\{/, "", e); sub(/\}$/, "", e)
            if (split(e, f, ",") != 9) die("cannot parse directive {" e "}")
            sec = f[1]; sub(/^K_/, "", sec); sec = tolower(sec)
            if (sec == "main") sec = "hopperd"
            key = f[2]; gsub(/"/, "", key)
            type = f[3]; sub(/^T_/, "", type)
            def = f[6] == "NULL" ? "-" : f[6] == "\"\"" ? "(empty)" : f[6]
            gsub(/"/, "", def)
            range = "-"
            lo = num(f[4]); hi = num(f[5])
            if (hi != 0 && type == "SIZE") range = size(lo) " to " size(hi)
            if (hi != 0 && (type == "DURATION" || type == "FSYNC")) range = dur(lo) " to " dur(hi)
            if (hi != 0 && type == "UINT") range = lo " to " hi
            printf "%s\t%s\t%s\t%s\t%s\t%s\n", sec, key, type, def, range, f[8]
            count++
        }
        if (count == 0) die("no directives table found")
    }' "$configc")

    # hopperd.conf.5: SECTION KEY TEXT, TEXT being the item (`.It Ic KEY` up
    # to the next item of the same list), for the lists under `.Ss [SECTION ...]`.
    man_items=$(awk '
    function flush() { if (cur != "") print cur "\t" text; cur = "" }
    /^\.S[hs] / { flush(); sec = ""; depth = 0 }
    /^\.Ss \[hopperd\]/ { sec = "hopperd" }
    /^\.Ss \[queue / { sec = "queue" }
    /^\.Ss \[source / { sec = "source" }
    /^\.Ss \[sink / { sec = "sink" }
    sec == "" { next }
    /^\.Bl / { depth++ }
    /^\.El/ { if (depth == 1) flush(); depth--; next }
    /^\.It / && depth == 1 { flush(); if ($2 == "Ic") { cur = sec "\t" $3; text = "" } next }
    cur != "" { text = text " " $0 }
    END { flush() }' "$confman")

    conf_lines=$(awk '
    /^\[/ { sec = $1; sub(/^\[/, "", sec); sub(/\]$/, "", sec); next }
    /^#? *[a-z_]+ *=/ { l = $0; sub(/^# */, "", l); k = l; sub(/ *=.*/, "", k); print sec "\t" k "\t" l }' "$conf")

    guide_rows=$(awk '
    /^#/ { sec = "" }
    /^### \[hopperd\]/ { sec = "hopperd" }
    /^### \[queue / { sec = "queue" }
    /^### \[source / { sec = "source" }
    /^### \[sink / { sec = "sink" }
    sec != "" && /^\| `[a-z_]+` \|/ { k = $2; gsub(/`/, "", k); print sec "\t" k "\t" $0 }' "$guide")

    while IFS=$'\t' read -r sec key _type def range reload; do
        what="[$sec] $key"
        item=$(awk -F'\t' -v s="$sec" -v k="$key" '$1 == s && $2 == k { print $3 }' <<<"$man_items")
        if [ -z "$item" ]; then
            bad "$confman: no '.It Ic $key' under '.Ss [$sec ...]'"
        else
            case $def in
            -) grep -q 'Required' <<<"$item" || bad "$confman: $what: no default, so say 'Required'" ;;
            "(empty)") grep -q 'Default: empty' <<<"$item" || bad "$confman: $what: want 'Default: empty'" ;;
            *) grep -Eq "Default: $def([ .,;]|\$)" <<<"$item" || bad "$confman: $what: want 'Default: $def'" ;;
            esac
            if [ "$range" != - ] && ! grep -q "Range: $range" <<<"$item"; then
                bad "$confman: $what: want 'Range: $range'"
            fi
            if [ "$reload" = 1 ] && ! grep -q 'Applied on reload' <<<"$item"; then
                bad "$confman: $what: SIGHUP applies it; say 'Applied on reload'"
            elif [ "$reload" = 0 ] && grep -q 'Applied on reload' <<<"$item"; then
                bad "$confman: $what: not reloadable, but says 'Applied on reload'"
            fi
        fi
        line=$(awk -F'\t' -v s="$sec" -v k="$key" '$1 == s && $2 == k { print $3; exit }' <<<"$conf_lines")
        if [ -z "$line" ]; then
            bad "$conf: no '$key =' (or '# $key =') in [$sec]"
        elif [ "$def" != - ] && [ "$def" != "(empty)" ]; then
            value=$(sed 's/^[^=]*= *//; s/#.*//; s/ *$//' <<<"$line")
            [ "$value" = "$def" ] || grep -qF "default $def" <<<"$line" ||
                bad "$conf: [$sec] '$line' shows neither the default $def nor 'default $def'"
        fi
        row=$(awk -F'\t' -v s="$sec" -v k="$key" '$1 == s && $2 == k { print $3 }' <<<"$guide_rows")
        if [ -z "$row" ]; then
            bad "$guide: no '| \`$key\` |' row under '### [$sec ...]'"
        elif [ "$def" != - ] && [ "$def" != "(empty)" ] && ! grep -qF "\`$def\`" <<<"$row"; then
            bad "$guide: [$sec] $key: the row does not show the default \`$def\`"
        fi
    done <<<"$table"
    while IFS=$'\t' read -r sec key _; do
        [ -n "$key" ] || continue
        awk -F'\t' -v s="$sec" -v k="$key" '$1 == s && $2 == k { f = 1 } END { exit !f }' \
            <<<"$table" || bad "$confman: documents [$sec] $key, which config.c does not know"
    done <<<"$man_items"
    echo "hopperd.conf.5, hopperd.conf, hopperd.md: $(wc -l <<<"$table") directives checked"
fi

# ---- hopperd.8 vs hopperd -h ------------------------------------------------
if [ -n "$hopperd" ]; then
    opts=$("$hopperd" -h | sed -n 's/^ *-\([A-Za-z]\)\( .*\)*$/\1/p')
    [ -n "$opts" ] || { echo "docs-in-step: no options in '$hopperd -h'" >&2; exit 2; }
    for o in $opts; do
        grep -Eq "^\.It Fl $o( |\$)" "$hopperd_man" || bad "$hopperd_man: no '.It Fl $o'"
        [ -z "$guide" ] || grep -qF "| \`-$o" "$guide" || bad "$guide: option -$o is not in OPTIONS"
    done
    for o in $(sed -n 's/^\.It Fl \([A-Za-z]\)\( .*\)*$/\1/p' "$hopperd_man"); do
        grep -qx "$o" <<<"$opts" || bad "$hopperd_man: documents -$o, which hopperd -h does not list"
    done
    echo "hopperd.8: $(wc -w <<<"$opts") options checked"
fi

# ---- hopperctl.1 vs hopperctl's usage -----------------------------------
if [ -n "$hopperctl" ]; then
    usage=$("$hopperctl" 2>&1 >/dev/null || true)
    cmds=$(sed -n 's/^\(usage:\)* *hopperctl \([a-z]*\).*/\2/p' <<<"$usage")
    [ -n "$cmds" ] || { echo "docs-in-step: no commands in hopperctl's usage" >&2; exit 2; }
    for c in $cmds; do
        grep -Eq "^\.It Cm $c( |\$)" "$hopperctl_man" || bad "$hopperctl_man: no '.It Cm $c'"
        [ -z "$guide" ] || grep -Eq "hopperctl $c([^a-z_]|\$)" "$guide" || bad "$guide: no 'hopperctl $c'"
        # Options of this command's usage line: -x or --long.
        for o in $(grep -E "hopperctl $c( |\$)" <<<"$usage" | grep -oE '(^| |\[)--?[A-Za-z][a-z]*' |
            tr -d ' ['); do
            case $o in
            --*) pat="Fl (\\\\-|-)${o#--}( |\$)" ;;
            *) pat="Fl ${o#-}( |\$)" ;;
            esac
            grep -Eq "$pat" "$hopperctl_man" || bad "$hopperctl_man: hopperctl $c option $o is missing"
        done
    done
    for c in $(sed -n 's/^\.It Cm \([a-z]*\).*/\1/p' "$hopperctl_man"); do
        grep -qx "$c" <<<"$cmds" || bad "$hopperctl_man: documents command $c, not in hopperctl's usage"
    done
    echo "hopperctl.1: $(wc -w <<<"$cmds") commands checked"
fi

if [ $fail -ne 0 ]; then
    echo "docs-in-step: the documents above are out of step with the code" >&2
    exit 1
fi
echo "docs-in-step: OK"
