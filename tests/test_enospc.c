/* SPDX-License-Identifier: MIT */
/* A full file system never wedges the queue (issue 10, fault 1). On a real
 * 20 MiB tmpfs a queue fills the file system to the last page, alone or with
 * a competing file that takes space first and then the last bytes, in DISK
 * and MEMORY mode, with small segments and with one segment as large as the
 * file system. Then the consumer drains and acknowledges everything (the
 * checkpoint is written in place, so it needs no new block), the segments
 * are reclaimed and space comes back, sends work again, and close + reopen
 * delivers exactly what was accepted, in order, each once. Some DISK-mode
 * cases also close and reopen while the file system is full.
 *
 * Mounting needs CAP_SYS_ADMIN: where it cannot mount, the test says so and
 * exits 77 (skipped). It mounts in a private mount namespace when it can make
 * one, so no mount outlives the process even if it crashes; each teardown
 * unmounts anyway. */
#define _GNU_SOURCE /* unshare, CLONE_NEWNS */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "hopper.h"
#include "hp_test.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define QNAME "q"
#define FS_OPTS "size=20m,mode=0700"
#define COMPETITOR_BYTES (4u << 20)
#define AGAIN_BYTES (4u << 20) /* sent again after the drain */

typedef struct cfg {
    int durability;
    int competitor;         /* another file takes space first and the last bytes */
    uint64_t segment_bytes; /* 0: the default, larger than the file system */
    int reopen_full;        /* DISK mode: close and reopen while full */
} cfg;

typedef struct fx {
    const cfg *c;
    char *mnt;
    int mounted;
} fx;

/* ---- the file system ----------------------------------------------------- */

static int
mount_tmpfs(const char *dir)
{
    return mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, FS_OPTS) == 0 ? 0 : -errno;
}

static int
setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        return -1;
    }
    f->c = *state;
    f->mnt = hp_test_tmpdir("enospc");
    if (f->mnt == NULL || mount_tmpfs(f->mnt) != 0) {
        fprintf(stderr, "mount tmpfs: %s\n", strerror(errno));
        hp_test_rmtree(f->mnt); /* cmocka runs no teardown after a failed setup */
        free(f);
        return -1;
    }
    f->mounted = 1;
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    fx *f = *state;
    if (f->mounted && umount2(f->mnt, MNT_DETACH) != 0) {
        fprintf(stderr, "umount %s: %s\n", f->mnt, strerror(errno));
    }
    hp_test_rmtree(f->mnt); /* the empty mount point */
    free(f);
    return 0;
}

static uint64_t
fs_free(const fx *f)
{
    struct statvfs sv;
    assert_int_equal(statvfs(f->mnt, &sv), 0);
    return (uint64_t)sv.f_bavail * sv.f_frsize;
}

/* Append to mnt/name until the file system refuses even one byte. */
static void
take_all_space(const fx *f, const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", f->mnt, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    assert_true(fd >= 0);
    static uint8_t chunk[64 * 1024];
    memset(chunk, 0x5A, sizeof(chunk));
    for (size_t n = sizeof(chunk); n >= 1; n /= 2) {
        while (write(fd, chunk, n) == (ssize_t)n) {
        }
    }
    assert_int_equal(write(fd, chunk, 1), -1);
    assert_int_equal(errno, ENOSPC);
    close(fd);
}

static void
write_competitor(const fx *f, const char *name, size_t bytes)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", f->mnt, name);
    uint8_t *b = calloc(1, bytes);
    assert_non_null(b);
    assert_int_equal(hp_test_write_file(path, b, bytes), 0);
    free(b);
}

/* ---- the queue ------------------------------------------------------------- */

static void
opts_for(const cfg *c, hopper_opts *o)
{
    hopper_opts_init(o);
    o->durability = c->durability;
    o->fsync = HOPPER_FSYNC_NEVER;
    o->memory_bytes = 1u << 20; /* MEMORY mode: most records spill */
    o->disk_bytes = 1ull << 30; /* the file system is the limit */
    if (c->segment_bytes) {
        o->segment_bytes = c->segment_bytes;
    }
}

static size_t
rec_len(uint64_t key)
{
    return 200 + (size_t)(key * 7919u % 1800u);
}

static int
send_key(hopper_queue *q, uint64_t key, size_t len, int timeout_ms)
{
    uint8_t buf[2048];
    assert_true(len <= sizeof(buf));
    hp_test_payload(buf, len, key);
    return hopper_send(q, buf, len, timeout_ms);
}

/* Send records keyed by their expected seq until the queue says EFULL
 * (len 0: varied lengths). Returns the next key. */
static uint64_t
send_until_full(hopper_queue *q, uint64_t key, size_t len, int timeout_ms)
{
    for (;;) {
        int rc = send_key(q, key, len ? len : rec_len(key), timeout_ms);
        if (rc == HOPPER_EFULL) {
            return key;
        }
        if (rc != 0) {
            print_error("send of key %" PRIu64 ": %s\n", key, hopper_err_name(rc));
        }
        assert_int_equal(rc, 0);
        key++;
    }
}

static void
expect_healthy(hopper_queue *q, hopper_stats *st)
{
    st->struct_size = sizeof(*st);
    assert_int_equal(hopper_stats_get(q, st), 0);
    if (st->failed != 0) {
        print_error("queue failed: %s\n", hopper_err_name(st->failed));
    }
    assert_int_equal(st->failed, 0);
}

/* Receive and acknowledge seqs [from, to), each exactly its payload. */
static void
drain_acking(hopper_queue *q, uint64_t from, uint64_t to)
{
    for (uint64_t want = from; want < to; want++) {
        hopper_record r;
        int rc = hopper_recv(q, &r, 10000);
        if (rc != 0) {
            print_error("recv of seq %" PRIu64 " (of [%" PRIu64 ", %" PRIu64 ")): %s\n", want,
                        from, to, hopper_err_name(rc));
        }
        assert_int_equal(rc, 0);
        assert_int_equal(r.seq, want);
        uint64_t key;
        assert_true(hp_test_payload_check(r.data, r.len, &key));
        assert_int_equal(key, want);
        rc = hopper_ack(q, r.seq);
        if (rc != 0) {
            print_error("ack of seq %" PRIu64 ": %s\n", r.seq, hopper_err_name(rc));
        }
        assert_int_equal(rc, 0);
    }
    hopper_record r;
    assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);
}

static void
test_fill_drain_refill(void **state)
{
    fx *f = *state;
    const cfg *c = f->c;
    int disk = c->durability == HOPPER_DURABILITY_DISK;
    hopper_opts o;
    opts_for(c, &o);
    if (c->competitor) {
        write_competitor(f, "competitor", COMPETITOR_BYTES);
    }
    hopper_queue *q = NULL;
    assert_int_equal(hopper_open(f->mnt, QNAME, &o, &q), 0);

    /* Fill. DISK mode then closes the gap with ever smaller records (each
     * step waits out the ENOSPC back-off); with a competitor, a file takes
     * whatever is left, to the last byte. */
    uint64_t next = send_until_full(q, 0, 0, 0);
    assert_true(next > 1000);
    if (disk) {
        static const size_t small[] = {256, 64, 8};
        for (size_t i = 0; i < sizeof(small) / sizeof(small[0]); i++) {
            next = send_until_full(q, next, small[i], 2000);
        }
    }
    if (c->competitor) {
        take_all_space(f, "filler");
        assert_int_equal(fs_free(f), 0);
    }
    hopper_stats st;
    expect_healthy(q, &st);
    uint64_t full_free = fs_free(f);
    assert_true(full_free < 256u * 1024u);

    if (c->reopen_full) {
        /* Closing and reopening a full file system is not an error. */
        assert_int_equal(hopper_close(q), 0);
        q = NULL;
        assert_int_equal(hopper_open(f->mnt, QNAME, &o, &q), 0);
        expect_healthy(q, &st);
        assert_int_equal(st.next_seq, next);
    }

    /* Drain: every ack succeeds, segments are reclaimed, space comes back. */
    drain_acking(q, 0, next);
    assert_int_equal(hopper_sync(q), 0);
    expect_healthy(q, &st);
    assert_int_equal(st.backlog_records, 0);
    uint64_t free_after = fs_free(f);
    if (free_after < AGAIN_BYTES + (2u << 20)) {
        print_error("only %" PRIu64 " bytes free after the drain (%" PRIu64 " segments, %" PRIu64
                    " disk bytes)\n",
                    free_after, st.segments, st.disk_bytes);
    }
    assert_true(free_after >= AGAIN_BYTES + (2u << 20));

    /* Send again; close; reopen: exactly the new records, in order. */
    uint64_t again = next;
    for (uint64_t bytes = 0; bytes < AGAIN_BYTES; next++) {
        int rc = send_key(q, next, rec_len(next), 10000);
        if (rc != 0) {
            print_error("send again, key %" PRIu64 ": %s\n", next, hopper_err_name(rc));
        }
        assert_int_equal(rc, 0);
        bytes += rec_len(next);
    }
    assert_int_equal(hopper_close(q), 0);
    q = NULL;
    assert_int_equal(hopper_open(f->mnt, QNAME, &o, &q), 0);
    drain_acking(q, again, next);
    expect_healthy(q, &st);
    assert_int_equal(st.corrupt_frames, 0);
    assert_int_equal(st.torn_bytes, 0);
    assert_int_equal(st.lost_records, 0);
    assert_int_equal(hopper_close(q), 0);
}

static const cfg k_disk = {HOPPER_DURABILITY_DISK, 0, 1u << 20, 1};
static const cfg k_disk_competitor = {HOPPER_DURABILITY_DISK, 1, 1u << 20, 1};
static const cfg k_disk_one_segment = {HOPPER_DURABILITY_DISK, 0, 0, 0};
static const cfg k_disk_one_segment_competitor = {HOPPER_DURABILITY_DISK, 1, 0, 0};
static const cfg k_disk_one_segment_reopen = {HOPPER_DURABILITY_DISK, 0, 0, 1};
static const cfg k_disk_one_segment_competitor_reopen = {HOPPER_DURABILITY_DISK, 1, 0, 1};
static const cfg k_memory = {HOPPER_DURABILITY_MEMORY, 0, 1u << 20, 0};
static const cfg k_memory_competitor = {HOPPER_DURABILITY_MEMORY, 1, 1u << 20, 0};
static const cfg k_memory_one_segment = {HOPPER_DURABILITY_MEMORY, 0, 0, 0};
static const cfg k_memory_one_segment_competitor = {HOPPER_DURABILITY_MEMORY, 1, 0, 0};

#define HP_T(c)                                                                                \
    {                                                                                          \
        .name = #c, .test_func = test_fill_drain_refill, .setup_func = setup,                  \
        .teardown_func = teardown, .initial_state = (void *)&(c)                               \
    }

/* A private mount namespace, so that a mount cannot outlive this process;
 * then a probe mount. Returns 0 when tmpfs can be mounted. */
static int
can_mount(void)
{
    if (unshare(CLONE_NEWNS) == 0) {
        (void)mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
    }
    char *probe = hp_test_tmpdir("enospc-probe");
    if (probe == NULL) {
        return -errno;
    }
    int rc = mount_tmpfs(probe);
    if (rc == 0) {
        umount2(probe, MNT_DETACH);
    }
    hp_test_rmtree(probe);
    return rc;
}

int
main(void)
{
    int rc = can_mount();
    if (rc != 0) {
        printf("SKIP: test_enospc needs to mount a tmpfs (root or CAP_SYS_ADMIN): %s\n",
               strerror(-rc));
        return 77;
    }
    const struct CMUnitTest tests[] = {
        HP_T(k_disk),
        HP_T(k_disk_competitor),
        HP_T(k_disk_one_segment),
        HP_T(k_disk_one_segment_competitor),
        HP_T(k_disk_one_segment_reopen),
        HP_T(k_disk_one_segment_competitor_reopen),
        HP_T(k_memory),
        HP_T(k_memory_competitor),
        HP_T(k_memory_one_segment),
        HP_T(k_memory_one_segment_competitor),
    };
    return cmocka_run_group_tests_name("enospc", tests, NULL, NULL);
}
