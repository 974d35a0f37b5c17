/* SPDX-License-Identifier: MIT */
/* Concurrency tests of the public API (label concurrency): N senders x M
 * records through a small memory budget (so records spill), one consumer;
 * a seeded randomized property test (replay with HOPPER_TEST_SEED); and a
 * bounded repeat loop of small open/send/recv/ack/close round trips.
 *
 * Every record carries its producer id and per-producer counter; its length
 * and bytes are a function of (producer, counter), so the consumer checks
 * count, duplicates, per-producer order and content. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "hopper.h"
#include "hp_test.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QNAME "cq"
#define MAX_SENDERS 16
#define HDR 8 /* u32 producer, u32 counter */

typedef hp_test_dir tc_state;


/* ---- record layout ---------------------------------------------------- */

typedef struct rec_shape {
    size_t min_len; /* >= HDR unless single_sender */
    size_t max_len;
    uint64_t salt;
} rec_shape;

static size_t
rec_len(const rec_shape *sh, uint32_t pid, uint32_t ctr)
{
    uint64_t h = hp_test_mix(sh->salt ^ ((uint64_t)pid << 32) ^ ctr);
    return sh->min_len + (size_t)(h % (sh->max_len - sh->min_len + 1));
}

/* Build the record: [pid][ctr] then bytes derived from (pid, ctr). Records
 * shorter than HDR (one sender only) hold a prefix of the same bytes. */
static void
rec_build(const rec_shape *sh, uint32_t pid, uint32_t ctr, uint8_t *buf, size_t len)
{
    uint8_t full[HDR];
    memcpy(full, &pid, 4);
    memcpy(full + 4, &ctr, 4);
    memcpy(buf, full, len < HDR ? len : HDR);
    uint64_t st = hp_test_mix(sh->salt + ((uint64_t)pid << 32) + ctr) | 1;
    for (size_t i = HDR; i < len; i++) {
        buf[i] = (uint8_t)(hp_test_rand(&st) >> 56);
    }
}

static int
rec_check(const rec_shape *sh, uint32_t pid, uint32_t ctr, const hopper_record *r)
{
    size_t len = rec_len(sh, pid, ctr);
    if (r->len != len) {
        return 0;
    }
    uint8_t *b = malloc(len + 1);
    if (b == NULL) {
        return 0;
    }
    rec_build(sh, pid, ctr, b, len);
    int ok = len == 0 || memcmp(b, r->data, len) == 0;
    free(b);
    return ok;
}

/* ---- a run: senders + one consumer ------------------------------------ */

typedef struct run_cfg {
    int senders;
    uint32_t per_sender;
    rec_shape shape;
    hopper_opts o;
    int max_batch;     /* 1 = hopper_send only */
    int ack_stride;    /* ack every k records (1..) */
    int use_recv_ack;  /* use hopper_recv_ack instead */
    int restart;       /* 0 none, 1 after senders: ack all + reopen, 2: leave some unacked */
    uint64_t seed;
    int iter;          /* property test: run number (for replay) */
} run_cfg;

typedef struct sender_arg {
    hopper_queue *q;
    const run_cfg *cfg;
    uint32_t pid;
    int rc;
    uint32_t sent;
    atomic_int *done;
} sender_arg;

static void *
sender_main(void *arg)
{
    sender_arg *a = arg;
    const run_cfg *c = a->cfg;
    uint64_t rs = hp_test_mix(c->seed ^ (0x5151ull * (a->pid + 1))) | 1;
    uint8_t *bufs[8];
    hopper_iovec v[8];
    for (int i = 0; i < 8; i++) {
        bufs[i] = malloc(c->shape.max_len + 1);
    }
    uint32_t ctr = 0;
    while (ctr < c->per_sender) {
        int n = 1;
        if (c->max_batch > 1) {
            n = 1 + (int)(hp_test_rand(&rs) % (uint64_t)c->max_batch);
        }
        if ((uint32_t)n > c->per_sender - ctr) {
            n = (int)(c->per_sender - ctr);
        }
        for (int i = 0; i < n; i++) {
            size_t len = rec_len(&c->shape, a->pid, ctr + (uint32_t)i);
            rec_build(&c->shape, a->pid, ctr + (uint32_t)i, bufs[i], len);
            v[i].data = bufs[i];
            v[i].len = len;
        }
        int rc = n == 1 ? hopper_send(a->q, v[0].data, v[0].len, 30000)
                        : hopper_send_batch(a->q, v, (size_t)n, 30000);
        if (rc != 0) {
            a->rc = rc;
            break;
        }
        ctr += (uint32_t)n;
    }
    a->sent = ctr;
    for (int i = 0; i < 8; i++) {
        free(bufs[i]);
    }
    atomic_fetch_add(a->done, 1);
    return NULL;
}

typedef struct unacked {
    uint32_t pid;
    uint32_t ctr;
    uint64_t seq;
} unacked;

/* Runs the configuration; fails the test on any violation. */
static void
run_mpsc(const char *dir, const run_cfg *c)
{
    hopper_queue *q = NULL;
    int rc = hopper_open(dir, QNAME, &c->o, &q);
    assert_int_equal(rc, 0);
    hopper_stats st = {.struct_size = sizeof(st)};
    assert_int_equal(hopper_stats_get(q, &st), 0);
    uint64_t expect_seq = st.next_seq;

    atomic_int done = 0;
    sender_arg args[MAX_SENDERS];
    pthread_t th[MAX_SENDERS];
    assert_true(c->senders >= 1 && c->senders <= MAX_SENDERS);
    for (int i = 0; i < c->senders; i++) {
        args[i] = (sender_arg){.q = q, .cfg = c, .pid = (uint32_t)i, .done = &done};
        assert_int_equal(pthread_create(&th[i], NULL, sender_main, &args[i]), 0);
    }
    uint64_t total = (uint64_t)c->senders * c->per_sender;
    uint32_t next[MAX_SENDERS] = {0};
    uint64_t got = 0;
    uint64_t since_ack = 0;
    int joined = 0;
    int restarted = 0;
    uint64_t expect_redelivered = 0;
    uint64_t rs = hp_test_mix(c->seed ^ 0xc0ffee) | 1;
    size_t ucap = 1024;
    size_t un = 0;
    unacked *uv = malloc(ucap * sizeof(*uv));
    assert_non_null(uv);
    const char *fail = NULL;
    uint64_t last_seq = 0;
    while (got < total && fail == NULL) {
        if (!joined && atomic_load(&done) == c->senders) {
            for (int i = 0; i < c->senders; i++) {
                pthread_join(th[i], NULL);
            }
            joined = 1;
            for (int i = 0; i < c->senders; i++) {
                if (args[i].rc != 0) {
                    fprintf(stderr, "sender %d: %s after %u records\n", i,
                            hopper_err_name(args[i].rc), args[i].sent);
                    fail = "sender failed";
                }
            }
            if (fail != NULL) {
                break;
            }
        }
        if (joined && c->restart && !restarted && got < total) {
            /* All senders are done: close and reopen mid-drain. */
            restarted = 1;
            if (c->restart == 1 || un == 0) {
                assert_int_equal(hopper_ack(q, UINT64_MAX), 0);
                un = 0;
            } else {
                /* Ack all but the last k received: they must come back. */
                size_t k = 1 + (size_t)(hp_test_rand(&rs) % un);
                if (k < un) {
                    assert_int_equal(hopper_ack(q, uv[un - k - 1].seq), 0);
                }
                memmove(uv, uv + (un - k), k * sizeof(*uv));
                un = k;
            }
            assert_int_equal(hopper_close(q), 0);
            q = NULL;
            assert_int_equal(hopper_open(dir, QNAME, &c->o, &q), 0);
            if (un > 0) {
                for (size_t i = 0; i < un; i++) {
                    if (uv[i].ctr < next[uv[i].pid]) {
                        next[uv[i].pid] = uv[i].ctr;
                    }
                }
                got -= un;
                since_ack = 0;
                expect_seq = uv[0].seq;
                expect_redelivered = un;
                un = 0;
            }
            st.struct_size = sizeof(st);
            assert_int_equal(hopper_stats_get(q, &st), 0);
            if (st.backlog_records != total - got) {
                fprintf(stderr, "after reopen: backlog %" PRIu64 ", expected %" PRIu64 "\n",
                        st.backlog_records, total - got);
                fail = "backlog after reopen";
                break;
            }
        }
        hopper_record r;
        rc = c->use_recv_ack ? hopper_recv_ack(q, &r, 200) : hopper_recv(q, &r, 200);
        if (rc == -ETIMEDOUT) {
            if (joined) {
                /* Everything was accepted: it must be receivable now. */
                rc = c->use_recv_ack ? hopper_recv_ack(q, &r, 10000) : hopper_recv(q, &r, 10000);
                if (rc != 0) {
                    fprintf(stderr, "recv after all sent: %s (got %" PRIu64 " of %" PRIu64 ")\n",
                            hopper_err_name(rc), got, total);
                    fail = "records missing";
                    break;
                }
            } else {
                /* Idle: acknowledge what we have, as a real consumer would,
                 * so that senders waiting for space can go on. */
                if (!c->use_recv_ack && since_ack > 0) {
                    assert_int_equal(hopper_ack(q, last_seq), 0);
                    since_ack = 0;
                    un = 0;
                }
                continue;
            }
        } else if (rc != 0) {
            fprintf(stderr, "recv: %s\n", hopper_err_name(rc));
            fail = "recv failed";
            break;
        }
        if (r.seq != expect_seq) {
            fprintf(stderr, "seq %" PRIu64 ", expected %" PRIu64 "\n", r.seq, expect_seq);
            fail = "seq not consecutive";
            break;
        }
        expect_seq++;
        last_seq = r.seq;
        uint32_t pid = 0;
        uint32_t ctr = 0;
        if (c->senders == 1) {
            /* Total order: the n-th record received is the n-th sent. */
            ctr = next[0];
            if (r.len >= HDR) {
                uint32_t p2;
                uint32_t c2;
                memcpy(&p2, r.data, 4);
                memcpy(&c2, (const uint8_t *)r.data + 4, 4);
                if (p2 != 0 || c2 != ctr) {
                    fprintf(stderr, "total order: got (%u,%u), expected (0,%u)\n", p2, c2, ctr);
                    fail = "total order";
                    break;
                }
            }
        } else {
            if (r.len < HDR) {
                fail = "short record";
                break;
            }
            memcpy(&pid, r.data, 4);
            memcpy(&ctr, (const uint8_t *)r.data + 4, 4);
            if (pid >= (uint32_t)c->senders) {
                fprintf(stderr, "record seq %" PRIu64 " (#%" PRIu64 " received), len %zu: "
                                "producer %u, counter %u\n",
                        r.seq, got, r.len, pid, ctr);
                fail = "bad producer id";
                break;
            }
            if (ctr != next[pid]) {
                fprintf(stderr, "producer %u: got #%u, expected #%u (%s)\n", pid, ctr, next[pid],
                        ctr < next[pid] ? "duplicate or reorder" : "lost or reorder");
                fail = "per-producer order";
                break;
            }
        }
        if (!rec_check(&c->shape, pid, ctr, &r)) {
            fprintf(stderr, "producer %u #%u: bad content (len %zu)\n", pid, ctr, r.len);
            fail = "content";
            break;
        }
        next[pid]++;
        got++;
        if (!c->use_recv_ack) {
            if (un == ucap) {
                ucap *= 2;
                uv = realloc(uv, ucap * sizeof(*uv));
                assert_non_null(uv);
            }
            uv[un++] = (unacked){pid, ctr, r.seq};
            if (++since_ack >= (uint64_t)c->ack_stride) {
                rc = hopper_ack(q, r.seq);
                if (rc != 0) {
                    fprintf(stderr, "ack: %s\n", hopper_err_name(rc));
                    fail = "ack failed";
                    break;
                }
                since_ack = 0;
                un = 0;
            }
        }
    }
    if (!joined) {
        /* On failure, let blocked senders out first. */
        if (fail != NULL) {
            hopper_shutdown(q);
        }
        for (int i = 0; i < c->senders; i++) {
            pthread_join(th[i], NULL);
            if (fail == NULL && args[i].rc != 0) {
                fprintf(stderr, "sender %d: %s\n", i, hopper_err_name(args[i].rc));
                fail = "sender failed";
            }
        }
    }
    free(uv);
    if (fail == NULL) {
        hopper_record r;
        rc = hopper_recv(q, &r, 0);
        if (rc != -EAGAIN) {
            fprintf(stderr, "extra record after all %" PRIu64 ": %s\n", total,
                    hopper_err_name(rc));
            fail = "extra record";
        }
        st.struct_size = sizeof(st);
        assert_int_equal(hopper_stats_get(q, &st), 0);
        if (fail == NULL && st.redelivered != expect_redelivered) {
            fprintf(stderr, "redelivered %" PRIu64 ", expected %" PRIu64 "\n", st.redelivered,
                    expect_redelivered);
            fail = "redelivered count";
        }
        if (fail == NULL && !restarted && (st.sent != total || st.received != total)) {
            fail = "sent/received counters";
        }
        if (fail == NULL && st.failed != 0) {
            fail = "queue failed";
        }
    }
    int crc = hopper_close(q);
    if (fail != NULL) {
        fail_msg("%s (run %d, senders %d x %u, mode %s, fsync %d, mem %" PRIu64
                 ", disk %" PRIu64 ", seg %" PRIu64 ", compression %d, batch %d, ack stride %d"
                 ", recv_ack %d, restart %d, seed %" PRIu64 ")",
                 fail, c->iter, c->senders, c->per_sender, c->o.durability ? "DISK" : "MEMORY",
                 c->o.fsync, c->o.memory_bytes, c->o.disk_bytes, c->o.segment_bytes,
                 c->o.compression, c->max_batch, c->ack_stride, c->use_recv_ack, c->restart,
                 c->seed);
    }
    assert_int_equal(crc, 0);
}

static void
base_cfg(run_cfg *c, int durability)
{
    memset(c, 0, sizeof(*c));
    hopper_opts_init(&c->o);
    c->o.durability = durability;
    c->o.fsync = HOPPER_FSYNC_NEVER;
    c->o.memory_bytes = 64 * 1024;
    c->o.segment_bytes = 1 << 20;
    c->o.disk_bytes = 64u << 20;
    c->senders = 4;
    c->per_sender = hp_test_quick() ? 500 : 5000;
    c->shape = (rec_shape){.min_len = HDR, .max_len = 400, .salt = 7};
    c->max_batch = 4;
    c->ack_stride = 32;
    c->seed = 1;
}

static void
test_mpsc_memory(void **state)
{
    tc_state *s = *state;
    run_cfg c;
    base_cfg(&c, HOPPER_DURABILITY_MEMORY);
    run_mpsc(s->dir, &c);
}

static void
test_mpsc_disk(void **state)
{
    tc_state *s = *state;
    run_cfg c;
    base_cfg(&c, HOPPER_DURABILITY_DISK);
    run_mpsc(s->dir, &c);
}

/* A tight disk budget too: senders block on FULL and the consumer frees. */
static void
test_mpsc_tight_budgets(void **state)
{
    tc_state *s = *state;
    for (int mode = 0; mode <= 1; mode++) {
        run_cfg c;
        base_cfg(&c, mode);
        c.o.memory_bytes = 16 * 1024;
        c.o.disk_bytes = 1 << 20;
        c.o.segment_bytes = 64 * 1024;
        c.per_sender = hp_test_quick() ? 300 : 2500;
        c.use_recv_ack = 1;
        c.seed = 2;
        run_mpsc(s->dir, &c);
        hp_test_rmtree(s->dir);
        s->dir = hp_test_tmpdir("conc");
        assert_non_null(s->dir);
    }
}

/* Group commit: 8+ senders with fsync ALWAYS, both modes. */
static void
test_mpsc_fsync_always(void **state)
{
    tc_state *s = *state;
    for (int mode = 0; mode <= 1; mode++) {
        run_cfg c;
        base_cfg(&c, mode);
        c.o.fsync = HOPPER_FSYNC_ALWAYS;
        c.senders = 8;
        c.per_sender = hp_test_quick() ? 50 : 400;
        c.max_batch = 1;
        c.seed = 3;
        run_mpsc(s->dir, &c);
        hp_test_rmtree(s->dir);
        s->dir = hp_test_tmpdir("conc");
        assert_non_null(s->dir);
    }
}

static uint64_t
pick(uint64_t *rs, uint64_t lo, uint64_t hi)
{
    return lo + hp_test_rand(rs) % (hi - lo + 1);
}

/* Randomized property test: random budgets, record sizes 0..2000, 1..6
 * senders; no loss, no duplicates, per-sender order, and with one sender
 * total order across memory and disk. Time-bounded. */
static void
test_property_random(void **state)
{
    tc_state *s = *state;
    uint64_t seed = hp_test_seed("test_property_random");
    uint64_t rs = seed;
    uint64_t budget_ms = hp_test_quick() ? 4000 : 12000;
    uint64_t t0 = hp_test_now_ms();
    int iters = 0;
    /* Time-bounded (at least 3 runs). The runs are a function of the seed:
     * to replay run N of a failure, set HOPPER_TEST_SEED and
     * HOPPER_TEST_ITERS=N+1 (runs before N are replayed too). */
    const char *fixed = getenv("HOPPER_TEST_ITERS");
    int max_iters = fixed != NULL && *fixed ? atoi(fixed) : 0;
    while (max_iters > 0 ? iters < max_iters
                         : iters < 3 || (hp_test_now_ms() - t0 < budget_ms && iters < 200)) {
        run_cfg c;
        memset(&c, 0, sizeof(c));
        hopper_opts_init(&c.o);
        c.seed = hp_test_rand(&rs);
        c.senders = (int)pick(&rs, 1, 6);
        c.o.durability = (int)pick(&rs, 0, 1);
        /* Disk budget at least 512 KiB and segments at most 1/8 of it:
         * test_queue covers the tiny-budget corner separately. */
        c.o.disk_bytes = pick(&rs, 512 * 1024, 4u << 20);
        c.o.segment_bytes = pick(&rs, 4096, c.o.disk_bytes / 8);
        switch (pick(&rs, 0, 3)) {
        case 0:
            c.o.memory_bytes = pick(&rs, 0, 64);
            break;
        case 1:
            c.o.memory_bytes = pick(&rs, 64, 4096);
            break;
        default:
            c.o.memory_bytes = pick(&rs, 4096, c.o.disk_bytes / 8);
            break;
        }
        c.o.compression = (int)pick(&rs, 0, 9);
        uint64_t f = pick(&rs, 0, 9);
        c.o.fsync = f < 7 ? HOPPER_FSYNC_NEVER : f < 9 ? HOPPER_FSYNC_INTERVAL
                                                       : HOPPER_FSYNC_ALWAYS;
        c.o.fsync_interval_ms = (uint32_t)pick(&rs, 1, 50);
        c.o.checkpoint_interval_ms = (uint32_t)pick(&rs, 0, 100);
        c.shape.salt = hp_test_rand(&rs);
        c.shape.min_len = c.senders == 1 ? 0 : HDR;
        c.shape.max_len = pick(&rs, c.shape.min_len + 1, 2000);
        uint64_t total = hp_test_quick() ? pick(&rs, 50, 400) : pick(&rs, 200, 3000);
        if (c.o.fsync == HOPPER_FSYNC_ALWAYS) {
            total /= 4;
        }
        c.per_sender = (uint32_t)(total / (uint64_t)c.senders + 1);
        c.max_batch = (int)pick(&rs, 1, 8);
        c.ack_stride = (int)pick(&rs, 1, 200);
        c.use_recv_ack = pick(&rs, 0, 4) == 0;
        c.restart = (int)pick(&rs, 0, 2);
        if (c.use_recv_ack && c.restart == 2) {
            c.restart = 1;
        }
        c.iter = iters;
        run_mpsc(s->dir, &c);
        hp_test_rmtree(s->dir);
        s->dir = hp_test_tmpdir("conc");
        assert_non_null(s->dir);
        iters++;
    }
    fprintf(stderr, "[property] %d runs in %" PRIu64 " ms\n", iters, hp_test_now_ms() - t0);
}

/* Thousands of small-budget round trips on one queue directory: open,
 * send a few (some spill), receive, acknowledge (every other round leaves the
 * last one unacknowledged: it must come back first next round), close. */
static void
test_repeat_loop(void **state)
{
    tc_state *s = *state;
    int rounds = hp_test_quick() ? 300 : 2000;
    rec_shape sh = {.min_len = 0, .max_len = 300, .salt = 11};
    uint32_t next = 0;    /* next counter to receive */
    uint32_t sent = 0;    /* next counter to send */
    uint64_t rs = 12345;
    uint64_t t0 = hp_test_now_ms();
    uint8_t buf[512];
    for (int i = 0; i < rounds; i++) {
        hopper_opts o;
        hopper_opts_init(&o);
        o.memory_bytes = 256;
        o.disk_bytes = 64 * 1024;
        o.segment_bytes = 4096;
        o.fsync = HOPPER_FSYNC_NEVER;
        o.durability = i % 2;
        o.compression = i % 3;
        hopper_queue *q = NULL;
        int rc = hopper_open(s->dir, QNAME, &o, &q);
        if (rc != 0) {
            fail_msg("round %d: open: %s", i, hopper_err_name(rc));
        }
        int n = 1 + (int)(hp_test_rand(&rs) % 5);
        for (int k = 0; k < n; k++) {
            size_t len = rec_len(&sh, 0, sent);
            rec_build(&sh, 0, sent, buf, len);
            rc = hopper_send(q, buf, len, 0);
            if (rc != 0) {
                fail_msg("round %d: send #%u: %s", i, sent, hopper_err_name(rc));
            }
            sent++;
        }
        uint64_t last = 0;
        while (next < sent) {
            hopper_record r;
            rc = hopper_recv(q, &r, 5000);
            if (rc != 0) {
                fail_msg("round %d: recv #%u of %u: %s", i, next, sent, hopper_err_name(rc));
            }
            if (!rec_check(&sh, 0, next, &r)) {
                fail_msg("round %d: record #%u wrong (len %zu)", i, next, r.len);
            }
            next++;
            last = r.seq;
        }
        hopper_record r;
        rc = hopper_recv(q, &r, 0);
        if (rc != -EAGAIN) {
            fail_msg("round %d: extra record: %s", i, hopper_err_name(rc));
        }
        hopper_stats st = {.struct_size = sizeof(st)};
        assert_int_equal(hopper_stats_get(q, &st), 0);
        if (i > 0 && (i - 1) % 2 == 1 && st.redelivered != 1) {
            fail_msg("round %d: redelivered %" PRIu64 ", expected 1", i, st.redelivered);
        }
        if (i % 2 == 1 && last > 0) {
            /* Leave the last record unacknowledged. */
            assert_int_equal(hopper_ack(q, last - 1), 0);
            next--;
        } else {
            assert_int_equal(hopper_ack(q, last), 0);
        }
        rc = hopper_close(q);
        if (rc != 0) {
            fail_msg("round %d: close: %s", i, hopper_err_name(rc));
        }
    }
    fprintf(stderr, "[repeat] %d rounds in %" PRIu64 " ms\n", rounds, hp_test_now_ms() - t0);
}

#define HP_T(fn) cmocka_unit_test_setup_teardown(fn, hp_test_dir_setup, hp_test_dir_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        HP_T(test_mpsc_memory),
        HP_T(test_mpsc_disk),
        HP_T(test_mpsc_tight_budgets),
        HP_T(test_mpsc_fsync_always),
        HP_T(test_property_random),
        HP_T(test_repeat_loop),
    };
    return cmocka_run_group_tests_name("test_concurrency", tests, NULL, NULL);
}
