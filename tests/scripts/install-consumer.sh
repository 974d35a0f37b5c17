#!/usr/bin/env bash
# install-consumer.sh BUILD_DIR SOURCE_DIR: is the installed libhopper usable?
#
# `cmake --install BUILD_DIR` into a temporary prefix, check that what a
# producer and an operator need is there (headers, library, hopper.pc, the
# CMake package, man pages; with the daemon: hopperd, hopperctl, the example
# configuration, the systemd unit), then build src/example/hopper_example.c
# and a version check against the installed copy twice and run them:
#   1. cc + `pkg-config --cflags --libs hopper` (with --static when only
#      libhopper.a is installed), run with LD_LIBRARY_PATH;
#   2. a generated CMake project: find_package(hopper REQUIRED) +
#      target_link_libraries(... hopper::hopper), CMAKE_PREFIX_PATH=prefix.
# Each step must succeed. ctest sets the environment (tests/CMakeLists.txt):
# CC, HOPPER_VERSION, HOPPER_CONSUMER_FLAGS (the sanitizer flag of a
# sanitized build, which a static libhopper needs at link time too),
# HOPPER_WITH_DAEMON and the GNUInstallDirs directories (HOPPER_DOCDIR too). Exit 77 (skipped)
# when an install directory is absolute: it cannot go under a temporary prefix.
set -euo pipefail

build=$1
src=$2
cc=${CC:-cc}
flags=${HOPPER_CONSUMER_FLAGS:-}
dirs=(HOPPER_LIBDIR HOPPER_INCLUDEDIR HOPPER_MANDIR)
[ "${HOPPER_WITH_DAEMON:-}" = ON ] &&
    dirs+=(HOPPER_BINDIR HOPPER_SBINDIR HOPPER_SYSCONFDIR HOPPER_UNITDIR HOPPER_DOCDIR)
for v in HOPPER_VERSION HOPPER_WITH_DAEMON "${dirs[@]}"; do
    [ -n "${!v:-}" ] || { echo "install-consumer: $v is not set (run through ctest)" >&2; exit 1; }
done
for v in "${dirs[@]}"; do
    case ${!v} in
    /*) echo "install-consumer: $v=${!v} is absolute; skipped"; exit 77 ;;
    esac
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
libdir=$prefix/$HOPPER_LIBDIR

step() { echo "== $*"; }

step "cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log"; exit 1; }

step "installed files"
expect=("$HOPPER_INCLUDEDIR/hopper.h" "$HOPPER_INCLUDEDIR/hopper_version.h"
        "$HOPPER_LIBDIR/pkgconfig/hopper.pc"
        "$HOPPER_LIBDIR/cmake/hopper/hopperConfig.cmake"
        "$HOPPER_LIBDIR/cmake/hopper/hopperConfigVersion.cmake"
        "$HOPPER_LIBDIR/cmake/hopper/hopperTargets.cmake"
        "$HOPPER_MANDIR/man3/libhopper.3")
if [ "$HOPPER_WITH_DAEMON" = ON ]; then
    expect+=("$HOPPER_SBINDIR/hopperd" "$HOPPER_BINDIR/hopperctl"
             "$HOPPER_MANDIR/man8/hopperd.8" "$HOPPER_MANDIR/man5/hopperd.conf.5"
             "$HOPPER_MANDIR/man1/hopperctl.1" "$HOPPER_SYSCONFDIR/hopperd.conf.example"
             "$HOPPER_DOCDIR/hopperd.conf.annotated" "$HOPPER_UNITDIR/hopperd.service")
fi
for f in "${expect[@]}"; do
    [ -f "$prefix/$f" ] || { echo "missing: $f" >&2; find "$prefix" -type f >&2; exit 1; }
    echo "ok $f"
done
if [ "$HOPPER_WITH_DAEMON" = ON ]; then
    # The example next to /etc/hopperd.conf is the one for the unit (absolute
    # paths), not the source tree's annotated file (relative paths).
    cmp "$prefix/$HOPPER_SYSCONFDIR/hopperd.conf.example" "$src/conf/hopperd-systemd.conf"
    cmp "$prefix/$HOPPER_DOCDIR/hopperd.conf.annotated" "$src/conf/hopperd.conf"
    echo "ok hopperd.conf.example is conf/hopperd-systemd.conf"
fi
if [ -e "$libdir/libhopper.so" ]; then
    kind=shared
elif [ -f "$libdir/libhopper.a" ]; then
    kind=static
else
    echo "missing: $HOPPER_LIBDIR/libhopper.so or libhopper.a" >&2
    exit 1
fi
echo "ok libhopper ($kind)"

# The version check: header macros, run-time functions and pkg-config agree.
cat >"$tmp/version_check.c" <<'EOF'
#include <hopper.h>
#include <stdio.h>
#include <string.h>

int
main(void)
{
    unsigned v = (HOPPER_VERSION_MAJOR << 16) | (HOPPER_VERSION_MINOR << 8) | HOPPER_VERSION_PATCH;
    if (hopper_version() != v || strcmp(hopper_version_string(), HOPPER_VERSION_STRING) != 0) {
        fprintf(stderr, "header %s, library %s\n", HOPPER_VERSION_STRING, hopper_version_string());
        return 1;
    }
    printf("%s\n", hopper_version_string());
    return 0;
}
EOF

# run_consumer DIR: run DIR/version_check and DIR/hopper_example; both must
# succeed, report this version and (example) drain every record in order.
run_consumer() {
    local dir=$1 out
    out=$("$dir/version_check")
    [ "$out" = "$HOPPER_VERSION" ] || { echo "version_check: '$out', want $HOPPER_VERSION" >&2; exit 1; }
    mkdir "$dir/spool"
    out=$("$dir/hopper_example" "$dir/spool" 3000)
    echo "$out"
    grep -q '^drained 3000 records in order' <<<"$out" || { echo "hopper_example: no full drain" >&2; exit 1; }
    if [ "$kind" = shared ]; then
        # The installed library, not one from the build tree or the system.
        ldd "$dir/hopper_example" | grep -F "$libdir/libhopper.so" ||
            { ldd "$dir/hopper_example" >&2; echo "not linked to $libdir" >&2; exit 1; }
    fi
}

step "consumer 1: cc + pkg-config ($kind)"
export PKG_CONFIG_PATH=$libdir/pkgconfig
pc=(--cflags --libs)
[ "$kind" = static ] && pc+=(--static)
[ "$(pkg-config --modversion hopper)" = "$HOPPER_VERSION" ]
pcflags=$(pkg-config "${pc[@]}" hopper)
echo "pkg-config ${pc[*]} hopper: $pcflags"
mkdir "$tmp/pc"
for prog in "$src/src/example/hopper_example.c" "$tmp/version_check.c"; do
    # shellcheck disable=SC2086 # word splitting of the flags is intended
    "$cc" -std=c11 -Wall -Wextra -Werror $flags -o "$tmp/pc/$(basename "$prog" .c)" "$prog" \
        $pcflags
done
LD_LIBRARY_PATH=$libdir run_consumer "$tmp/pc"

step "consumer 2: CMake find_package(hopper) ($kind)"
mkdir "$tmp/cm"
cat >"$tmp/cm/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.16)
project(hopper_consumer LANGUAGES C)
find_package(hopper $HOPPER_VERSION REQUIRED)
file(WRITE \${CMAKE_BINARY_DIR}/hopper_dir.txt "\${hopper_DIR}")
foreach(prog hopper_example version_check)
  add_executable(\${prog} \${prog}.c)
  target_link_libraries(\${prog} PRIVATE hopper::hopper)
endforeach()
EOF
cp "$src/src/example/hopper_example.c" "$tmp/version_check.c" "$tmp/cm/"
cmake -S "$tmp/cm" -B "$tmp/cm/build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_C_FLAGS="-Wall -Wextra -Werror $flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" \
    >"$tmp/cm.log" 2>&1 || { cat "$tmp/cm.log"; exit 1; }
found=$(cat "$tmp/cm/build/hopper_dir.txt")
case $found in
"$prefix"/*) echo "hopper_DIR=$found" ;;
*) echo "find_package(hopper) found $found, not the copy under $prefix" >&2; exit 1 ;;
esac
cmake --build "$tmp/cm/build" >"$tmp/cm-build.log" 2>&1 || { cat "$tmp/cm-build.log"; exit 1; }
run_consumer "$tmp/cm/build"

echo "install-consumer: OK"
