#!/bin/sh
# rsyslog-private.sh: print the root of a private rsyslog with its openssl
# stream driver (rsyslog conflicts with syslog-ng as a Debian package, so it
# is unpacked, not installed: ../shared/peers/README.md does the same).
# Uses $HOPPER_RSYSLOG_ROOT, else /tmp/hopper-rsyslog-UID, when it already
# holds one; otherwise fetches rsyslog, rsyslog-openssl, libestr0 and
# libfastjson4 with `apt-get download` and unpacks them there with dpkg -x.
# Exit 77 (skip) with the reason on stderr when none can be had (offline,
# not Debian).
set -u
root=${HOPPER_RSYSLOG_ROOT:-/tmp/hopper-rsyslog-$(id -u)}
libdir=$root/usr/lib/x86_64-linux-gnu
works() {
    [ -x "$root/usr/sbin/rsyslogd" ] && [ -f "$libdir/rsyslog/lmnsd_ossl.so" ] &&
        LD_LIBRARY_PATH=$libdir "$root/usr/sbin/rsyslogd" -v >/dev/null 2>&1
}
if ! works; then
    command -v apt-get >/dev/null && command -v dpkg >/dev/null ||
        { echo "rsyslog-private: no apt-get/dpkg" >&2; exit 77; }
    tmp=$(mktemp -d) || exit 77
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && timeout 120 apt-get download -q rsyslog rsyslog-openssl libestr0 libfastjson4) \
        >"$tmp/apt.log" 2>&1 || { echo "rsyslog-private: apt-get download failed:" >&2
                                 tail -3 "$tmp/apt.log" >&2; exit 77; }
    mkdir -p "$root"
    for deb in "$tmp"/*.deb; do
        dpkg -x "$deb" "$root" || { echo "rsyslog-private: dpkg -x $deb failed" >&2; exit 77; }
    done
    works || { echo "rsyslog-private: the unpacked rsyslogd does not run" >&2; exit 77; }
fi
echo "$root"
