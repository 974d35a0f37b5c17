/* SPDX-License-Identifier: MIT */
/* hopper_inspect: counts, seq order, acknowledged records, damage, the lock,
 * and that it changes no file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "hopper.h"
#include "hp_test.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define N_RECORDS 300u

typedef struct seen {
    uint64_t n;
    uint64_t first;
    uint64_t last;
    int order_ok;
    int content_ok;
} seen;

static void
payload(uint8_t *b, size_t len, uint64_t k)
{
    for (size_t i = 0; i < len; i++) {
        b[i] = (uint8_t)(k * 31u + i);
    }
}

static size_t
len_of(uint64_t k)
{
    return 100 + (size_t)(k % 7) * 50;
}

static int
collect(void *ctx, const hopper_record *rec)
{
    seen *s = ctx;
    if (s->n == 0) {
        s->first = rec->seq;
    } else if (rec->seq <= s->last) {
        s->order_ok = 0;
    }
    s->last = rec->seq;
    s->n++;
    uint8_t exp[512];
    if (rec->len != len_of(rec->seq)) {
        s->content_ok = 0;
        return 0;
    }
    payload(exp, rec->len, rec->seq);
    if (memcmp(exp, rec->data, rec->len) != 0) {
        s->content_ok = 0;
    }
    return 0;
}

static int
stop_at_ten(void *ctx, const hopper_record *rec)
{
    (void)rec;
    seen *s = ctx;
    return ++s->n == 10 ? -1234 : 0;
}

/* A queue of N_RECORDS over several segments, the first `acked` acknowledged. */
static void
make_queue(const char *dir, uint64_t acked)
{
    hopper_opts o;
    hopper_opts_init(&o);
    o.memory_bytes = 4096;
    o.segment_bytes = 16 * 1024;
    o.compression = 0; /* the payloads compress to nothing: keep several segments */
    o.fsync = HOPPER_FSYNC_NEVER;
    hopper_queue *q = NULL;
    assert_int_equal(hopper_open(dir, "q", &o, &q), 0);
    uint8_t b[512];
    for (uint64_t k = 0; k < N_RECORDS; k++) {
        payload(b, len_of(k), k);
        assert_int_equal(hopper_send(q, b, len_of(k), 0), 0);
    }
    hopper_record r;
    for (uint64_t k = 0; k < acked; k++) {
        assert_int_equal(hopper_recv(q, &r, 1000), 0);
        assert_int_equal(r.seq, k);
    }
    if (acked > 0) {
        assert_int_equal(hopper_ack(q, acked - 1), 0);
    }
    assert_int_equal(hopper_close(q), 0);
}

/* name -> size of every file in dir/q, as one string, to compare. */
static void
listing(const char *dir, char *out, size_t cap)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/q", dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    char *names[64];
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < 64) {
        if (de->d_name[0] != '.') {
            names[n++] = strdup(de->d_name);
        }
    }
    closedir(d);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = i + 1; j < n; j++) {
            if (strcmp(names[j], names[i]) < 0) {
                char *t = names[i];
                names[i] = names[j];
                names[j] = t;
            }
        }
    }
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        char f[4400];
        struct stat sb;
        snprintf(f, sizeof(f), "%s/%s", path, names[i]);
        assert_int_equal(stat(f, &sb), 0);
        size_t len = strlen(out);
        snprintf(out + len, cap - len, "%s=%lld;", names[i], (long long)sb.st_size);
        free(names[i]);
    }
}

static void
test_inspect_counts_and_order(void **state)
{
    (void)state;
    char *dir = hp_test_tmpdir("inspect");
    assert_non_null(dir);
    make_queue(dir, 120);
    char before[8192];
    char after[8192];
    listing(dir, before, sizeof(before));

    hopper_inspect_report rep = {.struct_size = sizeof(rep)};
    seen s = {.order_ok = 1, .content_ok = 1};
    assert_int_equal(hopper_inspect(dir, "q", 0, collect, &s, &rep), 0);
    assert_true(rep.checkpoint_ok);
    assert_int_equal(rep.ack_next, 120);
    assert_int_equal(s.n, N_RECORDS - 120);
    assert_int_equal(s.first, 120);
    assert_int_equal(s.last, N_RECORDS - 1);
    assert_true(s.order_ok && s.content_ok);
    assert_int_equal(rep.visited, N_RECORDS - 120);
    assert_true(rep.segments >= 2);
    assert_int_equal(rep.unreadable_segments, 0);
    assert_int_equal(rep.corrupt_frames, 0);
    assert_int_equal(rep.torn_bytes, 0);
    assert_true(rep.records >= N_RECORDS - 120);

    /* With HOPPER_INSPECT_ACKED, what is still on disk of the acknowledged
     * records is visited too; nothing below the first segment's records. */
    seen all = {.order_ok = 1, .content_ok = 1};
    assert_int_equal(hopper_inspect(dir, "q", HOPPER_INSPECT_ACKED, collect, &all, &rep), 0);
    assert_true(all.order_ok && all.content_ok);
    assert_int_equal(all.last, N_RECORDS - 1);
    assert_true(all.n >= N_RECORDS - 120);
    assert_int_equal(all.n, N_RECORDS - all.first);

    /* A callback's negative value stops the walk and is returned. */
    seen stop = {0};
    assert_int_equal(hopper_inspect(dir, "q", 0, stop_at_ten, &stop, &rep), -1234);
    assert_int_equal(stop.n, 10);

    /* Verify-only (no callback) reads everything too. */
    assert_int_equal(hopper_inspect(dir, "q", 0, NULL, NULL, &rep), 0);
    assert_int_equal(rep.visited, 0);
    assert_true(rep.frames > 0);

    listing(dir, after, sizeof(after));
    assert_string_equal(before, after);
    hp_test_rmtree(dir);
}

static void
test_inspect_damage_and_lock(void **state)
{
    (void)state;
    char *dir = hp_test_tmpdir("inspect");
    assert_non_null(dir);
    make_queue(dir, 0);
    /* Damage the middle of the first segment and cut the last one short. */
    char path[4096];
    snprintf(path, sizeof(path), "%s/q", dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    char first[64] = "";
    char last[64] = "";
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n == 21 && strcmp(de->d_name + 16, ".hseg") == 0) {
            if (first[0] == '\0' || strcmp(de->d_name, first) < 0) {
                memcpy(first, de->d_name, n + 1); /* n == 21 < sizeof(first) */
            }
            if (strcmp(de->d_name, last) > 0) {
                memcpy(last, de->d_name, n + 1);
            }
        }
    }
    closedir(d);
    assert_true(first[0] != '\0' && strcmp(first, last) != 0);
    char f[4200];
    uint8_t *img;
    size_t n;
    snprintf(f, sizeof(f), "%s/%s", path, first);
    assert_int_equal(hp_test_read_file(f, &img, &n), 0);
    assert_true(n > 200);
    img[n / 2] ^= 0xff;
    assert_int_equal(hp_test_write_file(f, img, n), 0);
    free(img);
    snprintf(f, sizeof(f), "%s/%s", path, last);
    assert_int_equal(hp_test_read_file(f, &img, &n), 0);
    assert_int_equal(hp_test_write_file(f, img, n - 5), 0);
    free(img);

    hopper_inspect_report rep = {.struct_size = sizeof(rep)};
    seen s = {.order_ok = 1, .content_ok = 1};
    assert_int_equal(hopper_inspect(dir, "q", 0, collect, &s, &rep), 0);
    assert_true(s.order_ok && s.content_ok);
    assert_true(rep.corrupt_frames >= 1);
    assert_true(rep.corrupt_bytes > 0);
    assert_true(rep.torn_bytes > 0);
    assert_true(s.n > 0 && s.n < N_RECORDS);
    assert_int_equal(s.last < N_RECORDS, 1);

    /* While the queue is open, inspect is refused. */
    hopper_queue *q = NULL;
    assert_int_equal(hopper_open(dir, "q", NULL, &q), 0);
    assert_int_equal(hopper_inspect(dir, "q", 0, NULL, NULL, &rep), HOPPER_ELOCKED);
    assert_int_equal(hopper_close(q), 0);
    assert_int_equal(hopper_inspect(dir, "nope", 0, NULL, NULL, &rep), -ENOENT);
    hopper_inspect_report small = {.struct_size = 8};
    assert_int_equal(hopper_inspect(dir, "q", 0, NULL, NULL, &small), -EINVAL);
    /* A caller built with the first version of the report (it ended with
     * checkpoint_ok) gets those fields, and nothing is written past them. */
    union {
        hopper_inspect_report rep;
        uint8_t b[sizeof(hopper_inspect_report) + 16];
    } v1;
    hopper_inspect_report cur = {.struct_size = sizeof(cur)};
    assert_int_equal(hopper_inspect(dir, "q", 0, NULL, NULL, &cur), 0);
    memset(&v1, 0xAA, sizeof(v1));
    v1.rep.struct_size = offsetof(hopper_inspect_report, missing_records);
    assert_int_equal(hopper_inspect(dir, "q", 0, NULL, NULL, &v1.rep), 0);
    assert_int_equal(v1.rep.struct_size, offsetof(hopper_inspect_report, missing_records));
    assert_memory_equal(&v1.rep.segments, &cur.segments,
                        offsetof(hopper_inspect_report, missing_records) -
                            offsetof(hopper_inspect_report, segments));
    for (size_t i = offsetof(hopper_inspect_report, missing_records); i < sizeof(v1.b); i++) {
        assert_int_equal(v1.b[i], 0xAA);
    }
    hp_test_rmtree(dir);
}

/* Names of the queue's held by a FIFO, a directory or a symlink are not the
 * queue's: inspect neither blocks on them (a FIFO named like a segment, the
 * index or LOCK) nor fails (a directory), and they change nothing in the
 * report. */
static void
test_inspect_non_regular_files(void **state)
{
    (void)state;
    char *dir = hp_test_tmpdir("inspect");
    assert_non_null(dir);
    make_queue(dir, 120);
    hopper_inspect_report ref = {.struct_size = sizeof(ref)};
    seen s0 = {.order_ok = 1, .content_ok = 1};
    assert_int_equal(hopper_inspect(dir, "q", 0, collect, &s0, &ref), 0);
    char p[4200];
    snprintf(p, sizeof(p), "%s/q/00000000000000f0.hseg", dir);
    assert_int_equal(mkfifo(p, 0600), 0);
    snprintf(p, sizeof(p), "%s/q/00000000000000f1.hseg", dir);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof(p), "%s/q/00000000000000f2.hseg", dir);
    assert_int_equal(symlink("/dev/zero", p), 0);
    snprintf(p, sizeof(p), "%s/q/00000000000000f1.hidx", dir);
    assert_int_equal(mkfifo(p, 0600), 0);
    snprintf(p, sizeof(p), "%s/q/LOCK", dir);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(mkfifo(p, 0600), 0);
    alarm(60); /* a blocking open kills the test instead of hanging it */
    hopper_inspect_report rep = {.struct_size = sizeof(rep)};
    seen s = {.order_ok = 1, .content_ok = 1};
    int rc = hopper_inspect(dir, "q", 0, collect, &s, &rep);
    alarm(0);
    if (rc != 0) {
        fail_msg("hopper_inspect: %s", hopper_strerror(rc));
    }
    assert_true(s.order_ok && s.content_ok);
    assert_int_equal(s.n, s0.n);
    assert_int_equal(rep.segments, ref.segments);
    assert_int_equal(rep.segment_bytes, ref.segment_bytes);
    assert_int_equal(rep.unreadable_segments, 0);
    assert_int_equal(rep.records, ref.records);
    assert_int_equal(rep.corrupt_frames, 0);
    assert_int_equal(rep.torn_bytes, 0);
    assert_int_equal(rep.ack_next, 120);
    hp_test_rmtree(dir);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inspect_counts_and_order),
        cmocka_unit_test(test_inspect_damage_and_lock),
        cmocka_unit_test(test_inspect_non_regular_files),
    };
    return cmocka_run_group_tests_name("inspect", tests, NULL, NULL);
}
