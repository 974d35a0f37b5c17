/* SPDX-License-Identifier: MIT */
/* hopperctl verify / dump / salvage: integration tests of the real binary
 * on queues built with libhopper's public API and then damaged on purpose
 * (one frame's body byte flipped, so its CRC fails; docs/FORMAT.md §3).
 * Set HOPPERD_E2E_KEEP=1 to keep the temp directories. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hopper.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hd_e2e_util.h"

#define NREC 300
#define NACK 50
/* Record SPECIAL holds bytes that dump must escape. */
#define SPECIAL 60
static const char special[] = "a\tb\nc\\d\x01\xff";
static const char special_escaped[] = "a\\tb\\nc\\\\d\\x01\\xff";

struct env {
    char *dir;
    char qdir[600];
    uint64_t bad_first; /* seqs [bad_first, bad_first + bad_count) are damaged */
    uint64_t bad_count;
    uint64_t bad_bytes; /* size of the damaged frame */
};

static size_t
payload(uint64_t seq, char *buf, size_t cap)
{
    if (seq == SPECIAL) {
        memcpy(buf, special, sizeof(special) - 1);
        return sizeof(special) - 1;
    }
    return (size_t)snprintf(buf, cap, "rec-%08llu-%s", (unsigned long long)seq,
                            "payload-payload-payload-payload-payload-payload");
}

/* Run hopperctl with args; stdout into out (NUL-terminated), stderr into
 * err. Returns the exit status. */
static int
ctl(char *out, size_t outlen, char *err, size_t errlen, const char *const *args)
{
    char tmpl[] = "/tmp/hd-ctl-err-XXXXXX";
    int efd = mkstemp(tmpl);
    int pfd[2];
    assert_true(efd >= 0);
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pfd[1], 1);
        dup2(efd, 2);
        close(pfd[0]);
        alarm(60); /* a hanging hopperctl exits 128 + SIGALRM */
        execv(HOPPERCTL_BIN, (char *const *)args);
        _exit(127);
    }
    close(pfd[1]);
    size_t len = 0;
    ssize_t r;
    char scratch[4096];
    while ((r = read(pfd[0], len + 1 < outlen ? out + len : scratch,
                     len + 1 < outlen ? outlen - len - 1 : sizeof(scratch))) > 0) {
        if (len + 1 < outlen) {
            len += (size_t)r;
        }
    }
    out[len] = '\0';
    close(pfd[0]);
    int st;
    waitpid(pid, &st, 0);
    ssize_t e = pread(efd, err, errlen - 1, 0);
    err[e > 0 ? e : 0] = '\0';
    close(efd);
    unlink(tmpl);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Open queue `name` (DISK mode, segments of `segment_bytes`) with *o and
 * send it NREC records, one hopper_send each (DISK mode writes one frame per
 * send when nothing else is pending). */
static hopper_queue *
open_filled(const struct env *e, const char *name, uint64_t segment_bytes, hopper_opts *o)
{
    hopper_opts_init(o);
    o->durability = HOPPER_DURABILITY_DISK;
    o->fsync = HOPPER_FSYNC_NEVER;
    o->compression = 0;
    o->segment_bytes = segment_bytes;
    o->disk_bytes = 64u << 20;
    hopper_queue *q;
    assert_int_equal(hopper_open(e->dir, name, o, &q), 0);
    for (uint64_t i = 0; i < NREC; i++) {
        char buf[128];
        size_t n = payload(i, buf, sizeof(buf));
        assert_int_equal(hopper_send(q, buf, n, 0), 0);
    }
    return q;
}

/* Build queue q: NREC records, the first NACK acknowledged and checkpointed
 * by a clean close. */
static void
build_queue(struct env *e)
{
    hopper_opts o;
    hopper_queue *q = open_filled(e, "q", 64 * 1024, &o);
    hopper_record rec;
    for (int i = 0; i < NACK; i++) {
        assert_int_equal(hopper_recv(q, &rec, 0), 0);
    }
    assert_int_equal(hopper_ack(q, rec.seq), 0);
    assert_int_equal(hopper_close(q), 0);
}

static uint32_t
rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t
rd64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Flip one body byte of the frame holding seq 100 in the first segment. */
static void
damage_queue(struct env *e)
{
    DIR *d = opendir(e->qdir);
    assert_non_null(d);
    char first[300] = "";
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n == 21 && strcmp(de->d_name + 16, ".hseg") == 0 &&
            (first[0] == '\0' || strcmp(de->d_name, first) < 0)) {
            snprintf(first, sizeof(first), "%s", de->d_name);
        }
    }
    closedir(d);
    assert_true(first[0] != '\0');
    char path[1000];
    snprintf(path, sizeof(path), "%s/%s", e->qdir, first);
    size_t len;
    char *data = e2e_read_file(path, &len);
    assert_non_null(data);
    const uint8_t *p = (const uint8_t *)data;
    size_t off = HOPPER_SEGMENT_HEADER;
    long target = -1;
    while (off + HOPPER_FRAME_OVERHEAD <= len) {
        assert_int_equal(rd32(p + off), 0x52465048u);
        uint32_t stored = rd32(p + off + 4);
        uint64_t fs = rd64(p + off + 8);
        uint32_t count = rd32(p + off + 24);
        if (fs <= 100 && 100 < fs + count) {
            target = (long)off;
            e->bad_first = fs;
            e->bad_count = count;
            e->bad_bytes = HOPPER_FRAME_OVERHEAD + stored;
            break;
        }
        off += HOPPER_FRAME_OVERHEAD + stored;
    }
    free(data);
    assert_true(target >= 0);
    assert_true(e->bad_first >= NACK && e->bad_first + e->bad_count <= NREC);
    assert_true(SPECIAL < e->bad_first || SPECIAL >= e->bad_first + e->bad_count);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    off_t at = (off_t)target + HOPPER_FRAME_OVERHEAD + 6;
    assert_int_equal(pread(fd, &b, 1, at), 1);
    b ^= 0x5a;
    assert_int_equal(pwrite(fd, &b, 1, at), 1);
    close(fd);
}

static int
setup(void **state)
{
    struct env *e = calloc(1, sizeof(*e));
    e->dir = e2e_tmpdir();
    assert_non_null(e->dir);
    snprintf(e->qdir, sizeof(e->qdir), "%s/q", e->dir);
    build_queue(e);
    *state = e;
    return 0;
}

static int
teardown(void **state)
{
    struct env *e = *state;
    e2e_rmtree(e->dir);
    free(e->dir);
    free(e);
    return 0;
}

/* Value of a "key   value" line of verify's report, or -1. */
static long long
field(const char *out, const char *key)
{
    const char *p = strstr(out, key);
    if (p == NULL) {
        return -1;
    }
    p += strlen(key);
    while (*p == ' ') {
        p++;
    }
    return strtoll(p, NULL, 10);
}

static void
test_verify(void **state)
{
    struct env *e = *state;
    static char out[1 << 16], err[4096];
    const char *const args[] = {"hopperctl", "verify", e->qdir, NULL};
    /* Clean: exit 0 and exact counts. */
    int rc = ctl(out, sizeof(out), err, sizeof(err), args);
    if (rc != 0) {
        fail_msg("verify of a clean queue: %d\n%s%s", rc, out, err);
    }
    assert_int_equal(field(out, "\nrecords"), NREC);
    assert_int_equal(field(out, "corrupt frames"), 0);
    assert_int_equal(field(out, "torn bytes"), 0);
    assert_int_equal(field(out, "ack position"), NACK);
    assert_non_null(strstr(out, "checkpoint          ok"));
    assert_non_null(strstr(out, "result              OK"));
    long long frames = field(out, "\nframes");
    assert_true(frames >= 1);

    /* A trailing slash names the same queue. */
    char slash[700];
    snprintf(slash, sizeof(slash), "%s/", e->qdir);
    const char *const args_slash[] = {"hopperctl", "verify", slash, NULL};
    assert_int_equal(ctl(out, sizeof(out), err, sizeof(err), args_slash), 0);

    /* Damaged: exit 1, the frame and its records counted. */
    damage_queue(e);
    rc = ctl(out, sizeof(out), err, sizeof(err), args);
    if (rc != 1) {
        fail_msg("verify of a damaged queue: %d\n%s%s", rc, out, err);
    }
    assert_int_equal(field(out, "corrupt frames"), 1);
    assert_int_equal(field(out, "\nrecords"), NREC - (long long)e->bad_count);
    assert_int_equal(field(out, "\nframes"), frames - 1);
    const char *cb = strstr(out, "corrupt frames");
    assert_non_null(cb);
    cb = strchr(cb, '(');
    assert_non_null(cb);
    assert_int_equal(strtoll(cb + 1, NULL, 10), (long long)e->bad_bytes);
    assert_non_null(strstr(out, "result              DAMAGED"));

    /* Errors: exit 2 with a clear message. */
    hopper_queue *q;
    assert_int_equal(hopper_open(e->dir, "q", NULL, &q), 0);
    rc = ctl(out, sizeof(out), err, sizeof(err), args);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(err, "is hopperd running?"));
    assert_int_equal(hopper_close(q), 0);
    char missing[700];
    snprintf(missing, sizeof(missing), "%s/nope", e->dir);
    const char *const args_missing[] = {"hopperctl", "verify", missing, NULL};
    assert_int_equal(ctl(out, sizeof(out), err, sizeof(err), args_missing), 2);
    assert_non_null(strstr(err, "no such queue"));
}

/* Check dump lines "SEQ\tpayload" for seqs [from, NREC) minus the damaged
 * frame's, in order. */
static void
check_dump(const struct env *e, const char *out, uint64_t from, int damaged)
{
    const char *p = out;
    for (uint64_t seq = from; seq < NREC; seq++) {
        if (damaged && seq >= e->bad_first && seq < e->bad_first + e->bad_count) {
            continue;
        }
        char want[256];
        if (seq == SPECIAL) {
            snprintf(want, sizeof(want), "%llu\t%s\n", (unsigned long long)seq, special_escaped);
        } else {
            char buf[128];
            size_t n = payload(seq, buf, sizeof(buf));
            snprintf(want, sizeof(want), "%llu\t%.*s\n", (unsigned long long)seq, (int)n, buf);
        }
        if (strncmp(p, want, strlen(want)) != 0) {
            fail_msg("dump line for seq %llu: want '%s', got '%.60s'", (unsigned long long)seq,
                     want, p);
        }
        p += strlen(want);
    }
    assert_string_equal(p, "");
}

/* A FIFO, a directory and a symlink named like segments are not the
 * queue's: verify neither blocks nor fails on them and reports the queue as
 * it is (issue 10 item 4). */
static void
test_verify_non_regular(void **state)
{
    struct env *e = *state;
    static char out[1 << 16], err[4096];
    char p[800];
    snprintf(p, sizeof(p), "%s/00000000000000f0.hseg", e->qdir);
    assert_int_equal(mkfifo(p, 0600), 0);
    snprintf(p, sizeof(p), "%s/00000000000000f1.hseg", e->qdir);
    assert_int_equal(mkdir(p, 0700), 0);
    snprintf(p, sizeof(p), "%s/00000000000000f2.hseg", e->qdir);
    assert_int_equal(symlink("/dev/zero", p), 0);
    const char *const args[] = {"hopperctl", "verify", e->qdir, NULL};
    int rc = ctl(out, sizeof(out), err, sizeof(err), args);
    if (rc != 0) {
        fail_msg("verify with non-regular segment names: %d\n%s%s", rc, out, err);
    }
    assert_int_equal(field(out, "\nrecords"), NREC);
    assert_non_null(strstr(out, "result              OK"));
    const char *const dump[] = {"hopperctl", "dump", e->qdir, NULL};
    assert_int_equal(ctl(out, sizeof(out), err, sizeof(err), dump), 0);
    check_dump(e, out, NACK, 0);
}

/* Records in the frames of segment file `path` from offset `from` (0: the
 * first frame) to its end; *first_seq is the first one's seq and *first_end
 * where the first frame ends. */
static uint64_t
records_from(const char *path, size_t from, uint64_t *first_seq, size_t *first_end)
{
    size_t len;
    char *data = e2e_read_file(path, &len);
    assert_non_null(data);
    const uint8_t *p = (const uint8_t *)data;
    size_t off = from > 0 ? from : HOPPER_SEGMENT_HEADER;
    assert_true(off + HOPPER_FRAME_OVERHEAD <= len);
    *first_seq = rd64(p + off + 8);
    *first_end = off + HOPPER_FRAME_OVERHEAD + rd32(p + off + 4);
    uint64_t count = 0;
    for (; off + HOPPER_FRAME_OVERHEAD <= len; off += HOPPER_FRAME_OVERHEAD + rd32(p + off + 4)) {
        count += rd32(p + off + 24);
    }
    free(data);
    return count;
}

/* Records missing (issue 10 item 7): a queue of several segments, one
 * deleted and another truncated exactly at a frame boundary (no damage
 * otherwise): verify exits 1 and names the first gap; dump and salvage
 * exit 1 too. */
static void
test_verify_missing(void **state)
{
    struct env *e = *state;
    static char out[1 << 16], err[4096];
    hopper_opts o;
    hopper_queue *q = open_filled(e, "gaps", 4096, &o);
    assert_int_equal(hopper_close(q), 0);
    char qdir[700];
    snprintf(qdir, sizeof(qdir), "%s/gaps", e->dir);
    const char *const args[] = {"hopperctl", "verify", qdir, NULL};
    assert_int_equal(ctl(out, sizeof(out), err, sizeof(err), args), 0);
    assert_int_equal(field(out, "missing records"), 0);
    /* Segment 2: its first seq and its record count, from its frames. */
    char path[800];
    snprintf(path, sizeof(path), "%s/0000000000000002.hseg", qdir);
    uint64_t first;
    size_t cut;
    uint64_t count = records_from(path, 0, &first, &cut);
    assert_true(count > 0);
    assert_int_equal(unlink(path), 0);
    snprintf(path, sizeof(path), "%s/0000000000000002.hidx", qdir);
    (void)unlink(path);
    int rc = ctl(out, sizeof(out), err, sizeof(err), args);
    if (rc != 1) {
        fail_msg("verify with a segment deleted: %d\n%s%s", rc, out, err);
    }
    assert_int_equal(field(out, "missing records"), (long long)count);
    assert_int_equal(field(out, "corrupt frames"), 0);
    assert_int_equal(field(out, "torn bytes"), 0);
    assert_int_equal(field(out, "\nrecords"), NREC - (long long)count);
    char want[128];
    snprintf(want, sizeof(want), "(seqs %llu..%llu)\n", (unsigned long long)first,
             (unsigned long long)(first + count - 1));
    if (strstr(out, want) == NULL) {
        fail_msg("verify does not name the gap %s:\n%s", want, out);
    }
    assert_non_null(strstr(out, "result              DAMAGED"));
    /* Segment 3 cut after its first frame (a frame boundary): a second gap. */
    snprintf(path, sizeof(path), "%s/0000000000000003.hseg", qdir);
    uint64_t first3;
    (void)records_from(path, 0, &first3, &cut);
    size_t end2;
    uint64_t lost3 = records_from(path, cut, &first3, &end2);
    assert_true(lost3 > 0);
    assert_int_equal(truncate(path, (off_t)cut), 0);
    snprintf(path, sizeof(path), "%s/0000000000000003.hidx", qdir);
    (void)unlink(path);
    assert_int_equal(ctl(out, sizeof(out), err, sizeof(err), args), 1);
    assert_int_equal(field(out, "missing records"), (long long)(count + lost3));
    assert_non_null(strstr(out, ", the first of 2 gaps)"));
    assert_int_equal(field(out, "torn bytes"), 0);
    const char *const dump[] = {"hopperctl", "dump", qdir, NULL};
    assert_int_equal(ctl(out, sizeof(out), err, sizeof(err), dump), 1);
    /* The library agrees: the backlog is what is there to deliver. */
    assert_int_equal(hopper_open(e->dir, "gaps", &o, &q), 0);
    hopper_stats st = {.struct_size = sizeof(st)};
    assert_int_equal(hopper_stats_get(q, &st), 0);
    assert_int_equal(st.missing_records, count + lost3);
    assert_int_equal(st.backlog_records, NREC - count - lost3);
    assert_int_equal(hopper_close(q), 0);
}

static void
test_dump(void **state)
{
    struct env *e = *state;
    static char out[1 << 16], err[4096];
    const char *const args[] = {"hopperctl", "dump", e->qdir, NULL};
    assert_int_equal(ctl(out, sizeof(out), err, sizeof(err), args), 0);
    check_dump(e, out, NACK, 0);
    const char *const args_all[] = {"hopperctl", "dump", "--all", e->qdir, NULL};
    assert_int_equal(ctl(out, sizeof(out), err, sizeof(err), args_all), 0);
    check_dump(e, out, 0, 0);

    damage_queue(e);
    assert_int_equal(ctl(out, sizeof(out), err, sizeof(err), args), 1);
    check_dump(e, out, NACK, 1);
    /* Nothing was consumed or changed: dump again, same output. */
    static char again[1 << 16];
    assert_int_equal(ctl(again, sizeof(again), err, sizeof(err), args), 1);
    assert_string_equal(again, out);
}

static void
test_salvage_queue(void **state)
{
    struct env *e = *state;
    static char out[4096], err[4096];
    damage_queue(e);
    char dst[700];
    snprintf(dst, sizeof(dst), "%s/saved", e->dir);
    const char *const args[] = {"hopperctl", "salvage", e->qdir, dst, NULL};
    int rc = ctl(out, sizeof(out), err, sizeof(err), args);
    if (rc != 1) {
        fail_msg("salvage: %d\n%s%s", rc, out, err);
    }
    long long want = NREC - NACK - (long long)e->bad_count;
    char line[128];
    snprintf(line, sizeof(line), "copied %lld records", want);
    assert_non_null(strstr(out, line));
    assert_non_null(strstr(out, "skipped: 1 corrupt frames"));
    /* OUT exists now: a second salvage into it is refused. */
    assert_int_equal(ctl(out, sizeof(out), err, sizeof(err), args), 2);

    hopper_queue *q;
    assert_int_equal(hopper_open(e->dir, "saved", NULL, &q), 0);
    hopper_stats st = {.struct_size = sizeof(st)};
    assert_int_equal(hopper_stats_get(q, &st), 0);
    assert_int_equal(st.backlog_records, (uint64_t)want);
    for (uint64_t seq = NACK; seq < NREC; seq++) {
        if (seq >= e->bad_first && seq < e->bad_first + e->bad_count) {
            continue;
        }
        char buf[128];
        size_t n = payload(seq, buf, sizeof(buf));
        hopper_record rec;
        assert_int_equal(hopper_recv(q, &rec, 0), 0);
        assert_int_equal(rec.len, n);
        assert_memory_equal(rec.data, buf, n);
    }
    hopper_record rec;
    assert_int_equal(hopper_recv(q, &rec, 0), -EAGAIN);
    assert_int_equal(hopper_close(q), 0);
    /* The source queue was not changed. */
    static char vout[4096];
    const char *const vargs[] = {"hopperctl", "verify", e->qdir, NULL};
    assert_int_equal(ctl(vout, sizeof(vout), err, sizeof(err), vargs), 1);
    assert_int_equal(field(vout, "ack position"), NACK);
}

static void
test_salvage_file(void **state)
{
    struct env *e = *state;
    static char out[4096], err[4096];
    char dst[700];
    snprintf(dst, sizeof(dst), "%s/saved.log", e->dir);
    /* Clean queue, --all: exit 0, every record, one per line. */
    const char *const args[] = {"hopperctl", "salvage", "--all", e->qdir, dst, NULL};
    int rc = ctl(out, sizeof(out), err, sizeof(err), args);
    if (rc != 0) {
        fail_msg("salvage: %d\n%s%s", rc, out, err);
    }
    char line[128];
    snprintf(line, sizeof(line), "copied %d records (seq 0..%d)", NREC, NREC - 1);
    assert_non_null(strstr(out, line));
    size_t len;
    char *data = e2e_read_file(dst, &len);
    assert_non_null(data);
    size_t off = 0;
    for (uint64_t seq = 0; seq < NREC; seq++) {
        char buf[128];
        size_t n = payload(seq, buf, sizeof(buf));
        assert_true(off + n + 1 <= len);
        assert_memory_equal(data + off, buf, n); /* raw bytes, like a lines file sink */
        assert_int_equal(data[off + n], '\n');
        off += n + 1;
    }
    assert_int_equal(off, len);
    free(data);
    /* Damaged queue, appended to the same (existing) file. */
    damage_queue(e);
    const char *const args2[] = {"hopperctl", "salvage", e->qdir, dst, NULL};
    assert_int_equal(ctl(out, sizeof(out), err, sizeof(err), args2), 1);
    snprintf(line, sizeof(line), "copied %lld records", NREC - NACK - (long long)e->bad_count);
    assert_non_null(strstr(out, line));
    data = e2e_read_file(dst, &len);
    assert_non_null(data);
    size_t lines = 0;
    for (size_t i = 0; i < len; i++) {
        lines += data[i] == '\n';
    }
    /* The special record holds one '\n' of its own. */
    assert_int_equal(lines, (NREC + 1) + (NREC - NACK - e->bad_count + 1));
    free(data);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dump, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_non_regular, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_salvage_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_salvage_file, setup, teardown),
    };
    return cmocka_run_group_tests_name("hopperctl_offline", tests, NULL, NULL);
}
