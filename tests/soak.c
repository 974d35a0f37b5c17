/* SPDX-License-Identifier: MIT */
/* hopper_soak SECONDS [WORKDIR]: the bounded soak of issue 10, outside CI
 * (scripts/hopper-dev soak SECONDS builds and runs it). Until SECONDS have
 * passed it takes turns at three kinds of trial:
 *
 *  kill -9    a forked child opens a queue in one of the six durability
 *             rows (random budgets: memory 1 KiB..1 MiB, disk 256 KiB..
 *             64 MiB, segments 4 KiB..1 MiB, so it rotates and reclaims all
 *             the time), runs 1-4 producer threads and a consumer thread that
 *             acknowledges (and now and then hopper_sync()s), and is SIGKILLed
 *             after a random number of accepted records; the parent reopens,
 *             drains and checks every record (helpers/crashkit.h);
 *  power      simulated power-loss scenarios (helpers/power.h), each with
 *             some 30-60 crash points, rows in turn;
 *  enospc     as root only: a DISK-mode queue on a small tmpfs, filled to
 *             ENOSPC (sometimes beside a file that takes most of the space),
 *             drained, refilled, closed and reopened: nothing lost, never
 *             stuck. Skipped with a message otherwise.
 *
 * It prints what it ran and what it found: cycles, records checked, lost,
 * duplicated beyond at-least-once, reordered, corrupt (and, for ENOSPC, how
 * often the queue wedged), and exits 1 on any of them, 2 on a harness error. */
#include "crashkit.h"
#include "hopper.h"
#include "hp_test.h"
#include "payload.h"
#include "power.h"
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define QNAME "soak"
#define MAXP 4

static const char *const g_row_flag[HP_ROW_COUNT] = {"disk+always", "disk+interval", "disk+never",
                                                     "memory+never", "memory+always",
                                                     "memory+interval"};

typedef struct counts {
    uint64_t cycles;
    uint64_t memory_only; /* MEMORY mode: records lost with the memory (allowed) */
    uint64_t stranded;    /* ENOSPC: on disk, but the queue could not deliver them */
    uint64_t records;
    uint64_t lost;
    uint64_t duplicated;
    uint64_t reordered;
    uint64_t corrupt;
    uint64_t wedged;
    uint64_t errors;
} counts;

static counts g_kill[HP_ROW_COUNT];
static counts g_enospc;
static hp_power_totals g_power[HP_ROW_COUNT];
static char g_first[4096]; /* the first failure seen */

static void
note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char buf[4096];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    fprintf(stderr, "soak: %s\n", buf);
    if (g_first[0] == '\0') {
        snprintf(g_first, sizeof(g_first), "%s", buf);
    }
}

static uint64_t
draw(uint64_t *rng, uint64_t n)
{
    return n == 0 ? 0 : hp_test_rand(rng) % n;
}

static void
row_opts(hopper_opts *o, int row)
{
    o->durability = row <= HP_ROW_DISK_NEVER ? HOPPER_DURABILITY_DISK : HOPPER_DURABILITY_MEMORY;
    static const int fs[HP_ROW_COUNT] = {HOPPER_FSYNC_ALWAYS, HOPPER_FSYNC_INTERVAL,
                                         HOPPER_FSYNC_NEVER,  HOPPER_FSYNC_NEVER,
                                         HOPPER_FSYNC_ALWAYS, HOPPER_FSYNC_INTERVAL};
    o->fsync = fs[row];
}

/* ---- kill -9 cycles ------------------------------------------------------ */

/* Record numbers: cycle (14 bits) | producer (4 bits) | k (38 bits). */
#define NUM(c, p, k) (((uint64_t)((c) & 0x3fff) << 42) | ((uint64_t)(p) << 38) | (uint64_t)(k))
#define NUM_P(n) ((int)(((n) >> 38) & 0xf))
#define NUM_K(n) ((n) & ((1ull << 38) - 1))
#define NUM_C(n) ((n) >> 42)

typedef struct kchild {
    hopper_opts o;
    char dir[PATH_MAX];
    uint64_t cycle;
    int producers;
    uint64_t seed;
    hopper_queue *q;
    int wfd;
    _Atomic int stop;
} kchild;

typedef struct kprod {
    kchild *c;
    int p;
} kprod;

static void *
kill_producer(void *arg)
{
    kprod *kp = arg;
    kchild *c = kp->c;
    uint64_t rng = hp_test_mix(c->seed + (uint64_t)kp->p) | 1;
    size_t cap = 32 * 1024;
    uint8_t *buf = malloc(cap);
    if (buf == NULL) {
        _exit(3);
    }
    for (uint64_t k = 0;; k++) {
        uint64_t n = NUM(c->cycle, kp->p, k);
        size_t len = hp_test_payload_len_mixed(n);
        hp_test_payload_fill(n, buf, len);
        int rc;
        /* A record refused for room is not stored: retry the same number, so
         * a producer's accepted records are numbered without gaps. */
        while ((rc = hopper_send(c->q, buf, len, 200)) == HOPPER_EFULL) {
        }
        if (rc != 0) {
            _exit(3);
        }
        uint64_t m = HP_CK_MSG(HP_CK_ACCEPTED, n);
        hp_ck_put(c->wfd, &m, 1);
        if (draw(&rng, 64) == 0) {
            usleep((useconds_t)draw(&rng, 2000));
        }
    }
    return NULL;
}

static void *
kill_consumer(void *arg)
{
    kchild *c = arg;
    uint64_t rng = hp_test_mix(c->seed ^ 0xc0) | 1;
    uint64_t maxk[MAXP];
    int have[MAXP] = {0};
    uint64_t last_seq = 0;
    int got = 0;
    for (;;) {
        hopper_record r;
        int rc = hopper_recv(c->q, &r, 10);
        if (rc == 0) {
            uint64_t n;
            if (!hp_test_record_check(r.data, r.len, hp_test_payload_len_mixed, &n) ||
                NUM_P(n) >= MAXP) {
                _exit(6);
            }
            maxk[NUM_P(n)] = NUM_K(n);
            have[NUM_P(n)] = 1;
            last_seq = r.seq;
            got = 1;
        } else if (rc != -ETIMEDOUT && rc != -EAGAIN) {
            _exit(6);
        }
        if (got && draw(&rng, 24) == 0) {
            uint64_t m[MAXP];
            size_t k = 0;
            for (int p = 0; p < MAXP; p++) {
                if (have[p]) {
                    m[k++] = HP_CK_MSG(HP_CK_ACK_INTENT, NUM(c->cycle, p, maxk[p]));
                }
            }
            hp_ck_put(c->wfd, m, k);
            if (hopper_ack(c->q, last_seq) != 0) {
                _exit(7);
            }
            if (draw(&rng, 4) == 0) {
                if (hopper_sync(c->q) != 0) {
                    _exit(8);
                }
                for (size_t i = 0; i < k; i++) {
                    m[i] = HP_CK_MSG(HP_CK_ACK_SYNCED, HP_CK_VAL(m[i]));
                }
                hp_ck_put(c->wfd, m, k);
            }
        }
    }
    return NULL;
}

static void
kill_child(void *arg, int wfd)
{
    kchild *c = arg;
    c->wfd = wfd;
    if (hopper_open(c->dir, QNAME, &c->o, &c->q) != 0) {
        _exit(2);
    }
    pthread_t t[MAXP + 1];
    kprod kp[MAXP];
    for (int p = 0; p < c->producers; p++) {
        kp[p] = (kprod){.c = c, .p = p};
        if (pthread_create(&t[p], NULL, kill_producer, &kp[p]) != 0) {
            _exit(2);
        }
    }
    if (pthread_create(&t[MAXP], NULL, kill_consumer, c) != 0) {
        _exit(2);
    }
    for (;;) {
        pause(); /* until SIGKILL */
    }
}

typedef struct kreport {
    uint64_t cycle;
    int have_acc[MAXP];
    uint64_t acc[MAXP]; /* last accepted k */
    uint64_t n_acc;
    int have_intent[MAXP];
    uint64_t intent[MAXP];
    int have_synced[MAXP];
    uint64_t synced[MAXP];
} kreport;

static int
kill_absorb(void *ctx, uint64_t m)
{
    kreport *r = ctx;
    uint64_t n = HP_CK_VAL(m);
    int p = NUM_P(n);
    uint64_t k = NUM_K(n);
    if (p >= MAXP || NUM_C(n) != (r->cycle & 0x3fff)) {
        return -1;
    }
    switch (HP_CK_TYPE(m)) {
    case HP_CK_ACCEPTED:
        if (r->have_acc[p] && k != r->acc[p] + 1) {
            return -1; /* a producer reports in order */
        }
        r->have_acc[p] = 1;
        r->acc[p] = k;
        r->n_acc++;
        break;
    case HP_CK_ACK_INTENT:
        if (!r->have_intent[p] || k > r->intent[p]) {
            r->intent[p] = k;
        }
        r->have_intent[p] = 1;
        break;
    case HP_CK_ACK_SYNCED:
        if (!r->have_synced[p] || k > r->synced[p]) {
            r->synced[p] = k;
        }
        r->have_synced[p] = 1;
        break;
    default:
        return -1;
    }
    return 0;
}

/* The unacknowledged records a read-only walk finds on disk (before the
 * reopen): every one of them must be delivered. */
typedef struct ilist {
    hp_ids ids; /* record numbers */
    int bad;
} ilist;

static int
on_inspect(void *ctx, const hopper_record *r)
{
    ilist *l = ctx;
    uint64_t n;
    if (!hp_test_record_check(r->data, r->len, hp_test_payload_len_mixed, &n)) {
        l->bad++;
        return 0;
    }
    return hp_ids_push(&l->ids, n);
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void
sort_u64(uint64_t *v, size_t n)
{
    hp_ids a = {.v = v, .n = n, .cap = n};
    hp_ids_sort(&a);
}

/* How many of want[0..nw) are not in have[0..nh) (both get sorted). */
static uint64_t
missing(uint64_t *want, size_t nw, uint64_t *have, size_t nh, uint64_t *first)
{
    sort_u64(want, nw);
    sort_u64(have, nh);
    uint64_t miss = 0;
    size_t j = 0;
    for (size_t i = 0; i < nw; i++) {
        while (j < nh && have[j] < want[i]) {
            j++;
        }
        if (j == nh || have[j] != want[i]) {
            if (miss++ == 0) {
                *first = want[i];
            }
        }
    }
    return miss;
}

/* One kill -9 cycle on `dir` (reused for a few cycles of the same row). */
static void
kill_cycle(int row, const char *dir, uint64_t cycle, uint64_t *rng)
{
    counts *ct = &g_kill[row];
    kchild c;
    memset(&c, 0, sizeof(c));
    hopper_opts_init(&c.o);
    row_opts(&c.o, row);
    c.o.memory_bytes = 1024u << draw(rng, 11);
    c.o.disk_bytes = (256u * 1024u) << draw(rng, 9);
    c.o.segment_bytes = 4096u << draw(rng, 9);
    c.o.compression = (int)draw(rng, 3);
    c.o.checkpoint_interval_ms = (uint32_t)draw(rng, 50);
    c.o.fsync_interval_ms = 5 + (uint32_t)draw(rng, 100);
    snprintf(c.dir, sizeof(c.dir), "%s", dir);
    c.cycle = cycle;
    c.producers = 1 + (int)draw(rng, MAXP);
    c.seed = hp_test_rand(rng);
    uint64_t kill_after = 50 + draw(rng, 3000);
    kreport rep;
    memset(&rep, 0, sizeof(rep));
    rep.cycle = cycle;
    char err[512];
    ct->cycles++;
    if (hp_ck_run(kill_child, &c, kill_after, 60000, kill_absorb, &rep, err, sizeof(err)) != 0) {
        ct->errors++;
        note("kill -9 %s cycle %" PRIu64 ": %s", g_row_flag[row], cycle, err);
        return;
    }
    ilist on_disk = {0};
    hopper_inspect_report irep = {.struct_size = sizeof(irep)};
    int irc = hopper_inspect(dir, QNAME, 0, on_inspect, &on_disk, &irep);
    if (irc != 0 || on_disk.bad) {
        ct->errors++;
        note("kill -9 %s cycle %" PRIu64 ": inspect: %s, %d bad records", g_row_flag[row], cycle,
             hopper_err_name(irc), on_disk.bad);
    }
    hp_ck_rec *v;
    size_t n;
    hopper_stats st;
    if (hp_ck_drain(dir, QNAME, &c.o, hp_test_payload_len_mixed, 1, &v, &n, &st, err,
                    sizeof(err)) != 0) {
        free(on_disk.ids.v);
        if (strstr(err, "bad content") != NULL) {
            ct->corrupt++;
        } else if (strstr(err, "seq") == err) {
            ct->reordered++;
        } else {
            ct->errors++;
        }
        note("kill -9 %s cycle %" PRIu64 ": %s", g_row_flag[row], cycle, err);
        return;
    }
    int disk = row <= HP_ROW_DISK_NEVER;
    int have_first[MAXP] = {0};
    uint64_t first[MAXP];
    uint64_t last[MAXP];
    ct->records += n + rep.n_acc;
    for (size_t i = 0; i < n; i++) {
        uint64_t num = v[i].n;
        int p = NUM_P(num);
        uint64_t k = NUM_K(num);
        if (NUM_C(num) != (cycle & 0x3fff) || p >= c.producers) {
            ct->corrupt++;
            note("kill -9 %s cycle %" PRIu64 ": record %" PRIx64 " was never sent in this cycle",
                 g_row_flag[row], cycle, num);
            continue;
        }
        if (!have_first[p]) {
            have_first[p] = 1;
            first[p] = last[p] = k;
            continue;
        }
        if (k <= last[p]) {
            if (k == last[p]) {
                ct->duplicated++;
            } else {
                ct->reordered++;
            }
            note("kill -9 %s cycle %" PRIu64 ": producer %d: #%" PRIu64 " after #%" PRIu64,
                 g_row_flag[row], cycle, p, k, last[p]);
        } else if (k != last[p] + 1 && !disk) {
            /* MEMORY mode: M (memory) precedes D (disk); a record taken into
             * M between two that went to disk dies with the process. */
            ct->memory_only += k - last[p] - 1;
        } else if (k != last[p] + 1) {
            ct->lost += k - last[p] - 1;
            note("kill -9 %s cycle %" PRIu64 ": producer %d: #%" PRIu64 "..#%" PRIu64
                 " missing (the records around them came back)",
                 g_row_flag[row], cycle, p, last[p] + 1, k - 1);
        }
        last[p] = k > last[p] ? k : last[p];
    }
    for (int p = 0; p < c.producers; p++) {
        if (!rep.have_acc[p]) {
            continue;
        }
        uint64_t lo_allowed = rep.have_synced[p] ? rep.synced[p] + 1 : 0;
        uint64_t lo_required = rep.have_intent[p] ? rep.intent[p] + 1 : 0;
        if (have_first[p] && first[p] < lo_allowed) {
            ct->duplicated++;
            note("kill -9 %s cycle %" PRIu64 ": producer %d: #%" PRIu64
                 " came back, acknowledged and synced up to #%" PRIu64,
                 g_row_flag[row], cycle, p, first[p], rep.synced[p]);
        }
        if (!disk) {
            if (have_first[p] && last[p] < rep.acc[p]) {
                ct->memory_only += rep.acc[p] - last[p];
            }
            continue; /* MEMORY mode: a kill may take what only memory held */
        }
        if (lo_required > rep.acc[p]) {
            continue; /* everything it sent was acknowledged */
        }
        if (!have_first[p]) {
            ct->lost += rep.acc[p] - lo_required + 1;
            note("kill -9 %s cycle %" PRIu64 ": producer %d: nothing came back; #%" PRIu64
                 "..#%" PRIu64 " were accepted and never acknowledged",
                 g_row_flag[row], cycle, p, lo_required, rep.acc[p]);
            continue;
        }
        if (first[p] > lo_required) {
            ct->lost += first[p] - lo_required;
            note("kill -9 %s cycle %" PRIu64 ": producer %d: first back #%" PRIu64
                 ", #%" PRIu64 " was never acknowledged",
                 g_row_flag[row], cycle, p, first[p], lo_required);
        }
        if (last[p] < rep.acc[p]) {
            ct->lost += rep.acc[p] - last[p];
            note("kill -9 %s cycle %" PRIu64 ": producer %d: last back #%" PRIu64
                 ", #%" PRIu64 " was accepted",
                 g_row_flag[row], cycle, p, last[p], rep.acc[p]);
        }
    }
    /* Everything that reached a segment file (and was not acknowledged) is
     * delivered: the reopen agrees with a read-only walk of the files. */
    uint64_t *got = malloc((n + 1) * sizeof(*got));
    if (got != NULL) {
        for (size_t i = 0; i < n; i++) {
            got[i] = v[i].n;
        }
        uint64_t first_miss = 0;
        uint64_t miss = missing(on_disk.ids.v, on_disk.ids.n, got, n, &first_miss);
        if (miss > 0) {
            ct->lost += miss;
            note("kill -9 %s cycle %" PRIu64 ": %" PRIu64 " records on disk (first %" PRIx64
                 ") not delivered by the reopen",
                 g_row_flag[row], cycle, miss, first_miss);
        }
        free(got);
    }
    free(on_disk.ids.v);
    free(v);
}

/* ---- ENOSPC on a small tmpfs ------------------------------------------- */

static int
fill_file(const char *path, size_t leave)
{
    /* Take all the space but `leave` bytes (roughly: tmpfs counts pages). */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        return -errno;
    }
    static uint8_t chunk[64 * 1024];
    memset(chunk, 0x5a, sizeof(chunk));
    for (;;) {
        ssize_t w = write(fd, chunk, sizeof(chunk));
        if (w <= 0) {
            break;
        }
    }
    off_t size = lseek(fd, 0, SEEK_END);
    int rc = 0;
    if (size > (off_t)leave && ftruncate(fd, size - (off_t)leave) < 0) {
        rc = -errno;
    }
    close(fd);
    return rc;
}

/* Drain everything, acknowledging as it goes; numbers appended to *got.
 * Returns 0, or the error of the ack/recv that failed. */
static int
enospc_drain(hopper_queue *q, uint64_t *got, size_t *ngot, size_t cap, counts *ct)
{
    for (;;) {
        hopper_record r;
        int rc = hopper_recv(q, &r, 0);
        if (rc == -EAGAIN) {
            return 0;
        }
        if (rc != 0) {
            return rc;
        }
        uint64_t n;
        if (!hp_test_record_check(r.data, r.len, hp_test_payload_len_mixed, &n)) {
            ct->corrupt++;
            note("enospc: a record with wrong bytes (seq %" PRIu64 ")", r.seq);
            continue;
        }
        if (*ngot < cap) {
            got[(*ngot)++] = n;
        }
        rc = hopper_ack(q, r.seq);
        if (rc != 0) {
            return rc;
        }
    }
}

static void
enospc_cycle(const char *work, uint64_t cycle, uint64_t *rng)
{
    counts *ct = &g_enospc;
    char mnt[PATH_MAX];
    snprintf(mnt, sizeof(mnt), "%s/enospc", work);
    mkdir(mnt, 0700);
    size_t fs_size = (size_t)(4 + draw(rng, 13)) << 20;
    char opt[64];
    snprintf(opt, sizeof(opt), "size=%zu", fs_size);
    if (mount("tmpfs", mnt, "tmpfs", 0, opt) != 0) {
        ct->errors++;
        note("enospc: mount tmpfs on %s: %s", mnt, strerror(errno));
        rmdir(mnt);
        return;
    }
    ct->cycles++;
    hopper_opts o;
    hopper_opts_init(&o);
    o.durability = HOPPER_DURABILITY_DISK;
    o.fsync = (int)draw(rng, 3);
    o.fsync_interval_ms = 10;
    o.disk_bytes = 1ull << 30; /* the file system fills first */
    o.segment_bytes = (64u * 1024u) << draw(rng, 3);
    o.memory_bytes = 64u * 1024u;
    o.checkpoint_interval_ms = (uint32_t)draw(rng, 20);
    if (draw(rng, 2)) {
        char hog[PATH_MAX + 8];
        snprintf(hog, sizeof(hog), "%s/hog", mnt);
        (void)fill_file(hog, (size_t)(256u * 1024u) << draw(rng, 3));
    }
    size_t cap = 1u << 20;
    uint64_t *sent = malloc(cap * sizeof(*sent));
    uint64_t *got = malloc(cap * sizeof(*got));
    size_t nsent = 0;
    size_t ngot = 0;
    hopper_queue *q = NULL;
    int rc = hopper_open(mnt, QNAME, &o, &q);
    if (sent == NULL || got == NULL || rc != 0) {
        ct->errors++;
        note("enospc cycle %" PRIu64 ": open: %s", cycle, hopper_err_name(rc));
        goto out;
    }
    uint8_t *buf = malloc(32 * 1024);
    for (int round = 0; round < 2 && buf != NULL; round++) {
        /* Fill until the file system says no, a few times over. */
        int fulls = 0;
        for (uint64_t k = 0; fulls < 5 && nsent < cap; k++) {
            uint64_t n = NUM(cycle, round, k);
            size_t len = hp_test_payload_len_mixed(n);
            hp_test_payload_fill(n, buf, len);
            rc = hopper_send(q, buf, len, 0);
            if (rc == 0) {
                sent[nsent++] = n;
            } else if (rc == HOPPER_EFULL) {
                fulls++;
                usleep(100000);
            } else {
                break;
            }
        }
        if (rc != 0 && rc != HOPPER_EFULL) {
            ct->wedged++;
            note("enospc cycle %" PRIu64 ": send on a full file system: %s", cycle,
                 hopper_err_name(rc));
        }
        /* Draining must work and free the space. */
        rc = enospc_drain(q, got, &ngot, cap, ct);
        if (rc != 0) {
            ct->wedged++;
            note("enospc cycle %" PRIu64 " (fsync %d): draining a full queue: %s", cycle, o.fsync,
                 hopper_err_name(rc));
            (void)hopper_close(q);
            q = NULL;
            rc = hopper_open(mnt, QNAME, &o, &q);
            if (rc != 0) {
                note("enospc cycle %" PRIu64 ": reopen: %s", cycle, hopper_err_name(rc));
                break;
            }
            rc = enospc_drain(q, got, &ngot, cap, ct);
            if (rc != 0) {
                note("enospc cycle %" PRIu64 ": still stuck after a reopen: %s", cycle,
                     hopper_err_name(rc));
                break;
            }
        }
    }
    free(buf);
    if (q != NULL) {
        rc = hopper_close(q);
        q = NULL;
        if (rc != 0) {
            ct->wedged++;
            note("enospc cycle %" PRIu64 ": close: %s", cycle, hopper_err_name(rc));
        }
    }
    /* Whatever was not drained is still there after a reopen. */
    rc = hopper_open(mnt, QNAME, &o, &q);
    if (rc == 0) {
        (void)enospc_drain(q, got, &ngot, cap, ct);
        (void)hopper_close(q);
        q = NULL;
    } else {
        ct->errors++;
        note("enospc cycle %" PRIu64 ": final reopen: %s", cycle, hopper_err_name(rc));
    }
    /* Every accepted record came back (at-least-once allows repeats across
     * the reopens). One the queue could not deliver but that is still in its
     * files (a read-only walk finds it) is stranded, not lost. */
    ct->records += nsent + ngot;
    {
        ilist on_disk = {0};
        hopper_inspect_report irep = {.struct_size = sizeof(irep)};
        (void)hopper_inspect(mnt, QNAME, 0, on_inspect, &on_disk, &irep);
        uint64_t first = 0;
        uint64_t *want = malloc((nsent + 1) * sizeof(*want));
        if (want != NULL) {
            memcpy(want, sent, nsent * sizeof(*want));
            sort_u64(want, nsent);
            sort_u64(on_disk.ids.v, on_disk.ids.n);
            sort_u64(got, ngot);
            uint64_t lost = 0;
            uint64_t stranded = 0;
            for (size_t i = 0; i < nsent; i++) {
                if (ngot > 0 && bsearch(&want[i], got, ngot, sizeof(*got), cmp_u64) != NULL) {
                    continue;
                }
                const hp_ids *d = &on_disk.ids;
                if (d->n > 0 && bsearch(&want[i], d->v, d->n, sizeof(*d->v), cmp_u64) != NULL) {
                    stranded++;
                } else if (lost++ == 0) {
                    first = want[i];
                }
            }
            ct->stranded += stranded;
            ct->lost += lost;
            if (lost > 0) {
                note("enospc cycle %" PRIu64 ": %" PRIu64 " accepted records gone (first %" PRIx64
                     ")",
                     cycle, lost, first);
            }
            free(want);
        }
        free(on_disk.ids.v);
    }
out:
    if (q != NULL) {
        (void)hopper_close(q);
    }
    free(sent);
    free(got);
    if (umount(mnt) != 0) {
        note("enospc: umount %s: %s", mnt, strerror(errno));
        ct->errors++;
    }
    rmdir(mnt);
}

/* ---- main ---------------------------------------------------------------- */

static void
print_counts(const char *what, const counts *c)
{
    printf("  %-16s cycles %6" PRIu64 "  records checked %9" PRIu64 "  lost %" PRIu64
           "  duplicated %" PRIu64 "  reordered %" PRIu64 "  corrupt %" PRIu64,
           what, c->cycles, c->records, c->lost, c->duplicated, c->reordered, c->corrupt);
    if (c->memory_only) {
        printf("  (memory-only records lost with the process, allowed: %" PRIu64 ")",
               c->memory_only);
    }
    if (c->wedged) {
        printf("  wedged %" PRIu64 " (records stranded on disk %" PRIu64 ")", c->wedged,
               c->stranded);
    }
    if (c->errors) {
        printf("  harness errors %" PRIu64, c->errors);
    }
    printf("\n");
}

int
main(int argc, char **argv)
{
    if (argc < 2 || atoi(argv[1]) <= 0) {
        fprintf(stderr, "usage: %s SECONDS [WORKDIR]\n", argv[0]);
        return 2;
    }
    uint64_t seconds = (uint64_t)atoi(argv[1]);
    char *work = NULL;
    if (argc > 2) {
        work = strdup(argv[2]);
        mkdir(work, 0700);
    } else {
        work = hp_power_workdir();
    }
    if (work == NULL) {
        fprintf(stderr, "soak: no work directory\n");
        return 2;
    }
    uint64_t seed = hp_test_seed("hopper_soak");
    uint64_t rng = seed | 1;
    int root = geteuid() == 0;
    if (!root) {
        printf("soak: ENOSPC trials skipped: mounting a small tmpfs needs root\n");
    }
    uint64_t t0 = hp_test_now_ms();
    uint64_t end = t0 + seconds * 1000u;
    uint64_t spent[3] = {0, 0, 0}; /* kill, power, enospc */
    const uint64_t share[3] = {45, 45, root ? 10 : 0};
    uint64_t cycle = 0;
    int kill_row = 0;
    int power_row = 0;
    char kdir[PATH_MAX];
    kdir[0] = '\0';
    int kdir_uses = 0;
    uint64_t next_progress = t0 + 60000;
    while (hp_test_now_ms() < end) {
        /* The kind furthest behind its share of the time goes next. */
        int kind = 0;
        for (int k = 1; k < 3; k++) {
            if (share[k] > 0 && spent[k] * share[kind] < spent[kind] * share[k]) {
                kind = k;
            }
        }
        uint64_t s0 = hp_test_now_ms();
        cycle++;
        if (kind == 0) {
            if (kdir_uses == 0) {
                if (kdir[0] != '\0') {
                    hp_test_rmtree(strdup(kdir));
                }
                snprintf(kdir, sizeof(kdir), "%s/kill%" PRIu64, work, cycle);
                mkdir(kdir, 0700);
                kdir_uses = 1 + (int)draw(&rng, 12);
                kill_row = (kill_row + 1) % HP_ROW_COUNT;
            }
            kdir_uses--;
            kill_cycle(kill_row, kdir, cycle, &rng);
        } else if (kind == 1) {
            uint64_t ps = hp_power_seed_for(power_row, &rng);
            char err[4096];
            int rc = hp_power_scenario(ps, work, SIZE_MAX, &g_power[power_row], err, sizeof(err));
            if (rc != 0) {
                note("power loss: %s", rc < 0 ? "harness error" : err);
            }
            power_row = (power_row + 1) % HP_ROW_COUNT;
        } else {
            enospc_cycle(work, cycle, &rng);
        }
        spent[kind] += hp_test_now_ms() - s0 + 1;
        if (hp_test_now_ms() >= next_progress) {
            next_progress += 60000;
            uint64_t kc = 0;
            uint64_t pc = 0;
            for (int r = 0; r < HP_ROW_COUNT; r++) {
                kc += g_kill[r].cycles;
                pc += g_power[r].cuts;
            }
            fprintf(stderr, "soak: %" PRIu64 " s: %" PRIu64 " kill -9 cycles, %" PRIu64
                            " power-loss crash points, %" PRIu64 " ENOSPC cycles\n",
                    (hp_test_now_ms() - t0) / 1000, kc, pc, g_enospc.cycles);
        }
    }
    if (kdir[0] != '\0') {
        hp_test_rmtree(strdup(kdir));
    }
    uint64_t elapsed = (hp_test_now_ms() - t0) / 1000;
    printf("soak: %" PRIu64 " s (seed %" PRIu64 "): kill -9 %" PRIu64 " s, power loss %" PRIu64
           " s, ENOSPC %" PRIu64 " s\n",
           elapsed, seed, spent[0] / 1000, spent[1] / 1000, spent[2] / 1000);
    counts kt = {0};
    printf("kill -9 (forked child: 1-4 producer threads + an acking consumer, SIGKILL):\n");
    for (int r = 0; r < HP_ROW_COUNT; r++) {
        print_counts(g_row_flag[r], &g_kill[r]);
        kt.cycles += g_kill[r].cycles;
        kt.records += g_kill[r].records;
        kt.lost += g_kill[r].lost;
        kt.duplicated += g_kill[r].duplicated;
        kt.reordered += g_kill[r].reordered;
        kt.corrupt += g_kill[r].corrupt;
        kt.errors += g_kill[r].errors;
        kt.memory_only += g_kill[r].memory_only;
    }
    print_counts("all", &kt);
    printf("power loss (simulated, page-cache model):\n");
    hp_power_totals pt = {0};
    for (int r = 0; r < HP_ROW_COUNT; r++) {
        const hp_power_totals *t = &g_power[r];
        printf("  %-16s scenarios %5" PRIu64 "  crash points %7" PRIu64 " (%" PRIu64
               " after a crash in recovery)  records checked %9" PRIu64 "  lost %" PRIu64
               "  duplicated %" PRIu64 "  reordered %" PRIu64 "  corrupt %" PRIu64
               "  resurrected %" PRIu64 "  other %" PRIu64,
               g_row_flag[r], t->scenarios, t->cuts, t->cuts_gen2, t->records, t->lost,
               t->duplicated, t->reordered, t->corrupt, t->resurrected, t->other);
        if (t->late_syncs > 0) {
            printf("  late interval fsyncs %" PRIu64, t->late_syncs);
        }
        if (r == HP_ROW_DISK_INTERVAL) {
            if (t->worst_window_ms > 0) {
                printf("  oldest record lost: %" PRIu64 " ms before the cut (T = %" PRIu64
                       " ms)",
                       t->worst_window_ms, t->worst_window_t);
            }
            if (t->worst_lag_t > 0) {
                printf("  slowest covering fsync began %" PRIu64
                       " ms after acceptance (T = %" PRIu64 " ms, scheduling delay then %" PRIu64
                       " ms)",
                       t->worst_lag_ms, t->worst_lag_t, t->worst_lag_oversleep_ms);
            }
        }
        printf("\n");
        pt.scenarios += t->scenarios;
        pt.cuts += t->cuts;
        pt.records += t->records;
        pt.lost += t->lost;
        pt.duplicated += t->duplicated;
        pt.reordered += t->reordered;
        pt.corrupt += t->corrupt;
        pt.resurrected += t->resurrected;
        pt.other += t->other;
        pt.late_syncs += t->late_syncs;
        pt.failed_scenarios += t->failed_scenarios;
    }
    printf("  %-16s scenarios %5" PRIu64 "  crash points %7" PRIu64 "  records checked %9" PRIu64
           "  lost %" PRIu64 "  duplicated %" PRIu64 "  reordered %" PRIu64 "  corrupt %" PRIu64
           "  resurrected %" PRIu64 "  other %" PRIu64 "  late interval fsyncs %" PRIu64 "\n",
           "all", pt.scenarios, pt.cuts, pt.records, pt.lost, pt.duplicated, pt.reordered,
           pt.corrupt, pt.resurrected, pt.other, pt.late_syncs);
    if (root) {
        printf("ENOSPC (DISK mode on a 4-16 MiB tmpfs, filled, drained, refilled, reopened):\n");
        print_counts("disk", &g_enospc);
    }
    hp_test_rmtree(work);
    uint64_t bad = kt.lost + kt.duplicated + kt.reordered + kt.corrupt + pt.lost +
                   pt.duplicated + pt.reordered + pt.corrupt + pt.resurrected + pt.other +
                   pt.late_syncs +
                   pt.failed_scenarios + g_enospc.lost + g_enospc.duplicated +
                   g_enospc.reordered + g_enospc.corrupt + g_enospc.wedged;
    uint64_t errors = kt.errors + g_enospc.errors;
    if (bad > 0 || errors > 0) {
        printf("soak: FAILED; first: %s\n", g_first);
        return bad > 0 ? 1 : 2;
    }
    printf("soak: passed\n");
    return 0;
}
