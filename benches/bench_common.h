/* SPDX-License-Identifier: MIT */
/* Shared helpers for the benches: clocks, deterministic data generators,
 * spool directory handling, file-system type and peak RSS. Header-only so
 * every bench stays one plain executable (STYLE §14). Output convention: one
 * `name value unit` line per figure on stdout. */
#ifndef HOPPER_BENCHES_BENCH_COMMON_H
#define HOPPER_BENCHES_BENCH_COMMON_H

#include "hopper.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t
bn_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline double
bn_secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

/* xorshift64*: deterministic, seedable. */
static inline uint64_t
bn_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static inline void
bn_die(const char *what, int rc)
{
    fprintf(stderr, "bench: %s: %s (%d)\n", what, hopper_strerror(rc), rc);
    exit(1);
}

#define BN_CHECK(expr)                                                                         \
    do {                                                                                       \
        int bn_rc_ = (expr);                                                                   \
        if (bn_rc_ != 0) {                                                                     \
            bn_die(#expr, bn_rc_);                                                             \
        }                                                                                      \
    } while (0)

/* Fill buf[0..len) with random bytes. */
static inline void
bn_fill_random(uint8_t *buf, size_t len, uint64_t *seed)
{
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t v = bn_rand(seed);
        memcpy(buf + i, &v, 8);
    }
    for (; i < len; i++) {
        buf[i] = (uint8_t)bn_rand(seed);
    }
}

/* One realistic JSON-like log line of exactly `len` bytes (len >= 256):
 * timestamp, host, level, service, ids, HTTP fields, message, padded with
 * extra key/value attributes. Every field varies with the seed. */
static inline void
bn_log_line(char *out, size_t len, uint64_t *seed, uint64_t idx)
{
    static const char *const levels[] = {"INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"};
    static const char *const services[] = {"checkout", "payments", "search", "auth",
                                           "inventory", "gateway", "mailer", "billing"};
    static const char *const methods[] = {"GET", "GET", "POST", "PUT", "DELETE"};
    static const char *const paths[] = {"/api/v1/orders/", "/api/v2/users/", "/static/img/",
                                        "/api/v1/cart/", "/healthz?probe=", "/search?q=item"};
    static const char *const msgs[] = {
        "request completed", "upstream timeout, retrying", "cache miss for key",
        "user session refreshed", "payment authorised by provider",
        "slow query detected on replica", "connection reset by peer",
        "rate limit applied to client"};
    static const char *const words[] = {"alpha", "bravo", "delta", "kilo", "lima", "oscar",
                                        "tango", "zulu", "amber", "cobalt", "indigo", "jade"};
    char tmp[4096];
    uint64_t r = bn_rand(seed);
    uint64_t t = 1714560000000ull + idx * 3ull + (r % 1000);
    time_t secs = (time_t)(t / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int n = snprintf(
        tmp, sizeof(tmp),
        "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",\"host\":\"web-%02u.%s-%u.example.net\","
        "\"level\":\"%s\",\"service\":\"%s\",\"pid\":%u,\"trace_id\":\"%016" PRIx64
        "%016" PRIx64 "\",\"span_id\":\"%08" PRIx32 "\",\"http\":{\"method\":\"%s\",\"path\":\"%s%u\","
        "\"status\":%u,\"latency_ms\":%u.%03u,\"bytes\":%u,\"client\":\"10.%u.%u.%u\"},"
        "\"msg\":\"%s\",\"attempt\":%u",
        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
        (int)(t % 1000), (unsigned)(r % 48), (r >> 8) & 1 ? "eu-west" : "us-east",
        (unsigned)((r >> 9) % 3 + 1), levels[(r >> 12) % 6], services[(r >> 16) % 8],
        (unsigned)(1000 + (r >> 20) % 30000), bn_rand(seed), bn_rand(seed),
        (uint32_t)bn_rand(seed), methods[(r >> 24) % 5], paths[(r >> 28) % 6],
        (unsigned)((r >> 32) % 1000000), (unsigned)(r >> 52) % 5 == 0 ? 500u : 200u,
        (unsigned)((r >> 36) % 900), (unsigned)((r >> 40) % 1000),
        (unsigned)((r >> 44) % 65536), (unsigned)((r >> 1) % 256), (unsigned)((r >> 3) % 256),
        (unsigned)((r >> 5) % 256), msgs[(r >> 56) % 8], (unsigned)((r >> 60) % 4));
    size_t pos = (size_t)n;
    unsigned k = 0;
    while (pos + 64 < len && pos + 64 < sizeof(tmp)) {
        uint64_t v = bn_rand(seed);
        pos += (size_t)snprintf(tmp + pos, sizeof(tmp) - pos, ",\"attr_%u\":\"%s-%s-%u\"", k++,
                                words[v % 12], words[(v >> 8) % 12], (unsigned)((v >> 16) % 100000));
    }
    while (pos + 1 < len) {
        tmp[pos++] = ' ';
    }
    tmp[pos++] = '}';
    memcpy(out, tmp, len);
}

/* A pool of `count` records of `len` bytes: kind "log" or "random". */
static inline uint8_t *
bn_make_pool(const char *kind, size_t count, size_t len, uint64_t seed)
{
    uint8_t *p = malloc(count * len);
    if (p == NULL) {
        bn_die("malloc pool", -ENOMEM);
    }
    for (size_t i = 0; i < count; i++) {
        if (strcmp(kind, "random") == 0) {
            bn_fill_random(p + i * len, len, &seed);
        } else {
            bn_log_line((char *)p + i * len, len, &seed, i);
        }
    }
    return p;
}

static inline const char *
bn_fs_name(const char *path)
{
    struct statfs sf;
    if (statfs(path, &sf) != 0) {
        return "unknown";
    }
    switch ((unsigned long)sf.f_type) {
    case 0xEF53:
        return "ext4";
    case 0x01021994:
        return "tmpfs";
    case 0x58465342:
        return "xfs";
    case 0x9123683E:
        return "btrfs";
    case 0x794c7630:
        return "overlayfs";
    case 0x6969:
        return "nfs";
    case 0x2fc12fc1:
        return "zfs";
    default:
        return "other";
    }
}

/* Spool directory: $HOPPER_BENCH_DIR or /tmp, plus a fresh subdirectory. */
static inline void
bn_spool(char *out, size_t n, const char *tag)
{
    const char *base = getenv("HOPPER_BENCH_DIR");
    if (base == NULL || base[0] == '\0') {
        base = "/tmp";
    }
    snprintf(out, n, "%s/hopper-bench-%s-XXXXXX", base, tag);
    if (mkdtemp(out) == NULL) {
        fprintf(stderr, "bench: mkdtemp %s: %s\n", out, strerror(errno));
        exit(1);
    }
}

/* Remove dir/name/ (flat) and dir itself. */
static inline void
bn_rmtree(const char *dir, const char *name)
{
    char q[8192];
    snprintf(q, sizeof(q), "%s/%s", dir, name);
    DIR *d = opendir(q);
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
                char f[16384];
                snprintf(f, sizeof(f), "%s/%s", q, de->d_name);
                (void)unlink(f);
            }
        }
        closedir(d);
        (void)rmdir(q);
    }
    (void)rmdir(dir);
}

/* Peak and current RSS in KiB from /proc/self/status (VmHWM / VmRSS). */
static inline long
bn_status_kib(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL) {
        return -1;
    }
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            v = strtol(line + kl + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

/* Print the run's context: file system of the spool, budgets, compression. */
static inline void
bn_print_context(const char *bench, const char *spool, const hopper_opts *o)
{
    printf("%s.fs_type %s -\n", bench, bn_fs_name(spool));
    if (o != NULL) {
        printf("%s.compression %d level\n", bench, o->compression);
        printf("%s.memory_budget %" PRIu64 " B\n", bench, o->memory_bytes);
        printf("%s.disk_budget %" PRIu64 " B\n", bench, o->disk_bytes);
        printf("%s.durability %s -\n", bench,
               o->durability == HOPPER_DURABILITY_DISK ? "disk" : "memory");
        printf("%s.fsync %s -\n", bench,
               o->fsync == HOPPER_FSYNC_ALWAYS     ? "always"
               : o->fsync == HOPPER_FSYNC_INTERVAL ? "interval"
                                                   : "never");
    }
}

static inline const char *
bn_arg(int argc, char **argv, int i, const char *dflt)
{
    return i < argc ? argv[i] : dflt;
}

#endif
