/* SPDX-License-Identifier: MIT */
/* Target functions: hopper_open hopper_send hopper_send_batch hopper_recv
 *                   hopper_ack hopper_recv_ack hopper_sync hopper_close
 *                   hopper_stats_get (and through them the deque, the writer,
 *                   segment rotation, reclaim, recovery, and the failure
 *                   paths: undo and rewind of a refused batch, sticky
 *                   failure, the ENOSPC pause and retry, transient reads)
 * Property: a deterministic single-threaded op script run against a queue
 * with tiny budgets (memory 256..4096 B, disk 64 KiB, segment_bytes 4096)
 * matches an in-memory reference model: every received record is the next
 * one the model expects (same seq, same bytes: no loss, no duplicates, order
 * kept), the only redelivery is of records not acknowledged before a close +
 * reopen, a poll finds a record exactly when the model holds an undelivered
 * one, HOPPER_EFULL only when the model's backlog is non-empty (or after an
 * injected ENOSPC), HOPPER_ETOOBIG never; after every op the stats agree
 * (backlog_records, next_seq, mem_bytes <= memory budget, disk_bytes <= disk
 * budget + one frame header).
 * Faults (issue 15): an op arms the fault hook (through the power-loss file
 * layer, tests/helpers/powerfs.c) so that the next write, fsync, rename,
 * fsync_dir, open, ftruncate, unlink or pread fails with EIO or ENOSPC. A
 * call may fail only when the fault fired in it; a queue that did not fail
 * stays exact (a refused batch gives its seqs back: next_seq agrees); once
 * stats say failed, every send and recv returns HOPPER_EFAILED until the
 * reopen.
 * Crashes (issue 15): a kill -9 (the files as the page cache holds them), or
 * a power cut (strict or torn, through powerfs) now or at any file-system
 * call the last op made; then reopen and check the durability rules
 * (hopper.h): delivered seqs strictly increase, each is a record that was
 * sent (or whose send failed after a fault: maybe stored) with its bytes,
 * never one refused with HOPPER_EFULL (unless the cut is inside the send
 * that refused it: it had not returned), none below the durable ack position
 * (hopper_sync or close), and every unacknowledged record that had to
 * survive does: for a kill -9 every DISK-mode send that returned 0 and
 * everything before the last clean close; for a power cut every DISK +
 * fsync ALWAYS send that returned 0 (before the op, for a cut inside it) and
 * everything before the last clean close. A close that failed is a crash of
 * the same kind as a kill -9. The model then continues from what was
 * recovered. At the end the queue is drained, must match an empty model,
 * and a reopen finds nothing.
 *
 * Group commit (HOPPER_FSYNC_COMMIT): a record is received only after a
 * hopper_commit() that started after its send (or a reopen), survives a
 * power cut only then, and a kill -9 once its send returned.
 *
 * Input: byte 0 configures: bit 0 durability (0 MEMORY, 1 DISK), bits 1-2
 * compression (0, 1, 5, 9), bit 3 fsync ALWAYS, else bit 7 fsync COMMIT
 * (DISK durability, kept across reopens), else NEVER; bits 4-6 memory
 * budget 256 * (1 + v). Then ops, one byte each (low 3 bits = op,
 * high 5 bits = argument), some followed by argument bytes:
 *   0,1 send one record: next byte x, length by bits 3-4 (x, 16x, 64x, 0),
 *       payload kind by bits 5-6 (fill, PRNG, input bytes, text)
 *   2   send a batch of 1 + bits 3-5 records, one length byte each (8x)
 *   3   recv one (poll)
 *   4   recv up to 1 + bits 3-7 records (poll)
 *   5   ack: bits 3-4 pick last received, middle, UINT64_MAX, far beyond
 *   6   close + reopen; bit 3 toggles durability, bit 4 sets compression to
 *       bits 5-7
 *   7   bits 3-4: 0 recv_ack one (poll); 1 hopper_sync, or with bit 5
 *         hopper_commit (-EINVAL unless fsync COMMIT);
 *       2 crash, bits 5-7: 0 kill -9, 1 power cut now (strict), 2 torn now,
 *         3 strict inside the last op, 4 torn inside the last op (next byte:
 *         where, and the tearing's seed), 5-7 as 0;
 *       3 arm a fault: bits 5-7 pick the call (write fsync rename fsync_dir
 *         open ftruncate unlink pread); next byte: bit 0 ENOSPC (else EIO),
 *         bits 1-2 how many such calls succeed first.
 * At most 256 ops are run, of which at most 4 reopens or crashes (later ones
 * are no-ops). Payloads come from a deterministic producer
 * (seeded by seq and length; no clock, no global RNG).
 *
 * Files (issue 15, speed): the queue directory is in memory. memfs.c
 * compiles the library's own fsio.c over an in-memory file system
 * (fuzz/memfs.h), so recovery, the atomic writes, the fault and trace hooks
 * and powerfs run as on disk without a system call each (on tmpfs an input
 * made ~1,500 of them, most of its cost). The file system starts empty at
 * every input but for the empty queue directory (as on disk before: the
 * seeds' and fixtures' cut positions count from there); after the final
 * close no descriptor may be left open. */
#include "fuzz_common.h"

#include "fsio.h"
#include "hopper.h"
#include "hp_test.h"
#include "memfs.h"
#include "powerfs.h"

#include <stddef.h>
#include <stdint.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_OPS 256
/* Reopens and crashes per input (each a hopper_open, recovery, and for a
 * crash an image): the costliest ops, bounded so that a long script stays
 * cheap. */
#define MAX_REOPENS 4
#define DISK_BUDGET (64u * 1024u)
#define SEGMENT_BYTES 4096u
#define MAX_RECORD (64u * 1024u)
#define MAX_BATCH 8
#define MAX_LEN (64u * 255u)

/* A record: its payload is produce(kind, len, seq). */
typedef struct mrec {
    uint64_t seq;
    uint32_t len;
    uint8_t kind;
} mrec;

typedef struct mrecs {
    mrec *v;
    size_t n;
    size_t cap;
} mrecs;

/* The reference model: the unacknowledged records v[head..n) in seq order;
 * v[head..cur) were delivered since the last open. `hist` holds every record
 * that may be on disk (accepted, or sent when a fault fired), seqs
 * non-decreasing. */
typedef struct model {
    mrecs r;
    size_t head;
    size_t cur;
    uint64_t next_seq;
    mrecs hist;
    uint64_t kill_seq; /* records below survive a kill -9 */
    uint64_t dur_seq;  /* records below survive a power cut */
    uint64_t vis_seq;  /* records below may be received (HOPPER_FSYNC_COMMIT:
                        * committed; otherwise every record sent) */
    uint64_t ack_dur;  /* acknowledged seqs below never come back */
    mrecs refused;     /* refused (HOPPER_EFULL) by the last op: a power cut
                        * inside it may still find them, one after it never */
} model;

typedef struct run {
    const uint8_t *in;
    size_t in_len;
    size_t pos;
    model m;
    hopper_opts o;
    const char *base; /* in memfs */
    char qdir[PATH_MAX];
    hopper_queue *q;
    hp_pfs *pfs;
    /* Bumped with every new recorder: an op_start names its recorder by
     * this, not by address (a new recorder may get a freed one's). */
    unsigned pfs_gen;
    int failed;      /* the queue reported a sticky failure (this open) */
    int space_fault; /* an ENOSPC was injected (this open): EFULL may come */
    int reopens;     /* reopen and crash ops run so far */
    int power;       /* the script has a power cut: record with powerfs */
    uint8_t scratch[MAX_BATCH][MAX_LEN + 1];
    uint8_t want[MAX_LEN + 1];
} run;

/* The fault hook (armed by op 7/3): the `skip`+1-th call named `op` fails. */
static struct {
    const char *op;
    int err;
    int skip;
    int fired; /* set when it injected: cleared by the caller per op */
} fault;

static int
fault_hook(const char *op)
{
    if (fault.op == NULL || strcmp(op, fault.op) != 0) {
        return 0;
    }
    if (fault.skip > 0) {
        fault.skip--;
        return 0;
    }
    fault.op = NULL;
    fault.fired = 1;
    return -fault.err;
}

static int
next_byte(run *r, uint8_t *b)
{
    if (r->pos >= r->in_len) {
        return 0;
    }
    *b = r->in[r->pos++];
    return 1;
}

static void
recs_push(mrecs *a, mrec v)
{
    if (a->n == a->cap) {
        size_t ncap = a->cap ? a->cap * 2 : 64;
        mrec *nv = realloc(a->v, ncap * sizeof(*nv));
        FZ_CHECK(nv != NULL, "out of memory in the model");
        a->v = nv;
        a->cap = ncap;
    }
    a->v[a->n++] = v;
}

static uint64_t
model_backlog_bytes(const model *m)
{
    uint64_t b = 0;
    for (size_t i = m->head; i < m->r.n; i++) {
        b += m->r.v[i].len + 4u;
    }
    return b;
}

static void
model_push(model *m, uint32_t len, int kind)
{
    mrec v = {.seq = m->next_seq++, .len = len, .kind = (uint8_t)kind};
    recs_push(&m->r, v);
    recs_push(&m->hist, v);
}

/* The library's read position: one past the last delivered, or ack_next. */
static uint64_t
model_read_seq(const model *m)
{
    if (m->cur > m->head) {
        return m->r.v[m->cur - 1].seq + 1;
    }
    return m->head < m->r.n ? m->r.v[m->head].seq : m->next_seq;
}

/* The first unacknowledged seq. */
static uint64_t
model_ack_pos(const model *m)
{
    return m->head < m->r.n ? m->r.v[m->head].seq : m->next_seq;
}

static void
model_ack(model *m, uint64_t seq)
{
    uint64_t read_seq = model_read_seq(m);
    uint64_t upto = seq == UINT64_MAX ? read_seq : seq + 1;
    if (upto > read_seq) {
        upto = read_seq;
    }
    while (m->head < m->cur && m->r.v[m->head].seq < upto) {
        m->head++;
    }
    if (m->head > 4096 && m->head * 2 > m->r.n) {
        memmove(m->r.v, m->r.v + m->head, (m->r.n - m->head) * sizeof(*m->r.v));
        m->r.n -= m->head;
        m->cur -= m->head;
        m->head = 0;
    }
}

static void
model_free(model *m)
{
    free(m->r.v);
    free(m->hist.v);
    free(m->refused.v);
    memset(m, 0, sizeof(*m));
}

/* Deterministic payload producer (zstd-style: a few shapes of data). Byte i
 * of kind 2 is in[(seq + i) % in_len], of kind 3 "hopper record "[(i + seq) %
 * 14]; they are copied in runs (a per-byte modulo was a third of an input's
 * CPU once the queue went to memory). */
static void
produce(const run *r, uint8_t *out, uint32_t len, int kind, uint64_t seq)
{
    static const char text[] = "hopper record ";
    const uint8_t *src = (const uint8_t *)text;
    size_t period = sizeof(text) - 1;
    switch (kind) {
    case 0:
        memset(out, (uint8_t)(seq + 'a'), len);
        return;
    case 1: {
        uint32_t x = (uint32_t)(seq * 2654435761u) ^ (len * 40503u) ^ 0x9e3779b9u;
        for (uint32_t i = 0; i < len; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out[i] = (uint8_t)x;
        }
        return;
    }
    case 2:
        if (r->in_len == 0) {
            memset(out, 0, len);
            return;
        }
        src = r->in;
        period = r->in_len;
        break;
    default:
        break;
    }
    size_t j = (size_t)(seq % period);
    for (size_t i = 0; i < len;) {
        size_t k = period - j < len - i ? period - j : len - i;
        memcpy(out + i, src + j, k);
        i += k;
        j = 0;
    }
}

/* Is rec the record v (same seq, length and bytes)? */
static int
same_record(run *r, const hopper_record *rec, const mrec *v)
{
    if (rec->seq != v->seq || rec->len != v->len) {
        return 0;
    }
    produce(r, r->want, v->len, v->kind, v->seq);
    return rec->len == 0 || memcmp(rec->data, r->want, rec->len) == 0;
}

static void
check_stats(run *r)
{
    hopper_stats st = {.struct_size = sizeof(st)};
    FZ_CHECK(hopper_stats_get(r->q, &st) == 0, "stats");
#ifdef FZ_VERBOSE
    fprintf(stderr, "  stats: mem %llu/%llu B disk %llu B segs %llu backlog %llu next %llu%s\n",
            (unsigned long long)st.mem_records, (unsigned long long)st.mem_bytes,
            (unsigned long long)st.disk_bytes, (unsigned long long)st.segments,
            (unsigned long long)st.backlog_records, (unsigned long long)st.next_seq,
            st.failed ? " FAILED" : "");
#endif
    if (st.failed != 0 || r->failed) {
        FZ_CHECK(fault.fired || r->failed, "queue failed without a fault: %s",
                 hopper_err_name(st.failed));
        FZ_CHECK(st.failed != 0, "a failed queue recovered by itself");
        r->failed = 1;
        return;
    }
    FZ_CHECK(st.backlog_records == r->m.r.n - r->m.head, "backlog_records %llu, model %zu",
             (unsigned long long)st.backlog_records, r->m.r.n - r->m.head);
    FZ_CHECK(st.next_seq == r->m.next_seq, "next_seq %llu, model %llu",
             (unsigned long long)st.next_seq, (unsigned long long)r->m.next_seq);
    FZ_CHECK(st.mem_bytes <= r->o.memory_bytes, "mem_bytes %llu > budget %llu",
             (unsigned long long)st.mem_bytes, (unsigned long long)r->o.memory_bytes);
    FZ_CHECK(st.disk_bytes <= r->o.disk_bytes + HOPPER_FRAME_OVERHEAD,
             "disk_bytes %llu > budget %llu + one frame header",
             (unsigned long long)st.disk_bytes, (unsigned long long)r->o.disk_bytes);
}

/* The queue directory's files now (memfs), as powerfs's image files;
 * has_qdir = 0 when there is no directory yet. */
static void
snapshot_qdir(run *r, hp_pfs_image *img)
{
    memfs_file *mf;
    size_t n;
    int rc = memfs_snapshot(r->qdir, &mf, &n);
    memset(img, 0, sizeof(*img));
    if (rc == -ENOENT) {
        return;
    }
    FZ_CHECK(rc == 0, "memfs_snapshot %s: %d", r->qdir, rc);
    img->has_qdir = 1;
    img->files = n ? calloc(n, sizeof(*img->files)) : NULL;
    FZ_CHECK(n == 0 || img->files != NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        img->files[i] = (hp_pfs_file){.name = mf[i].name, .data = mf[i].data, .len = mf[i].len};
    }
    img->n = n;
    free(mf); /* names and bytes now owned by img */
}

/* Start recording a fresh model of the directory as it is now (durable). */
static void
pfs_restart(run *r)
{
    hp_pfs_free(r->pfs); /* removes the hooks */
    r->pfs = NULL;
    if (!r->power) {
        /* No power cut in the script: faults without the model (cheaper). */
        hp_fault_hook = fault_hook;
        return;
    }
    r->pfs = hp_pfs_new(r->base, "q");
    FZ_CHECK(r->pfs != NULL, "hp_pfs_new");
    r->pfs_gen++;
    hp_pfs_image img;
    snapshot_qdir(r, &img);
    if (img.has_qdir) {
        int rc = hp_pfs_load_files(r->pfs, img.files, img.n);
        FZ_CHECK(rc == 0, "hp_pfs_load_files: %d", rc);
    }
    hp_pfs_image_free(&img);
    hp_pfs_attach(r->pfs, fault_hook);
}

static void
queue_open(run *r)
{
    fault.op = NULL; /* an armed fault does not outlive the handle */
    pfs_restart(r);
    r->failed = 0;
    r->space_fault = 0;
    int rc = hopper_open(r->base, "q", &r->o, &r->q);
    FZ_CHECK(rc == 0, "hopper_open: %s", hopper_err_name(rc));
}

/* A send of n records returned rc: update and check the model. */
static void
after_send(run *r, const hopper_iovec *recs, const int *kinds, size_t n, int rc)
{
    if (rc == 0) {
        FZ_CHECK(!r->failed, "a send succeeded on a failed queue");
        for (size_t i = 0; i < n; i++) {
            model_push(&r->m, (uint32_t)recs[i].len, kinds[i]);
        }
        if (r->o.durability == HOPPER_DURABILITY_DISK) {
            r->m.kill_seq = r->m.next_seq;
            if (r->o.fsync == HOPPER_FSYNC_ALWAYS) {
                r->m.dur_seq = r->m.next_seq;
            }
        }
        if (r->o.fsync != HOPPER_FSYNC_COMMIT) {
            r->m.vis_seq = r->m.next_seq;
        }
        return;
    }
    if (r->failed) {
        FZ_CHECK(rc == HOPPER_EFAILED, "send on a failed queue: %s", hopper_err_name(rc));
        return;
    }
    if (rc == HOPPER_EFULL) {
        FZ_CHECK(model_backlog_bytes(&r->m) > 0 || r->space_fault || fault.fired,
                 "HOPPER_EFULL with an empty backlog (send of %zu records, first %zu bytes)", n,
                 recs[0].len);
        for (size_t i = 0; i < n; i++) {
            recs_push(&r->m.refused,
                      (mrec){.seq = r->m.next_seq + i, .len = (uint32_t)recs[i].len,
                             .kind = (uint8_t)kinds[i]});
        }
        return; /* refused: never seen once the send returned */
    }
    FZ_CHECK(fault.fired, "send of %zu records: %s", n, hopper_err_name(rc));
    /* Failed after a fault: maybe stored, under the seqs it would have had. */
    for (size_t i = 0; i < n; i++) {
        recs_push(&r->m.hist, (mrec){.seq = r->m.next_seq + i, .len = (uint32_t)recs[i].len,
                                     .kind = (uint8_t)kinds[i]});
    }
}

/* Poll one record; compare with the model. Returns 1 if one was received. */
static int
recv_one(run *r, int and_ack)
{
    hopper_record rec;
    int rc = and_ack ? hopper_recv_ack(r->q, &rec, 0) : hopper_recv(r->q, &rec, 0);
    model *m = &r->m;
    if (r->failed) {
        FZ_CHECK(rc == HOPPER_EFAILED, "recv on a failed queue: %s", hopper_err_name(rc));
        return 0;
    }
    if (rc < 0 && rc != -EAGAIN && fault.fired) {
        /* A transient read error, or the failure check_stats sees. A
         * recv_ack may have failed in its ack, after the record was taken
         * and the ack made durable: it may or may not come back. */
        hopper_stats st = {.struct_size = sizeof(st)};
        FZ_CHECK(hopper_stats_get(r->q, &st) == 0, "stats");
        if (and_ack && st.failed != 0 && m->cur < m->r.n) {
            m->cur++;
            model_ack(m, m->r.v[m->cur - 1].seq);
        }
        return 0;
    }
    if (rc == -EAGAIN && r->space_fault) {
        /* After ENOSPC the writer pauses (FORMAT.md §2): a record waiting
         * in memory to be written is not handed out before the retry. */
        return 0;
    }
    if (m->cur == m->r.n || m->r.v[m->cur].seq >= m->vis_seq) {
        FZ_CHECK(rc == -EAGAIN, "model has nothing to receive (%s) but recv gave %s (seq %llu)",
                 m->cur == m->r.n ? "drained" : "not committed", hopper_err_name(rc),
                 rc == 0 ? (unsigned long long)rec.seq : 0ull);
        return 0;
    }
    const mrec *want = &m->r.v[m->cur];
    FZ_CHECK(rc == 0, "record seq %llu expected, recv gave %s", (unsigned long long)want->seq,
             hopper_err_name(rc));
    FZ_CHECK(rec.seq == want->seq, "recv seq %llu, expected %llu", (unsigned long long)rec.seq,
             (unsigned long long)want->seq);
    FZ_CHECK(rec.len == want->len, "seq %llu: %zu bytes, expected %u", (unsigned long long)rec.seq,
             rec.len, want->len);
    FZ_CHECK(same_record(r, &rec, want), "seq %llu: payload differs", (unsigned long long)rec.seq);
    m->cur++;
    if (and_ack) {
        model_ack(m, rec.seq);
    }
    return 1;
}

static void
op_send(run *r, uint8_t b)
{
    uint8_t x;
    if (!next_byte(r, &x)) {
        return;
    }
    static const uint32_t scale[4] = {1, 16, 64, 0};
    uint32_t len = x * scale[(b >> 3) & 3];
    int kind = (b >> 5) & 3;
    produce(r, r->scratch[0], len, kind, r->m.next_seq);
    hopper_iovec v = {.data = r->scratch[0], .len = len};
    int rc = hopper_send(r->q, v.data, v.len, 0);
    after_send(r, &v, &kind, 1, rc);
}

static void
op_batch(run *r, uint8_t b)
{
    size_t n = 1 + ((b >> 3) & 7);
    hopper_iovec v[MAX_BATCH];
    int kinds[MAX_BATCH];
    for (size_t i = 0; i < n; i++) {
        uint8_t x;
        if (!next_byte(r, &x)) {
            n = i;
            break;
        }
        uint32_t len = (uint32_t)x * 8u;
        kinds[i] = (int)(i & 3);
        produce(r, r->scratch[i], len, kinds[i], r->m.next_seq + i);
        v[i] = (hopper_iovec){.data = r->scratch[i], .len = len};
    }
    if (n == 0) {
        return;
    }
    int rc = hopper_send_batch(r->q, v, n, 0);
    after_send(r, v, kinds, n, rc);
}

static void
op_ack(run *r, uint8_t b)
{
    model *m = &r->m;
    uint64_t seq;
    switch ((b >> 3) & 3) {
    case 0: /* the last delivered record (or just below the read position) */
        seq = model_read_seq(m) > 0 ? model_read_seq(m) - 1 : 0;
        break;
    case 1:
        seq = m->cur > m->head ? m->r.v[m->head + (m->cur - m->head) / 2].seq : 0;
        break;
    case 2:
        seq = UINT64_MAX;
        break;
    default:
        seq = m->next_seq + 100;
        break;
    }
    int rc = hopper_ack(r->q, seq);
    if (r->failed) {
        FZ_CHECK(rc == HOPPER_EFAILED, "ack on a failed queue: %s", hopper_err_name(rc));
        return;
    }
    FZ_CHECK(rc == 0 || fault.fired, "hopper_ack(%llu): %s", (unsigned long long)seq,
             hopper_err_name(rc));
    hopper_stats st = {.struct_size = sizeof(st)};
    FZ_CHECK(hopper_stats_get(r->q, &st) == 0, "stats");
    if (rc == 0 || st.failed != 0) {
        /* An ack that failed in its reclaim (checkpoint durable, then
         * unlink) did acknowledge: the records may or may not come back. */
        model_ack(m, seq);
    }
}

static void
op_sync(run *r)
{
    int rc = hopper_sync(r->q);
    if (r->failed) {
        FZ_CHECK(rc == HOPPER_EFAILED, "sync on a failed queue: %s", hopper_err_name(rc));
        return;
    }
    FZ_CHECK(rc == 0 || fault.fired, "hopper_sync: %s", hopper_err_name(rc));
    if (rc == 0) {
        r->m.ack_dur = model_ack_pos(&r->m);
    }
}

static void
op_commit(run *r)
{
    int rc = hopper_commit(r->q);
    if (r->o.fsync != HOPPER_FSYNC_COMMIT) {
        FZ_CHECK(rc == -EINVAL, "hopper_commit without fsync COMMIT: %s", hopper_err_name(rc));
        return;
    }
    if (r->failed) {
        FZ_CHECK(rc == HOPPER_EFAILED, "commit on a failed queue: %s", hopper_err_name(rc));
        return;
    }
    FZ_CHECK(rc == 0 || fault.fired, "hopper_commit: %s", hopper_err_name(rc));
    if (rc == 0) {
        r->m.dur_seq = r->m.vis_seq = r->m.next_seq;
    }
}

/* Reopen after a crash (or a failed close): the directory holds `img`.
 * Records v[..] unacknowledged with seq < must_hi must be delivered. */
static void
recover_check(run *r, uint64_t must_hi, int inside_op, const char *how)
{
    model *m = &r->m;
    queue_open(r);
    hopper_stats st = {.struct_size = sizeof(st)};
    FZ_CHECK(hopper_stats_get(r->q, &st) == 0, "stats");
    mrecs got = {0};
    size_t must = m->head; /* the next record that must come */
    size_t h = 0;          /* history cursor (seqs non-decreasing) */
    for (;;) {
        hopper_record rec;
        int rc = hopper_recv(r->q, &rec, 0);
        if (rc == -EAGAIN) {
            break;
        }
        FZ_CHECK(rc == 0, "%s: recv after recovery: %s", how, hopper_err_name(rc));
        FZ_CHECK(got.n == 0 || rec.seq > got.v[got.n - 1].seq, "%s: seq %llu after %llu", how,
                 (unsigned long long)rec.seq, (unsigned long long)got.v[got.n - 1].seq);
        FZ_CHECK(rec.seq >= m->ack_dur, "%s: seq %llu came back, durably acknowledged below %llu",
                 how, (unsigned long long)rec.seq, (unsigned long long)m->ack_dur);
        while (must < m->r.n && m->r.v[must].seq < rec.seq) {
            FZ_CHECK(m->r.v[must].seq >= must_hi, "%s: seq %llu lost (must survive below %llu)",
                     how, (unsigned long long)m->r.v[must].seq, (unsigned long long)must_hi);
            must++;
        }
        if (must < m->r.n && m->r.v[must].seq == rec.seq) {
            must++;
        }
        while (h < m->hist.n && m->hist.v[h].seq < rec.seq) {
            h++;
        }
        const mrec *match = NULL;
        for (size_t k = h; k < m->hist.n && m->hist.v[k].seq == rec.seq; k++) {
            if (same_record(r, &rec, &m->hist.v[k])) {
                match = &m->hist.v[k];
                break;
            }
        }
        for (size_t k = 0; match == NULL && inside_op && k < m->refused.n; k++) {
            if (same_record(r, &rec, &m->refused.v[k])) {
                match = &m->refused.v[k]; /* the cut came before send returned */
            }
        }
        FZ_CHECK(match != NULL, "%s: seq %llu (%zu bytes) was never sent (or was refused)", how,
                 (unsigned long long)rec.seq, rec.len);
        recs_push(&got, *match);
    }
    while (must < m->r.n) {
        FZ_CHECK(m->r.v[must].seq >= must_hi, "%s: seq %llu lost (must survive below %llu)", how,
                 (unsigned long long)m->r.v[must].seq, (unsigned long long)must_hi);
        must++;
    }
    FZ_CHECK(got.n == 0 || st.next_seq > got.v[got.n - 1].seq, "%s: next_seq %llu", how,
             (unsigned long long)st.next_seq);
    FZ_CHECK(st.next_seq >= m->ack_dur, "%s: next_seq %llu below the durable ack %llu", how,
             (unsigned long long)st.next_seq, (unsigned long long)m->ack_dur);
    /* The model continues from what was recovered, all delivered. */
    free(m->r.v);
    free(m->hist.v);
    m->r = got;
    m->hist.v = NULL;
    m->hist.n = m->hist.cap = 0;
    for (size_t i = 0; i < got.n; i++) {
        recs_push(&m->hist, got.v[i]);
    }
    m->head = 0;
    m->cur = got.n;
    m->next_seq = st.next_seq;
    m->kill_seq = m->dur_seq = m->vis_seq = st.next_seq;
}

/* Close; a close that failed counts as a kill -9 (the files as left). */
static void
close_then_reopen(run *r)
{
    int rc = hopper_close(r->q);
    r->q = NULL;
    if (rc == 0) {
        FZ_CHECK(!r->failed, "close of a failed queue returned 0");
        r->m.kill_seq = r->m.dur_seq = r->m.vis_seq = r->m.next_seq;
        r->m.ack_dur = model_ack_pos(&r->m);
        r->m.cur = r->m.head; /* delivered but unacknowledged records come again */
        queue_open(r);
        return;
    }
    FZ_CHECK(fault.fired || r->failed, "hopper_close: %s", hopper_err_name(rc));
    /* -ENOSPC from the checkpoint: nothing lost, acks may come back. */
    uint64_t must_hi = rc == -ENOSPC || rc == -EDQUOT ? r->m.next_seq : r->m.kill_seq;
    recover_check(r, must_hi, 0, "after a failed close");
}

static void
op_reopen(run *r, uint8_t b)
{
    if ((b & 0x08) && r->o.fsync != HOPPER_FSYNC_COMMIT) {
        r->o.durability = r->o.durability == HOPPER_DURABILITY_DISK ? HOPPER_DURABILITY_MEMORY
                                                                    : HOPPER_DURABILITY_DISK;
    }
    if (b & 0x10) {
        int c = (b >> 5) & 7;
        r->o.compression = c == 7 ? 9 : c;
    }
    close_then_reopen(r);
}

/* The state the last op started from: the crash bounds, and where it began
 * in the file-system log. */
typedef struct op_start {
    unsigned pfs_gen; /* the recorder it began with (run.pfs_gen) */
    size_t at;
    uint64_t dur_seq;
    uint64_t ack_dur;
} op_start;

static void
op_crash(run *r, uint8_t b, const op_start *os)
{
    int kind = (b >> 5) & 7;
    uint8_t x = 0;
    if (kind == 3 || kind == 4) {
        (void)next_byte(r, &x);
    }
    hp_pfs_image img = {0};
    uint64_t must_hi;
    const char *how;
    if (r->pfs != NULL) {
        hp_pfs_detach(r->pfs);
    }
    hp_fault_hook = NULL;
    if (kind == 0 || kind > 4 || r->pfs == NULL) {
        /* kill -9: the files as they are (the page cache survives). */
        how = "kill -9";
        must_hi = r->m.kill_seq;
        snapshot_qdir(r, &img);
        FZ_CHECK(img.has_qdir, "the queue directory is gone");
    } else {
        size_t count = hp_pfs_count(r->pfs);
        size_t cut = count;
        must_hi = r->m.dur_seq;
        if (kind >= 3 && os->pfs_gen == r->pfs_gen && os->at <= count) {
            cut = os->at + x % (count - os->at + 1);
            /* Before the op returned: what was durable when it began. */
            must_hi = os->dur_seq;
            r->m.ack_dur = os->ack_dur;
        }
        uint64_t rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)x << 17) ^ cut;
        int torn = kind == 2 || kind == 4;
        how = torn ? "torn power cut" : "power cut";
        hp_pfs_cursor *c = hp_pfs_cursor_new(r->pfs);
        FZ_CHECK(c != NULL, "hp_pfs_cursor_new");
        int rc = hp_pfs_image_at(c, cut, torn ? &rng : NULL, &img);
        FZ_CHECK(rc == 0, "hp_pfs_image_at: %d", rc);
        hp_pfs_cursor_free(c);
        FZ_CHECK(img.has_qdir, "the queue directory did not survive: %s", img.how);
    }
    (void)hopper_close(r->q); /* its writes are not in the image */
    r->q = NULL;
    /* The directory becomes the image (memfs_file has hp_pfs_file's fields). */
    memfs_file *mf = img.n ? calloc(img.n, sizeof(*mf)) : NULL;
    FZ_CHECK(img.n == 0 || mf != NULL, "out of memory");
    for (size_t i = 0; i < img.n; i++) {
        mf[i] = (memfs_file){.name = img.files[i].name, .data = img.files[i].data,
                             .len = img.files[i].len};
    }
    int rc = memfs_restore(r->qdir, mf, img.n);
    free(mf);
    FZ_CHECK(rc == 0, "memfs_restore: %d", rc);
#ifdef FZ_VERBOSE
    fprintf(stderr, "  crash: %s, must survive below %llu: %s\n", how,
            (unsigned long long)must_hi, img.how);
    for (size_t i = 0; i < img.n; i++) {
        fprintf(stderr, "    %s: %zu bytes\n", img.files[i].name, img.files[i].len);
    }
#endif
    hp_pfs_image_free(&img);
    recover_check(r, must_hi, kind == 3 || kind == 4, how);
}

static void
op_fault(run *r, uint8_t b)
{
    static const char *const names[8] = {"write", "fsync",     "rename", "fsync_dir",
                                         "open",  "ftruncate", "unlink", "pread"};
    uint8_t x = 0;
    (void)next_byte(r, &x);
    fault.op = names[(b >> 5) & 7];
    fault.err = (x & 1) ? ENOSPC : EIO;
    fault.skip = (x >> 1) & 3;
    if (x & 1) {
        r->space_fault = 1;
    }
}

/* Does the script hold a power cut (op 7/2, kinds 1-4)? Walks the ops as
 * the run does (their argument bytes included). */
static int
has_power_cut(const uint8_t *p, size_t n)
{
    size_t i = 1;
    for (int ops = 0; ops < MAX_OPS && i < n; ops++) {
        uint8_t b = p[i++];
        switch (b & 7) {
        case 0:
        case 1:
            i += 1;
            break;
        case 2:
            i += 1 + ((b >> 3) & 7);
            break;
        case 7:
            if (((b >> 3) & 3) == 2) {
                int kind = (b >> 5) & 7;
                if (kind >= 1 && kind <= 4) {
                    return 1;
                }
            } else if (((b >> 3) & 3) == 3) {
                i += 1;
            }
            break;
        default:
            break;
        }
    }
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > FZ_MAX_INPUT) {
        return 0;
    }
#if defined(__GLIBC__)
    static int tuned;
    if (!tuned) {
        /* An input's heap (the queue's buffers, the file contents, powerfs's
         * log) is freed at its end; glibc would give the top of the heap
         * back and the next input fault it in again, page by page: once the
         * files were in memory, those page faults were a fifth of an
         * input's time. Keep it (no effect on what is checked; ASan's
         * allocator ignores this). */
        (void)mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
        (void)mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
        tuned = 1;
    }
#endif
    static run r; /* large scratch; fully reset below */
    memset(&r.m, 0, sizeof(r.m));
    r.in = data;
    r.in_len = size;
    r.pos = 1;
    r.q = NULL;
    r.pfs = NULL;
    r.reopens = 0;
    r.power = has_power_cut(data, size);
    memset(&fault, 0, sizeof(fault));
    hopper_opts_init(&r.o);
    r.o.durability = (data[0] & 1) ? HOPPER_DURABILITY_DISK : HOPPER_DURABILITY_MEMORY;
    static const int levels[4] = {0, 1, 5, 9};
    r.o.compression = levels[(data[0] >> 1) & 3];
    r.o.fsync = (data[0] & 8)      ? HOPPER_FSYNC_ALWAYS
                : (data[0] & 0x80) ? HOPPER_FSYNC_COMMIT
                                   : HOPPER_FSYNC_NEVER;
    if (r.o.fsync == HOPPER_FSYNC_COMMIT) {
        r.o.durability = HOPPER_DURABILITY_DISK;
    }
    r.o.memory_bytes = 256u * (1u + ((data[0] >> 4) & 7));
    r.o.disk_bytes = DISK_BUDGET;
    r.o.segment_bytes = SEGMENT_BYTES;
    r.o.max_record_bytes = MAX_RECORD;
    r.o.checkpoint_interval_ms = UINT32_MAX; /* time-independent */

    /* The queue lives in memfs (fuzz/memfs.h): an empty file system per
     * input, the library's fsio.c over it. The queue directory exists
     * (empty) before the first open, as on disk before memfs: the seeds' and
     * fixtures' cut positions count the log from there. */
    FZ_CHECK(memfs_reset() == 0, "descriptors left open by the previous input");
    r.base = "/fuzz";
    fz_join(r.qdir, sizeof(r.qdir), r.base, "q");
    FZ_CHECK(memfs_mkdir(r.base, 0700) == 0 && memfs_mkdir(r.qdir, 0700) == 0,
             "memfs_mkdir %s", r.qdir);
    queue_open(&r);
    check_stats(&r);

    /* Where the last op began; the open, before the first. Not static: a
     * crash "inside the last op" as an input's first op read the previous
     * input's bounds (and, when malloc gave the new recorder the old one's
     * address, its stale dur_seq and ack_dur) in AFL++'s persistent loop. */
    op_start os = {.pfs_gen = r.pfs_gen, .at = r.pfs ? hp_pfs_count(r.pfs) : 0,
                   .dur_seq = r.m.dur_seq, .ack_dur = r.m.ack_dur};
    for (int ops = 0; ops < MAX_OPS; ops++) {
        uint8_t b;
        if (!next_byte(&r, &b)) {
            break;
        }
#ifdef FZ_VERBOSE /* triage: -DFZ_VERBOSE prints the script as it runs */
        fprintf(stderr, "op %d: 0x%02x (kind %d) model head %zu cur %zu n %zu next %llu\n", ops, b,
                b & 7, r.m.head, r.m.cur, r.m.r.n, (unsigned long long)r.m.next_seq);
#endif
        int reopens = (b & 7) == 6 || ((b & 7) == 7 && ((b >> 3) & 3) == 2);
        if (reopens && ++r.reopens > MAX_REOPENS) {
            continue; /* over the budget: a no-op */
        }
        int is_crash = (b & 7) == 7 && ((b >> 3) & 3) == 2;
        if (!is_crash) {
            os = (op_start){.pfs_gen = r.pfs_gen, .at = r.pfs ? hp_pfs_count(r.pfs) : 0,
                            .dur_seq = r.m.dur_seq, .ack_dur = r.m.ack_dur};
        }
        fault.fired = 0;
        if (!is_crash) {
            r.m.refused.n = 0;
        }
        switch (b & 7) {
        case 0:
        case 1:
            op_send(&r, b);
            break;
        case 2:
            op_batch(&r, b);
            break;
        case 3:
            (void)recv_one(&r, 0);
            break;
        case 4:
            for (int i = 0, k = 1 + (b >> 3); i < k; i++) {
                if (!recv_one(&r, 0)) {
                    break;
                }
            }
            break;
        case 5:
            op_ack(&r, b);
            break;
        case 6:
            op_reopen(&r, b);
            break;
        default:
            switch ((b >> 3) & 3) {
            case 0:
                (void)recv_one(&r, 1);
                break;
            case 1:
                if (b & 0x20) {
                    op_commit(&r);
                } else {
                    op_sync(&r);
                }
                break;
            case 2:
                op_crash(&r, b, &os);
                break;
            default:
                op_fault(&r, b);
                break;
            }
            break;
        }
        check_stats(&r);
    }

    /* Drain: everything the model holds comes out, in order, then nothing. */
    fault.op = NULL;
    fault.fired = 0;
    if (r.failed || r.space_fault) {
        close_then_reopen(&r); /* no sticky failure, no ENOSPC pause */
    }
    if (r.o.fsync == HOPPER_FSYNC_COMMIT) {
        op_commit(&r); /* what is not committed is not received */
    }
    while (recv_one(&r, 1)) {
    }
    int rc = hopper_ack(r.q, UINT64_MAX);
    FZ_CHECK(rc == 0, "final ack: %s", hopper_err_name(rc));
    model_ack(&r.m, UINT64_MAX);
    FZ_CHECK(r.m.head == r.m.r.n, "model not empty after the drain");
    check_stats(&r);
    close_then_reopen(&r);
    check_stats(&r);
    (void)recv_one(&r, 0); /* must be -EAGAIN */
    rc = hopper_close(r.q);
    FZ_CHECK(rc == 0, "hopper_close: %s", hopper_err_name(rc));
    r.q = NULL;
    hp_pfs_free(r.pfs);
    r.pfs = NULL;
    hp_fault_hook = NULL;

    model_free(&r.m);
    FZ_CHECK(memfs_open_fds() == 0, "%d descriptors left open after hopper_close",
             memfs_open_fds());
    (void)memfs_reset();
    return 0;
}
