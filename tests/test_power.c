/* SPDX-License-Identifier: MIT */
/* Simulated power loss (label crash; issue 10): a workload on a real queue is
 * recorded through a page-cache model under fsio (helpers/powerfs.h), the
 * power is cut at drawn points of the record, and each crash image (durable
 * state plus, at random, torn unsynced pages) is reopened with the real
 * library and checked against the README's durability table row by row
 * (helpers/power.c lists every check).
 *
 * test_power_rows runs a few scenarios per row of the table, a few hundred
 * crash points in all; test_power_regressions replays the scenarios that
 * once found a bug. A failure prints HOPPER_POWER_SEED=... HOPPER_POWER_CUT=...;
 * with those set, test_power_rows replays that scenario (or that one crash
 * point) alone. `scripts/hopper-dev soak` runs thousands of crash points per
 * row. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "hopper.h"
#include "hp_test.h"
#include "payload.h"
#include "power.h"
#include "powerfs.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *g_work;

static int
group_setup(void **state)
{
    (void)state;
    g_work = hp_power_workdir();
    return g_work == NULL ? -1 : 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    hp_test_rmtree(g_work);
    g_work = NULL;
    return 0;
}

static void
print_totals(const char *what, const hp_power_totals *t, uint64_t ms)
{
    fprintf(stderr,
            "[power] %s: %" PRIu64 " scenarios, %" PRIu64 " crash points (%" PRIu64
            " after a crash during recovery), %" PRIu64 " torn files, %" PRIu64
            " records checked, %" PRIu64 " delivered; lost %" PRIu64 ", duplicated %" PRIu64
            ", reordered %" PRIu64 ", corrupt %" PRIu64 ", resurrected %" PRIu64
            ", other %" PRIu64 ", late interval fsyncs %" PRIu64 "; %" PRIu64 " ms\n",
            what, t->scenarios, t->cuts, t->cuts_gen2, t->torn_files, t->records, t->delivered,
            t->lost, t->duplicated, t->reordered, t->corrupt, t->resurrected, t->other,
            t->late_syncs, ms);
    if (t->worst_lag_t > 0) {
        fprintf(stderr,
                "[power] fsync=interval: longest from acceptance to the start of the covering"
                " fsync %" PRIu64 " ms with T = %" PRIu64 " ms (scheduling delay seen: %" PRIu64
                " ms)\n",
                t->worst_lag_ms, t->worst_lag_t, t->worst_lag_oversleep_ms);
    }
}

static void
run_one(uint64_t seed, size_t cut, hp_power_totals *t)
{
    char err[4096];
    int rc = hp_power_scenario(seed, g_work, cut, t, err, sizeof(err));
    if (rc < 0) {
        fail_msg("scenario %" PRIu64 ": harness error %d", seed, rc);
    }
    if (rc > 0) {
        fail_msg("power loss: %s", err);
    }
}

/* A few scenarios per row of the durability table. */
static void
test_power_rows(void **state)
{
    (void)state;
    hp_power_totals t = {0};
    uint64_t t0 = hp_test_now_ms();
    const char *env = getenv("HOPPER_POWER_SEED");
    if (env != NULL && *env != '\0') {
        const char *ce = getenv("HOPPER_POWER_CUT");
        uint64_t seed = strtoull(env, NULL, 0);
        size_t cut = ce != NULL && *ce != '\0' ? (size_t)strtoull(ce, NULL, 0) : SIZE_MAX;
        fprintf(stderr, "[power] replaying HOPPER_POWER_SEED=%" PRIu64 " (%s)\n", seed,
                hp_power_row_name((int)(seed % HP_ROW_COUNT)));
        run_one(seed, cut, &t);
        print_totals("replay", &t, hp_test_now_ms() - t0);
        return;
    }
    uint64_t rng = hp_test_seed("test_power_rows") | 1;
    int per_row = hp_test_quick() ? 2 : 3;
    for (int row = 0; row < HP_ROW_COUNT; row++) {
        for (int k = 0; k < per_row; k++) {
            uint64_t seed = hp_power_seed_for(row, &rng);
            run_one(seed, SIZE_MAX, &t);
        }
    }
    print_totals("rows", &t, hp_test_now_ms() - t0);
    assert_true(t.cuts >= 100);
}

/* ---- the fixes, pinned one by one ------------------------------------------ */

#define QN "rq"

typedef struct ids {
    uint64_t v[512];
    size_t n;
} ids;

static int
collect(void *ctx, const hopper_record *r)
{
    ids *l = ctx;
    if (r->len >= 8 && l->n < 512) {
        uint64_t n;
        memcpy(&n, r->data, 8);
        l->v[l->n++] = n;
    }
    return 0;
}

/* The records a power cut at the end of the log leaves (strict image: only
 * what was made durable), acknowledged or not, by number. */
static void
durable_ids(hp_pfs *p, const char *dir, ids *out, int *has_qdir)
{
    hp_pfs_cursor *c = hp_pfs_cursor_new(p);
    assert_non_null(c);
    hp_pfs_image img;
    assert_int_equal(hp_pfs_image_at(c, hp_pfs_count(p), NULL, &img), 0);
    hp_pfs_cursor_free(c);
    char sub[PATH_MAX];
    snprintf(sub, sizeof(sub), "%.*s/strict", PATH_MAX - 16, dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(hp_pfs_image_write(&img, sub, QN), 0);
    *has_qdir = img.has_qdir;
    hp_pfs_image_free(&img);
    out->n = 0;
    hopper_inspect_report rep = {.struct_size = sizeof(rep)};
    if (*has_qdir) {
        assert_int_equal(hopper_inspect(sub, QN, HOPPER_INSPECT_ACKED, collect, out, &rep), 0);
    }
    char *rm = strdup(sub);
    hp_test_rmtree(rm);
}

static int
send_n(hopper_queue *q, uint64_t n, size_t len)
{
    uint8_t buf[2048];
    assert_true(len <= sizeof(buf));
    hp_test_payload_fill(n, buf, len);
    return hopper_send(q, buf, len, 0);
}

/* A queue in a fresh directory, recorded by a model from its open on. */
typedef struct rig {
    char *dir;
    hp_pfs *p;
    hopper_queue *q;
} rig;

static void
rig_open(rig *r, const char *tag, int durability, int fsync, int (*inner)(const char *op),
         hopper_opts *o)
{
    r->dir = hp_test_tmpdir(tag);
    assert_non_null(r->dir);
    r->p = hp_pfs_new(r->dir, QN);
    assert_non_null(r->p);
    hopper_opts_init(o);
    o->durability = durability;
    o->fsync = fsync;
    o->segment_bytes = 4096;
    o->compression = 0;
    hp_pfs_attach(r->p, inner);
}

static void
rig_start(rig *r, const hopper_opts *o)
{
    r->q = NULL;
    assert_int_equal(hopper_open(r->dir, QN, o, &r->q), 0);
}

/* The records a power cut at the end of the log leaves, and the end. */
static void
rig_finish(rig *r, ids *got)
{
    int has_qdir = 0;
    durable_ids(r->p, r->dir, got, &has_qdir);
    assert_true(has_qdir);
    hp_pfs_free(r->p);
    hp_test_rmtree(r->dir);
}

/* Finding 1: hopper_open created the queue directory without fsyncing its
 * parent, so a power cut could take the whole queue, fdatasynced records
 * and all. */
static void
test_power_fix_mkdir_durable(void **state)
{
    (void)state;
    rig r;
    hopper_opts o;
    rig_open(&r, "pw-mkdir", HOPPER_DURABILITY_DISK, HOPPER_FSYNC_ALWAYS, NULL, &o);
    rig_start(&r, &o);
    for (uint64_t n = 0; n < 3; n++) {
        assert_int_equal(send_n(r.q, n, 100), 0);
    }
    hp_pfs_detach(r.p);
    assert_int_equal(hopper_close(r.q), 0);
    ids got;
    rig_finish(&r, &got); /* before the fix: no queue directory at all */
    assert_int_equal(got.n, 3);
}

/* Finding 2: with fsync=never a segment was sealed (rotation) without an
 * fdatasync and close synced only the active one, so a power cut after a
 * clean close lost records (and the fsynced index described bytes that were
 * not durable). */
static void
close_keeps_everything(int durability)
{
    rig r;
    hopper_opts o;
    rig_open(&r, "pw-close", durability, HOPPER_FSYNC_NEVER, NULL, &o);
    o.memory_bytes = 2048;
    rig_start(&r, &o);
    for (uint64_t n = 0; n < 40; n++) {
        assert_int_equal(send_n(r.q, n, 500), 0);
    }
    assert_int_equal(hopper_close(r.q), 0);
    hp_pfs_detach(r.p);
    ids got;
    rig_finish(&r, &got);
    assert_int_equal(got.n, 40);
    for (size_t i = 0; i < got.n; i++) {
        assert_int_equal(got.v[i], i);
    }
}

static void
test_power_fix_close_syncs_sealed_segments(void **state)
{
    (void)state;
    close_keeps_everything(HOPPER_DURABILITY_DISK);
    close_keeps_everything(HOPPER_DURABILITY_MEMORY);
}

static _Atomic int g_arm;
static _Atomic int g_writes;

/* While armed, the third write and every later one fail with ENOSPC. */
static int
enospc_from_third_write(const char *op)
{
    if (atomic_load(&g_arm) && strcmp(op, "write") == 0 && atomic_fetch_add(&g_writes, 1) >= 2) {
        return -ENOSPC;
    }
    return 0;
}

/* Finding 3: a batch that extended a segment, rotated (fdatasync of that
 * segment) and then hit ENOSPC was undone by a truncation nobody fsynced:
 * after a power cut its frames came back, records refused with
 * HOPPER_EFULL were delivered, under seqs the queue had given out again. */
static void
test_power_fix_enospc_undo_durable(void **state)
{
    (void)state;
    rig r;
    hopper_opts o;
    rig_open(&r, "pw-undo", HOPPER_DURABILITY_DISK, HOPPER_FSYNC_ALWAYS, enospc_from_third_write,
             &o);
    rig_start(&r, &o);
    assert_int_equal(send_n(r.q, 0, 1000), 0);
    /* Frame [1, 2] fits the segment; [3, 4] does not: the rotation writes
     * [1, 2], fdatasyncs, writes the index, and the new segment's header
     * write fails. */
    uint8_t bufs[6][1000];
    hopper_iovec iov[6];
    for (int i = 0; i < 6; i++) {
        hp_test_payload_fill(1 + (uint64_t)i, bufs[i], sizeof(bufs[i]));
        iov[i] = (hopper_iovec){.data = bufs[i], .len = sizeof(bufs[i])};
    }
    atomic_store(&g_writes, 0);
    atomic_store(&g_arm, 1);
    assert_int_equal(hopper_send_batch(r.q, iov, 6, 0), HOPPER_EFULL);
    atomic_store(&g_arm, 0);
    assert_true(atomic_load(&g_writes) >= 3);
    hp_pfs_detach(r.p);
    assert_int_equal(hopper_close(r.q), 0);
    ids got;
    rig_finish(&r, &got);
    assert_int_equal(got.n, 1); /* only record 0: 1..6 were refused */
    assert_int_equal(got.v[0], 0);
}

static uint64_t
fsyncs(hopper_queue *q)
{
    hopper_stats st = {.struct_size = sizeof(st)};
    assert_int_equal(hopper_stats_get(q, &st), 0);
    return st.fsyncs;
}

/* Index of the first entry at or after `from` of kind `kind` (and, for
 * FSYNC, of a segment); SIZE_MAX when none. */
static size_t
find_ev(const hp_pfs *p, size_t n, size_t from, int kind)
{
    for (size_t i = from; i < n; i++) {
        const hp_pfs_ev *e = hp_pfs_at(p, i);
        if (e->kind == kind && (kind != HP_PFS_FSYNC || e->seg)) {
            return i;
        }
    }
    return SIZE_MAX;
}

/* Finding 4: the fsync=interval thread re-armed its timeout to "now + T" at
 * every wake-up, and every batch wakes it: a record written just after a
 * sync, followed by another write shortly before the deadline, waited until
 * that second write + T, almost 2T. The README promises at most T. A long T
 * (400 ms) leaves room for a loaded machine: T/4 plus the oversleep measured
 * meanwhile. */
static void
test_power_fix_interval_deadline(void **state)
{
    (void)state;
    const uint32_t T = 400;
    rig r;
    hopper_opts o;
    rig_open(&r, "pw-interval", HOPPER_DURABILITY_DISK, HOPPER_FSYNC_INTERVAL, NULL, &o);
    o.fsync_interval_ms = T;
    o.segment_bytes = 1u << 20;
    rig_start(&r, &o);
    hopper_queue *q = r.q;
    hp_pfs *p = r.p;
    /* One record, then wait for the interval thread's sync of it. */
    assert_int_equal(send_n(q, 0, 100), 0);
    uint64_t deadline = hp_test_now_ms() + 10 * T;
    while (fsyncs(q) == 0 && hp_test_now_ms() < deadline) {
        usleep(1000);
    }
    assert_true(fsyncs(q) > 0);
    /* Right after that sync: record 1; 3T/4 later record 2; then nothing. */
    size_t mark = hp_pfs_count(p);
    assert_int_equal(send_n(q, 1, 100), 0);
    uint64_t t0 = hp_test_now_ms();
    usleep(T * 750u);
    /* How late this machine wakes sleepers now: allowed on top of T. */
    uint64_t late = hp_test_now_ms() - t0 - T * 3 / 4;
    assert_int_equal(send_n(q, 2, 100), 0);
    usleep(T * 2000u);
    hp_pfs_detach(p);
    assert_int_equal(hopper_close(q), 0);
    hp_pfs_annotate(p);
    size_t n = hp_pfs_count(p);
    size_t w = find_ev(p, n, mark, HP_PFS_WRITE);
    assert_true(w != SIZE_MAX);
    size_t f = w;
    do {
        f = find_ev(p, n, f + 1, HP_PFS_FSYNC);
    } while (f != SIZE_MAX && hp_pfs_at(p, f)->begin < w);
    assert_true(f != SIZE_MAX);
    uint64_t lag_ms = (hp_pfs_at(p, hp_pfs_at(p, f)->begin)->t_ns - hp_pfs_at(p, w)->t_ns) /
                      1000000u;
    fprintf(stderr, "[power] interval %u ms: record 1 written, its fsync began %" PRIu64
                    " ms later\n",
            T, lag_ms);
    /* At most T, plus a quarter of it and the oversleep just measured for a
     * loaded machine (before the fix: about 7T/4). */
    assert_true(lag_ms <= T + T / 4 + late);
    ids got;
    rig_finish(&r, &got);
    assert_int_equal(got.n, 3);
}

/* Scenarios that once found a bug (docs/RELIABILITY.md lists them). */
static void
test_power_regressions(void **state)
{
    (void)state;
    /* Each fails without its fix (verified when pinned); the fixes have
     * deterministic tests of their own above. */
    static const uint64_t seeds[] = {
        43204565680365924ull, /* disk+always: findings 1 and 3 (an EFULL record back) */
        59184765211050780ull, /* disk+always, second generation: finding 3 */
        70775657618098874ull, /* disk+never: finding 2 (lost after a clean close) */
        544509629122736ull,   /* disk+never: finding 2 */
        50269747143906693ull, /* memory+never, second generation: finding 2 */
        /* The oracle's own false alarm (the 30-minute soak of 2026-12-02):
         * a DISK batch fdatasynced by a rotation, then undone after ENOSPC,
         * cut between the truncation and its fdatasync, before its send
         * returned EFULL. Fails without the oracle's fix when the recorded
         * log matches the one that found it (it depends on scheduling). */
        22964646759304592ull, /* disk+never, second generation */
        24478436789920500ull, /* disk+always, second generation */
    };
    hp_power_totals t = {0};
    uint64_t t0 = hp_test_now_ms();
    for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
        run_one(seeds[i], SIZE_MAX, &t);
    }
    print_totals("regressions", &t, hp_test_now_ms() - t0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_power_rows),
        cmocka_unit_test(test_power_regressions),
        cmocka_unit_test(test_power_fix_mkdir_durable),
        cmocka_unit_test(test_power_fix_close_syncs_sealed_segments),
        cmocka_unit_test(test_power_fix_enospc_undo_durable),
        cmocka_unit_test(test_power_fix_interval_deadline),
    };
    return cmocka_run_group_tests_name("test_power", tests, group_setup, group_teardown);
}
