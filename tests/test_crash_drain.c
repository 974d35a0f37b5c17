/* SPDX-License-Identifier: MIT */
/* Few duplicates after a kill -9 in the middle of a fast drain (issue 10).
 * The parent writes a backlog of small records (DISK mode, one large
 * segment, so no reclaim forces a checkpoint during the drain), then a
 * forked child drains it as fast as it can, acknowledging every record. The
 * child publishes the seq it is about to acknowledge and the one it last
 * acknowledged in a MAP_SHARED page, and tells the parent through a pipe
 * once a quarter of the backlog is done; the parent SIGKILLs it at once.
 * After a reopen:
 *  - nothing acknowledged beyond what the child acknowledged is skipped (the
 *    first record delivered is at most one past the seq it was acknowledging);
 *  - at most MAX_REDELIVERED records the child had acknowledged come back
 *    (the mark: HP_CKPT_MARK_RECORDS = 4096, README's kill -9 bound);
 *  - every record from there on is delivered once, in order, byte-exact.
 * The figures are printed (`redelivered after kill -9: N`). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "hopper.h"
#include "hp_test.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

#define QNAME "q"
#define PAYLOAD 16
#define BATCH 1024
#define MAX_REDELIVERED 10000u

/* The child's progress, shared with the parent. */
typedef struct progress {
    _Atomic uint64_t acking; /* seq + 1 of the record being acknowledged */
    _Atomic uint64_t acked;  /* seq + 1 of the last record acknowledged */
} progress;

static void
opts_for(hopper_opts *o)
{
    hopper_opts_init(o);
    o->durability = HOPPER_DURABILITY_DISK;
    o->fsync = HOPPER_FSYNC_NEVER;
    o->segment_bytes = 1ull << 30; /* one segment: nothing to reclaim mid-drain */
    o->disk_bytes = 8ull << 30;
}

static void
write_backlog(const char *dir, uint64_t n)
{
    hopper_opts o;
    opts_for(&o);
    hopper_queue *q = NULL;
    assert_int_equal(hopper_open(dir, QNAME, &o, &q), 0);
    static uint8_t buf[BATCH][PAYLOAD];
    hopper_iovec v[BATCH];
    for (uint64_t k = 0; k < n;) {
        size_t m = 0;
        for (; m < BATCH && k < n; m++, k++) {
            hp_test_payload(buf[m], PAYLOAD, k);
            v[m] = (hopper_iovec){.data = buf[m], .len = PAYLOAD};
        }
        assert_int_equal(hopper_send_batch(q, v, m, -1), 0);
    }
    assert_int_equal(hopper_close(q), 0);
}

typedef struct drain_job {
    const char *dir;
    uint64_t n;
    progress *pg;
} drain_job;

static void
child_drain(void *ctx, int wfd)
{
    const drain_job *job = ctx;
    const char *dir = job->dir;
    uint64_t n = job->n;
    progress *pg = job->pg;
    hopper_opts o;
    opts_for(&o);
    hopper_queue *q = NULL;
    if (hopper_open(dir, QNAME, &o, &q) != 0) {
        _exit(2);
    }
    for (uint64_t want = 0; want < n; want++) {
        hopper_record r;
        if (hopper_recv(q, &r, 0) != 0 || r.seq != want) {
            _exit(3);
        }
        atomic_store_explicit(&pg->acking, r.seq + 1, memory_order_relaxed);
        if (hopper_ack(q, r.seq) != 0) {
            _exit(4);
        }
        atomic_store_explicit(&pg->acked, r.seq + 1, memory_order_relaxed);
        if (want == n / 4 && write(wfd, "q", 1) != 1) {
            _exit(5);
        }
    }
    _exit(6); /* drained it all before the kill: the test proves nothing */
}

static void
test_kill_mid_drain(void **state)
{
    hp_test_dir *d = *state;
    uint64_t n = hp_test_quick() || SANITIZED ? 200000u : 2000000u;
    write_backlog(d->dir, n);

    progress *pg = mmap(NULL, sizeof(*pg), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                        -1, 0);
    assert_true(pg != MAP_FAILED);
    atomic_store(&pg->acking, 0);
    atomic_store(&pg->acked, 0);
    drain_job job = {.dir = d->dir, .n = n, .pg = pg};
    int rfd;
    pid_t pid = hp_test_fork_piped(child_drain, &job, &rfd);
    assert_true(pid > 0);
    char c;
    ssize_t r = read(rfd, &c, 1);
    kill(pid, SIGKILL);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    close(rfd);
    if (r != 1) {
        print_error("the child died before a quarter of the drain (status 0x%x)\n", status);
    }
    assert_int_equal(r, 1);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    uint64_t acking = atomic_load(&pg->acking);
    uint64_t acked = atomic_load(&pg->acked);
    munmap(pg, sizeof(*pg));
    assert_true(acked > n / 4 && acked < n);

    hopper_opts o;
    opts_for(&o);
    hopper_queue *q = NULL;
    assert_int_equal(hopper_open(d->dir, QNAME, &o, &q), 0);
    hopper_record rec;
    assert_int_equal(hopper_recv(q, &rec, 0), 0);
    uint64_t first = rec.seq;
    uint64_t redelivered = acked > first ? acked - first : 0;
    fprintf(stderr,
            "redelivered after kill -9: %" PRIu64 " (killed at %" PRIu64 " of %" PRIu64
            " acknowledged, first seq after reopen %" PRIu64 ")\n",
            redelivered, acked, n, first);
    assert_true(first <= acking);
    assert_true(redelivered <= MAX_REDELIVERED);
    for (uint64_t want = first; want < n; want++) {
        if (want > first) {
            assert_int_equal(hopper_recv(q, &rec, 0), 0);
        }
        assert_int_equal(rec.seq, want);
        uint64_t key;
        assert_true(hp_test_payload_check(rec.data, rec.len, &key));
        assert_int_equal(key, want);
    }
    assert_int_equal(hopper_recv(q, &rec, 0), -EAGAIN);
    assert_int_equal(hopper_close(q), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_kill_mid_drain, hp_test_dir_setup,
                                        hp_test_dir_teardown),
    };
    return cmocka_run_group_tests_name("crash_drain", tests, NULL, NULL);
}
