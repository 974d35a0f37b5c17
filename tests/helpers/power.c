/* SPDX-License-Identifier: MIT */
/* The simulated power-loss test: workload, crash points and the oracle (see
 * power.h; the page-cache model is powerfs.h).
 *
 * What is checked at every crash point (the README "Guarantees" table, and
 * the promises next to it), with "the cut" the crash point and a record
 * "acknowledged" when its seq is below the ack position in the crash image's
 * checkpoint:
 *   every row   open succeeds; delivered seqs strictly increase; each
 *               producer's records arrive in the order sent; no record twice;
 *               every record byte-exact and one that was sent before the cut;
 *               none refused with HOPPER_EFULL before the cut; none below the
 *               durable checkpoint (acknowledged, then hopper_sync() or any
 *               checkpoint write that was fsynced, renamed and whose
 *               directory was fsynced before the cut); a hopper_sync() that
 *               returned 0 before the cut left a durable checkpoint at least
 *               that far; every record in a frame that was durable (written
 *               and fsynced into a segment whose name was durable) and not
 *               acknowledged is delivered; after a hopper_close() that
 *               returned 0, every record accepted before it and not
 *               acknowledged is delivered; damage found by hopper_inspect()
 *               in the image is counted in the stats after open.
 *   DISK + always    every record whose send returned 0 before the cut and
 *                    not acknowledged is delivered.
 *   DISK + interval  every record written before the start of an fsync of a
 *                    segment that completed before the cut is delivered; no
 *                    record accepted more than T + slack before the cut is
 *                    lost (slack: T + 100 ms, the scheduling delay measured
 *                    and the longest fsync seen, as the loaded test
 *                    machine's scheduling is not the library's to promise);
 *                    and, per scenario, an fsync of a segment begins within
 *                    T + slack of every acceptance (check_interval).
 *   MEMORY           only what every row requires (records held in memory,
 *                    and written but not fsynced, may be lost).
 * A second generation (some crash points): the crash image is reopened under
 * the model, recovered and used a little, and the power is cut again; the
 * records the first reopen delivered must survive that too. */
#include "power.h"

#include "hopper.h"
#include "hp_test.h"
#include "payload.h"
#include "powerfs.h"
#include "record.h"
#include "segment.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define QN "pq"
#define NONE SIZE_MAX
/* fsync=interval T: a record must be covered by an fsync that begins within
 * T + INTERVAL_SLACK_NS(T) = 2T + 100 ms of its acceptance (plus the
 * scheduling delay the scenario measured). The library's own bound is T plus
 * the time it takes to wake its thread; the slack keeps a loaded two-core
 * machine (other builds, sanitizers) that starves a thread for tens of ms
 * from failing the test, and still catches a policy that syncs only at
 * rotation and close. test_power_fix_interval_deadline checks T itself; the
 * soak reports the worst lag it saw. */
#define INTERVAL_SLACK_NS(T) ((T) + 100000000u)

/* Markers in the log (hp_pfs_mark). */
enum {
    MK_SEND_OK = 1, /* a = record number: send returned 0 */
    MK_REJECT,      /* a = record number: send returned HOPPER_EFULL */
    MK_RECV,        /* a = record number, b = seq */
    MK_ACK,         /* a = every seq below is acknowledged */
    MK_SYNC_OK,     /* a = ack position hopper_sync() made durable */
    MK_CLOSE_OK,    /* hopper_close() returned 0 */
};

static const char *const row_names[HP_ROW_COUNT] = {
    "disk+always", "disk+interval", "disk+never", "memory+never", "memory+always",
    "memory+interval"};

const char *
hp_power_row_name(int row)
{
    return row >= 0 && row < HP_ROW_COUNT ? row_names[row] : "?";
}

uint64_t
hp_power_seed_for(int row, uint64_t *rng)
{
    uint64_t s = hp_test_rand(rng) >> 8;
    return s - s % HP_ROW_COUNT + (uint64_t)row;
}

static uint64_t
draw(uint64_t *rng, uint64_t n)
{
    return n == 0 ? 0 : hp_test_rand(rng) % n;
}

static uint64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- the record table ---------------------------------------------------- */

/* What happened to record number `id` in one generation's log. */
typedef struct prec {
    int producer;
    size_t try_idx; /* log length when its send began; NONE = never sent */
    size_t ok_idx;  /* MK_SEND_OK entry, or NONE */
    size_t rej_idx; /* MK_REJECT entry, or NONE */
    size_t write_idx; /* the first WRITE entry holding its frame, or NONE */
    uint64_t ok_ns;
    int64_t seq;    /* -1 unknown */
    int pre;        /* second generation: delivered from the base image */
} prec;

typedef struct gen {
    uint64_t seed;
    int row;
    int gen; /* 1 or 2 */
    hopper_opts o;
    hp_pfs *pfs;
    char parent[PATH_MAX]; /* where the recorded queue lives */
    prec *rec;             /* indexed by record number */
    size_t cap;
    _Atomic uint64_t next_id;
    int producer_base;
    _Atomic int enospc;     /* inject ENOSPC into segment writes now */
    uint64_t enospc_rng;
    char err[1024];
    _Atomic int failed;
    _Atomic uint64_t oversleep_ns; /* the longest a sleeper overslept: scheduling delay */
    _Atomic int ticking;           /* the ticker runs */
} gen;

static void
gen_fail(gen *g, const char *fmt, ...)
{
    if (atomic_exchange(&g->failed, 1)) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->err, sizeof(g->err), fmt, ap);
    va_end(ap);
}

static gen *g_cur; /* the generation whose sends may see ENOSPC */

/* ENOSPC injection (single-threaded workloads only): while a send runs with
 * the window open, one segment write in three fails with ENOSPC. */
static int
inject(const char *op)
{
    gen *g = g_cur;
    if (g != NULL && atomic_load(&g->enospc) && strcmp(op, "write") == 0 &&
        draw(&g->enospc_rng, 3) == 0) {
        return -ENOSPC;
    }
    return 0;
}

/* ---- workload ------------------------------------------------------------ */

/* Sleep, and remember how much longer than asked it took: the machine's
 * scheduling delay, which the interval checks allow for. */
static void
nap(gen *g, uint32_t ms)
{
    uint64_t t0 = mono_ns();
    usleep((useconds_t)ms * 1000u);
    uint64_t dt = mono_ns() - t0;
    uint64_t over = dt > (uint64_t)ms * 1000000u ? dt - (uint64_t)ms * 1000000u : 0;
    uint64_t cur = atomic_load(&g->oversleep_ns);
    while (over > cur && !atomic_compare_exchange_weak(&g->oversleep_ns, &cur, over)) {
    }
}

/* For the whole recording a thread sleeps 2 ms at a time and notes how late
 * it wakes: a sleeper woken by a timer, like the library's interval thread,
 * so its worst lateness is the scheduling delay that thread may have seen. */
static void *
ticker_main(void *arg)
{
    gen *g = arg;
    while (atomic_load(&g->ticking)) {
        nap(g, 2);
    }
    return NULL;
}

static int
send_records(gen *g, hopper_queue *q, int producer, int n, int timeout_ms, int armed)
{
    hopper_iovec iov[8];
    uint8_t *bufs[8];
    uint64_t id0 = atomic_fetch_add(&g->next_id, (uint64_t)n);
    if (id0 + (uint64_t)n > g->cap) {
        return 0; /* table full: the workload is long enough */
    }
    size_t try_idx = hp_pfs_count(g->pfs);
    for (int i = 0; i < n; i++) {
        uint64_t id = id0 + (uint64_t)i;
        size_t len = hp_test_payload_len_mixed(id);
        bufs[i] = malloc(len);
        if (bufs[i] == NULL) {
            abort();
        }
        hp_test_payload_fill(id, bufs[i], len);
        iov[i].data = bufs[i];
        iov[i].len = len;
        g->rec[id].producer = producer;
        g->rec[id].try_idx = try_idx;
    }
    if (armed) {
        atomic_store(&g->enospc, 1);
    }
    int rc = n == 1 ? hopper_send(q, iov[0].data, iov[0].len, timeout_ms)
                    : hopper_send_batch(q, iov, (size_t)n, timeout_ms);
    atomic_store(&g->enospc, 0);
    for (int i = 0; i < n; i++) {
        uint64_t id = id0 + (uint64_t)i;
        if (rc == 0) {
            g->rec[id].ok_ns = mono_ns();
            g->rec[id].ok_idx = hp_pfs_mark(g->pfs, MK_SEND_OK, id, 0);
        } else if (rc == HOPPER_EFULL) {
            g->rec[id].rej_idx = hp_pfs_mark(g->pfs, MK_REJECT, id, 0);
        }
        free(bufs[i]);
    }
    if (rc != 0 && rc != HOPPER_EFULL && rc != HOPPER_ECLOSED) {
        gen_fail(g, "send of #%" PRIu64 "..%d returned %s", id0, n, hopper_err_name(rc));
        return -1;
    }
    return 0;
}

/* Receive up to n records; *last_seq follows the last one. */
static int
recv_records(gen *g, hopper_queue *q, int n, int timeout_ms, uint64_t *last_seq, int *have)
{
    for (int i = 0; i < n; i++) {
        hopper_record r;
        int rc = hopper_recv(q, &r, timeout_ms);
        if (rc == -EAGAIN || rc == -ETIMEDOUT || rc == HOPPER_ECLOSED) {
            return 0;
        }
        if (rc != 0) {
            gen_fail(g, "recv returned %s", hopper_err_name(rc));
            return -1;
        }
        uint64_t id = UINT64_MAX;
        if (!hp_test_record_check(r.data, r.len, hp_test_payload_len_mixed, &id) ||
            id >= g->cap) {
            gen_fail(g, "recv during the workload: bad record (seq %" PRIu64 ", len %zu)",
                     r.seq, r.len);
            return -1;
        }
        g->rec[id].seq = (int64_t)r.seq;
        hp_pfs_mark(g->pfs, MK_RECV, id, r.seq);
        *last_seq = r.seq;
        *have = 1;
    }
    return 0;
}

static int
ack_sync(gen *g, hopper_queue *q, uint64_t last_seq, int sync)
{
    int rc = hopper_ack(q, last_seq);
    if (rc != 0) {
        gen_fail(g, "ack returned %s", hopper_err_name(rc));
        return -1;
    }
    hp_pfs_mark(g->pfs, MK_ACK, last_seq + 1, 0);
    if (sync) {
        rc = hopper_sync(q);
        if (rc != 0) {
            gen_fail(g, "sync returned %s", hopper_err_name(rc));
            return -1;
        }
        hp_pfs_mark(g->pfs, MK_SYNC_OK, last_seq + 1, 0);
    }
    return 0;
}

/* Half the time the close is recorded too; otherwise it happens after the
 * recording stops, like a process that never got to close. */
static void
end_workload(gen *g, hopper_queue *q, uint64_t *rng)
{
    if (draw(rng, 2)) {
        int rc = hopper_close(q);
        if (rc == 0) {
            hp_pfs_mark(g->pfs, MK_CLOSE_OK, 0, 0);
        } else if (!atomic_load(&g->failed)) {
            gen_fail(g, "close at the end of the workload: %s", hopper_err_name(rc));
        }
        hp_pfs_detach(g->pfs);
    } else {
        hp_pfs_detach(g->pfs);
        (void)hopper_close(q);
    }
}

static hopper_queue *
open_for_work(gen *g)
{
    hopper_queue *q = NULL;
    int rc = hopper_open(g->parent, QN, &g->o, &q);
    if (rc != 0) {
        gen_fail(g, "open for the workload: %s", hopper_err_name(rc));
    }
    return q;
}

/* One thread does everything, drawing each step from the seed: the log is
 * the same on every run (but for the fsync=interval thread's timing). */
static void
work_single(gen *g, uint64_t *rng, int steps, int enospc)
{
    hopper_queue *q = open_for_work(g);
    if (q == NULL) {
        return;
    }
    int rc;
    uint64_t last_seq = 0;
    int have = 0;
    int window = 0;
    int producer = g->producer_base;
    for (int s = 0; s < steps && !atomic_load(&g->failed); s++) {
        unsigned r = (unsigned)draw(rng, 100);
        if (r < 50) {
            int n = draw(rng, 7) == 0 ? 2 + (int)draw(rng, 5) : 1;
            rc = send_records(g, q, producer, n, 0, window);
        } else if (r < 75) {
            rc = recv_records(g, q, 1 + (int)draw(rng, 20), 0, &last_seq, &have);
        } else if (r < 86) {
            rc = have ? ack_sync(g, q, last_seq, 0) : 0;
        } else if (r < 90) {
            rc = have ? ack_sync(g, q, last_seq, 1) : 0;
        } else if (r < 92) {
            rc = hopper_close(q);
            q = NULL;
            if (rc == 0) {
                hp_pfs_mark(g->pfs, MK_CLOSE_OK, 0, 0);
            } else {
                gen_fail(g, "close in the workload: %s", hopper_err_name(rc));
                return;
            }
            rc = hopper_open(g->parent, QN, &g->o, &q);
            if (rc != 0) {
                gen_fail(g, "reopen in the workload: %s", hopper_err_name(rc));
                return;
            }
            have = 0;
        } else if (r < 95) {
            window = enospc && !window;
        } else if (g->o.fsync == HOPPER_FSYNC_INTERVAL) {
            /* Now and then idle for longer than the interval (and its
             * slack), so that only the interval fsync can cover a record. */
            uint32_t ms = draw(rng, 4) == 0 ? 2 * g->o.fsync_interval_ms + 120
                                              : (uint32_t)draw(rng, g->o.fsync_interval_ms + 1);
            nap(g, ms);
        }
        if (rc < 0) {
            break;
        }
    }
    end_workload(g, q, rng);
}

typedef struct thr {
    gen *g;
    hopper_queue *q;
    int producer;
    int count;
    uint64_t rng;
    _Atomic int *running;
} thr;

static void *
producer_main(void *arg)
{
    thr *t = arg;
    gen *g = t->g;
    for (int i = 0; i < t->count && !atomic_load(&g->failed); i++) {
        int n = draw(&t->rng, 8) == 0 ? 2 + (int)draw(&t->rng, 4) : 1;
        if (send_records(g, t->q, t->producer, n, 20, 0) < 0) {
            break;
        }
        if (g->o.fsync == HOPPER_FSYNC_INTERVAL && draw(&t->rng, 16) == 0) {
            uint32_t T = g->o.fsync_interval_ms;
            uint32_t ms = draw(&t->rng, 4) == 0 ? 2 * T + 120 : (uint32_t)draw(&t->rng, T + 1);
            nap(g, ms);
        }
    }
    atomic_fetch_sub(t->running, 1);
    return NULL;
}

static void *
consumer_main(void *arg)
{
    thr *t = arg;
    gen *g = t->g;
    uint64_t last_seq = 0;
    int have = 0;
    while (!atomic_load(&g->failed)) {
        int running = atomic_load(t->running);
        uint64_t before = last_seq;
        int had = have;
        if (recv_records(g, t->q, 1 + (int)draw(&t->rng, 16), 2, &last_seq, &have) < 0) {
            break;
        }
        if (have && (last_seq != before || !had) && draw(&t->rng, 3) == 0) {
            if (ack_sync(g, t->q, last_seq, draw(&t->rng, 4) == 0) < 0) {
                break;
            }
        }
        if (running == 0 && last_seq == before && had == have) {
            break; /* producers done and nothing more came */
        }
    }
    return NULL;
}

/* Producers and a consumer on threads of their own: group commit, the
 * writer handing over, compression helpers. The log depends on timing. */
static void
work_threads(gen *g, uint64_t *rng, int producers, int per)
{
    hopper_queue *q = open_for_work(g);
    if (q == NULL) {
        return;
    }
    _Atomic int running = producers;
    thr t[5];
    pthread_t tid[5];
    for (int i = 0; i <= producers; i++) {
        t[i] = (thr){.g = g, .q = q, .producer = g->producer_base + i, .count = per,
                     .rng = hp_test_rand(rng) | 1, .running = &running};
    }
    for (int i = 0; i < producers; i++) {
        if (pthread_create(&tid[i], NULL, producer_main, &t[i]) != 0) {
            abort();
        }
    }
    if (pthread_create(&tid[producers], NULL, consumer_main, &t[producers]) != 0) {
        abort();
    }
    for (int i = 0; i <= producers; i++) {
        pthread_join(tid[i], NULL);
    }
    end_workload(g, q, rng);
}

/* ---- crash images ---------------------------------------------------------- */

typedef struct drec {
    uint64_t seq;
    uint64_t id;
    const char *file; /* strict frames: the segment and the frame's end */
    size_t end;
    size_t off;
} drec;

typedef struct dlist {
    drec *v;
    size_t n;
    size_t cap;
} dlist;

static void
dl_push(dlist *l, drec d)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 256;
        drec *nv = realloc(l->v, nc * sizeof(*nv));
        if (nv == NULL) {
            abort();
        }
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n++] = d;
}

static const hp_pfs_file *
img_file(const hp_pfs_image *img, const char *name)
{
    for (size_t i = 0; i < img->n; i++) {
        if (strcmp(img->files[i].name, name) == 0) {
            return &img->files[i];
        }
    }
    return NULL;
}

/* The ack position in an image's checkpoint (0 when there is none). */
static uint64_t
img_ack(const hp_pfs_image *img)
{
    const hp_pfs_file *f = img_file(img, HP_CKPT_NAME);
    hp_ckpt c;
    if (f == NULL || hp_ckpt_parse(f->data, f->len, &c) != 0) {
        return 0;
    }
    return c.ack_next;
}

/* The records of every whole frame of every segment of a strict image, read
 * front to back (a strict image holds only fsynced bytes, so the frames of a
 * segment are back to back from its header to its end). */
static int
strict_records(const hp_pfs_image *img, uint64_t max_raw, dlist *out)
{
    hp_decoder dec;
    if (hp_dec_init(&dec) != 0) {
        return -ENOMEM;
    }
    hp_buf raw = {0};
    for (size_t i = 0; i < img->n; i++) {
        const hp_pfs_file *f = &img->files[i];
        uint64_t id;
        if (hp_seg_parse_name(f->name, &id) != 0 || f->len < HP_SEG_HDR) {
            continue;
        }
        size_t off = HP_SEG_HDR;
        while (off < f->len) {
            hp_frame_hdr h;
            size_t used = 0;
            if (hp_rec_decode(&dec, f->data + off, f->len - off, max_raw, &h, &raw, &used) != 0) {
                break;
            }
            size_t pos = 0;
            for (uint64_t s = h.first_seq; s < h.first_seq + h.count; s++) {
                const uint8_t *p;
                size_t len;
                if (hp_rec_next(raw.data, raw.len, &pos, &p, &len) != 0) {
                    break;
                }
                uint64_t n = UINT64_MAX;
                if (len >= 8) {
                    memcpy(&n, p, 8);
                }
                dl_push(out, (drec){.seq = s, .id = n, .file = f->name, .off = off,
                                    .end = off + used});
            }
            off += used;
        }
    }
    hp_buf_free(&raw);
    hp_dec_free(&dec);
    return 0;
}

/* out = a + "/" + b; aborts when it does not fit (test paths are short). */
static void
join(char *out, size_t cap, const char *a, const char *b)
{
    int n = snprintf(out, cap, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= cap) {
        abort();
    }
}

static void
rm_rf(const char *path)
{
    char *p = strdup(path);
    if (p != NULL) {
        hp_test_rmtree(p);
    }
}

/* HOPPER_POWER_VERBOSE=1: print the log up to a failing crash point. */
static void
dump_range(const gen *g, size_t from, size_t cut);

static void
dump_log(const gen *g, size_t cut)
{
    dump_range(g, 0, cut);
}

static void
dump_range(const gen *g, size_t from, size_t cut)
{
    const char *v = getenv("HOPPER_POWER_VERBOSE");
    if (v == NULL || *v == '\0' || strcmp(v, "0") == 0) {
        return;
    }
    static const char *const kinds[] = {"?",        "open",   "write", "ftruncate",
                                        "fsync",    "fsync_dir", "rename", "unlink",
                                        "mkdir",    "fsync_begin", "mark"};
    static const char *const marks[] = {"?", "SEND_OK", "REJECT", "RECV", "ACK", "SYNC_OK",
                                        "CLOSE_OK"};
    uint64_t t0 = from < hp_pfs_count(g->pfs) ? hp_pfs_at(g->pfs, from)->t_ns : 0;
    for (size_t i = from; i < cut && i < hp_pfs_count(g->pfs); i++) {
        const hp_pfs_ev *e = hp_pfs_at(g->pfs, i);
        fprintf(stderr, "  %+8.3f ms", (double)(int64_t)(e->t_ns - t0) / 1e6);
        if (e->kind == HP_PFS_MARK) {
            fprintf(stderr, "  %5zu t%d %s %" PRIu64 " %" PRIu64 "\n", i, e->tid,
                    marks[e->mark <= MK_CLOSE_OK ? e->mark : 0], e->a, e->b);
        } else {
            fprintf(stderr, "  %5zu t%d %s fd %d dirfd %d %s%s%s off %" PRIu64 " len %zu\n", i,
                    e->tid, kinds[e->kind <= HP_PFS_MARK ? e->kind : 0], e->fd, e->dirfd,
                    e->name ? e->name : "", e->name2 ? " -> " : "", e->name2 ? e->name2 : "",
                    e->off, e->len);
        }
    }
}

/* ---- the oracle ------------------------------------------------------------ */

typedef struct cutres {
    dlist delivered; /* what the reopen delivered, in order */
    hp_pfs_image torn;
} cutres;

#define FAIL(cat, ...)                                                                         \
    do {                                                                                       \
        tot->cat++;                                                                            \
        if (!failed) {                                                                         \
            snprintf(msg, sizeof(msg), __VA_ARGS__);                                           \
            failed = 1;                                                                        \
        }                                                                                      \
    } while (0)

/* Check the crash point before log entry `cut`. Returns 0 (passed), 1 (a
 * check failed: why in err) or < 0. On return res holds the deliveries and
 * the torn image (the caller frees them). */
static int
check_cut(gen *g, hp_pfs_cursor *cur, size_t cut, uint64_t *trng, const char *cutdir,
          hp_power_totals *tot, cutres *res, char *err, size_t errcap)
{
    memset(res, 0, sizeof(*res));
    hp_pfs_image strict;
    int rc = hp_pfs_image_at(cur, cut, NULL, &strict);
    if (rc == 0) {
        rc = hp_pfs_image_at(cur, cut, trng, &res->torn);
    }
    if (rc < 0) {
        hp_pfs_image_free(&strict);
        return rc;
    }
    const hp_pfs_image *torn = &res->torn;
    for (size_t i = 0; i < torn->n; i++) {
        if (strstr(torn->how, torn->files[i].name) != NULL) {
            tot->torn_files++;
        }
    }
    char msg[1024] = "";
    int failed = 0;
    uint64_t max_raw = hp_frame_max_raw(256u << 20);
    dlist dur = {0};
    rc = strict_records(&strict, max_raw, &dur);
    uint64_t ack_strict = img_ack(&strict);
    uint64_t ack_torn = img_ack(torn);
    if (ack_torn < ack_strict) {
        FAIL(other, "the checkpoint went back: %" PRIu64 " durable, %" PRIu64 " in the image",
             ack_strict, ack_torn);
    }
    /* What the log says up to the cut. */
    const hp_pfs_ev *ev = hp_pfs_at(g->pfs, 0);
    size_t close_idx = NONE;
    uint64_t sync_ack = 0;
    size_t seg_begin = NONE; /* begin of the latest completed segment fsync */
    uint64_t fsync_max_ns = 0;
    for (size_t i = 0; i < cut; i++) {
        if (ev[i].kind == HP_PFS_MARK && ev[i].mark == MK_CLOSE_OK) {
            close_idx = i;
        } else if (ev[i].kind == HP_PFS_MARK && ev[i].mark == MK_SYNC_OK) {
            sync_ack = ev[i].a > sync_ack ? ev[i].a : sync_ack;
        } else if (ev[i].kind == HP_PFS_FSYNC) {
            const hp_pfs_ev *b = &ev[ev[i].begin];
            if (b->kind == HP_PFS_FSYNC_BEGIN && ev[i].t_ns - b->t_ns > fsync_max_ns) {
                fsync_max_ns = ev[i].t_ns - b->t_ns;
            }
            if (ev[i].seg && (seg_begin == NONE || ev[i].begin > seg_begin)) {
                seg_begin = ev[i].begin;
            }
        }
    }
    uint64_t cut_ns = cut > 0 ? ev[cut - 1].t_ns : 0;
    if (sync_ack > ack_strict) {
        FAIL(other, "hopper_sync() returned 0 at ack position %" PRIu64
                    " (every seq below acknowledged) but the durable checkpoint holds %" PRIu64,
             sync_ack, ack_strict);
    }
    /* Seqs known from the workload and from the durable frames. */
    for (size_t i = 0; i < dur.n; i++) {
        drec *d = &dur.v[i];
        if (d->id >= g->cap || g->rec[d->id].try_idx == NONE) {
            FAIL(corrupt, "a durable frame holds seq %" PRIu64 " that is no record sent", d->seq);
            continue;
        }
        prec *p = &g->rec[d->id];
        if (p->seq >= 0 && (uint64_t)p->seq != d->seq) {
            FAIL(other, "record #%" PRIu64 " is seq %" PRIu64 " in a durable frame, seq %" PRId64
                        " when received",
                 d->id, d->seq, p->seq);
        }
        for (size_t j = 0; j < i; j++) {
            if (dur.v[j].seq == d->seq && dur.v[j].id != d->id) {
                FAIL(other, "seq %" PRIu64 " is record #%" PRIu64 " in %s and record #%" PRIu64
                            " in %s: a seq was reused while the old frame was still durable",
                     d->seq, dur.v[j].id, dur.v[j].file, d->id, d->file);
            }
        }
    }
    /* Reopen the torn image with the real library. */
    rm_rf(cutdir);
    if (mkdir(cutdir, 0700) < 0 || hp_pfs_image_write(torn, cutdir, QN) < 0) {
        free(dur.v);
        hp_pfs_image_free(&strict);
        return -EIO;
    }
    hopper_inspect_report irep = {.struct_size = sizeof(irep)};
    int irc = torn->has_qdir ? hopper_inspect(cutdir, QN, HOPPER_INSPECT_ACKED, NULL, NULL, &irep)
                             : -ENOENT;
    uint64_t idamage = irc == 0 ? irep.corrupt_frames + irep.torn_bytes +
                                      irep.unreadable_segments
                                : 0;
    hopper_queue *q = NULL;
    hopper_stats st = {.struct_size = sizeof(st)};
    rc = hopper_open(cutdir, QN, &g->o, &q);
    int opened = rc == 0;
    if (rc != 0) {
        FAIL(other, "open after the power cut: %s", hopper_err_name(rc));
    } else {
        for (;;) {
            hopper_record r;
            rc = hopper_recv(q, &r, 0);
            if (rc != 0) {
                if (rc != -EAGAIN) {
                    FAIL(other, "recv after the power cut: %s", hopper_err_name(rc));
                }
                break;
            }
            uint64_t id = UINT64_MAX;
            if (!hp_test_record_check(r.data, r.len, hp_test_payload_len_mixed, &id)) {
                FAIL(corrupt, "seq %" PRIu64 " delivered with wrong bytes (len %zu)", r.seq,
                     r.len);
                id = UINT64_MAX;
            }
            dl_push(&res->delivered, (drec){.seq = r.seq, .id = id});
        }
        (void)hopper_stats_get(q, &st);
        (void)hopper_close(q);
    }
    /* Every delivery. */
    uint8_t *seen = calloc(g->cap, 1);
    uint64_t *last_of = calloc(64, sizeof(*last_of)); /* per producer: last id + 1 */
    if (seen == NULL || last_of == NULL) {
        abort();
    }
    for (size_t i = 0; i < res->delivered.n; i++) {
        const drec *d = &res->delivered.v[i];
        tot->delivered++;
        tot->records++;
        if (i > 0 && d->seq <= res->delivered.v[i - 1].seq) {
            FAIL(reordered, "seq %" PRIu64 " delivered after seq %" PRIu64, d->seq,
                 res->delivered.v[i - 1].seq);
        }
        if (d->id == UINT64_MAX) {
            continue;
        }
        if (d->id >= g->cap || g->rec[d->id].try_idx == NONE ||
            (g->rec[d->id].try_idx >= cut && !g->rec[d->id].pre)) {
            FAIL(corrupt,
                 "record #%" PRIu64 " (seq %" PRIu64 ") delivered, never sent before the cut",
                 d->id, d->seq);
            continue;
        }
        const prec *p = &g->rec[d->id];
        if (seen[d->id]++) {
            FAIL(duplicated, "record #%" PRIu64 " delivered twice (seq %" PRIu64 ")", d->id,
                 d->seq);
        }
        int pr = p->producer & 63;
        if (last_of[pr] > d->id) {
            FAIL(reordered, "producer %d: record #%" PRIu64 " after #%" PRIu64, p->producer, d->id,
                 last_of[pr] - 1);
        }
        last_of[pr] = d->id + 1;
        if (p->rej_idx < cut) {
            FAIL(resurrected, "record #%" PRIu64 " delivered (seq %" PRIu64
                              ") although its send returned HOPPER_EFULL",
                 d->id, d->seq);
        }
        if (d->seq < ack_torn) {
            FAIL(resurrected, "seq %" PRIu64 " delivered, below the checkpoint's %" PRIu64
                              " (durable: %" PRIu64 ")",
                 d->seq, ack_torn, ack_strict);
        }
        if (p->seq >= 0 && (uint64_t)p->seq != d->seq) {
            FAIL(other, "record #%" PRIu64 " delivered as seq %" PRIu64 ", was seq %" PRId64,
                 d->id, d->seq, p->seq);
        }
    }
    /* What must have been delivered. */
    int memory = g->row >= HP_ROW_MEMORY_NEVER;
    for (size_t i = 0; i < dur.n; i++) {
        const drec *d = &dur.v[i];
        if (d->id >= g->cap || d->seq < ack_torn || g->rec[d->id].rej_idx < cut ||
            seen[d->id]) {
            continue;
        }
        const prec *p = &g->rec[d->id];
        if (memory || (p->rej_idx != NONE && p->ok_idx >= cut)) {
            /* A MEMORY-mode batch undone after ENOSPC goes back to memory:
             * its frame may be truncated away later, legitimately. So may
             * a DISK-mode batch whose send was still in flight at the cut
             * and was refused after it: the undo truncates its frame (even
             * one a rotation fdatasynced) before the send returns EFULL,
             * and the cut may land between the truncation and its
             * fdatasync. Its records were never accepted. */
            const hp_pfs_file *f = img_file(torn, d->file);
            if (f == NULL || f->len < d->end ||
                memcmp(f->data + d->off, img_file(&strict, d->file)->data + d->off,
                       d->end - d->off) != 0) {
                continue;
            }
        }
        tot->records++;
        FAIL(lost, "record #%" PRIu64 " (seq %" PRIu64 ") was durable in %s but not delivered",
             d->id, d->seq, d->file);
    }
    size_t interval_begin = g->row == HP_ROW_DISK_INTERVAL ? seg_begin : NONE;
    uint64_t T_ns = (uint64_t)g->o.fsync_interval_ms * 1000000u;
    uint64_t slack_ns = INTERVAL_SLACK_NS(T_ns) + atomic_load(&g->oversleep_ns) + fsync_max_ns;
    uint64_t worst = 0;
    for (size_t id = 0; id < g->cap; id++) {
        const prec *p = &g->rec[id];
        if (p->try_idx == NONE) {
            continue;
        }
        int accepted = p->pre || p->ok_idx < cut;
        int acked = p->seq >= 0 && (uint64_t)p->seq < ack_torn;
        if (!accepted || acked || seen[id]) {
            if (accepted && !acked) {
                tot->records++;
            }
            continue;
        }
        tot->records++;
        const char *why = NULL;
        if (p->pre) {
            why = "delivered by the reopen before this one";
        } else if (g->row == HP_ROW_DISK_ALWAYS) {
            why = "accepted with fsync=always";
        } else if (close_idx != NONE && p->ok_idx < close_idx) {
            why = "accepted before a hopper_close() that returned 0";
        } else if (interval_begin != NONE && p->write_idx != NONE &&
                   p->write_idx < interval_begin) {
            why = "accepted before an interval fsync that completed";
        } else if (g->row == HP_ROW_DISK_INTERVAL && cut_ns > p->ok_ns + T_ns + slack_ns) {
            why = "accepted more than T + slack before the cut";
        }
        if (g->row == HP_ROW_DISK_INTERVAL && cut_ns > p->ok_ns && cut_ns - p->ok_ns > worst) {
            worst = cut_ns - p->ok_ns;
        }
        if (why != NULL) {
            FAIL(lost, "record #%" PRIu64 " (seq %" PRId64 ") lost: %s", (uint64_t)id, p->seq,
                 why);
        }
    }
    if (worst / 1000000u > tot->worst_window_ms) {
        tot->worst_window_ms = worst / 1000000u;
        tot->worst_window_t = g->o.fsync_interval_ms;
    }
    /* Damage in the image is counted. */
    uint64_t counted = st.torn_bytes + st.corrupt_frames + st.quarantined_bytes;
    if (opened && idamage > 0 && counted == 0) {
        FAIL(other, "hopper_inspect found damage (%" PRIu64 " corrupt frames, %" PRIu64
                    " torn bytes, %" PRIu64 " unreadable segments) that open did not count",
             irep.corrupt_frames, irep.torn_bytes, irep.unreadable_segments);
    }
    free(seen);
    free(last_of);
    free(dur.v);
    hp_pfs_image_free(&strict);
    tot->cuts++;
    if (failed) {
        dump_log(g, cut);
        snprintf(err, errcap,
                 "%s (gen %d, %s): %s\n  replay: HOPPER_POWER_SEED=%" PRIu64
                 " HOPPER_POWER_CUT=%zu\n  image: %s",
                 row_names[g->row], g->gen, g->o.durability ? "disk" : "memory", msg, g->seed, cut,
                 torn->how);
        return 1;
    }
    return 0;
}

/* Find, for every record, the first logged write that carried its frame
 * (writes to segments are whole frames, or a segment header). */
static void
map_writes(gen *g)
{
    hp_decoder dec;
    if (hp_dec_init(&dec) != 0) {
        abort();
    }
    hp_buf raw = {0};
    uint64_t max_raw = hp_frame_max_raw(256u << 20);
    size_t n = hp_pfs_count(g->pfs);
    for (size_t i = 0; i < n; i++) {
        const hp_pfs_ev *e = hp_pfs_at(g->pfs, i);
        if (e->kind != HP_PFS_WRITE || e->len < HP_FRAME_HDR ||
            hp_get_u32(e->data) != HP_FRAME_MAGIC) {
            continue;
        }
        size_t off = 0;
        while (off < e->len) {
            hp_frame_hdr h;
            size_t used = 0;
            if (hp_rec_decode(&dec, e->data + off, e->len - off, max_raw, &h, &raw, &used) != 0) {
                break;
            }
            size_t pos = 0;
            for (uint32_t k = 0; k < h.count; k++) {
                const uint8_t *p;
                size_t len;
                uint64_t id;
                if (hp_rec_next(raw.data, raw.len, &pos, &p, &len) != 0 || len < 8) {
                    break;
                }
                memcpy(&id, p, 8);
                if (id < g->cap && g->rec[id].write_idx == NONE) {
                    g->rec[id].write_idx = i;
                }
            }
            off += used;
        }
    }
    hp_buf_free(&raw);
    hp_dec_free(&dec);
}

/* DISK + interval T, from the log alone: after every accepted record an
 * fsync of a segment begins within T + slack (or the record ends before
 * that). A policy that syncs too late, or only at rotation and close, fails
 * here even when no crash point happens to fall in the gap. */
static int
check_interval(const gen *g, hp_power_totals *tot, char *err, size_t errcap)
{
    if (g->row != HP_ROW_DISK_INTERVAL) {
        return 0;
    }
    size_t n = hp_pfs_count(g->pfs);
    if (n == 0) {
        return 0;
    }
    const hp_pfs_ev *ev = hp_pfs_at(g->pfs, 0);
    uint64_t T_ns = (uint64_t)g->o.fsync_interval_ms * 1000000u;
    uint64_t end_ns = ev[n - 1].t_ns;
    uint64_t over = atomic_load(&g->oversleep_ns);
    for (size_t id = 0; id < g->cap; id++) {
        const prec *p = &g->rec[id];
        if (p->ok_idx == NONE || p->pre) {
            continue;
        }
        uint64_t deadline = ev[p->ok_idx].t_ns + INTERVAL_SLACK_NS(T_ns) + over;
        uint64_t begin_ns = UINT64_MAX;
        /* The covering fsync began after the record's write (DISK mode
         * writes before send returns; its own group commit may sync it). */
        size_t w = p->write_idx != NONE ? p->write_idx : p->ok_idx;
        for (size_t i = w + 1; i < n; i++) {
            if (ev[i].kind == HP_PFS_FSYNC && ev[i].seg && ev[i].begin > w) {
                begin_ns = ev[ev[i].begin].t_ns;
                break;
            }
        }
        if (begin_ns != UINT64_MAX) {
            uint64_t t_ok = ev[p->ok_idx].t_ns;
            uint64_t lag = begin_ns > t_ok ? (begin_ns - t_ok) / 1000000u : 0;
            if (lag * 1000u / (g->o.fsync_interval_ms + 1) > tot->worst_lag_permille) {
                tot->worst_lag_permille = lag * 1000u / (g->o.fsync_interval_ms + 1);
                tot->worst_lag_ms = lag;
                tot->worst_lag_t = g->o.fsync_interval_ms;
                tot->worst_lag_oversleep_ms = over / 1000000u;
            }
        }
        if (begin_ns == UINT64_MAX ? end_ns > deadline : begin_ns > deadline) {
            size_t upto = p->ok_idx + 1;
            while (upto < n && ev[upto].t_ns <= (begin_ns == UINT64_MAX ? end_ns : begin_ns)) {
                upto++;
            }
            dump_range(g, p->ok_idx > 20 ? p->ok_idx - 20 : 0, upto + 3);
            tot->late_syncs++;
            snprintf(err, errcap,
                     "%s: record #%zu accepted, but no fsync of a segment began within T + slack"
                     " (T = %u ms, slack T + 100 ms + %" PRIu64 " ms oversleep seen): %s %" PRIu64
                     " ms later\n  replay: HOPPER_POWER_SEED=%" PRIu64,
                     row_names[g->row], id, g->o.fsync_interval_ms, over / 1000000u,
                     begin_ns == UINT64_MAX ? "none in the" : "the first",
                     ((begin_ns == UINT64_MAX ? end_ns : begin_ns) - ev[p->ok_idx].t_ns) /
                         1000000u,
                     g->seed);
            return 1;
        }
    }
    return 0;
}

/* ---- scenarios ------------------------------------------------------------- */

static void
draw_opts(hopper_opts *o, int row, uint64_t *rng)
{
    hopper_opts_init(o);
    o->durability = row <= HP_ROW_DISK_NEVER ? HOPPER_DURABILITY_DISK : HOPPER_DURABILITY_MEMORY;
    static const int fs[HP_ROW_COUNT] = {HOPPER_FSYNC_ALWAYS, HOPPER_FSYNC_INTERVAL,
                                         HOPPER_FSYNC_NEVER,  HOPPER_FSYNC_NEVER,
                                         HOPPER_FSYNC_ALWAYS, HOPPER_FSYNC_INTERVAL};
    o->fsync = fs[row];
    o->fsync_interval_ms = 2 + (uint32_t)draw(rng, 20);
    o->memory_bytes = o->durability == HOPPER_DURABILITY_MEMORY ? 2048u << draw(rng, 6)
                                                                 : 1024u << draw(rng, 8);
    o->disk_bytes = (64u * 1024u) << draw(rng, 6);
    /* Interval rows rotate less, so the interval fsync is what covers most
     * records (a rotation fdatasyncs the sealed segment). */
    o->segment_bytes = 4096u << draw(rng, o->fsync == HOPPER_FSYNC_INTERVAL ? 8 : 5);
    o->compression = (int)draw(rng, 3);
    o->checkpoint_interval_ms = (uint32_t)draw(rng, 30);
}

/* Record a generation's workload. */
static void
record_gen(gen *g, uint64_t *rng)
{
    int threads = g->gen == 1 && draw(rng, 4) == 0;
    int enospc = !threads && draw(rng, 3) == 0;
    g->enospc_rng = hp_test_rand(rng) | 1;
    g_cur = g;
    hp_pfs_attach(g->pfs, inject);
    pthread_t ticker;
    atomic_store(&g->ticking, 1);
    if (pthread_create(&ticker, NULL, ticker_main, g) != 0) {
        abort();
    }
    if (threads) {
        work_threads(g, rng, 2 + (int)draw(rng, 2), 40 + (int)draw(rng, 80));
    } else {
        work_single(g, rng, g->gen == 1 ? 150 + (int)draw(rng, 350) : 40 + (int)draw(rng, 80),
                    enospc);
    }
    atomic_store(&g->ticking, 0);
    pthread_join(ticker, NULL);
    g_cur = NULL;
    hp_pfs_annotate(g->pfs);
    map_writes(g);
}

static int
cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a;
    size_t y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* Crash points: n of them drawn over [0, len], ascending, plus the end. */
static size_t
draw_cuts(uint64_t *rng, size_t len, size_t n, size_t *out)
{
    for (size_t i = 0; i < n; i++) {
        out[i] = (size_t)draw(rng, len + 1);
    }
    out[n++] = len;
    qsort(out, n, sizeof(*out), cmp_size);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k == 0 || out[k - 1] != out[i]) {
            out[k++] = out[i];
        }
    }
    return k;
}

static void
gen_free(gen *g)
{
    hp_pfs_free(g->pfs);
    free(g->rec);
}

static int
gen_init(gen *g, uint64_t seed, int row, int gnum, const hopper_opts *o, const char *parent,
         size_t cap)
{
    memset(g, 0, sizeof(*g));
    g->seed = seed;
    g->row = row;
    g->gen = gnum;
    g->o = *o;
    snprintf(g->parent, sizeof(g->parent), "%s", parent);
    g->cap = cap;
    g->rec = calloc(cap, sizeof(*g->rec));
    g->pfs = hp_pfs_new(parent, QN);
    if (g->rec == NULL || g->pfs == NULL) {
        gen_free(g);
        return -ENOMEM;
    }
    for (size_t i = 0; i < cap; i++) {
        g->rec[i] = (prec){.try_idx = NONE, .ok_idx = NONE, .rej_idx = NONE, .write_idx = NONE,
                           .seq = -1};
    }
    return 0;
}

/* Second generation: reopen the crash image under the model, recover, use
 * it a little and cut again; what the first reopen delivered must survive. */
static int
second_gen(const gen *g1, const cutres *r1, uint64_t *rng, const char *dir,
           hp_power_totals *tot, char *err, size_t errcap)
{
    char parent[PATH_MAX];
    char cutdir[PATH_MAX];
    join(parent, sizeof(parent), dir, "g2");
    join(cutdir, sizeof(cutdir), dir, "g2cut");
    rm_rf(parent);
    if (mkdir(parent, 0700) < 0 || hp_pfs_image_write(&r1->torn, parent, QN) < 0) {
        return -EIO;
    }
    size_t base = (size_t)atomic_load(&g1->next_id);
    gen g;
    int rc = gen_init(&g, g1->seed, g1->row, 2, &g1->o, parent, base + 1024);
    if (rc < 0) {
        return rc;
    }
    atomic_store(&g.next_id, base);
    g.producer_base = 32;
    for (size_t i = 0; i < base && i < g1->cap; i++) {
        /* Sent before this generation: may sit in the base image, below its
         * checkpoint; refused ones stay refused. */
        const prec *p1 = &g1->rec[i];
        if (p1->try_idx != NONE) {
            g.rec[i].producer = p1->producer;
            g.rec[i].try_idx = 0;
            g.rec[i].rej_idx = p1->rej_idx != NONE ? 0 : NONE;
            g.rec[i].seq = p1->seq;
        }
    }
    for (size_t i = 0; i < r1->delivered.n; i++) {
        const drec *d = &r1->delivered.v[i];
        if (d->id < base) {
            g.rec[d->id] = (prec){.producer = g1->rec[d->id].producer, .try_idx = 0, .ok_idx = 0,
                                  .rej_idx = NONE, .write_idx = NONE, .seq = (int64_t)d->seq,
                                  .pre = 1};
        }
    }
    rc = hp_pfs_load(g.pfs);
    if (rc == 0) {
        record_gen(&g, rng);
        if (atomic_load(&g.failed)) {
            snprintf(err, errcap, "%s (gen 2): workload: %s\n  replay: HOPPER_POWER_SEED=%" PRIu64,
                     row_names[g.row], g.err, g.seed);
            rc = 1;
        }
    }
    size_t cuts[16];
    size_t nc = rc == 0 ? draw_cuts(rng, hp_pfs_count(g.pfs), 5, cuts) : 0;
    hp_pfs_cursor *cur = nc ? hp_pfs_cursor_new(g.pfs) : NULL;
    for (size_t i = 0; i < nc && rc == 0; i++) {
        cutres r2;
        rc = check_cut(&g, cur, cuts[i], rng, cutdir, tot, &r2, err, errcap);
        tot->cuts_gen2++;
        free(r2.delivered.v);
        hp_pfs_image_free(&r2.torn);
    }
    hp_pfs_cursor_free(cur);
    rm_rf(cutdir);
    rm_rf(parent);
    gen_free(&g);
    return rc;
}

int
hp_power_scenario(uint64_t seed, const char *workdir, size_t only_cut, hp_power_totals *tot,
                  char *err, size_t errcap)
{
    int row = (int)(seed % HP_ROW_COUNT);
    uint64_t rng = seed | 1;
    err[0] = '\0';
    char dir[PATH_MAX];
    char parent[PATH_MAX];
    char cutdir[PATH_MAX];
    char sname[32];
    snprintf(sname, sizeof(sname), "s%" PRIu64, seed);
    join(dir, sizeof(dir), workdir, sname);
    join(parent, sizeof(parent), dir, "run");
    join(cutdir, sizeof(cutdir), dir, "cut");
    rm_rf(dir);
    if (mkdir(dir, 0700) < 0 || mkdir(parent, 0700) < 0) {
        return -errno;
    }
    hopper_opts o;
    draw_opts(&o, row, &rng);
    gen g;
    int rc = gen_init(&g, seed, row, 1, &o, parent, 4096);
    if (rc < 0) {
        return rc;
    }
    tot->scenarios++;
    record_gen(&g, &rng);
    if (atomic_load(&g.failed)) {
        snprintf(err, errcap, "%s: workload: %s\n  replay: HOPPER_POWER_SEED=%" PRIu64,
                 row_names[row], g.err, seed);
        rc = 1;
    }
    if (rc == 0) {
        rc = check_interval(&g, tot, err, errcap);
    }
    /* The crash points and their torn pages come from a stream of their own,
     * so that they replay even when the log length differs. */
    uint64_t crng = hp_test_mix(seed) | 1;
    size_t cuts[40];
    size_t nc = draw_cuts(&crng, hp_pfs_count(g.pfs), 30, cuts);
    hp_pfs_cursor *cur = hp_pfs_cursor_new(g.pfs);
    if (cur == NULL) {
        rc = rc ? rc : -ENOMEM;
    }
    for (size_t i = 0; i < nc && rc == 0; i++) {
        if (only_cut != SIZE_MAX && cuts[i] != only_cut) {
            continue;
        }
        uint64_t trng = hp_test_mix(seed ^ cuts[i]) | 1;
        cutres r1;
        rc = check_cut(&g, cur, cuts[i], &trng, cutdir, tot, &r1, err, errcap);
        if (rc == 0 && draw(&crng, 8) == 0) {
            uint64_t g2rng = hp_test_mix(trng) | 1;
            rc = second_gen(&g, &r1, &g2rng, dir, tot, err, errcap);
        }
        free(r1.delivered.v);
        hp_pfs_image_free(&r1.torn);
    }
    if (only_cut != SIZE_MAX && rc == 0) {
        /* A crash point that is not one of the drawn ones: check it alone. */
        int drawn = 0;
        for (size_t i = 0; i < nc; i++) {
            drawn |= cuts[i] == only_cut;
        }
        if (!drawn && only_cut <= hp_pfs_count(g.pfs)) {
            hp_pfs_cursor_free(cur);
            cur = hp_pfs_cursor_new(g.pfs);
            uint64_t trng = hp_test_mix(seed ^ only_cut) | 1;
            cutres r1;
            rc = check_cut(&g, cur, only_cut, &trng, cutdir, tot, &r1, err, errcap);
            free(r1.delivered.v);
            hp_pfs_image_free(&r1.torn);
        }
    }
    hp_pfs_cursor_free(cur);
    gen_free(&g);
    if (rc != 0) {
        tot->failed_scenarios++;
    }
    if (rc <= 0) {
        rm_rf(dir);
    }
    return rc;
}

char *
hp_power_workdir(void)
{
    const char *base = getenv("HOPPER_POWER_DIR");
    if (base == NULL || *base == '\0') {
        base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    }
    if (base == NULL || *base == '\0') {
        base = "/tmp";
    }
    char buf[PATH_MAX];
    snprintf(buf, sizeof(buf), "%s/hopper-power-XXXXXX", base);
    if (mkdtemp(buf) == NULL) {
        return NULL;
    }
    return strdup(buf);
}
