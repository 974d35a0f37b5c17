/* SPDX-License-Identifier: MIT */
/* Crash tests (label crash): a forked child opens the queue and sends
 * numbered records, reporting each ACCEPTED number to the parent through a
 * pipe after hopper_send() returned 0. The parent SIGKILLs the child at a
 * seeded random point (counted in reports, never in time), reopens and checks
 * what the durability table of hopper.h promises:
 *  - DISK mode: every accepted record is there exactly once, in order (the
 *    one record in flight may or may not be);
 *  - MEMORY mode: every record that reached a segment file is there, and
 *    whatever arrives is in order without duplicates;
 *  - acknowledged records made durable with hopper_sync() never come back,
 *    unacknowledged ones always do.
 * Only the forked PIDs are killed, and always waited for. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "crashkit.h"
#include "hopper.h"
#include "hp_test.h"
#include "payload.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QNAME "kq"

typedef hp_test_dir tk_state;

/* ---- child ------------------------------------------------------------- */

typedef struct crash_cfg {
    hopper_opts o;
    int consume;       /* child also receives and acknowledges */
    int report_stats;  /* MEMORY mode: report mem/disk record counts */
    uint64_t seed;
    const char *dir;
    uint64_t n0;
} crash_cfg;

static void
child_main(void *arg, int wfd)
{
    const crash_cfg *c = arg;
    hopper_queue *q = NULL;
    if (hopper_open(c->dir, QNAME, &c->o, &q) != 0) {
        _exit(2);
    }
    uint64_t rs = c->seed | 1;
    uint8_t buf[1100];
    for (uint64_t n = c->n0; n < c->n0 + 10000000u; n++) {
        size_t len = hp_test_payload_len(n);
        hp_test_payload_fill(n, buf, len);
        if (hopper_send(q, buf, len, 10000) != 0) {
            _exit(3);
        }
        uint64_t m[3];
        size_t k = 0;
        m[k++] = HP_CK_MSG(HP_CK_ACCEPTED, n);
        if (c->report_stats) {
            hopper_stats st = {.struct_size = sizeof(st)};
            if (hopper_stats_get(q, &st) != 0) {
                _exit(4);
            }
            m[k++] = HP_CK_MSG(HP_CK_MEM, st.mem_records);
            m[k++] = HP_CK_MSG(HP_CK_DISK, st.disk_records);
        }
        hp_ck_put(wfd, m, k);
        if (c->consume && hp_test_rand(&rs) % 8 == 0) {
            /* Receive a few, then acknowledge the last one received. */
            int j = 1 + (int)(hp_test_rand(&rs) % 12);
            uint64_t last_n = 0;
            uint64_t last_seq = 0;
            int got = 0;
            for (int i = 0; i < j; i++) {
                hopper_record r;
                int rc = hopper_recv(q, &r, 0);
                if (rc == -EAGAIN) {
                    break;
                }
                uint64_t rn;
                if (rc != 0 || !hp_test_record_check(r.data, r.len, hp_test_payload_len, &rn)) {
                    _exit(6);
                }
                last_n = rn;
                last_seq = r.seq;
                got = 1;
            }
            if (got) {
                uint64_t mi = HP_CK_MSG(HP_CK_ACK_INTENT, last_n);
                hp_ck_put(wfd, &mi, 1);
                if (hopper_ack(q, last_seq) != 0) {
                    _exit(7);
                }
                if (hp_test_rand(&rs) % 3 == 0) {
                    if (hopper_sync(q) != 0) {
                        _exit(8);
                    }
                    uint64_t ms = HP_CK_MSG(HP_CK_ACK_SYNCED, last_n);
                    hp_ck_put(wfd, &ms, 1);
                }
            }
        }
    }
    _exit(0); /* not reached in practice: the parent kills us */
}

/* ---- parent ------------------------------------------------------------ */

typedef struct crash_report {
    uint64_t accepted;   /* number of ACCEPTED messages */
    uint64_t last_acc;   /* largest accepted record number */
    int have_intent;
    uint64_t intent;     /* largest ack intent */
    int have_synced;
    uint64_t synced;     /* largest synced ack */
    uint64_t mem;        /* last reported mem_records */
    uint64_t disk;       /* largest reported disk_records */
} crash_report;

static int
absorb(void *ctx, uint64_t m)
{
    crash_report *rep = ctx;
    uint64_t v = HP_CK_VAL(m);
    switch (HP_CK_TYPE(m)) {
    case HP_CK_ACCEPTED:
        rep->accepted++;
        rep->last_acc = v;
        break;
    case HP_CK_ACK_INTENT:
        rep->have_intent = 1;
        rep->intent = v;
        break;
    case HP_CK_ACK_SYNCED:
        rep->have_synced = 1;
        rep->synced = v;
        break;
    case HP_CK_MEM:
        rep->mem = v;
        break;
    case HP_CK_DISK:
        if (v > rep->disk) {
            rep->disk = v;
        }
        break;
    default:
        return -1;
    }
    return 0;
}

/* Fork a child sending from n0, kill it once `kill_after` records were
 * reported accepted, collect every report it wrote. */
static void
run_child(const char *dir, crash_cfg *c, uint64_t n0, uint64_t kill_after, crash_report *rep)
{
    memset(rep, 0, sizeof(*rep));
    c->dir = dir;
    c->n0 = n0;
    char err[256];
    if (hp_ck_run(child_main, c, kill_after, 60000, absorb, rep, err, sizeof(err)) != 0) {
        fail_msg("%s", err);
    }
}

/* Reopen and receive everything; numbers into *out (malloc'd). Checks
 * content and consecutive seqs. */
static size_t
drain_all(const char *dir, const hopper_opts *o, uint64_t **out, hopper_stats *st, int ack)
{
    hp_ck_rec *r;
    size_t n;
    char err[256];
    if (hp_ck_drain(dir, QNAME, o, hp_test_payload_len, ack, &r, &n, st, err, sizeof(err)) != 0) {
        fail_msg("%s", err);
    }
    uint64_t *v = malloc((n + 1) * sizeof(*v));
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && r[i].seq != r[i - 1].seq + 1) {
            fail_msg("seq %" PRIu64 " after %" PRIu64, r[i].seq, r[i - 1].seq);
        }
        v[i] = r[i].n;
    }
    free(r);
    *out = v;
    return n;
}

/* DISK mode: rounds on one queue directory; each round's records continue
 * the numbering; the parent acknowledges everything it verified. */
static void
disk_rounds(const char *dir, int fsync_policy, int rounds, uint64_t seed)
{
    uint64_t rs = seed;
    uint64_t n0 = 0;
    for (int round = 0; round < rounds; round++) {
        crash_cfg c;
        memset(&c, 0, sizeof(c));
        hopper_opts_init(&c.o);
        c.o.durability = HOPPER_DURABILITY_DISK;
        c.o.fsync = fsync_policy;
        c.o.memory_bytes = 1u << (hp_test_rand(&rs) % 18);
        c.o.segment_bytes = 4096u << (hp_test_rand(&rs) % 6);
        c.o.compression = (int)(hp_test_rand(&rs) % 3);
        c.seed = hp_test_rand(&rs);
        uint64_t kill_after = 1 + hp_test_rand(&rs) % (fsync_policy == HOPPER_FSYNC_ALWAYS ? 150 : 600);
        crash_report rep;
        run_child(dir, &c, n0, kill_after, &rep);
        assert_true(rep.accepted >= kill_after);
        uint64_t *v;
        hopper_stats st;
        size_t n = drain_all(dir, &c.o, &v, &st, 1);
        /* Exactly n0, n0+1, ..., L with L the last accepted or the one after. */
        uint64_t last = rep.last_acc;
        if (n < rep.accepted || n > rep.accepted + 1) {
            fail_msg("round %d: %zu records after reopen, %" PRIu64
                     " were accepted (last #%" PRIu64 ", torn %" PRIu64 ", corrupt %" PRIu64 ")",
                     round, n, rep.accepted, last, st.torn_bytes, st.corrupt_frames);
        }
        for (size_t i = 0; i < n; i++) {
            if (v[i] != n0 + i) {
                fail_msg("round %d: record %zu is #%" PRIu64 ", expected #%" PRIu64, round, i,
                         v[i], n0 + i);
            }
        }
        if (st.corrupt_frames != 0 || st.quarantined_bytes != 0) {
            /* A kill can only tear the tail, which is cut and counted as
             * torn: nothing was damaged. */
            fail_msg("round %d: after a kill, corrupt_frames %" PRIu64 " (%" PRIu64
                     " bytes), quarantined %" PRIu64 " bytes, torn %" PRIu64
                     "; %zu records back, %" PRIu64 " accepted",
                     round, st.corrupt_frames, st.corrupt_bytes, st.quarantined_bytes,
                     st.torn_bytes, n, rep.accepted);
        }
        fprintf(stderr, "[disk fsync=%d] round %d: killed after %" PRIu64 ", %zu back, torn %" PRIu64 "\n",
                fsync_policy, round, rep.accepted, n, st.torn_bytes);
        n0 += n;
        free(v);
    }
    /* Everything verified was acknowledged: nothing comes back. */
    hopper_opts o;
    hopper_opts_init(&o);
    o.durability = HOPPER_DURABILITY_DISK;
    uint64_t *v;
    hopper_stats st;
    size_t n = drain_all(dir, &o, &v, &st, 0);
    free(v);
    assert_int_equal(n, 0);
    assert_int_equal(st.backlog_records, 0);
}

static void
test_kill_disk_mode(void **state)
{
    tk_state *s = *state;
    uint64_t seed = hp_test_seed("test_kill_disk_mode");
    disk_rounds(s->dir, HOPPER_FSYNC_NEVER, hp_test_quick() ? 4 : 30, seed);
}

static void
test_kill_disk_fsync_always(void **state)
{
    tk_state *s = *state;
    uint64_t seed = hp_test_seed("test_kill_disk_fsync_always");
    disk_rounds(s->dir, HOPPER_FSYNC_ALWAYS, hp_test_quick() ? 2 : 10, seed);
}

/* MEMORY mode: records that reached disk are never lost; whatever arrives is
 * in order without duplicates. */
static void
test_kill_memory_mode(void **state)
{
    tk_state *s = *state;
    uint64_t seed = hp_test_seed("test_kill_memory_mode");
    uint64_t rs = seed;
    int rounds = hp_test_quick() ? 2 : 12;
    for (int round = 0; round < rounds; round++) {
        crash_cfg c;
        memset(&c, 0, sizeof(c));
        hopper_opts_init(&c.o);
        c.o.durability = HOPPER_DURABILITY_MEMORY;
        c.o.fsync = round % 2 ? HOPPER_FSYNC_ALWAYS : HOPPER_FSYNC_NEVER;
        c.o.memory_bytes = 1024u << (hp_test_rand(&rs) % 6);
        c.o.segment_bytes = 4096u << (hp_test_rand(&rs) % 8);
        c.o.compression = (int)(hp_test_rand(&rs) % 2);
        c.report_stats = 1;
        c.seed = hp_test_rand(&rs);
        /* Frames are written behind 128 KiB at a time (~250 records): kill
         * after several of them. */
        uint64_t kill_after = 100 + hp_test_rand(&rs) % 2000;
        crash_report rep;
        run_child(s->dir, &c, 0, kill_after, &rep);
        uint64_t *v;
        hopper_stats st;
        size_t n = drain_all(s->dir, &c.o, &v, &st, 0);
        for (size_t i = 1; i < n; i++) {
            if (v[i] <= v[i - 1]) {
                fail_msg("round %d: #%" PRIu64 " after #%" PRIu64 " (duplicate or reorder)", round,
                         v[i], v[i - 1]);
            }
        }
        for (size_t i = 0; i < n; i++) {
            if (v[i] > rep.last_acc + 1) {
                fail_msg("round %d: #%" PRIu64 " arrived, never sent", round, v[i]);
            }
        }
        /* Records [mem, mem + disk) were in segment files: all present. */
        uint64_t lo = rep.mem;
        uint64_t hi = rep.mem + rep.disk;
        size_t j = 0;
        for (uint64_t want = lo; want < hi; want++) {
            while (j < n && v[j] < want) {
                j++;
            }
            if (j == n || v[j] != want) {
                fail_msg("round %d: #%" PRIu64 " reached disk (records %" PRIu64 "..%" PRIu64
                         ") but was lost; %zu arrived",
                         round, want, lo, hi - 1, n);
            }
        }
        fprintf(stderr,
                "[memory fsync=%d] round %d: killed after %" PRIu64 ", on disk %" PRIu64
                ", %zu back\n",
                c.o.fsync, round, rep.accepted, rep.disk, n);
        free(v);
        hp_test_rmtree(s->dir);
        s->dir = hp_test_tmpdir("crash");
        assert_non_null(s->dir);
    }
}

/* The child also consumes: acknowledged + synced records never come back;
 * records never acknowledged always do, in order. */
static void
test_kill_with_acks(void **state)
{
    tk_state *s = *state;
    uint64_t seed = hp_test_seed("test_kill_with_acks");
    uint64_t rs = seed;
    int rounds = hp_test_quick() ? 3 : 20;
    for (int round = 0; round < rounds; round++) {
        crash_cfg c;
        memset(&c, 0, sizeof(c));
        hopper_opts_init(&c.o);
        c.o.durability = HOPPER_DURABILITY_DISK;
        c.o.fsync = round % 4 == 3 ? HOPPER_FSYNC_ALWAYS : HOPPER_FSYNC_NEVER;
        c.o.memory_bytes = 1u << (hp_test_rand(&rs) % 17);
        c.o.segment_bytes = 4096u << (hp_test_rand(&rs) % 4);
        c.o.checkpoint_interval_ms = (uint32_t)(hp_test_rand(&rs) % 20);
        c.consume = 1;
        c.seed = hp_test_rand(&rs);
        uint64_t kill_after = 20 + hp_test_rand(&rs) % 500;
        crash_report rep;
        run_child(s->dir, &c, 0, kill_after, &rep);
        uint64_t *v;
        hopper_stats st;
        size_t n = drain_all(s->dir, &c.o, &v, &st, 0);
        uint64_t first_allowed = rep.have_synced ? rep.synced + 1 : 0;
        uint64_t first_required = rep.have_intent ? rep.intent + 1 : 0;
        if (n == 0) {
            if (first_required <= rep.last_acc) {
                fail_msg("round %d: nothing came back; #%" PRIu64 "..#%" PRIu64
                         " were never acknowledged",
                         round, first_required, rep.last_acc);
            }
        } else {
            if (v[0] < first_allowed) {
                fail_msg("round %d: #%" PRIu64 " came back, acknowledged and synced up to #%" PRIu64,
                         round, v[0], rep.synced);
            }
            if (v[0] > first_required) {
                fail_msg("round %d: first record #%" PRIu64 ", but #%" PRIu64
                         " was never acknowledged",
                         round, v[0], first_required);
            }
            for (size_t i = 1; i < n; i++) {
                if (v[i] != v[i - 1] + 1) {
                    fail_msg("round %d: #%" PRIu64 " after #%" PRIu64, round, v[i], v[i - 1]);
                }
            }
            uint64_t lastv = v[n - 1];
            if (lastv < rep.last_acc || lastv > rep.last_acc + 1) {
                fail_msg("round %d: last record #%" PRIu64 ", last accepted #%" PRIu64, round,
                         lastv, rep.last_acc);
            }
        }
        fprintf(stderr,
                "[acks] round %d: accepted %" PRIu64 ", synced ack #%" PRIu64 ", intent #%" PRIu64
                ", %zu back from #%" PRIu64 "\n",
                round, rep.accepted, rep.have_synced ? rep.synced : 0,
                rep.have_intent ? rep.intent : 0, n, n ? v[0] : 0);
        free(v);
        hp_test_rmtree(s->dir);
        s->dir = hp_test_tmpdir("crash");
        assert_non_null(s->dir);
    }
}

#define HP_T(fn) cmocka_unit_test_setup_teardown(fn, hp_test_dir_setup, hp_test_dir_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        HP_T(test_kill_disk_mode),
        HP_T(test_kill_disk_fsync_always),
        HP_T(test_kill_memory_mode),
        HP_T(test_kill_with_acks),
    };
    return cmocka_run_group_tests_name("test_crash", tests, NULL, NULL);
}
