/* SPDX-License-Identifier: MIT */
/* The queue's own files (FORMAT.md §1, §2.1, §4, §5) and the disk budget.
 *
 * The checkpoint, two slots overwritten in place (issue 10: fault 1, and
 * fewer duplicates after a kill -9):
 *  - codec: encode/decode of a slot, the choice of the newer generation
 *    (serial-number order, so generations may wrap), a damaged slot ignored,
 *    both damaged or a wrong size unusable;
 *  - a kill -9 keeps the position marked (written in place, not synced) in
 *    the working slot; if that slot is torn (a power loss), the reader falls
 *    back to the last durable position, never to an earlier one;
 *  - a version-1 checkpoint written by libhopper at the pinned commit of
 *    tests/data/golden/v1-queue is read, and converted to version 2;
 *  - with no room for a new file, a version-1 checkpoint is kept and
 *    overwritten in place, and reclaim still works; with no file at all,
 *    the queue works and reclaims once there is room;
 *  - a consumer waiting in hopper_recv makes its position durable when
 *    checkpoint_interval_ms comes due.
 *
 * Leftovers go, and every file the queue has counts in stats.disk_bytes
 * while it exists (README: "disk_bytes counts every byte of every file the
 * queue writes"; issue 10, fault 5):
 *  - `*.hidx.tmp` left by a crash while an index was written is deleted at
 *    open, like the other temp files;
 *  - a segment deleted at open because it is fully acknowledged (a crash
 *    between the checkpoint and the unlink) takes its index with it at once,
 *    not one open later;
 *  - a segment reclaimed by an acknowledgement takes its index with it.
 * Each case compares disk_bytes with the sizes of the files in the queue
 * directory (all but LOCK). And a full file system does not make open fail
 * when a segment must be quarantined (the note is left out). */
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define QNAME "q"
#define NREC 21
#define PAYLOAD 500
#define PER_SEG 7 /* 4 KiB segments of 544-byte frames, see opts_disk */

typedef hp_test_dir fx;

static void
opts_disk(hopper_opts *o)
{
    hp_test_opts_disk(o, HOPPER_FSYNC_NEVER);
    o->checkpoint_interval_ms = 3600u * 1000u; /* durable only at sync, reclaim, close */
}

static void
qpath(const fx *f, const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", f->qdir, name);
}

static long long
file_size(const fx *f, const char *name)
{
    char p[PATH_MAX];
    qpath(f, name, p, sizeof(p));
    struct stat sb;
    return stat(p, &sb) == 0 ? (long long)sb.st_size : -1;
}

static int
exists(const fx *f, const char *name)
{
    return file_size(f, name) >= 0;
}

/* Sum of the sizes of the files in the queue directory, but LOCK. */
static uint64_t
files_bytes(const fx *f)
{
    DIR *d = opendir(f->qdir);
    assert_non_null(d);
    uint64_t sum = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.' && strcmp(de->d_name, "LOCK") != 0) {
            long long sz = file_size(f, de->d_name);
            assert_true(sz >= 0);
            sum += (uint64_t)sz;
        }
    }
    closedir(d);
    return sum;
}

static void
expect_disk_bytes_honest(const fx *f, hopper_queue *q)
{
    hopper_stats st = {.struct_size = sizeof(st)};
    assert_int_equal(hopper_stats_get(q, &st), 0);
    uint64_t files = files_bytes(f);
    if (st.disk_bytes != files) {
        print_error("disk_bytes %" PRIu64 ", files in the directory %" PRIu64 "\n",
                    st.disk_bytes, files);
    }
    assert_int_equal(st.disk_bytes, files);
}

/* 21 records in segments 1..3, each sealed with its index. */
static void
populate(const fx *f)
{
    hopper_opts o;
    opts_disk(&o);
    hopper_queue *q = NULL;
    assert_int_equal(hopper_open(f->dir, QNAME, &o, &q), 0);
    uint8_t buf[PAYLOAD];
    for (uint64_t i = 0; i < NREC; i++) {
        hp_test_payload(buf, sizeof(buf), i);
        assert_int_equal(hopper_send(q, buf, sizeof(buf), 0), 0);
    }
    assert_int_equal(hopper_close(q), 0);
    static const char *const want[] = {"0000000000000001.hseg", "0000000000000001.hidx",
                                       "0000000000000002.hseg", "0000000000000002.hidx",
                                       "0000000000000003.hseg", "0000000000000003.hidx"};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_true(exists(f, want[i]));
    }
}

/* Receive [from, to) (checking each payload), acknowledging none. */
static void
expect_next(hopper_queue *q, uint64_t from, uint64_t to)
{
    for (uint64_t s = from; s < to; s++) {
        hopper_record r;
        int rc = hopper_recv(q, &r, 0);
        if (rc != 0 || r.seq != s) {
            print_error("expected seq %" PRIu64 ": %s, seq %" PRIu64 "\n", s,
                        hopper_err_name(rc), rc == 0 ? r.seq : 0);
        }
        assert_int_equal(rc, 0);
        assert_int_equal(r.seq, s);
        uint64_t key;
        assert_true(hp_test_payload_check(r.data, r.len, &key));
        assert_int_equal(key, s);
    }
}

/* Open, expect the records [from, NREC) and nothing else, close. */
static void
expect_resume(const fx *f, uint64_t from)
{
    hopper_opts o;
    opts_disk(&o);
    hopper_queue *q = NULL;
    assert_int_equal(hopper_open(f->dir, QNAME, &o, &q), 0);
    expect_next(q, from, NREC);
    hopper_record r;
    assert_int_equal(hopper_recv(q, &r, 0), -EAGAIN);
    assert_int_equal(hopper_close(q), 0);
}

/* Parse the checkpoint file; its image in *img (the caller frees it) when
 * img is not NULL. */
static void
read_ckpt(const fx *f, hp_ckpt *c, uint8_t **img, size_t *n)
{
    char p[PATH_MAX];
    qpath(f, HP_CKPT_NAME, p, sizeof(p));
    uint8_t *b = NULL;
    size_t len = 0;
    assert_int_equal(hp_test_read_file(p, &b, &len), 0);
    assert_int_equal(hp_ckpt_parse(b, len, c), 0);
    if (img != NULL) {
        *img = b;
        *n = len;
    } else {
        free(b);
    }
}

static void
put_checkpoint_v1(const fx *f, uint64_t ack_next, uint64_t read_next)
{
    uint8_t b[HP_CKPT_SIZE];
    hp_ckpt_encode_v1(b, ack_next, read_next);
    char p[PATH_MAX];
    qpath(f, HP_CKPT_NAME, p, sizeof(p));
    assert_int_equal(hp_test_write_file(p, b, sizeof(b)), 0);
}

/* Fault hooks: a file system with no room for a new file (every rename or
 * every write says ENOSPC), and one that counts fsyncs. */
static int
rename_enospc(const char *op)
{
    return strcmp(op, "rename") == 0 ? -ENOSPC : 0;
}

static int
write_enospc(const char *op)
{
    return strcmp(op, "write") == 0 ? -ENOSPC : 0;
}

static _Atomic int g_fsyncs;

static int
count_fsyncs(const char *op)
{
    if (strcmp(op, "fsync") == 0) {
        atomic_fetch_add(&g_fsyncs, 1);
    }
    return 0;
}

/* ---- codec -------------------------------------------------------------- */

static void
test_slot_codec(void **state)
{
    (void)state;
    uint8_t img[HP_CKPT_FILE_SIZE];
    memset(img, 0, sizeof(img));
    hp_ckpt c;
    /* No valid slot: unusable, positions 0. */
    assert_int_equal(hp_ckpt_parse(img, sizeof(img), &c), HOPPER_ECORRUPT);
    assert_int_equal(c.layout, 0);
    assert_int_equal(c.ack_next, 0);
    /* One valid slot, either one. */
    hp_ckpt_encode(img + HP_CKPT_SLOT_STRIDE, 7, 9, 5);
    assert_int_equal(hp_ckpt_parse(img, sizeof(img), &c), 0);
    assert_int_equal(c.layout, 2);
    assert_int_equal(c.slot, 1);
    assert_int_equal(c.ack_next, 7);
    assert_int_equal(c.read_next, 9);
    assert_int_equal(c.gen, 5);
    /* The newer generation wins, whichever slot holds it, also across the
     * wrap of the 32-bit generation; a damaged newer slot loses. */
    static const struct {
        uint32_t g0, g1;
        int use;
    } gens[] = {{5, 6, 1}, {6, 5, 0}, {UINT32_MAX, 0, 1}, {0, UINT32_MAX, 0}, {1, 2, 1}};
    for (size_t i = 0; i < sizeof(gens) / sizeof(gens[0]); i++) {
        hp_ckpt_encode(img, 100 + gens[i].g0 % 7, 0, gens[i].g0);
        hp_ckpt_encode(img + HP_CKPT_SLOT_STRIDE, 200 + gens[i].g1 % 7, 0, gens[i].g1);
        assert_int_equal(hp_ckpt_parse(img, sizeof(img), &c), 0);
        assert_int_equal(c.slot, gens[i].use);
        uint8_t *newer = img + (size_t)gens[i].use * HP_CKPT_SLOT_STRIDE;
        newer[12] ^= 0x10; /* torn */
        assert_int_equal(hp_ckpt_parse(img, sizeof(img), &c), 0);
        assert_int_equal(c.slot, !gens[i].use);
    }
    /* Other sizes are not a checkpoint; 32 bytes is a version-1 file. */
    assert_int_equal(hp_ckpt_parse(img, sizeof(img) - 1, &c), HOPPER_ECORRUPT);
    assert_int_equal(hp_ckpt_parse(img, HP_CKPT_SIZE, &c), HOPPER_ECORRUPT); /* a v2 slot */
    hp_ckpt_encode_v1(img, 11, 12);
    assert_int_equal(hp_ckpt_parse(img, HP_CKPT_SIZE, &c), 0);
    assert_int_equal(c.layout, 1);
    assert_int_equal(c.ack_next, 11);
    assert_int_equal(c.read_next, 12);
    /* A version-1 checkpoint as a slot of a version-2 file is not valid. */
    memset(img + HP_CKPT_SLOT_STRIDE, 0, HP_CKPT_SIZE);
    assert_int_equal(hp_ckpt_parse(img, sizeof(img), &c), HOPPER_ECORRUPT);
}

/* ---- kill -9 and a torn working slot ------------------------------------ */

/* The child: ack seq 2 and sync (durable: ack_next 3), then ack seq 5 past
 * HP_CKPT_MARK_NS (marked in place, not synced: ack_next 6), and die without
 * closing, as a kill -9 would. */
static void
child_ack_and_die(const fx *f)
{
    hopper_opts o;
    opts_disk(&o);
    hopper_queue *q = NULL;
    if (hopper_open(f->dir, QNAME, &o, &q) != 0) {
        _exit(2);
    }
    hopper_record r;
    for (int i = 0; i < 6; i++) {
        if (hopper_recv(q, &r, 0) != 0 || r.seq != (uint64_t)i) {
            _exit(3);
        }
        if (i == 2 && (hopper_ack(q, 2) != 0 || hopper_sync(q) != 0)) {
            _exit(4);
        }
    }
    usleep(6000);
    if (hopper_ack(q, 5) != 0) {
        _exit(5);
    }
    _exit(0);
}

static void
run_child(const fx *f)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        child_ack_and_die(f);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void
test_kill_keeps_mark_torn_slot_falls_back(void **state)
{
    fx *f = *state;
    for (int torn = 0; torn < 2; torn++) {
        hp_test_rmtree(strdup(f->qdir));
        populate(f);
        run_child(f);
        hp_ckpt c;
        uint8_t *img = NULL;
        size_t n = 0;
        read_ckpt(f, &c, &img, &n);
        assert_int_equal(c.layout, 2);
        assert_int_equal(c.ack_next, 6); /* the mark */
        if (torn) {
            /* A power loss tore the slot being written: the other one holds
             * the last durable position. */
            memset(img + (size_t)c.slot * HP_CKPT_SLOT_STRIDE + 4, 0xA5, 20);
            char p[PATH_MAX];
            qpath(f, HP_CKPT_NAME, p, sizeof(p));
            assert_int_equal(hp_test_write_file(p, img, n), 0);
            hp_ckpt d;
            assert_int_equal(hp_ckpt_parse(img, n, &d), 0);
            assert_int_equal(d.slot, !c.slot);
            assert_int_equal(d.ack_next, 3);
        }
        free(img);
        expect_resume(f, torn ? 3 : 6);
    }
}

/* ---- version 1 ---------------------------------------------------------- */

static void
copy_file(const char *from, const char *to)
{
    uint8_t *b = NULL;
    size_t n = 0;
    assert_int_equal(hp_test_read_file(from, &b, &n), 0);
    assert_int_equal(hp_test_write_file(to, b, n), 0);
    free(b);
}

static void
test_version1_golden_queue(void **state)
{
    fx *f = *state;
    const char *data = getenv("HOPPER_TEST_DATA");
    char src[PATH_MAX];
    snprintf(src, sizeof(src), "%s/golden/v1-queue", data != NULL ? data : HP_TEST_DATA_DIR);
    assert_int_equal(mkdir(f->qdir, 0700), 0);
    DIR *d = opendir(src);
    assert_non_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || strcmp(de->d_name, "README.md") == 0) {
            continue;
        }
        char a[PATH_MAX + 256];
        char b[PATH_MAX + 256];
        snprintf(a, sizeof(a), "%s/%s", src, de->d_name);
        snprintf(b, sizeof(b), "%s/%s", f->qdir, de->d_name);
        copy_file(a, b);
    }
    closedir(d);
    assert_int_equal(file_size(f, HP_CKPT_NAME), HP_CKPT_SIZE);
    /* Written by the old version: acknowledged up to seq 6, segment 1 gone. */
    expect_resume(f, PER_SEG);
    assert_int_equal(file_size(f, HP_CKPT_NAME), HP_CKPT_FILE_SIZE); /* converted at open */
    hp_ckpt c;
    read_ckpt(f, &c, NULL, NULL);
    assert_int_equal(c.ack_next, PER_SEG);
    expect_resume(f, PER_SEG);
}

/* Receive segment 1 (seqs 0..6) and acknowledge it. 0 or the first error. */
static int
ack_first_segment(hopper_queue *q)
{
    int rc = 0;
    for (uint64_t s = 0; s < PER_SEG && rc == 0; s++) {
        hopper_record r;
        rc = hopper_recv(q, &r, 0);
    }
    return rc == 0 ? hopper_ack(q, PER_SEG - 1) : rc;
}

/* No room to replace a version-1 checkpoint (every rename says ENOSPC): it
 * is kept and overwritten in place; reclaim and close work, and the next
 * open with room converts it. */
static void
test_version1_in_place_when_full(void **state)
{
    fx *f = *state;
    populate(f);
    put_checkpoint_v1(f, 0, 0);
    hopper_opts o;
    opts_disk(&o);
    hp_fault_hook = rename_enospc;
    hopper_queue *q = NULL;
    int rc = hopper_open(f->dir, QNAME, &o, &q);
    if (rc == 0) {
        rc = ack_first_segment(q); /* reclaims segment 1 */
        int crc = hopper_close(q);
        rc = rc == 0 ? crc : rc;
    }
    hp_fault_hook = NULL;
    assert_int_equal(rc, 0);
    assert_int_equal(file_size(f, HP_CKPT_NAME), HP_CKPT_SIZE);
    hp_ckpt c;
    read_ckpt(f, &c, NULL, NULL);
    assert_int_equal(c.layout, 1);
    assert_int_equal(c.ack_next, PER_SEG);
    assert_false(exists(f, "0000000000000001.hseg"));
    expect_resume(f, PER_SEG);
    assert_int_equal(file_size(f, HP_CKPT_NAME), HP_CKPT_FILE_SIZE);
}

/* No checkpoint file and no room to create one: open works, acknowledging
 * works but cannot reclaim, hopper_sync says -ENOSPC without failing the
 * queue; once there is room the checkpoint is created and reclaim goes on. */
static void
test_no_file_no_room(void **state)
{
    fx *f = *state;
    populate(f);
    char p[PATH_MAX];
    qpath(f, HP_CKPT_NAME, p, sizeof(p));
    assert_int_equal(unlink(p), 0);
    hopper_opts o;
    opts_disk(&o);
    hp_fault_hook = rename_enospc;
    hopper_queue *q = NULL;
    int rc = hopper_open(f->dir, QNAME, &o, &q);
    hopper_stats st = {.struct_size = sizeof(st)};
    int ack_rc = -1;
    int sync_rc = -1;
    if (rc == 0) {
        ack_rc = ack_first_segment(q);
        sync_rc = hopper_sync(q);
        (void)hopper_stats_get(q, &st);
    }
    hp_fault_hook = NULL;
    assert_int_equal(rc, 0);
    assert_false(exists(f, HP_CKPT_NAME));
    assert_int_equal(ack_rc, 0);
    assert_int_equal(sync_rc, -ENOSPC);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.segments, 3); /* no durable checkpoint: no reclaim */
    uint64_t deadline = hp_test_now_ms() + 10000;
    do {
        assert_int_equal(hopper_ack(q, PER_SEG - 1), 0); /* after the retry pause */
        assert_int_equal(hopper_stats_get(q, &st), 0);
    } while (st.segments == 3 && hp_test_now_ms() < deadline);
    assert_int_equal(st.segments, 2);
    assert_int_equal(file_size(f, HP_CKPT_NAME), HP_CKPT_FILE_SIZE);
    assert_int_equal(hopper_close(q), 0);
    expect_resume(f, PER_SEG);
}

/* A consumer that acknowledged and now waits in hopper_recv: the position is
 * marked at once and made durable when checkpoint_interval_ms comes due,
 * without another acknowledgement (the power-loss bound of README.md). */
static void
test_durable_write_while_waiting(void **state)
{
    fx *f = *state;
    populate(f);
    hopper_opts o;
    opts_disk(&o);
    o.checkpoint_interval_ms = 50;
    hopper_queue *q = NULL;
    assert_int_equal(hopper_open(f->dir, QNAME, &o, &q), 0);
    hopper_record r;
    for (uint64_t s = 0; s < NREC; s++) {
        assert_int_equal(hopper_recv(q, &r, 0), 0);
    }
    assert_int_equal(hopper_ack(q, 2), 0); /* segment 1 stays: not due */
    atomic_store(&g_fsyncs, 0);
    hp_fault_hook = count_fsyncs;
    int rc = hopper_recv(q, &r, 300);
    int synced = atomic_load(&g_fsyncs);
    rc = rc == -ETIMEDOUT ? hopper_recv(q, &r, 100) : rc; /* nothing moved: no fsync */
    int synced_again = atomic_load(&g_fsyncs);
    hp_fault_hook = NULL;
    assert_int_equal(rc, -ETIMEDOUT);
    assert_int_equal(synced, 1);
    assert_int_equal(synced_again, 1);
    hp_ckpt c;
    read_ckpt(f, &c, NULL, NULL);
    assert_int_equal(c.ack_next, 3);
    assert_int_equal(hopper_close(q), 0);
}

/* ---- leftovers and the disk budget -------------------------------------- */

static void
test_index_tmp_removed_at_open(void **state)
{
    fx *f = *state;
    populate(f);
    /* What a crash while an index was written leaves: for a live segment,
     * for one that is gone, and a checkpoint temp file for comparison. */
    static const char *const tmps[] = {"0000000000000002.hidx.tmp", "00000000000000ff.hidx.tmp",
                                       "checkpoint.tmp"};
    for (size_t i = 0; i < sizeof(tmps) / sizeof(tmps[0]); i++) {
        char p[PATH_MAX];
        qpath(f, tmps[i], p, sizeof(p));
        assert_int_equal(hp_test_write_file(p, "HIDX partial", 12), 0);
    }
    hopper_opts o;
    opts_disk(&o);
    hopper_queue *q = NULL;
    assert_int_equal(hopper_open(f->dir, QNAME, &o, &q), 0);
    for (size_t i = 0; i < sizeof(tmps) / sizeof(tmps[0]); i++) {
        if (exists(f, tmps[i])) {
            print_error("%s survived the open\n", tmps[i]);
        }
        assert_false(exists(f, tmps[i]));
    }
    expect_disk_bytes_honest(f, q);
    expect_next(q, 0, NREC);
    assert_int_equal(hopper_close(q), 0);
}

static void
test_index_goes_with_segment_at_open(void **state)
{
    fx *f = *state;
    populate(f);
    /* The checkpoint says segment 1 (seqs 0..6) is acknowledged, but the
     * segment is still there: a crash between the checkpoint and the unlink. */
    put_checkpoint_v1(f, PER_SEG, PER_SEG);
    hopper_opts o;
    opts_disk(&o);
    hopper_queue *q = NULL;
    assert_int_equal(hopper_open(f->dir, QNAME, &o, &q), 0);
    assert_false(exists(f, "0000000000000001.hseg"));
    if (exists(f, "0000000000000001.hidx")) {
        print_error("the index of the deleted segment 1 outlived it\n");
    }
    assert_false(exists(f, "0000000000000001.hidx"));
    assert_true(exists(f, "0000000000000002.hidx"));
    expect_disk_bytes_honest(f, q);
    expect_next(q, PER_SEG, NREC);
    assert_int_equal(hopper_close(q), 0);
}

static void
test_index_goes_with_segment_at_reclaim(void **state)
{
    fx *f = *state;
    populate(f);
    hopper_opts o;
    opts_disk(&o);
    hopper_queue *q = NULL;
    assert_int_equal(hopper_open(f->dir, QNAME, &o, &q), 0);
    expect_disk_bytes_honest(f, q);
    expect_next(q, 0, 2 * PER_SEG);
    assert_int_equal(hopper_ack(q, 2 * PER_SEG - 1), 0); /* segments 1 and 2 */
    for (uint64_t id = 1; id <= 2; id++) {
        char name[32];
        snprintf(name, sizeof(name), "%016" PRIx64 ".hseg", id);
        assert_false(exists(f, name));
        snprintf(name, sizeof(name), "%016" PRIx64 ".hidx", id);
        assert_false(exists(f, name));
    }
    expect_disk_bytes_honest(f, q);
    assert_int_equal(hopper_close(q), 0);
}

/* A full file system at open (every write says ENOSPC) while a segment must
 * be quarantined: open still succeeds (the note is left out), so that the
 * consumer can drain and free space. */
static void
test_quarantine_on_full_fs(void **state)
{
    fx *f = *state;
    populate(f);
    char p[PATH_MAX];
    qpath(f, "0000000000000002.hseg", p, sizeof(p));
    uint8_t *b = NULL;
    size_t n = 0;
    assert_int_equal(hp_test_read_file(p, &b, &n), 0);
    b[0] ^= 0xFF; /* bad magic: the whole segment is unreadable */
    assert_int_equal(hp_test_write_file(p, b, n), 0);
    free(b);
    hopper_opts o;
    opts_disk(&o);
    hopper_queue *q = NULL;
    hp_fault_hook = write_enospc;
    int rc = hopper_open(f->dir, QNAME, &o, &q);
    hp_fault_hook = NULL;
    if (rc != 0) {
        print_error("open with a full file system: %s\n", hopper_err_name(rc));
    }
    assert_int_equal(rc, 0);
    assert_true(exists(f, "0000000000000002.hseg.bad"));
    hopper_stats st = {.struct_size = sizeof(st)};
    assert_int_equal(hopper_stats_get(q, &st), 0);
    assert_int_equal(st.quarantined_bytes, n);
    expect_next(q, 0, PER_SEG);
    expect_next(q, 2 * PER_SEG, NREC);
    assert_int_equal(hopper_close(q), 0);
}

#define HP_T(fn) cmocka_unit_test_setup_teardown(fn, hp_test_dir_setup, hp_test_dir_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        HP_T(test_slot_codec),
        HP_T(test_kill_keeps_mark_torn_slot_falls_back),
        HP_T(test_version1_golden_queue),
        HP_T(test_version1_in_place_when_full),
        HP_T(test_no_file_no_room),
        HP_T(test_durable_write_while_waiting),
        HP_T(test_index_tmp_removed_at_open),
        HP_T(test_index_goes_with_segment_at_open),
        HP_T(test_index_goes_with_segment_at_reclaim),
        HP_T(test_quarantine_on_full_fs),
    };
    return cmocka_run_group_tests_name("files", tests, NULL, NULL);
}
