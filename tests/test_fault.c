/* SPDX-License-Identifier: MIT */
/* Failure handling through the fsio fault hook (fsio.h): a failing write,
 * fsync or rename on the persistence path makes the queue fail stickily;
 * ENOSPC is pushed back as HOPPER_EFULL with nothing half-written; transient
 * open errors (EMFILE, ENOMEM, EIO on read) are reported as such and never
 * treated as damage; every call site is failed in turn (loop N from 0) and a
 * clean reopen afterwards always succeeds and delivers only accepted records,
 * in order. fd exhaustion is tested for real with RLIMIT_NOFILE in a child. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fsio.h"
#include "hopper.h"
#include "hp_opts.h"
#include "hp_test.h"
#include "segment.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the hook -------------------------------------------------------------- */

static const char *volatile g_op; /* op to fail, NULL = any */
static _Atomic long g_nth;        /* fail the call with this index */
static _Atomic long g_count;
static _Atomic long g_fired;
static _Atomic int g_err;
static _Atomic int g_sticky; /* also fail every later matching call */
static const char *volatile g_fired_op; /* name of the first call failed */

static int
fault_hook(const char *op)
{
    const char *want = g_op;
    if (want != NULL && strcmp(op, want) != 0) {
        return 0;
    }
    long c = atomic_fetch_add(&g_count, 1);
    if (c == atomic_load(&g_nth) || (atomic_load(&g_sticky) && c > atomic_load(&g_nth))) {
        if (atomic_fetch_add(&g_fired, 1) == 0) {
            g_fired_op = op;
        }
        return atomic_load(&g_err);
    }
    return 0;
}

static void
arm(const char *op, long nth, int err, int sticky)
{
    g_op = op;
    atomic_store(&g_nth, nth);
    atomic_store(&g_count, 0);
    atomic_store(&g_fired, 0);
    atomic_store(&g_err, err);
    atomic_store(&g_sticky, sticky);
    g_fired_op = NULL;
    hp_fault_hook = fault_hook;
}

static void
disarm(void)
{
    hp_fault_hook = NULL;
}

/* ---- fixture ----------------------------------------------------------------- */

typedef hp_test_dir fx;

static int
teardown(void **state)
{
    disarm(); /* no fault may outlive its test */
    return hp_test_dir_teardown(state);
}

static void
reset_dir(const fx *f)
{
    hp_test_rmtree(strdup(f->qdir));
}

#define PAYLOAD 700

static void
make_payload(uint8_t *p, size_t len, uint64_t idx)
{
    for (size_t j = 0; j < len; j++) {
        p[j] = (uint8_t)('a' + (idx * 3 + j) % 26);
    }
    if (len >= 8) {
        memcpy(p, &idx, 8);
    }
}

static uint64_t
payload_idx(const hopper_record *r)
{
    uint64_t idx;
    assert_true(r->len >= 8);
    memcpy(&idx, r->data, 8);
    uint8_t *expect = malloc(r->len);
    assert_non_null(expect);
    make_payload(expect, r->len, idx);
    assert_memory_equal(r->data, expect, r->len);
    free(expect);
    return idx;
}

static int
send_idx(hopper_queue *q, uint64_t idx, size_t len, int timeout_ms)
{
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    make_payload(buf, len, idx);
    int rc = hopper_send(q, buf, len, timeout_ms);
    free(buf);
    return rc;
}

typedef struct got {
    size_t n;
    uint64_t seq[512];
    uint64_t idx[512];
    hopper_stats st;
} got;

/* Open without faults (must succeed), drain, close. */
static void
drain(const fx *f, const hopper_opts *o, got *g)
{
    memset(g, 0, sizeof(*g));
    hopper_queue *q = NULL;
    int rc = hopper_open(f->dir, "q", o, &q);
    if (rc != 0) {
        print_error("clean reopen failed: %s\n", hopper_strerror(rc));
    }
    assert_int_equal(rc, 0);
    for (;;) {
        hopper_record r;
        rc = hopper_recv(q, &r, 0);
        if (rc == -EAGAIN) {
            break;
        }
        assert_int_equal(rc, 0);
        assert_true(g->n < 512);
        g->seq[g->n] = r.seq;
        g->idx[g->n] = payload_idx(&r);
        g->n++;
    }
    g->st.struct_size = sizeof(g->st);
    assert_int_equal(hopper_stats_get(q, &g->st), 0);
    assert_int_equal(g->st.failed, 0);
    assert_int_equal(hopper_close(q), 0);
}

static void
expect_idx_range(const got *g, uint64_t from, uint64_t to)
{
    if (g->n != to - from) {
        print_error("delivered %zu records, expected [%" PRIu64 ", %" PRIu64 ")\n", g->n, from,
                    to);
    }
    assert_int_equal(g->n, to - from);
    for (size_t i = 0; i < g->n; i++) {
        assert_int_equal(g->idx[i], from + i);
    }
}

/* Every later call on a failed queue reports HOPPER_EFAILED. */
static void
expect_sticky(hopper_queue *q)
{
    uint8_t b[16] = {0};
    hopper_record r;
    hopper_iovec v[2] = {{b, 4}, {b, 8}};
    assert_int_equal(hopper_send(q, b, sizeof(b), 0), HOPPER_EFAILED);
    assert_int_equal(hopper_send(q, b, 0, 100), HOPPER_EFAILED);
    assert_int_equal(hopper_send_batch(q, v, 2, 0), HOPPER_EFAILED);
    assert_int_equal(hopper_recv(q, &r, 0), HOPPER_EFAILED);
    assert_int_equal(hopper_recv(q, &r, 50), HOPPER_EFAILED);
    r.seq = 0;
    assert_int_equal(hopper_recv_ack(q, &r, 0), HOPPER_EFAILED);
    assert_int_equal(r.seq, UINT64_MAX); /* nothing received */
    assert_int_equal(hopper_ack(q, 0), HOPPER_EFAILED);
    assert_int_equal(hopper_ack(q, UINT64_MAX), HOPPER_EFAILED);
    assert_int_equal(hopper_sync(q), HOPPER_EFAILED);
    hopper_stats st = {.struct_size = sizeof(st)};
    assert_int_equal(hopper_stats_get(q, &st), 0);
    assert_int_not_equal(st.failed, 0);
    /* still failed a second time round */
    assert_int_equal(hopper_send(q, b, sizeof(b), 0), HOPPER_EFAILED);
}

/* ---- sticky failures ----------------------------------------------------------- */

static void
test_write_fails_disk_sticky(void **state)
{
    fx *f = *state;
    hopper_opts o;
    hp_test_opts_disk(&o, HOPPER_FSYNC_NEVER);
    hopper_queue *q = NULL;
    assert_int_equal(hopper_open(f->dir, "q", &o, &q), 0);
    for (uint64_t i = 0; i < 3; i++) {
        assert_int_equal(send_idx(q, i, PAYLOAD, 0), 0);
    }
    arm("write", 0, -EIO, 0);
    assert_int_equal(send_idx(q, 3, PAYLOAD, 0), HOPPER_EFAILED);
    assert_int_equal(atomic_load(&g_fired), 1);
    disarm(); /* the disk is fine again: the queue stays failed anyway */
    expect_sticky(q);
    assert_int_not_equal(hopper_close(q), 0);
    got g;
    drain(f, &o, &g);
    expect_idx_range(&g, 0, 3);
}

static void
test_fsync_fails_disk_always_sticky(void **state)
{
    fx *f = *state;
    hopper_opts o;
    hp_test_opts_disk(&o, HOPPER_FSYNC_ALWAYS);
    hopper_queue *q = NULL;
    assert_int_equal(hopper_open(f->dir, "q", &o, &q), 0);
    for (uint64_t i = 0; i < 3; i++) {
        assert_int_equal(send_idx(q, i, PAYLOAD, 0), 0);
    }
    arm("fsync", 0, -EIO, 0);
    assert_int_equal(send_idx(q, 3, PAYLOAD, 0), HOPPER_EFAILED);
    assert_int_equal(atomic_load(&g_fired), 1);
    disarm();
    expect_sticky(q);
    assert_int_not_equal(hopper_close(q), 0);
    got g;
    drain(f, &o, &g);
    /* The record whose fdatasync failed was written before the failure was
     * known: it may come back (indeterminate), the accepted ones must. */
    assert_true(g.n == 3 || g.n == 4);
    expect_idx_range(&g, 0, g.n);
}

/* MEMORY mode: records accepted into memory cannot be saved at close when
 * writes fail; close reports it and still frees the handle (ASan checks). */
static void
test_memory_close_write_fails(void **state)
{
    fx *f = *state;
    hopper_opts o;
    hopper_opts_init(&o);
    o.fsync = HOPPER_FSYNC_NEVER;
    hopper_queue *q = NULL;
    assert_int_equal(hopper_open(f->dir, "q", &o, &q), 0);
    for (uint64_t i = 0; i < 5; i++) {
        assert_int_equal(send_idx(q, i, PAYLOAD, 0), 0);
    }
    arm("write", 0, -EIO, 1);
    int rc = hopper_close(q);
    disarm();
    assert_int_not_equal(rc, 0);
    assert_true(atomic_load(&g_fired) >= 1);
    got g;
    drain(f, &o, &g);
    assert_int_equal(g.n, 0); /* nothing half-saved either */
}

/* Checkpoint path: an ack that reclaims a segment writes the checkpoint
 * durably (in place into its working slot, fdatasync), then unlinks and
 * fsyncs the directory; any failure is sticky but a full file system, which
 * leaves the old checkpoint and defers the reclaim (FORMAT.md §4). */
static void
test_checkpoint_failures_on_reclaim(void **state)
{
    fx *f = *state;
    static const struct {
        const char *op;
        int err;
        uint64_t min_from, max_from; /* first idx delivered after reopen */
    } cases[] = {
        {"write", -EIO, 0, 0},      /* not written */
        {"fsync", -EIO, 5, 5},      /* written in place, durability unknown: no reclaim */
        {"fsync_dir", -EIO, 5, 5},  /* checkpoint durable, unlinks maybe not */
        {"unlink", -EIO, 5, 5},     /* checkpoint written, reclaim failed */
        {"write", -ENOSPC, 5, 5},   /* full: not a failure (case below) */
        {"fsync", -ENOSPC, 5, 5},
    };
    hopper_opts o;
    hp_test_opts_disk(&o, HOPPER_FSYNC_NEVER);
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        reset_dir(f);
        hopper_queue *q = NULL;
        assert_int_equal(hopper_open(f->dir, "q", &o, &q), 0);
        /* 700-byte records: 5 per 4 KiB segment */
        for (uint64_t i = 0; i < 12; i++) {
            assert_int_equal(send_idx(q, i, PAYLOAD, 0), 0);
        }
        hopper_stats st = {.struct_size = sizeof(st)};
        assert_int_equal(hopper_stats_get(q, &st), 0);
        assert_int_equal(st.segments, 3);
        /* Every other case takes the fifth record with hopper_recv_ack(): an
         * error of its ack step still hands the record out (hopper.h). */
        int via_recv_ack = c % 2 == 1;
        for (uint64_t i = 0; i < (via_recv_ack ? 4 : 5); i++) {
            hopper_record r;
            assert_int_equal(hopper_recv(q, &r, 0), 0);
            assert_int_equal(payload_idx(&r), i);
        }
        arm(cases[c].op, 0, cases[c].err, 0);
        int rc;
        if (via_recv_ack) {
            hopper_record r;
            rc = hopper_recv_ack(q, &r, 0); /* segment 1 is fully acknowledged */
            assert_int_not_equal(r.seq, UINT64_MAX);
            assert_int_equal(payload_idx(&r), 4);
        } else {
            rc = hopper_ack(q, 4); /* segment 1 is fully acknowledged */
        }
        disarm();
        int full = cases[c].err == -ENOSPC;
        if (rc != (full ? 0 : HOPPER_EFAILED) || atomic_load(&g_fired) != 1) {
            print_error("case %s/%d: ack rc %s, fired %ld\n", cases[c].op, cases[c].err,
                        hopper_err_name(rc), atomic_load(&g_fired));
        }
        assert_int_equal(atomic_load(&g_fired), 1);
        if (full) {
            /* Nothing failed and nothing was reclaimed; once there is room
             * again (after the retry pause) an ack writes the checkpoint and
             * reclaims, and close is clean. */
            assert_int_equal(rc, 0);
            assert_int_equal(hopper_stats_get(q, &st), 0);
            assert_int_equal(st.failed, 0);
            assert_int_equal(st.segments, 3);
            uint64_t deadline = hp_test_now_ms() + 10000;
            do {
                assert_int_equal(hopper_ack(q, 4), 0);
                assert_int_equal(hopper_stats_get(q, &st), 0);
            } while (st.segments == 3 && hp_test_now_ms() < deadline);
            assert_int_equal(st.segments, 2);
            assert_int_equal(hopper_close(q), 0);
        } else {
            assert_int_equal(rc, HOPPER_EFAILED);
            expect_sticky(q);
            assert_int_not_equal(hopper_close(q), 0);
        }
        got g;
        drain(f, &o, &g);
        assert_true(g.n > 0);
        uint64_t from = g.idx[0];
        assert_true(from == cases[c].min_from || from == cases[c].max_from);
        expect_idx_range(&g, from, 12);
    }
}

static void
test_sync_failure_sticky(void **state)
{
    fx *f = *state;
    static const char *ops[] = {"write", "fsync"}; /* in place: FORMAT.md §4 */
    hopper_opts o;
    hp_test_opts_disk(&o, HOPPER_FSYNC_NEVER);
    o.checkpoint_interval_ms = 600000; /* only hopper_sync writes it */
    for (size_t c = 0; c < sizeof(ops) / sizeof(ops[0]); c++) {
        reset_dir(f);
        hopper_queue *q = NULL;
        assert_int_equal(hopper_open(f->dir, "q", &o, &q), 0);
        for (uint64_t i = 0; i < 4; i++) {
            assert_int_equal(send_idx(q, i, PAYLOAD, 0), 0);
        }
        hopper_record r;
        assert_int_equal(hopper_recv(q, &r, 0), 0);
        assert_int_equal(hopper_recv(q, &r, 0), 0);
        /* Past HP_CKPT_MARK_NS since open, the ack is marked in place (not
         * synced): no reclaim, not due. */
        usleep(6000);
        assert_int_equal(hopper_ack(q, r.seq), 0);
        arm(ops[c], 0, -EIO, 0);
        int rc = hopper_sync(q);
        disarm();
        assert_int_equal(atomic_load(&g_fired), 1);
        assert_int_equal(rc, HOPPER_EFAILED);
        expect_sticky(q);
        assert_int_not_equal(hopper_close(q), 0);
        got g;
        drain(f, &o, &g);
        /* The failed sync neither lost nor damaged the marked position. */
        expect_idx_range(&g, 2, 4);
    }
    /* control: the same sequence without a fault persists the ack */
    reset_dir(f);
    hopper_queue *q = NULL;
    assert_int_equal(hopper_open(f->dir, "q", &o, &q), 0);
    for (uint64_t i = 0; i < 4; i++) {
        assert_int_equal(send_idx(q, i, PAYLOAD, 0), 0);
    }
    hopper_record r;
    assert_int_equal(hopper_recv(q, &r, 0), 0);
    assert_int_equal(hopper_recv(q, &r, 0), 0);
    assert_int_equal(hopper_ack(q, r.seq), 0);
    assert_int_equal(hopper_sync(q), 0);
    assert_int_equal(hopper_close(q), 0);
    got g;
    drain(f, &o, &g);
    expect_idx_range(&g, 2, 4);
}

/* ---- ENOSPC ---------------------------------------------------------------------- */

static void
test_enospc_is_full_not_failed(void **state)
{
    fx *f = *state;
    hopper_opts o;
    hp_test_opts_disk(&o, HOPPER_FSYNC_NEVER);
    hopper_queue *q = NULL;
    assert_int_equal(hopper_open(f->dir, "q", &o, &q), 0);
    uint64_t accepted[64];
    size_t na = 0;
    for (uint64_t i = 0; i < 5; i++) {
        assert_int_equal(send_idx(q, i, PAYLOAD, 0), 0);
        accepted[na++] = i;
    }
    arm("write", 0, -ENOSPC, 1); /* the file system stays full */
    assert_int_equal(send_idx(q, 100, PAYLOAD, 0), HOPPER_EFULL);
    assert_true(atomic_load(&g_fired) >= 1);
    assert_int_equal(send_idx(q, 101, PAYLOAD, 0), HOPPER_EFULL);
    assert_int_equal(send_idx(q, 102, PAYLOAD, 50), HOPPER_EFULL);
    hopper_stats st = {.struct_size = sizeof(st)};
    assert_int_equal(hopper_stats_get(q, &st), 0);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.next_seq, 5); /* refused records took no seq */
    assert_true(st.full_rejections >= 3);
    /* The consumer is unaffected. */
    hopper_record r;
    assert_int_equal(hopper_recv(q, &r, 0), 0);
    assert_int_equal(payload_idx(&r), 0);
    assert_int_equal(hopper_ack(q, r.seq), 0);
    /* Space comes back: a send succeeds again within a deadline. */
    disarm();
    uint64_t deadline = hp_test_now_ms() + 10000;
    int rc;
    do {
        rc = send_idx(q, 6, PAYLOAD, 200);
        assert_true(rc == 0 || rc == HOPPER_EFULL);
    } while (rc != 0 && hp_test_now_ms() < deadline);
    assert_int_equal(rc, 0);
    accepted[na++] = 6;
    for (uint64_t i = 7; i < 10; i++) {
        assert_int_equal(send_idx(q, i, PAYLOAD, 0), 0);
        accepted[na++] = i;
    }
    for (size_t k = 1; k < na; k++) {
        assert_int_equal(hopper_recv(q, &r, 0), 0);
        assert_int_equal(r.seq, k);
        assert_int_equal(payload_idx(&r), accepted[k]);
    }
    assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);
    assert_int_equal(hopper_close(q), 0);
    /* Only accepted records are on disk, nothing torn or corrupt. */
    got g;
    drain(f, &o, &g);
    assert_int_equal(g.n, na - 1);
    for (size_t k = 0; k < g.n; k++) {
        assert_int_equal(g.idx[k], accepted[k + 1]);
        assert_int_equal(g.seq[k], k + 1);
    }
    assert_int_equal(g.st.torn_bytes, 0);
    assert_int_equal(g.st.corrupt_frames, 0);
}

/* ENOSPC at every call site of a batch that spans segments (two frames, the
 * first one flushed into the active segment before rotating): the batch is
 * refused whole with EFULL, the queue stays healthy, and after a reopen only
 * accepted records exist (no half-written frame anywhere). */
static void
test_enospc_each_site_of_spanning_batch(void **state)
{
    fx *f = *state;
    hopper_opts o;
    hp_test_opts_disk(&o, HOPPER_FSYNC_ALWAYS);
    o.segment_bytes = 300u * 1024u;
    const size_t big1 = 130u * 1024u; /* >= 128 KiB: a frame of its own */
    const size_t big2 = 200u * 1024u; /* does not fit after big1: rotate */
    uint8_t *b1 = malloc(big1);
    uint8_t *b2 = malloc(big2);
    assert_non_null(b1);
    assert_non_null(b2);
    make_payload(b1, big1, 1);
    make_payload(b2, big2, 2);
    hopper_iovec v[2] = {{b1, big1}, {b2, big2}};
    for (long n = 0; n < 200; n++) {
        reset_dir(f);
        hopper_queue *q = NULL;
        assert_int_equal(hopper_open(f->dir, "q", &o, &q), 0);
        assert_int_equal(send_idx(q, 0, 100, 0), 0); /* the active segment has data */
        arm(NULL, n, -ENOSPC, 0);
        int rc = hopper_send_batch(q, v, 2, 0);
        long fired = atomic_load(&g_fired);
        disarm();
        /* 0 is possible with a fault too: a call site may be best effort. */
        if (!(rc == 0 || rc == HOPPER_EFULL)) {
            print_error("N=%ld: batch rc %s, fired %ld (%s)\n", n, hopper_err_name(rc), fired,
                        g_fired_op ? g_fired_op : "-");
            fail();
        }
        hopper_stats st = {.struct_size = sizeof(st)};
        assert_int_equal(hopper_stats_get(q, &st), 0);
        assert_int_equal(st.failed, 0);
        /* Afterwards (the 500 ms backoff aside) the queue takes records. */
        uint64_t deadline = hp_test_now_ms() + 10000;
        int rc2;
        do {
            rc2 = send_idx(q, 3, 100, 200);
        } while (rc2 == HOPPER_EFULL && hp_test_now_ms() < deadline);
        assert_int_equal(rc2, 0);
        assert_int_equal(hopper_close(q), 0);
        got g;
        drain(f, &o, &g);
        uint64_t expect[4] = {0, 1, 2, 3};
        size_t ne = 4;
        if (rc != 0) {
            expect[1] = 3;
            ne = 2;
        }
        if (g.n != ne || g.st.torn_bytes != 0 || g.st.corrupt_frames != 0) {
            print_error("N=%ld (batch %s): %zu delivered, torn %" PRIu64 " corrupt %" PRIu64
                        "\n",
                        n, hopper_err_name(rc), g.n, g.st.torn_bytes, g.st.corrupt_frames);
            for (size_t k = 0; k < g.n; k++) {
                print_error("  seq %" PRIu64 " idx %" PRIu64 "\n", g.seq[k], g.idx[k]);
            }
        }
        assert_int_equal(g.n, ne);
        for (size_t k = 0; k < ne; k++) {
            assert_int_equal(g.idx[k], expect[k]);
            assert_int_equal(g.seq[k], k);
        }
        assert_int_equal(g.st.torn_bytes, 0);
        assert_int_equal(g.st.corrupt_frames, 0);
        if (!fired) {
            break; /* past the last call site */
        }
    }
    free(b1);
    free(b2);
}

/* ---- transient errors at open ------------------------------------------------------- */

static size_t
count_bad_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return 0;
    }
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strstr(de->d_name, ".bad") != NULL) {
            n++;
        }
    }
    closedir(d);
    return n;
}

static void
populate(const fx *f, const hopper_opts *o, uint64_t n)
{
    hopper_queue *q = NULL;
    assert_int_equal(hopper_open(f->dir, "q", o, &q), 0);
    for (uint64_t i = 0; i < n; i++) {
        assert_int_equal(send_idx(q, i, PAYLOAD, 0), 0);
    }
    /* leave a checkpoint behind too */
    hopper_record r;
    assert_int_equal(hopper_recv(q, &r, 0), 0);
    assert_int_equal(hopper_ack(q, r.seq), 0);
    assert_int_equal(hopper_close(q), 0);
}

static void
test_open_transient_errors(void **state)
{
    fx *f = *state;
    static const struct {
        const char *op;
        int err;
    } cases[] = {
        {"open", -EMFILE}, {"open", -ENFILE}, {"alloc", -ENOMEM}, {"pread", -EIO},
        {"pread", -EINTR}, {"mkdir", -EACCES}, {"open", -ENOMEM},
    };
    hopper_opts o;
    hp_test_opts_disk(&o, HOPPER_FSYNC_NEVER);
    populate(f, &o, 12); /* 3 segments + checkpoint */
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        long n;
        for (n = 0; n < 100; n++) {
            arm(cases[c].op, n, cases[c].err, 0);
            hopper_queue *q = (hopper_queue *)&n; /* must be reset to NULL */
            int rc = hopper_open(f->dir, "q", &o, &q);
            long fired = atomic_load(&g_fired);
            disarm();
            if (!fired) {
                assert_int_equal(rc, 0);
                assert_non_null(q);
                assert_int_equal(hopper_close(q), 0);
                break;
            }
            if (rc != cases[c].err) {
                print_error("%s #%ld failing with %s: hopper_open returned %s\n", cases[c].op, n,
                            hopper_err_name(cases[c].err), hopper_err_name(rc));
            }
            assert_int_equal(rc, cases[c].err);
            assert_null(q);
            /* never mistaken for damage */
            assert_int_equal(count_bad_files(f->qdir), 0);
        }
        assert_true(n > 0 && n < 100);
    }
    got g;
    drain(f, &o, &g);
    expect_idx_range(&g, 1, 12);
    assert_int_equal(g.st.corrupt_frames, 0);
    assert_int_equal(g.st.quarantined_bytes, 0);
    assert_int_equal(g.st.torn_bytes, 0);
}

/* Real fd exhaustion: a child lowers RLIMIT_NOFILE to exactly the fds it
 * already uses, so hopper_open cannot get any; then raises it one fd at a
 * time until open succeeds. Exit status: 0 ok, else the failing step. */
static int
child_fd_exhaustion(const char *dir, const hopper_opts *o)
{
    int lowest = dup(0);
    if (lowest < 0) {
        return 10;
    }
    close(lowest);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        return 11;
    }
    int saw_emfile = 0;
    for (rlim_t lim = (rlim_t)lowest; lim < (rlim_t)lowest + 64; lim++) {
        struct rlimit nl = {.rlim_cur = lim, .rlim_max = rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &nl) < 0) {
            return 12;
        }
        hopper_queue *q = NULL;
        int rc = hopper_open(dir, "q", o, &q);
        if (rc == -EMFILE) {
            saw_emfile = 1;
            if (q != NULL) {
                return 13;
            }
            continue;
        }
        if (rc != 0) {
            fprintf(stderr, "limit %ld: hopper_open: %s\n", (long)lim, hopper_strerror(rc));
            return 14;
        }
        /* with the fds it needs it works, and all data is there */
        nl.rlim_cur = rl.rlim_cur;
        if (setrlimit(RLIMIT_NOFILE, &nl) < 0) {
            return 15;
        }
        uint64_t want = 1;
        hopper_record r;
        while ((rc = hopper_recv(q, &r, 0)) == 0) {
            uint64_t idx;
            memcpy(&idx, r.data, 8);
            if (idx != want) {
                return 16;
            }
            want++;
        }
        hopper_stats st = {.struct_size = sizeof(st)};
        (void)hopper_stats_get(q, &st);
        if (hopper_close(q) != 0) {
            return 17;
        }
        if (rc != -EAGAIN || want != 12 || st.quarantined_bytes != 0 ||
            st.corrupt_frames != 0) {
            return 18;
        }
        return saw_emfile ? 0 : 19;
    }
    return 20;
}

static void
test_fd_exhaustion_rlimit(void **state)
{
    fx *f = *state;
    hopper_opts o;
    hp_test_opts_disk(&o, HOPPER_FSYNC_NEVER);
    populate(f, &o, 12);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        _exit(child_fd_exhaustion(f->dir, &o));
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) != 0) {
        print_error("child failed at step %d\n", WEXITSTATUS(status));
    }
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(count_bad_files(f->qdir), 0);
    got g;
    drain(f, &o, &g);
    expect_idx_range(&g, 1, 12);
}

/* ---- every call site, one at a time ------------------------------------------------ */

typedef struct scenario_result {
    uint64_t accepted[64];
    size_t na;
    int64_t indeterminate; /* idx whose send failed with EFAILED, or -1 */
    int acked;             /* hopper_ack(idx 4) returned 0 */
    int clean;             /* no call failed */
} scenario_result;

/* open, send 12, receive 5 and ack them, close; reopen, drain, close. */
static void
scenario(const fx *f, const hopper_opts *o, scenario_result *res)
{
    memset(res, 0, sizeof(*res));
    res->indeterminate = -1;
    res->clean = 1;
    hopper_queue *q = NULL;
    int rc = hopper_open(f->dir, "q", o, &q);
    if (rc != 0) {
        assert_null(q);
        assert_true(rc < 0 && rc != HOPPER_ECORRUPT);
        res->clean = 0;
        return;
    }
    for (uint64_t i = 0; i < 12; i++) {
        rc = send_idx(q, i, PAYLOAD, 0);
        if (rc == 0) {
            res->accepted[res->na++] = i;
        } else {
            res->clean = 0;
            assert_true(rc == HOPPER_EFAILED || rc == HOPPER_EFULL);
            if (rc == HOPPER_EFAILED && res->indeterminate < 0) {
                res->indeterminate = (int64_t)i;
            }
        }
    }
    uint64_t last = UINT64_MAX;
    for (int k = 0; k < 5; k++) {
        hopper_record r;
        rc = hopper_recv(q, &r, 0);
        if (rc != 0) {
            res->clean = 0;
            break;
        }
        (void)payload_idx(&r);
        last = r.seq;
    }
    if (last != UINT64_MAX) {
        rc = hopper_ack(q, last);
        res->acked = rc == 0;
        if (rc != 0) {
            res->clean = 0;
        }
    }
    if (hopper_close(q) != 0) {
        res->clean = 0;
    }
    /* reopen under the same fault plan (recovery's call sites) */
    rc = hopper_open(f->dir, "q", o, &q);
    if (rc != 0) {
        assert_null(q);
        assert_true(rc < 0 && rc != HOPPER_ECORRUPT);
        res->clean = 0;
        return;
    }
    for (;;) {
        hopper_record r;
        rc = hopper_recv(q, &r, 0);
        if (rc != 0) {
            break;
        }
        (void)payload_idx(&r);
    }
    if (rc != -EAGAIN) {
        res->clean = 0;
    }
    if (hopper_close(q) != 0) {
        res->clean = 0;
    }
}

static int
is_accepted(const scenario_result *res, uint64_t idx)
{
    for (size_t i = 0; i < res->na; i++) {
        if (res->accepted[i] == idx) {
            return 1;
        }
    }
    return 0;
}

static void
fault_loop(const fx *f, const hopper_opts *o, int err, int strict_memory)
{
    long n;
    for (n = 0; n < 3000; n++) {
        reset_dir(f);
        arm(NULL, n, err, 0);
        scenario_result res;
        scenario(f, o, &res);
        long fired = atomic_load(&g_fired);
        disarm();
        got g;
        drain(f, o, &g); /* a clean reopen always succeeds */
        /* Only accepted records (plus the one send left indeterminate by
         * its failure), in order, each once. */
        for (size_t k = 0; k < g.n; k++) {
            if (!is_accepted(&res, g.idx[k]) && (int64_t)g.idx[k] != res.indeterminate) {
                print_error("N=%ld: delivered idx %" PRIu64 " whose send failed\n", n, g.idx[k]);
                fail();
            }
            if (k > 0 && (g.idx[k] <= g.idx[k - 1] || g.seq[k] <= g.seq[k - 1])) {
                print_error("N=%ld: out of order at %zu\n", n, k);
                fail();
            }
        }
        /* Accepted records after the acknowledged prefix are never lost
         * (DISK mode: they were in a segment when send returned; MEMORY
         * mode: when nothing failed). */
        if (o->durability == HOPPER_DURABILITY_DISK || (strict_memory && res.clean)) {
            for (size_t i = 0; i < res.na; i++) {
                uint64_t idx = res.accepted[i];
                if (idx < 5 && (res.acked || o->durability != HOPPER_DURABILITY_DISK)) {
                    continue;
                }
                int found = 0;
                for (size_t k = 0; k < g.n; k++) {
                    found |= g.idx[k] == idx;
                }
                if (!found && idx >= 5) {
                    print_error("N=%ld: accepted idx %" PRIu64 " lost\n", n, idx);
                    fail();
                }
            }
        }
        assert_int_equal(g.st.quarantined_bytes, 0);
        if (!fired) {
            assert_true(res.clean);
            break;
        }
    }
    assert_true(n > 10 && n < 3000);
}

static void
test_fault_every_site_disk_eio(void **state)
{
    fx *f = *state;
    hopper_opts o;
    hp_test_opts_disk(&o, HOPPER_FSYNC_ALWAYS);
    fault_loop(f, &o, -EIO, 1);
}

static void
test_fault_every_site_disk_enospc(void **state)
{
    fx *f = *state;
    hopper_opts o;
    hp_test_opts_disk(&o, HOPPER_FSYNC_NEVER);
    fault_loop(f, &o, -ENOSPC, 1);
}

static void
test_fault_every_site_memory_eio(void **state)
{
    fx *f = *state;
    hopper_opts o;
    hopper_opts_init(&o);
    o.fsync = HOPPER_FSYNC_NEVER;
    o.memory_bytes = 2000; /* most records spill */
    o.segment_bytes = 4096;
    o.compression = 1;
    fault_loop(f, &o, -EIO, 1);
}

#define HP_T(fn) cmocka_unit_test_setup_teardown(fn, hp_test_dir_setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        HP_T(test_write_fails_disk_sticky),
        HP_T(test_fsync_fails_disk_always_sticky),
        HP_T(test_memory_close_write_fails),
        HP_T(test_checkpoint_failures_on_reclaim),
        HP_T(test_sync_failure_sticky),
        HP_T(test_enospc_is_full_not_failed),
        HP_T(test_enospc_each_site_of_spanning_batch),
        HP_T(test_open_transient_errors),
        HP_T(test_fd_exhaustion_rlimit),
        HP_T(test_fault_every_site_disk_eio),
        HP_T(test_fault_every_site_disk_enospc),
        HP_T(test_fault_every_site_memory_eio),
    };
    return cmocka_run_group_tests_name("fault", tests, NULL, NULL);
}
