/* SPDX-License-Identifier: MIT */
/* Public API tests of hopper_queue (hopper.h is the contract): open/close,
 * names, locking, record size and budget boundaries, blocking sends, batches,
 * no stranded records, rotation, receive timeouts, shutdown, restart and
 * acknowledgement persistence, foreign files, stats and error strings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdatomic.h>
#include <time.h>

#include "hopper.h"
#include "hp_test.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* hopper.h: each record in memory costs its payload plus 48 bytes. */
#define REC_COST 48u
#define QNAME "q"

typedef hp_test_dir tq_state;

/* ---- helpers ------------------------------------------------------------ */

/* Deterministic payload for `key`: any byte depends on key and position. */
static void
fill_payload(uint8_t *buf, size_t len, uint64_t key)
{
    uint64_t st = key * 0x9E3779B97F4A7C15ull + 0x1234567ull;
    if (st == 0) {
        st = 1;
    }
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(hp_test_rand(&st) >> 56);
    }
}

static void
assert_payload(const hopper_record *r, size_t len, uint64_t key)
{
    assert_int_equal(r->len, len);
    if (len == 0) {
        return;
    }
    uint8_t *exp = malloc(len);
    assert_non_null(exp);
    fill_payload(exp, len, key);
    assert_non_null(r->data);
    assert_memory_equal(r->data, exp, len);
    free(exp);
}

static void
opts_small(hopper_opts *o, int durability)
{
    hopper_opts_init(o);
    o->durability = durability;
    o->fsync = HOPPER_FSYNC_NEVER;
    o->compression = 0;
}

static hopper_queue *
open_ok(const char *dir, const hopper_opts *o)
{
    hopper_queue *q = NULL;
    int rc = hopper_open(dir, QNAME, o, &q);
    if (rc != 0) {
        fprintf(stderr, "hopper_open: %s (%d)\n", hopper_strerror(rc), rc);
    }
    assert_int_equal(rc, 0);
    assert_non_null(q);
    return q;
}

static hopper_stats
stats_of(hopper_queue *q)
{
    hopper_stats st;
    memset(&st, 0, sizeof(st));
    st.struct_size = sizeof(st);
    assert_int_equal(hopper_stats_get(q, &st), 0);
    return st;
}

/* Send a record of `len` bytes whose content is derived from `key`. */
static int
send_key(hopper_queue *q, size_t len, uint64_t key, int timeout_ms)
{
    uint8_t *b = malloc(len + 1);
    assert_non_null(b);
    fill_payload(b, len, key);
    int rc = hopper_send(q, b, len, timeout_ms);
    free(b);
    return rc;
}

static int
is_seg_name(const char *n)
{
    if (strlen(n) != 21 || strcmp(n + 16, ".hseg") != 0) {
        return 0;
    }
    for (int i = 0; i < 16; i++) {
        char c = n[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return 0;
        }
    }
    return 1;
}

/* Number of segment files in dir/q; the size of the smallest-id one. */
static int
count_segments(const char *dir, uint64_t *first_size)
{
    char path[PATH_MAX];
    int pn = snprintf(path, sizeof(path), "%s/%s", dir, QNAME);
    assert_true(pn > 0 && (size_t)pn < sizeof(path));
    DIR *d = opendir(path);
    assert_non_null(d);
    int n = 0;
    char first[256] = "";
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (is_seg_name(de->d_name)) {
            n++;
            if (first[0] == '\0' || strcmp(de->d_name, first) < 0) {
                memcpy(first, de->d_name, 22); /* is_seg_name: 21 chars + NUL */
            }
        }
    }
    closedir(d);
    if (first_size != NULL) {
        *first_size = 0;
        if (n > 0) {
            char fp[PATH_MAX + 256];
            int fn = snprintf(fp, sizeof(fp), "%s/%s", path, first);
            assert_true(fn > 0 && (size_t)fn < sizeof(fp));
            struct stat sb;
            assert_int_equal(stat(fp, &sb), 0);
            *first_size = (uint64_t)sb.st_size;
        }
    }
    return n;
}

/* Receive `n` records keyed base..base+n-1 of size len_of(key) with
 * consecutive seqs starting at `seq0` (UINT64_MAX: don't check the first),
 * acknowledging each when `ack`. Returns the seq after the last. */
typedef size_t (*len_fn)(uint64_t key);

static uint64_t
recv_expect(hopper_queue *q, uint64_t base, size_t n, len_fn len_of, uint64_t seq0, int ack)
{
    uint64_t seq = seq0;
    for (size_t i = 0; i < n; i++) {
        hopper_record r;
        memset(&r, 0, sizeof(r));
        int rc = hopper_recv(q, &r, 5000);
        if (rc != 0) {
            fprintf(stderr, "recv #%zu of %zu (key %llu): %s\n", i, n,
                    (unsigned long long)(base + i), hopper_err_name(rc));
        }
        assert_int_equal(rc, 0);
        if (seq != UINT64_MAX) {
            assert_int_equal(r.seq, seq);
        }
        seq = r.seq + 1;
        assert_payload(&r, len_of(base + i), base + i);
        if (ack) {
            assert_int_equal(hopper_ack(q, r.seq), 0);
        }
    }
    return seq;
}

static size_t
len_100(uint64_t k)
{
    (void)k;
    return 100;
}

static size_t
len_500(uint64_t k)
{
    (void)k;
    return 500;
}

static size_t
len_1000(uint64_t k)
{
    (void)k;
    return 1000;
}

static size_t
len_var(uint64_t k)
{
    return (size_t)((k * 7919u) % 601u);
}

/* Send len_of(key) records until HOPPER_EFULL with timeout 0; returns the
 * number accepted (keys base..base+n-1). */
static size_t
fill_until_full(hopper_queue *q, uint64_t base, len_fn len_of, size_t limit)
{
    for (size_t i = 0; i < limit; i++) {
        int rc = send_key(q, len_of(base + i), base + i, 0);
        if (rc == HOPPER_EFULL) {
            return i;
        }
        assert_int_equal(rc, 0);
    }
    fail_msg("queue never reported HOPPER_EFULL within %zu records", limit);
    return 0;
}

static void
qpath(char *out, size_t n, const char *dir, const char *file)
{
    if (file != NULL) {
        snprintf(out, n, "%s/%s/%s", dir, QNAME, file);
    } else {
        snprintf(out, n, "%s/%s", dir, QNAME);
    }
}

/* ---- tests -------------------------------------------------------------- */

static void
test_happy_path(void **state)
{
    tq_state *s = *state;
    hopper_queue *q = open_ok(s->dir, NULL); /* defaults (interval fsync thread) */
    uint64_t s0 = stats_of(q).next_seq;
    for (uint64_t k = 0; k < 50; k++) {
        assert_int_equal(send_key(q, len_var(k), k, 0), 0);
    }
    hopper_stats st = stats_of(q);
    assert_int_equal(st.sent, 50);
    assert_int_equal(st.next_seq, s0 + 50);
    assert_int_equal(recv_expect(q, 0, 50, len_var, s0, 0), s0 + 50);
    assert_int_equal(hopper_ack(q, s0 + 49), 0);
    hopper_record r;
    assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);
    st = stats_of(q);
    assert_int_equal(st.backlog_records, 0);
    assert_int_equal(st.received, 50);
    assert_int_equal(st.acked, 50);
    assert_int_equal(hopper_close(q), 0);

    /* Reopen: all acknowledged, nothing comes back; seqs keep growing. */
    q = open_ok(s->dir, NULL);
    assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);
    assert_true(stats_of(q).next_seq >= s0 + 50);
    uint64_t s1 = stats_of(q).next_seq;
    assert_int_equal(send_key(q, 7, 1000, 0), 0);
    assert_int_equal(hopper_recv_ack(q, &r, 1000), 0);
    assert_int_equal(r.seq, s1);
    assert_payload(&r, 7, 1000);
    assert_int_equal(stats_of(q).backlog_records, 0);
    assert_int_equal(hopper_close(q), 0);
}

static void
test_open_creates_dir(void **state)
{
    tq_state *s = *state;
    char path[PATH_MAX];
    qpath(path, sizeof(path), s->dir, NULL);
    struct stat sb;
    assert_int_equal(stat(path, &sb), -1);
    hopper_queue *q = open_ok(s->dir, NULL);
    assert_int_equal(stat(path, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(sb.st_mode & 0777, 0700);
    assert_int_equal(hopper_close(q), 0);

    /* The parent directory must exist. */
    char missing[PATH_MAX];
    snprintf(missing, sizeof(missing), "%s/no/such", s->dir);
    q = (hopper_queue *)(uintptr_t)1;
    assert_int_equal(hopper_open(missing, QNAME, NULL, &q), -ENOENT);
    assert_null(q);

    /* Bad options. */
    hopper_opts o;
    hopper_opts_init(&o);
    o.struct_size = 0;
    assert_int_equal(hopper_open(s->dir, QNAME, &o, &q), -EINVAL);
    assert_null(q);
    hopper_opts_init(&o);
    o.disk_bytes = 64 * 1024 - 1;
    assert_int_equal(hopper_open(s->dir, QNAME, &o, &q), -EINVAL);
    hopper_opts_init(&o);
    o.compression = 10;
    assert_int_equal(hopper_open(s->dir, QNAME, &o, &q), -EINVAL);
    hopper_opts_init(&o);
    o.fsync = 7;
    assert_int_equal(hopper_open(s->dir, QNAME, &o, &q), -EINVAL);
    hopper_opts_init(&o);
    o.durability = 5;
    assert_int_equal(hopper_open(s->dir, QNAME, &o, &q), -EINVAL);
    hopper_opts_init(&o);
    o.max_record_bytes = (256u << 20) + 1;
    assert_int_equal(hopper_open(s->dir, QNAME, &o, &q), -EINVAL);
    assert_null(q);
    /* Still openable afterwards (bad opens left no lock behind). */
    q = open_ok(s->dir, NULL);
    assert_int_equal(hopper_close(q), 0);
}

static void
test_bad_names(void **state)
{
    tq_state *s = *state;
    char base[PATH_MAX];
    snprintf(base, sizeof(base), "%s/base", s->dir);
    assert_int_equal(mkdir(base, 0700), 0);
    char long129[130];
    memset(long129, 'a', 129);
    long129[129] = '\0';
    const char *bad[] = {"", ".", "..", "../x", "a/b", "/x", "x/", "a b", "a\\b", "na*me",
                         "a\nb", long129};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        hopper_queue *q = (hopper_queue *)(uintptr_t)1;
        int rc = hopper_open(base, bad[i], NULL, &q);
        if (rc != -EINVAL) {
            fprintf(stderr, "name \"%s\": got %s\n", bad[i], hopper_err_name(rc));
        }
        assert_int_equal(rc, -EINVAL);
        assert_null(q);
        hopper_close(q);
    }
    /* Nothing was created outside (or inside) base. */
    char esc[PATH_MAX];
    snprintf(esc, sizeof(esc), "%s/x", s->dir);
    struct stat sb;
    assert_int_equal(stat(esc, &sb), -1);
    DIR *d = opendir(base);
    assert_non_null(d);
    struct dirent *de;
    int entries = 0;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            entries++;
        }
    }
    closedir(d);
    assert_int_equal(entries, 0);

    /* NULL arguments. */
    hopper_queue *q = NULL;
    assert_int_equal(hopper_open(base, NULL, NULL, &q), -EINVAL);
    assert_int_equal(hopper_open(NULL, "ok", NULL, &q), -EINVAL);
    assert_int_equal(hopper_open(base, "ok", NULL, NULL), -EINVAL);

    /* The longest name and all allowed characters work. */
    char long128[129];
    memset(long128, 'b', 128);
    long128[128] = '\0';
    const char *good[] = {long128, "A-z_0.9", "...", "-"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        q = NULL;
        assert_int_equal(hopper_open(base, good[i], NULL, &q), 0);
        assert_non_null(q);
        assert_int_equal(hopper_send(q, "x", 1, 0), 0);
        assert_int_equal(hopper_close(q), 0);
        char p[PATH_MAX + 200];
        snprintf(p, sizeof(p), "%s/%s", base, good[i]);
        assert_int_equal(stat(p, &sb), 0);
        assert_true(S_ISDIR(sb.st_mode));
    }
}

static void
test_second_opener_locked(void **state)
{
    tq_state *s = *state;
    hopper_queue *q1 = open_ok(s->dir, NULL);
    hopper_queue *q2 = (hopper_queue *)(uintptr_t)1;
    assert_int_equal(hopper_open(s->dir, QNAME, NULL, &q2), HOPPER_ELOCKED);
    assert_null(q2);
    /* Different options do not matter either. */
    hopper_opts o;
    opts_small(&o, HOPPER_DURABILITY_DISK);
    assert_int_equal(hopper_open(s->dir, QNAME, &o, &q2), HOPPER_ELOCKED);
    assert_null(q2);
    /* The first handle is unaffected. */
    assert_int_equal(send_key(q1, 10, 1, 0), 0);
    hopper_record r;
    assert_int_equal(hopper_recv_ack(q1, &r, 1000), 0);
    assert_payload(&r, 10, 1);
    assert_int_equal(hopper_close(q1), 0);
    /* Released by close. */
    q2 = open_ok(s->dir, NULL);
    assert_int_equal(hopper_close(q2), 0);
}

static size_t
len_zero_mix(uint64_t k)
{
    static const size_t lens[] = {0, 8, 0, 0, 10, 0, 3, 0};
    return lens[k % 8];
}

static void
test_zero_byte_record(void **state)
{
    tq_state *s = *state;
    for (int mode = 0; mode <= 1; mode++) {
        hopper_opts o;
        opts_small(&o, mode);
        o.memory_bytes = 8;
        hopper_queue *q = open_ok(s->dir, &o);
        uint64_t s0 = stats_of(q).next_seq;
        /* NULL data with len 0 is allowed. */
        assert_int_equal(hopper_send(q, NULL, 0, 0), 0);
        hopper_record r;
        assert_int_equal(hopper_recv_ack(q, &r, 1000), 0);
        assert_int_equal(r.len, 0);
        assert_int_equal(r.seq, s0);
        /* NULL data with len > 0 is not. */
        assert_int_equal(hopper_send(q, NULL, 1, 0), -EINVAL);
        /* Mixed 0-byte records in memory and spilled to disk. */
        for (uint64_t k = 0; k < 16; k++) {
            assert_int_equal(send_key(q, len_zero_mix(k), k, 0), 0);
        }
        recv_expect(q, 0, 8, len_zero_mix, s0 + 1, 1);
        /* 8 left unreceived across a restart. */
        assert_int_equal(hopper_close(q), 0);
        q = open_ok(s->dir, &o);
        recv_expect(q, 8, 8, len_zero_mix, s0 + 9, 1);
        assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);
        assert_int_equal(hopper_close(q), 0);
        hp_test_rmtree(s->dir);
        s->dir = hp_test_tmpdir("queue");
        assert_non_null(s->dir);
    }
}

static size_t
len_4096(uint64_t k)
{
    (void)k;
    return 4096;
}

static void
test_max_size_record(void **state)
{
    tq_state *s = *state;
    for (int mode = 0; mode <= 1; mode++) {
        hopper_opts o;
        opts_small(&o, mode);
        o.max_record_bytes = 4096;
        o.memory_bytes = 4096;
        o.compression = 1;
        hopper_queue *q = open_ok(s->dir, &o);
        uint64_t s0 = stats_of(q).next_seq;
        uint8_t *big = malloc(4097);
        assert_non_null(big);
        fill_payload(big, 4097, 99);
        assert_int_equal(hopper_send(q, big, 4097, 0), HOPPER_ETOOBIG);
        assert_int_equal(hopper_send(q, big, 4097, 100), HOPPER_ETOOBIG);
        hopper_iovec v[2] = {{big, 4096}, {big, 4097}};
        assert_int_equal(hopper_send_batch(q, v, 2, 0), HOPPER_ETOOBIG);
        hopper_stats st = stats_of(q);
        assert_int_equal(st.sent, 0);
        assert_int_equal(st.next_seq, s0);
        assert_int_equal(st.full_rejections, 0);
        /* max works, in memory and spilled, and survives a restart. */
        for (uint64_t k = 0; k < 4; k++) {
            assert_int_equal(send_key(q, 4096, k, 0), 0);
        }
        assert_int_equal(stats_of(q).sent, 4);
        recv_expect(q, 0, 2, len_4096, s0, 1);
        assert_int_equal(hopper_close(q), 0);
        q = open_ok(s->dir, &o);
        recv_expect(q, 2, 2, len_4096, s0 + 2, 1);
        /* The caller's buffer is untouched by a refused send. */
        uint8_t *copy = malloc(4097);
        assert_non_null(copy);
        fill_payload(copy, 4097, 99);
        assert_memory_equal(big, copy, 4097);
        free(copy);
        free(big);
        assert_int_equal(hopper_close(q), 0);
        hp_test_rmtree(s->dir);
        s->dir = hp_test_tmpdir("queue");
        assert_non_null(s->dir);
    }
}

/* Memory budget boundary: records exactly filling memory_bytes (payload plus
 * REC_COST each) stay in memory; the next one spills. */
/* Records of a few MiB (incompressible: their frames are written straight
 * from the compression slot, not through the write buffer) among small
 * ones, in both modes: order and contents, before and after a restart. */
static size_t
len_big_small(uint64_t k)
{
    return k % 3 == 1 ? (size_t)(3u << 20) + (size_t)k : 100 + (size_t)k;
}

static void
test_large_frames(void **state)
{
    tq_state *s = *state;
    for (int mode = 0; mode <= 1; mode++) {
        hopper_opts o;
        opts_small(&o, mode);
        o.memory_bytes = 4096; /* MEMORY mode spills them too */
        o.disk_bytes = 256u << 20;
        o.compression = 1;
        hopper_queue *q = open_ok(s->dir, &o);
        uint64_t s0 = stats_of(q).next_seq;
        for (uint64_t k = 0; k < 9; k++) {
            assert_int_equal(send_key(q, len_big_small(k), k, -1), 0);
        }
        recv_expect(q, 0, 4, len_big_small, s0, 1);
        assert_int_equal(hopper_close(q), 0);
        q = open_ok(s->dir, &o);
        recv_expect(q, 4, 5, len_big_small, s0 + 4, 1);
        assert_int_equal(hopper_close(q), 0);
        hp_test_rmtree(s->dir);
        s->dir = hp_test_tmpdir("queue");
        assert_non_null(s->dir);
    }
}

static void
test_exactly_at_memory_budget(void **state)
{
    tq_state *s = *state;
    hopper_opts o;
    opts_small(&o, HOPPER_DURABILITY_MEMORY);
    o.memory_bytes = 10 * (100 + REC_COST);
    hopper_queue *q = open_ok(s->dir, &o);
    uint64_t s0 = stats_of(q).next_seq;
    for (uint64_t k = 0; k < 10; k++) {
        assert_int_equal(send_key(q, 100, k, 0), 0);
    }
    hopper_stats st = stats_of(q);
    assert_int_equal(st.mem_records, 10);
    assert_int_equal(st.mem_bytes, 10 * (100 + REC_COST));
    assert_int_equal(st.segments, 0);
    assert_int_equal(send_key(q, 100, 10, 0), 0);
    assert_int_equal(send_key(q, 1, 11, 0), 0);
    st = stats_of(q);
    assert_int_equal(st.mem_records, 10);
    assert_int_equal(st.mem_bytes, 10 * (100 + REC_COST));
    assert_int_equal(st.sent, 12);
    assert_int_equal(st.backlog_records, 12);
    recv_expect(q, 0, 11, len_100, s0, 1);
    hopper_record r;
    assert_int_equal(hopper_recv_ack(q, &r, 1000), 0);
    assert_payload(&r, 1, 11);
    assert_int_equal(stats_of(q).mem_bytes, 0);
    assert_int_equal(hopper_close(q), 0);
}

/* Both budgets spent: FULL with timeout 0, data untouched, draining frees
 * space. */
static void
full_and_drain(const char *dir, int mode, uint64_t segment_bytes)
{
    hopper_opts o;
    opts_small(&o, mode);
    o.memory_bytes = 8 * 1024;
    o.disk_bytes = 64 * 1024;
    o.segment_bytes = segment_bytes;
    hopper_queue *q = NULL;
    assert_int_equal(hopper_open(dir, QNAME, &o, &q), 0);
    uint64_t s0 = stats_of(q).next_seq;
    size_t n = fill_until_full(q, 0, len_500, 100000);
    assert_true(n > 16); /* 8 KiB of memory alone holds 16 */
    hopper_stats st = stats_of(q);
    assert_int_equal(st.full_rejections, 1);
    assert_int_equal(st.sent, n);
    assert_int_equal(st.next_seq, s0 + n);
    assert_true(st.disk_bytes <= o.disk_bytes + HOPPER_FRAME_OVERHEAD);
    assert_true(st.mem_bytes <= o.memory_bytes);
    /* The caller's data is untouched and refused again. */
    uint8_t buf[500];
    uint8_t exp[500];
    fill_payload(buf, sizeof(buf), 4242);
    memcpy(exp, buf, sizeof(buf));
    assert_int_equal(hopper_send(q, buf, sizeof(buf), 0), HOPPER_EFULL);
    assert_memory_equal(buf, exp, sizeof(buf));
    hopper_iovec v[2] = {{buf, 500}, {buf, 500}};
    assert_int_equal(hopper_send_batch(q, v, 2, 0), HOPPER_EFULL);
    assert_memory_equal(buf, exp, sizeof(buf));
    st = stats_of(q);
    assert_int_equal(st.full_rejections, 3);
    assert_int_equal(st.sent, n);
    /* Drain everything, in order. */
    recv_expect(q, 0, n, len_500, s0, 1);
    hopper_record r;
    assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);
    assert_int_equal(hopper_sync(q), 0);
    st = stats_of(q);
    assert_int_equal(st.backlog_records, 0);
    assert_true(st.disk_bytes <= o.disk_bytes + HOPPER_FRAME_OVERHEAD);
    /* Space is back: at least half as many records fit again. */
    size_t n2 = fill_until_full(q, 1000000, len_500, 100000);
    if (n2 < n / 2) {
        fprintf(stderr,
                "mode %s segment_bytes %llu: first fill %zu records, after draining only %zu "
                "(disk_bytes %llu, segments %llu)\n",
                mode ? "DISK" : "MEMORY", (unsigned long long)segment_bytes, n, n2,
                (unsigned long long)st.disk_bytes, (unsigned long long)st.segments);
    }
    assert_true(n2 >= n / 2);
    recv_expect(q, 1000000, n2, len_500, s0 + n, 1);
    assert_int_equal(hopper_close(q), 0);
}

static void
test_full_at_budget_memory(void **state)
{
    tq_state *s = *state;
    full_and_drain(s->dir, HOPPER_DURABILITY_MEMORY, 16 * 1024);
}

static void
test_full_at_budget_disk(void **state)
{
    tq_state *s = *state;
    full_and_drain(s->dir, HOPPER_DURABILITY_DISK, 16 * 1024);
}

/* Same with one segment larger than the disk budget (the default
 * segment_bytes): acknowledging everything must still free the space. */
static void
test_full_drain_single_segment_memory(void **state)
{
    tq_state *s = *state;
    full_and_drain(s->dir, HOPPER_DURABILITY_MEMORY, 64u << 20);
}

static void
test_full_drain_single_segment_disk(void **state)
{
    tq_state *s = *state;
    full_and_drain(s->dir, HOPPER_DURABILITY_DISK, 64u << 20);
}

typedef struct drainer {
    hopper_queue *q;
    uint64_t base;
    size_t n;
    len_fn len_of;
    size_t got;
    int rc;
    int bad_payload;
} drainer;

static void *
drain_main(void *arg)
{
    drainer *d = arg;
    for (size_t i = 0; i < d->n; i++) {
        hopper_record r;
        d->rc = hopper_recv(d->q, &r, 10000);
        if (d->rc != 0) {
            return NULL;
        }
        uint64_t key = d->base + i;
        size_t len = d->len_of(key);
        uint8_t *exp = malloc(len + 1);
        if (exp == NULL) {
            d->rc = -ENOMEM;
            return NULL;
        }
        fill_payload(exp, len, key);
        if (r.len != len || (len > 0 && memcmp(r.data, exp, len) != 0)) {
            d->bad_payload++;
        }
        free(exp);
        d->rc = hopper_ack(d->q, r.seq);
        if (d->rc != 0) {
            return NULL;
        }
        d->got++;
    }
    return NULL;
}

static void
test_blocking_send_timeout(void **state)
{
    tq_state *s = *state;
    for (int mode = 0; mode <= 1; mode++) {
        hopper_opts o;
        opts_small(&o, mode);
        o.memory_bytes = 8 * 1024;
        o.disk_bytes = 64 * 1024;
        o.segment_bytes = 8 * 1024;
        hopper_queue *q = open_ok(s->dir, &o);
        size_t n = fill_until_full(q, 0, len_500, 100000);
        uint64_t t0 = hp_test_now_ms();
        assert_int_equal(send_key(q, 500, n, 300), HOPPER_EFULL);
        uint64_t el = hp_test_now_ms() - t0;
        assert_true(el >= 250);
        assert_true(el < 30000);
        assert_int_equal(stats_of(q).full_rejections, 2);
        assert_int_equal(stats_of(q).sent, n);

        /* A consumer frees space: a blocking send succeeds. */
        drainer d = {.q = q, .base = 0, .n = n + 1, .len_of = len_500};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, drain_main, &d), 0);
        assert_int_equal(send_key(q, 500, n, 20000), 0);
        assert_int_equal(pthread_join(th, NULL), 0);
        assert_int_equal(d.rc, 0);
        assert_int_equal(d.got, n + 1);
        assert_int_equal(d.bad_payload, 0);
        hopper_stats st = stats_of(q);
        assert_int_equal(st.sent, n + 1);
        assert_int_equal(st.full_rejections, 2);
        assert_int_equal(st.backlog_records, 0);
        /* Wait forever also returns once there is room (there is now). */
        assert_int_equal(send_key(q, 500, 7, -1), 0);
        assert_int_equal(hopper_close(q), 0);
        hp_test_rmtree(s->dir);
        s->dir = hp_test_tmpdir("queue");
        assert_non_null(s->dir);
    }
}

static void
test_batch_all_or_nothing(void **state)
{
    tq_state *s = *state;
    hopper_opts o;
    opts_small(&o, HOPPER_DURABILITY_MEMORY);
    o.memory_bytes = 50000;
    o.disk_bytes = 64 * 1024;
    o.segment_bytes = 8192;
    hopper_queue *q = open_ok(s->dir, &o);
    uint64_t s0 = stats_of(q).next_seq;

    /* A batch gets consecutive seqs. */
    uint8_t *b = malloc(40000);
    assert_non_null(b);
    hopper_iovec v[5];
    uint8_t *parts[5];
    for (int i = 0; i < 5; i++) {
        parts[i] = malloc(300);
        assert_non_null(parts[i]);
        fill_payload(parts[i], (size_t)(i * 70), (uint64_t)i);
        v[i].data = parts[i];
        v[i].len = (size_t)(i * 70);
    }
    assert_int_equal(hopper_send_batch(q, v, 5, 0), 0);
    for (int i = 0; i < 5; i++) {
        hopper_record r;
        assert_int_equal(hopper_recv_ack(q, &r, 1000), 0);
        assert_int_equal(r.seq, s0 + (uint64_t)i);
        assert_payload(&r, (size_t)(i * 70), (uint64_t)i);
    }
    s0 += 5;

    /* A batch that can never fit the budgets: ETOOBIG, none accepted. */
    hopper_iovec huge[3] = {{b, 30000}, {b, 30000}, {b, 30000}};
    assert_int_equal(hopper_send_batch(q, huge, 3, 0), HOPPER_ETOOBIG);
    assert_int_equal(hopper_send_batch(q, huge, 3, 100), HOPPER_ETOOBIG);
    assert_int_equal(stats_of(q).next_seq, s0);

    /* One big record in memory; a batch whose first record would fit but
     * not the whole: FULL, none accepted. */
    fill_payload(b, 30000, 100);
    assert_int_equal(hopper_send(q, b, 30000, 0), 0);
    uint8_t *c = malloc(40000);
    assert_non_null(c);
    fill_payload(c, 1000, 101);
    uint8_t *d = malloc(40000);
    assert_non_null(d);
    fill_payload(d, 40000, 102);
    hopper_iovec two[2] = {{c, 1000}, {d, 40000}};
    assert_int_equal(hopper_send_batch(q, two, 2, 0), HOPPER_EFULL);
    hopper_stats st = stats_of(q);
    assert_int_equal(st.next_seq, s0 + 1);
    assert_int_equal(st.mem_records, 1);
    assert_int_equal(st.full_rejections, 1);
    assert_int_equal(hopper_send_batch(q, two, 2, 200), HOPPER_EFULL);
    assert_int_equal(stats_of(q).next_seq, s0 + 1);
    /* Nothing of the refused batch is delivered. */
    hopper_record r;
    assert_int_equal(hopper_recv(q, &r, 1000), 0);
    assert_int_equal(r.seq, s0);
    assert_payload(&r, 30000, 100);
    assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);
    assert_int_equal(hopper_ack(q, s0), 0);
    /* Room now: the batch goes in whole, with consecutive seqs. */
    assert_int_equal(hopper_send_batch(q, two, 2, 1000), 0);
    assert_int_equal(hopper_recv(q, &r, 1000), 0);
    assert_int_equal(r.seq, s0 + 1);
    assert_payload(&r, 1000, 101);
    assert_int_equal(hopper_recv(q, &r, 1000), 0);
    assert_int_equal(r.seq, s0 + 2);
    assert_payload(&r, 40000, 102);
    assert_int_equal(hopper_ack(q, r.seq), 0);
    assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);

    /* A batch holding one oversized record (default max is 16 MiB: use a
     * queue with a small max): ETOOBIG, none accepted. */
    assert_int_equal(hopper_close(q), 0);
    o.max_record_bytes = 2000;
    q = open_ok(s->dir, &o);
    uint64_t s1 = stats_of(q).next_seq;
    hopper_iovec mixed[3] = {{c, 10}, {d, 2001}, {c, 10}};
    assert_int_equal(hopper_send_batch(q, mixed, 3, 0), HOPPER_ETOOBIG);
    assert_int_equal(stats_of(q).next_seq, s1);
    assert_int_equal(stats_of(q).sent, 0);
    assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);
    /* NULL data with len > 0 inside a batch. */
    hopper_iovec nul[2] = {{c, 10}, {NULL, 5}};
    assert_int_equal(hopper_send_batch(q, nul, 2, 0), -EINVAL);
    assert_int_equal(stats_of(q).sent, 0);
    assert_int_equal(hopper_close(q), 0);
    for (int i = 0; i < 5; i++) {
        free(parts[i]);
    }
    free(b);
    free(c);
    free(d);
}

typedef struct waiter_recv {
    hopper_queue *q;
    int timeout_ms;
    int rc;
    hopper_record rec;
    uint8_t data[256];
    uint64_t elapsed_ms;
} waiter_recv;

static void *
recv_main(void *arg)
{
    waiter_recv *w = arg;
    uint64_t t0 = hp_test_now_ms();
    w->rc = hopper_recv(w->q, &w->rec, w->timeout_ms);
    w->elapsed_ms = hp_test_now_ms() - t0;
    if (w->rc == 0 && w->rec.len <= sizeof(w->data)) {
        memcpy(w->data, w->rec.data, w->rec.len);
        w->rec.data = w->data;
    }
    return NULL;
}

static void
test_no_stranded_records(void **state)
{
    tq_state *s = *state;
    for (int mode = 0; mode <= 1; mode++) {
        hopper_opts o;
        opts_small(&o, mode);
        o.memory_bytes = 1; /* every non-empty record spills */
        o.compression = 1;
        hopper_queue *q = open_ok(s->dir, &o);
        uint64_t s0 = stats_of(q).next_seq;
        /* ONE record, nothing after it. */
        assert_int_equal(send_key(q, 100, 1, 0), 0);
        hopper_record r;
        uint64_t t0 = hp_test_now_ms();
        assert_int_equal(hopper_recv(q, &r, 3000), 0);
        assert_true(hp_test_now_ms() - t0 < 2500);
        assert_int_equal(r.seq, s0);
        assert_payload(&r, 100, 1);
        assert_int_equal(hopper_ack(q, r.seq), 0);

        /* A consumer already waiting gets one spilled record promptly. */
        waiter_recv w = {.q = q, .timeout_ms = 10000};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, recv_main, &w), 0);
        assert_int_equal(send_key(q, 200, 2, 0), 0);
        assert_int_equal(pthread_join(th, NULL), 0);
        assert_int_equal(w.rc, 0);
        assert_true(w.elapsed_ms < 5000);
        assert_int_equal(w.rec.seq, s0 + 1);
        assert_payload(&w.rec, 200, 2);
        assert_int_equal(hopper_ack(q, w.rec.seq), 0);
        assert_int_equal(hopper_close(q), 0);

        /* Memory full, then a single record spilled behind it. */
        o.memory_bytes = 1000;
        q = open_ok(s->dir, &o);
        uint64_t s1 = stats_of(q).next_seq;
        for (uint64_t k = 0; k < 11; k++) {
            assert_int_equal(send_key(q, 100, 10 + k, 0), 0);
        }
        recv_expect(q, 10, 11, len_100, s1, 1);
        assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);
        assert_int_equal(hopper_close(q), 0);
        hp_test_rmtree(s->dir);
        s->dir = hp_test_tmpdir("queue");
        assert_non_null(s->dir);
    }
}

static void
test_rotation(void **state)
{
    tq_state *s = *state;
    hopper_opts o;
    opts_small(&o, HOPPER_DURABILITY_DISK);
    o.segment_bytes = 4096;
    o.memory_bytes = 1 << 20;
    hopper_queue *q = open_ok(s->dir, &o);
    uint64_t s0 = stats_of(q).next_seq;
    /* A frame that exactly fills the first segment (FORMAT.md §3.2: 4-byte
     * length prefix per record; compression off: stored raw). */
    size_t exact = 4096 - HOPPER_SEGMENT_HEADER - HOPPER_FRAME_OVERHEAD - 4;
    assert_int_equal(send_key(q, exact, 0, 0), 0);
    uint64_t first_size = 0;
    assert_int_equal(count_segments(s->dir, &first_size), 1);
    assert_int_equal(first_size, 4096);
    assert_int_equal(stats_of(q).segments, 1);
    /* The next record, however small, goes to a new segment. */
    assert_int_equal(send_key(q, 1, 1, 0), 0);
    assert_int_equal(count_segments(s->dir, &first_size), 2);
    assert_int_equal(first_size, 4096);
    /* Many more: several segments, none of them beyond segment_bytes. */
    for (uint64_t k = 2; k < 40; k++) {
        assert_int_equal(send_key(q, 1000, k, 0), 0);
    }
    int nseg = count_segments(s->dir, NULL);
    assert_true(nseg >= 10);
    hopper_stats st = stats_of(q);
    assert_int_equal(st.segments, (uint64_t)nseg);
    assert_int_equal(st.disk_records, 40);
    {
        char path[PATH_MAX];
        qpath(path, sizeof(path), s->dir, NULL);
        DIR *d = opendir(path);
        assert_non_null(d);
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (is_seg_name(de->d_name)) {
                char fp[PATH_MAX + 256];
                int fn = snprintf(fp, sizeof(fp), "%s/%s", path, de->d_name);
                assert_true(fn > 0 && (size_t)fn < sizeof(fp));
                struct stat sb;
                assert_int_equal(stat(fp, &sb), 0);
                assert_true((uint64_t)sb.st_size <= o.segment_bytes);
            }
        }
        closedir(d);
    }
    hopper_record r;
    assert_int_equal(hopper_recv(q, &r, 1000), 0);
    assert_int_equal(r.seq, s0);
    assert_payload(&r, exact, 0);
    assert_int_equal(hopper_recv(q, &r, 1000), 0);
    assert_payload(&r, 1, 1);
    recv_expect(q, 2, 38, len_1000, s0 + 2, 0);
    /* Close unacknowledged, reopen: all come back across the segments. */
    assert_int_equal(hopper_close(q), 0);
    q = open_ok(s->dir, &o);
    assert_int_equal(count_segments(s->dir, NULL), nseg);
    assert_int_equal(hopper_recv(q, &r, 1000), 0);
    assert_int_equal(r.seq, s0);
    assert_payload(&r, exact, 0);
    assert_int_equal(hopper_recv(q, &r, 1000), 0);
    assert_payload(&r, 1, 1);
    recv_expect(q, 2, 38, len_1000, s0 + 2, 0);
    assert_int_equal(hopper_ack(q, s0 + 39), 0);
    /* Sealed, fully acknowledged segments are deleted. */
    assert_true(count_segments(s->dir, NULL) <= 1);
    assert_true(stats_of(q).segments <= 1);
    assert_int_equal(hopper_close(q), 0);

    /* MEMORY mode spilling: rotation too (frames of up to 128 KiB, each
     * larger than a segment, so one segment per frame), order kept. */
    hp_test_rmtree(s->dir);
    s->dir = hp_test_tmpdir("queue");
    assert_non_null(s->dir);
    opts_small(&o, HOPPER_DURABILITY_MEMORY);
    o.segment_bytes = 4096;
    o.memory_bytes = 2000;
    q = open_ok(s->dir, &o);
    s0 = stats_of(q).next_seq;
    for (uint64_t k = 0; k < 400; k++) {
        assert_int_equal(send_key(q, 1000, k, 0), 0);
    }
    assert_int_equal(hopper_close(q), 0);
    assert_true(count_segments(s->dir, NULL) >= 3);
    q = open_ok(s->dir, &o);
    recv_expect(q, 0, 400, len_1000, s0, 1);
    assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);
    assert_int_equal(hopper_close(q), 0);
}

/* Consuming and acknowledging across rotating segments (live, and after a
 * reopen) damages nothing: the corruption counters stay at 0. */
static void
test_ack_across_segments_no_corruption(void **state)
{
    tq_state *s = *state;
    for (int mode = 0; mode <= 1; mode++) {
        hopper_opts o;
        opts_small(&o, mode);
        o.segment_bytes = 4096;
        o.memory_bytes = mode ? 1 << 20 : 1;
        hopper_queue *q = open_ok(s->dir, &o);
        uint64_t s0 = stats_of(q).next_seq;
        for (uint64_t k = 0; k < 20; k++) {
            assert_int_equal(send_key(q, 1000, k, 0), 0);
            if (mode == 0 && k % 5 == 4) {
                /* Let the write-behind write a frame (and rotate). */
                hopper_record r;
                assert_int_equal(hopper_recv(q, &r, 1000), 0);
                assert_payload(&r, 1000, k / 5);
            }
        }
        assert_int_equal(hopper_close(q), 0);
        q = open_ok(s->dir, &o);
        assert_true(count_segments(s->dir, NULL) >= 2);
        recv_expect(q, 0, 20, len_1000, s0, 1);
        hopper_record r;
        assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);
        hopper_stats st = stats_of(q);
        if (st.corrupt_frames != 0) {
            fprintf(stderr, "%s mode: corrupt_frames %llu (%llu bytes) after recv_ack of 20 "
                            "intact records over %d segments\n",
                    mode ? "DISK" : "MEMORY", (unsigned long long)st.corrupt_frames,
                    (unsigned long long)st.corrupt_bytes, count_segments(s->dir, NULL));
        }
        assert_int_equal(st.corrupt_frames, 0);
        assert_int_equal(st.corrupt_bytes, 0);
        /* Live: send and ack across rotations without a reopen. */
        for (uint64_t k = 100; k < 120; k++) {
            assert_int_equal(send_key(q, 1000, k, 0), 0);
        }
        recv_expect(q, 100, 20, len_1000, s0 + 20, 1);
        st = stats_of(q);
        assert_int_equal(st.corrupt_frames, 0);
        assert_int_equal(st.lost_records, 0);
        assert_int_equal(hopper_close(q), 0);
        hp_test_rmtree(s->dir);
        s->dir = hp_test_tmpdir("queue");
        assert_non_null(s->dir);
    }
}

static void
test_recv_poll_and_timeout(void **state)
{
    tq_state *s = *state;
    for (int mode = 0; mode <= 1; mode++) {
        hopper_opts o;
        opts_small(&o, mode);
        hopper_queue *q = open_ok(s->dir, &o);
        hopper_record r;
        assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);
        uint64_t t0 = hp_test_now_ms();
        assert_int_equal(hopper_recv(q, &r, 200), -ETIMEDOUT);
        uint64_t el = hp_test_now_ms() - t0;
        assert_true(el >= 150);
        assert_true(el < 20000);
        assert_int_equal(send_key(q, 5, 5, 0), 0);
        assert_int_equal(hopper_recv(q, &r, 0), 0);
        assert_payload(&r, 5, 5);
        assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);
        assert_int_equal(hopper_recv(q, &r, 50), -ETIMEDOUT);
        assert_int_equal(hopper_recv(NULL, &r, 0), -EINVAL);
        assert_int_equal(hopper_recv(q, NULL, 0), -EINVAL);
        assert_int_equal(stats_of(q).received, 1);
        assert_int_equal(hopper_close(q), 0);
        hp_test_rmtree(s->dir);
        s->dir = hp_test_tmpdir("queue");
        assert_non_null(s->dir);
    }
}

static void *
send_blocked_main(void *arg)
{
    waiter_recv *w = arg; /* reuse: rc and elapsed */
    uint8_t buf[500];
    memset(buf, 1, sizeof(buf));
    uint64_t t0 = hp_test_now_ms();
    w->rc = hopper_send(w->q, buf, sizeof(buf), w->timeout_ms);
    w->elapsed_ms = hp_test_now_ms() - t0;
    return NULL;
}

/* A shutdown that lands while the consumer spins for a send (mu free, so
 * the broadcast finds nobody waiting) still ends its hopper_recv at once.
 * The consumer used to go to sleep after the spin without looking again,
 * until its timeout (issue 14). Many short races: the shutdown follows the
 * consumer's start by 0 to 40 us, so many of them fall into its 20 us
 * spin. */
typedef struct spin_recv {
    waiter_recv w;
    atomic_int started;
} spin_recv;

static void *
spin_recv_main(void *arg)
{
    spin_recv *sr = arg;
    atomic_store(&sr->started, 1);
    return recv_main(&sr->w);
}

static void
test_shutdown_during_spin(void **state)
{
    tq_state *s = *state;
    hopper_opts o;
    opts_small(&o, 0);
    for (int i = 0; i < 200; i++) {
        hopper_queue *q = open_ok(s->dir, &o);
        spin_recv sr = {.w = {.q = q, .timeout_ms = 3000}};
        atomic_init(&sr.started, 0);
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, spin_recv_main, &sr), 0);
        while (!atomic_load(&sr.started)) {
        }
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        long wait_ns = (long)(i % 41) * 1000;
        do {
            clock_gettime(CLOCK_MONOTONIC, &t);
        } while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < wait_ns);
        hopper_shutdown(q);
        assert_int_equal(pthread_join(th, NULL), 0);
        assert_int_equal(sr.w.rc, HOPPER_ECLOSED);
        assert_true(sr.w.elapsed_ms < 1500);
        assert_int_equal(hopper_close(q), 0);
    }
}

static void
test_shutdown(void **state)
{
    tq_state *s = *state;
    for (int mode = 0; mode <= 1; mode++) {
        hopper_opts o;
        opts_small(&o, mode);
        o.memory_bytes = 1000;
        hopper_queue *q = open_ok(s->dir, &o);
        uint64_t s0 = stats_of(q).next_seq;
        for (uint64_t k = 0; k < 20; k++) {
            assert_int_equal(send_key(q, 100, k, 0), 0);
        }
        hopper_shutdown(q);
        hopper_shutdown(q); /* idempotent */
        assert_int_equal(send_key(q, 100, 99, 0), HOPPER_ECLOSED);
        assert_int_equal(send_key(q, 100, 99, 1000), HOPPER_ECLOSED);
        hopper_iovec v = {"x", 1};
        assert_int_equal(hopper_send_batch(q, &v, 1, 0), HOPPER_ECLOSED);
        /* Everything stored (memory and disk) is still delivered... */
        recv_expect(q, 0, 20, len_100, s0, 1);
        /* ...then the end code, without blocking. */
        hopper_record r;
        assert_int_equal(hopper_recv(q, &r, 0), HOPPER_ECLOSED);
        uint64_t t0 = hp_test_now_ms();
        assert_int_equal(hopper_recv(q, &r, 20000), HOPPER_ECLOSED);
        assert_int_equal(hopper_recv(q, &r, -1), HOPPER_ECLOSED);
        assert_true(hp_test_now_ms() - t0 < 10000);
        hopper_stats st = stats_of(q);
        assert_int_equal(st.sent, 20);
        assert_int_equal(st.received, 20);
        assert_int_equal(hopper_close(q), 0);

        /* A consumer waiting on an empty queue is woken with the end code. */
        q = open_ok(s->dir, &o);
        waiter_recv w = {.q = q, .timeout_ms = 30000};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, recv_main, &w), 0);
        hopper_shutdown(q);
        assert_int_equal(pthread_join(th, NULL), 0);
        assert_int_equal(w.rc, HOPPER_ECLOSED);
        assert_true(w.elapsed_ms < 20000);
        assert_int_equal(hopper_close(q), 0);

        /* A sender blocked on a full queue is woken with ECLOSED. */
        o.memory_bytes = 8 * 1024;
        o.disk_bytes = 64 * 1024;
        q = open_ok(s->dir, &o);
        size_t n = fill_until_full(q, 0, len_500, 100000);
        waiter_recv ws = {.q = q, .timeout_ms = 30000};
        assert_int_equal(pthread_create(&th, NULL, send_blocked_main, &ws), 0);
        hopper_shutdown(q);
        assert_int_equal(pthread_join(th, NULL), 0);
        assert_int_equal(ws.rc, HOPPER_ECLOSED);
        assert_true(ws.elapsed_ms < 20000);
        assert_int_equal(stats_of(q).sent, n);
        assert_int_equal(hopper_close(q), 0);
        hp_test_rmtree(s->dir);
        s->dir = hp_test_tmpdir("queue");
        assert_non_null(s->dir);
    }
}

/* MEMORY mode: close with records both in memory and on disk (some spilled
 * before, some written by close), reopen: everything, in order, same seqs. */
static void
test_restart_memory_and_disk(void **state)
{
    tq_state *s = *state;
    for (int mode = 0; mode <= 1; mode++) {
        hopper_opts o;
        opts_small(&o, mode);
        o.memory_bytes = 5000;
        o.segment_bytes = 8192;
        o.compression = mode ? 6 : 1;
        hopper_queue *q = open_ok(s->dir, &o);
        uint64_t s0 = stats_of(q).next_seq;
        for (uint64_t k = 0; k < 100; k++) {
            assert_int_equal(send_key(q, len_var(k), k, 0), 0);
        }
        hopper_stats st = stats_of(q);
        assert_true(st.mem_records > 0);
        assert_true(st.mem_records < 100);
        assert_int_equal(st.sent, 100);
        assert_int_equal(hopper_close(q), 0);
        q = open_ok(s->dir, &o);
        st = stats_of(q);
        assert_int_equal(st.backlog_records, 100);
        assert_int_equal(st.next_seq, s0 + 100);
        recv_expect(q, 0, 100, len_var, s0, 0);
        hopper_record r;
        assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);
        assert_int_equal(stats_of(q).redelivered, 0);
        /* New records continue the sequence. */
        assert_int_equal(send_key(q, 3, 777, 0), 0);
        assert_int_equal(hopper_recv(q, &r, 1000), 0);
        assert_int_equal(r.seq, s0 + 100);
        assert_payload(&r, 3, 777);
        assert_int_equal(hopper_ack(q, r.seq), 0);
        assert_int_equal(hopper_close(q), 0);
        q = open_ok(s->dir, &o);
        assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);
        assert_int_equal(stats_of(q).backlog_records, 0);
        assert_int_equal(hopper_close(q), 0);
        hp_test_rmtree(s->dir);
        s->dir = hp_test_tmpdir("queue");
        assert_non_null(s->dir);
    }
}

/* Acknowledged records never come back after reopen; unacknowledged ones
 * always do, in order, and redelivered counts them. */
static void
test_restart_ack(void **state)
{
    tq_state *s = *state;
    for (int mode = 0; mode <= 1; mode++) {
        hopper_opts o;
        opts_small(&o, mode);
        o.memory_bytes = 3000;
        o.segment_bytes = 4096;
        o.checkpoint_interval_ms = 3600u * 1000u; /* only sync/close/reclaim */
        hopper_queue *q = open_ok(s->dir, &o);
        uint64_t s0 = stats_of(q).next_seq;
        for (uint64_t k = 0; k < 100; k++) {
            assert_int_equal(send_key(q, len_var(k), k, 0), 0);
        }
        recv_expect(q, 0, 60, len_var, s0, 0);
        assert_int_equal(hopper_ack(q, s0 + 39), 0);
        assert_int_equal(hopper_sync(q), 0);
        hopper_stats st = stats_of(q);
        assert_int_equal(st.acked, 40);
        assert_int_equal(st.backlog_records, 60);
        assert_int_equal(hopper_close(q), 0);

        q = open_ok(s->dir, &o);
        st = stats_of(q);
        assert_int_equal(st.backlog_records, 60);
        recv_expect(q, 40, 60, len_var, s0 + 40, 0);
        hopper_record r;
        assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);
        st = stats_of(q);
        assert_int_equal(st.redelivered, 20); /* 40..59 were delivered before */
        assert_int_equal(st.received, 60);
        /* Ack up to 69 and close without sync: close persists it. */
        assert_int_equal(hopper_ack(q, s0 + 69), 0);
        assert_int_equal(hopper_close(q), 0);

        q = open_ok(s->dir, &o);
        assert_int_equal(stats_of(q).backlog_records, 30);
        recv_expect(q, 70, 10, len_var, s0 + 70, 0);
        assert_int_equal(stats_of(q).redelivered, 10);
        /* Acknowledging past what was received is clamped. */
        assert_int_equal(hopper_ack(q, s0 + 99), 0);
        st = stats_of(q);
        assert_int_equal(st.acked, 10);
        assert_int_equal(st.backlog_records, 20);
        assert_int_equal(hopper_close(q), 0);

        q = open_ok(s->dir, &o);
        recv_expect(q, 80, 20, len_var, s0 + 80, 0);
        assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);
        /* 80..99 were delivered in the second session, before a reopen. */
        assert_int_equal(stats_of(q).redelivered, 20);
        assert_int_equal(hopper_ack(q, s0 + 99), 0);
        assert_int_equal(hopper_sync(q), 0);
        assert_int_equal(stats_of(q).backlog_records, 0);
        assert_int_equal(hopper_close(q), 0);

        q = open_ok(s->dir, &o);
        assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);
        st = stats_of(q);
        assert_int_equal(st.backlog_records, 0);
        assert_int_equal(st.next_seq, s0 + 100);
        assert_int_equal(hopper_close(q), 0);
        hp_test_rmtree(s->dir);
        s->dir = hp_test_tmpdir("queue");
        assert_non_null(s->dir);
    }
}

static void
check_foreign(const char *qdir, const char *const *names, size_t nn)
{
    char p[PATH_MAX + 64];
    for (size_t i = 0; i < nn; i++) {
        snprintf(p, sizeof(p), "%s/%s", qdir, names[i]);
        char body[64];
        int len = snprintf(body, sizeof(body), "foreign %zu\n", i);
        uint8_t *got = NULL;
        size_t n = 0;
        int rc = hp_test_read_file(p, &got, &n);
        if (rc != 0) {
            fprintf(stderr, "foreign file %s: %s\n", names[i], hopper_strerror(rc));
        }
        assert_int_equal(rc, 0);
        assert_int_equal(n, (size_t)len);
        assert_memory_equal(got, body, n);
        free(got);
    }
    snprintf(p, sizeof(p), "%s/subdir", qdir);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
}

static void
write_foreign(const char *qdir, const char *const *names, size_t nn)
{
    char p[PATH_MAX + 64];
    for (size_t i = 0; i < nn; i++) {
        snprintf(p, sizeof(p), "%s/%s", qdir, names[i]);
        char body[64];
        int len = snprintf(body, sizeof(body), "foreign %zu\n", i);
        assert_int_equal(hp_test_write_file(p, body, (size_t)len), 0);
    }
}

static size_t
len_700(uint64_t k)
{
    (void)k;
    return 700;
}

static void
test_foreign_files(void **state)
{
    tq_state *s = *state;
    static const char *const names[] = {"README", "foo.hseg.txt", "0000.hseg",
                                        "ABCDEF0123456789.hseg", "checkpoint.txt",
                                        "LOCK.old", "00000000000000001.hseg"};
    size_t nn = sizeof(names) / sizeof(names[0]);
    for (int mode = 0; mode <= 1; mode++) {
        char qdir[PATH_MAX];
        qpath(qdir, sizeof(qdir), s->dir, NULL);
        assert_int_equal(mkdir(qdir, 0700), 0);
        write_foreign(qdir, names, nn);
        char p[PATH_MAX + 64];
        snprintf(p, sizeof(p), "%s/subdir", qdir);
        assert_int_equal(mkdir(p, 0700), 0);

        hopper_opts o;
        opts_small(&o, mode);
        o.memory_bytes = 1000;
        o.segment_bytes = 4096;
        hopper_queue *q = open_ok(s->dir, &o);
        uint64_t s0 = stats_of(q).next_seq;
        assert_int_equal(stats_of(q).backlog_records, 0);
        assert_int_equal(stats_of(q).segments, 0);
        for (uint64_t k = 0; k < 30; k++) {
            assert_int_equal(send_key(q, 700, k, 0), 0);
        }
        recv_expect(q, 0, 30, len_700, s0, 1);
        assert_int_equal(hopper_sync(q), 0);
        check_foreign(qdir, names, nn);
        /* Leave records on disk across a close. */
        for (uint64_t k = 30; k < 40; k++) {
            assert_int_equal(send_key(q, 700, k, 0), 0);
        }
        assert_int_equal(hopper_close(q), 0);
        check_foreign(qdir, names, nn);
        /* A foreign file added while closed. */
        static const char *const more[] = {"zz-notes"};
        snprintf(p, sizeof(p), "%s/zz-notes", qdir);
        assert_int_equal(hp_test_write_file(p, "foreign 0\n", 10), 0);
        q = open_ok(s->dir, &o);
        hopper_stats st = stats_of(q);
        assert_int_equal(st.corrupt_frames, 0);
        assert_int_equal(st.quarantined_bytes, 0);
        recv_expect(q, 30, 10, len_700, s0 + 30, 1);
        hopper_record r;
        assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);
        assert_int_equal(hopper_close(q), 0);
        check_foreign(qdir, names, nn);
        check_foreign(qdir, more, 1);
        hp_test_rmtree(s->dir);
        s->dir = hp_test_tmpdir("queue");
        assert_non_null(s->dir);
    }
}

static void
test_stats(void **state)
{
    tq_state *s = *state;
    hopper_opts o;
    opts_small(&o, HOPPER_DURABILITY_MEMORY);
    /* 3 x 100 + 700 bytes of payload fit exactly, with their REC_COST each. */
    o.memory_bytes = 1000 + 4 * REC_COST;
    o.disk_bytes = 64 * 1024;
    o.segment_bytes = 4096;
    hopper_queue *q = open_ok(s->dir, &o);
    hopper_stats st = stats_of(q);
    assert_int_equal(st.sent, 0);
    assert_int_equal(st.received, 0);
    assert_int_equal(st.acked, 0);
    assert_int_equal(st.redelivered, 0);
    assert_int_equal(st.full_rejections, 0);
    assert_int_equal(st.backlog_records, 0);
    assert_int_equal(st.mem_records, 0);
    assert_int_equal(st.mem_bytes, 0);
    assert_int_equal(st.segments, 0);
    assert_int_equal(st.disk_records, 0);
    assert_int_equal(st.oldest_age_ms, 0);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.lost_records, 0);
    uint64_t s0 = st.next_seq;

    for (uint64_t k = 0; k < 5; k++) {
        assert_int_equal(send_key(q, 100, k, 0), 0);
    }
    st = stats_of(q);
    assert_int_equal(st.sent, 5);
    assert_int_equal(st.mem_records, 5);
    assert_int_equal(st.mem_bytes, 5 * (100 + REC_COST));
    assert_int_equal(st.backlog_records, 5);
    assert_int_equal(st.next_seq, s0 + 5);
    assert_true(st.oldest_age_ms < 60000);

    recv_expect(q, 0, 2, len_100, s0, 0);
    st = stats_of(q);
    assert_int_equal(st.received, 2);
    assert_int_equal(st.acked, 0);
    assert_int_equal(st.backlog_records, 5);
    assert_int_equal(hopper_ack(q, s0 + 1), 0);
    st = stats_of(q);
    assert_int_equal(st.acked, 2);
    assert_int_equal(st.backlog_records, 3);
    assert_int_equal(st.mem_records, 3);
    assert_int_equal(st.mem_bytes, 3 * (100 + REC_COST));
    /* Acking the same position again counts nothing. */
    assert_int_equal(hopper_ack(q, s0 + 1), 0);
    assert_int_equal(stats_of(q).acked, 2);

    /* Spill: 20 x 700 bytes past the 1000-byte memory budget. */
    for (uint64_t k = 5; k < 25; k++) {
        assert_int_equal(send_key(q, 700, k, 0), 0);
    }
    st = stats_of(q);
    assert_int_equal(st.sent, 25);
    assert_int_equal(st.backlog_records, 23);
    assert_true(st.mem_bytes <= o.memory_bytes);
    /* Receiving a spilled one: it was (or now is) in a segment file. */
    recv_expect(q, 2, 3, len_100, s0 + 2, 0);
    hopper_record r;
    assert_int_equal(hopper_recv(q, &r, 1000), 0);
    assert_payload(&r, 700, 5); /* 300 + 700 bytes (+ 4 x REC_COST): still memory */
    assert_int_equal(hopper_recv(q, &r, 1000), 0);
    assert_payload(&r, 700, 6); /* spilled */
    st = stats_of(q);
    assert_true(st.segments >= 1);
    assert_int_equal(st.segments, (uint64_t)count_segments(s->dir, NULL));
    assert_true(st.disk_records >= 1);
    assert_true(st.disk_bytes > 0);
    assert_int_equal(st.received, 7);

    /* Fill to the budget: full_rejections counts refusals. */
    size_t n = fill_until_full(q, 100, len_500, 100000);
    st = stats_of(q);
    assert_int_equal(st.full_rejections, 1);
    assert_int_equal(st.sent, 25 + n);
    assert_int_equal(send_key(q, 500, 1, 0), HOPPER_EFULL);
    assert_int_equal(stats_of(q).full_rejections, 2);

    /* Bad arguments. */
    hopper_stats bad;
    memset(&bad, 0, sizeof(bad));
    bad.struct_size = offsetof(hopper_stats, missing_records) - 1; /* below the first version */
    assert_int_equal(hopper_stats_get(q, &bad), -EINVAL);
    /* A caller built with the first version of the struct (it ended with
     * `failed`) gets those fields, and nothing is written past them. */
    union {
        hopper_stats st;
        uint8_t b[sizeof(hopper_stats) + 16];
    } v1;
    memset(&v1, 0xAA, sizeof(v1));
    v1.st.struct_size = offsetof(hopper_stats, missing_records);
    assert_int_equal(hopper_stats_get(q, &v1.st), 0);
    assert_int_equal(v1.st.struct_size, offsetof(hopper_stats, missing_records));
    assert_int_equal(v1.st.sent, stats_of(q).sent);
    assert_int_equal(v1.st.failed, 0);
    for (size_t i = offsetof(hopper_stats, missing_records); i < sizeof(v1.b); i++) {
        assert_int_equal(v1.b[i], 0xAA);
    }
    assert_int_equal(hopper_stats_get(q, NULL), -EINVAL);
    bad.struct_size = sizeof(bad);
    assert_int_equal(hopper_stats_get(NULL, &bad), -EINVAL);
    assert_int_equal(hopper_close(q), 0);

    /* DISK mode: every record is on disk when send returns. */
    hp_test_rmtree(s->dir);
    s->dir = hp_test_tmpdir("queue");
    assert_non_null(s->dir);
    opts_small(&o, HOPPER_DURABILITY_DISK);
    o.fsync = HOPPER_FSYNC_ALWAYS;
    q = open_ok(s->dir, &o);
    for (uint64_t k = 0; k < 7; k++) {
        assert_int_equal(send_key(q, 300, k, 0), 0);
    }
    st = stats_of(q);
    assert_int_equal(st.disk_records, 7);
    assert_int_equal(st.disk_raw_bytes, 7 * 300);
    assert_int_equal(st.segments, 1);
    assert_true(st.fsyncs >= 1);
    assert_true(st.disk_bytes >= 7 * 300 + HOPPER_SEGMENT_HEADER);
    assert_int_equal(hopper_close(q), 0);
}

static void
test_strerror_names(void **state)
{
    (void)state;
    static const int codes[] = {0,
                                HOPPER_ECLOSED,
                                HOPPER_ECORRUPT,
                                HOPPER_EVERSION,
                                HOPPER_ETOOBIG,
                                HOPPER_EFULL,
                                HOPPER_EFAILED,
                                HOPPER_ELOCKED,
                                HOPPER_ENEEDMORE,
                                -EAGAIN,
                                -ETIMEDOUT,
                                -ENOMEM,
                                -EINVAL,
                                -ENOSPC,
                                -EIO,
                                -EMFILE,
                                -ENFILE,
                                -ENOENT,
                                -EACCES,
                                -EDQUOT,
                                -EINTR,
                                -1000,
                                -1009,
                                -1999,
                                -4095,
                                -4096,
                                -99999,
                                1,
                                42,
                                1005,
                                INT_MAX,
                                INT_MIN,
                                INT_MIN + 1};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        const char *m = hopper_strerror(codes[i]);
        const char *n = hopper_err_name(codes[i]);
        assert_non_null(m);
        assert_non_null(n);
        assert_true(m[0] != '\0');
        assert_true(n[0] != '\0');
    }
    assert_string_equal(hopper_err_name(0), "OK");
    assert_string_equal(hopper_err_name(HOPPER_EFULL), "EFULL");
    assert_string_equal(hopper_err_name(HOPPER_ECLOSED), "ECLOSED");
    assert_string_equal(hopper_err_name(HOPPER_ELOCKED), "ELOCKED");
    assert_string_equal(hopper_err_name(-ENOSPC), "ENOSPC");
    /* Library codes have distinct messages, distinct from success. */
    static const int lib[] = {HOPPER_ECLOSED, HOPPER_ECORRUPT, HOPPER_EVERSION,
                              HOPPER_ETOOBIG, HOPPER_EFULL,    HOPPER_EFAILED,
                              HOPPER_ELOCKED, HOPPER_ENEEDMORE};
    for (size_t i = 0; i < 8; i++) {
        assert_string_not_equal(hopper_strerror(lib[i]), hopper_strerror(0));
        for (size_t j = i + 1; j < 8; j++) {
            assert_string_not_equal(hopper_strerror(lib[i]), hopper_strerror(lib[j]));
            assert_string_not_equal(hopper_err_name(lib[i]), hopper_err_name(lib[j]));
        }
    }
    /* Version. */
    assert_int_equal(hopper_version(), (HOPPER_VERSION_MAJOR << 16) |
                                           (HOPPER_VERSION_MINOR << 8) | HOPPER_VERSION_PATCH);
    char v[32];
    snprintf(v, sizeof(v), "%d.%d.%d", HOPPER_VERSION_MAJOR, HOPPER_VERSION_MINOR,
             HOPPER_VERSION_PATCH);
    assert_string_equal(hopper_version_string(), v);
}

static void
test_close_null(void **state)
{
    (void)state;
    assert_int_equal(hopper_close(NULL), 0);
}

/* The queue identity: created with the directory, stable across reopen,
 * different for a deleted and recreated queue, created for an old queue
 * without one, and a damaged file refuses the open rather than change. */
static void
test_queue_id(void **state)
{
    tq_state *s = *state;
    char a[HOPPER_QUEUE_ID_LEN + 1], b[HOPPER_QUEUE_ID_LEN + 1];
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/queue.id", s->qdir);
    hopper_queue *q = open_ok(s->dir, NULL);
    assert_int_equal(hopper_queue_id(q, a), 0);
    assert_int_equal(strlen(a), HOPPER_QUEUE_ID_LEN);
    assert_int_equal(strspn(a, "0123456789abcdef"), HOPPER_QUEUE_ID_LEN);
    assert_int_equal(hopper_queue_id(NULL, b), -EINVAL);
    assert_int_equal(hopper_queue_id(q, NULL), -EINVAL);
    assert_int_equal(hopper_send(q, "x", 1, 0), 0);
    assert_int_equal(hopper_close(q), 0);
    uint8_t *text;
    size_t n;
    assert_int_equal(hp_test_read_file(path, &text, &n), 0);
    assert_int_equal(n, HOPPER_QUEUE_ID_LEN + 1);
    assert_memory_equal(text, a, HOPPER_QUEUE_ID_LEN);
    assert_int_equal(text[HOPPER_QUEUE_ID_LEN], '\n');
    free(text);

    q = open_ok(s->dir, NULL);
    assert_int_equal(hopper_queue_id(q, b), 0);
    assert_string_equal(a, b);
    assert_int_equal(hopper_close(q), 0);

    /* An older queue without the file gets one, then keeps it. */
    assert_int_equal(unlink(path), 0);
    q = open_ok(s->dir, NULL);
    assert_int_equal(hopper_queue_id(q, b), 0);
    assert_string_not_equal(a, b);
    hopper_record rec;
    assert_int_equal(hopper_recv(q, &rec, 0), 0); /* the data is untouched */
    assert_int_equal(hopper_close(q), 0);
    q = open_ok(s->dir, NULL);
    assert_int_equal(hopper_queue_id(q, a), 0);
    assert_string_equal(a, b);
    assert_int_equal(hopper_close(q), 0);

    /* Damaged: refused, and left as it is. */
    assert_int_equal(hp_test_write_file(path, "not an id\n", 10), 0);
    q = (hopper_queue *)(uintptr_t)1;
    assert_int_equal(hopper_open(s->dir, QNAME, NULL, &q), HOPPER_ECORRUPT);
    assert_null(q);
    assert_int_equal(hp_test_read_file(path, &text, &n), 0);
    assert_int_equal(n, 10);
    free(text);

    /* A deleted and recreated queue gets a new identity. */
    char *qd = strdup(s->qdir);
    assert_non_null(qd);
    hp_test_rmtree(qd);
    q = open_ok(s->dir, NULL);
    assert_int_equal(hopper_queue_id(q, b), 0);
    assert_string_not_equal(a, b);
    assert_int_equal(hopper_close(q), 0);
}

#define HP_T(fn) cmocka_unit_test_setup_teardown(fn, hp_test_dir_setup, hp_test_dir_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        HP_T(test_happy_path),
        HP_T(test_open_creates_dir),
        HP_T(test_queue_id),
        HP_T(test_bad_names),
        HP_T(test_second_opener_locked),
        HP_T(test_zero_byte_record),
        HP_T(test_max_size_record),
        HP_T(test_large_frames),
        HP_T(test_exactly_at_memory_budget),
        HP_T(test_full_at_budget_memory),
        HP_T(test_full_at_budget_disk),
        HP_T(test_full_drain_single_segment_memory),
        HP_T(test_full_drain_single_segment_disk),
        HP_T(test_blocking_send_timeout),
        HP_T(test_batch_all_or_nothing),
        HP_T(test_no_stranded_records),
        HP_T(test_rotation),
        HP_T(test_ack_across_segments_no_corruption),
        HP_T(test_recv_poll_and_timeout),
        HP_T(test_shutdown),
        HP_T(test_shutdown_during_spin),
        HP_T(test_restart_memory_and_disk),
        HP_T(test_restart_ack),
        HP_T(test_foreign_files),
        HP_T(test_stats),
        HP_T(test_strerror_names),
        HP_T(test_close_null),
    };
    return cmocka_run_group_tests_name("test_queue", tests, NULL, NULL);
}
