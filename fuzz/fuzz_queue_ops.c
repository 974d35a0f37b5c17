/* SPDX-License-Identifier: MIT */
/* Target functions: hopper_open hopper_send hopper_send_batch hopper_recv
 *                   hopper_ack hopper_recv_ack hopper_sync hopper_close
 *                   hopper_stats_get (and through them the deque, the writer,
 *                   segment rotation, reclaim and recovery)
 * Property: a deterministic single-threaded op script run against a queue
 * with tiny budgets (memory 256..4096 B, disk 64 KiB, segment_bytes 4096,
 * fsync NEVER) matches an in-memory reference model: every received record
 * is the next one the model expects (same seq, same bytes: no loss, no
 * duplicates, order kept), the only redelivery is of records not
 * acknowledged before a close + reopen, a poll finds a record exactly when
 * the model holds an undelivered one, HOPPER_EFULL only when the model's
 * backlog is non-empty, HOPPER_ETOOBIG never (every batch fits an empty
 * queue), close and reopen never fail; after every op the stats agree
 * (backlog_records, next_seq, not failed, mem_bytes <= memory budget,
 * disk_bytes <= disk budget + one frame header). At the end the queue is
 * drained, must then match an empty model, and a reopen finds nothing.
 *
 * Input: byte 0 configures: bit 0 durability (0 MEMORY, 1 DISK), bits 1-3
 * compression (7 means 9), bits 4-7 memory budget 256 * (1 + v). Then ops,
 * one byte each (low 3 bits = op, high 5 bits = argument), some followed by
 * argument bytes:
 *   0,1 send one record: next byte x, length by bits 3-4 (x, 16x, 64x, 0),
 *       payload kind by bits 5-6 (fill, PRNG, input bytes, text)
 *   2   send a batch of 1 + bits 3-5 records, one length byte each (8x)
 *   3   recv one (poll)
 *   4   recv up to 1 + bits 3-7 records (poll)
 *   5   ack: bits 3-4 pick last received, middle, UINT64_MAX, far beyond
 *   6   close + reopen; bit 3 toggles durability, bit 4 sets compression to
 *       bits 5-7
 *   7   bit 3 clear: recv_ack one (poll); set: hopper_sync
 * At most 1024 ops are run. Payloads come from a deterministic producer
 * (seeded by seq and length; no clock, no global RNG). */
#include "fuzz_common.h"

#include "hopper.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_OPS 1024
#define DISK_BUDGET (64u * 1024u)
#define SEGMENT_BYTES 4096u
#define MAX_RECORD (64u * 1024u)
#define MAX_BATCH 8

typedef struct mrec {
    uint64_t seq;
    uint32_t len;
    uint8_t *data;
} mrec;

/* The reference model: the unacknowledged records v[head..n) in seq order;
 * v[head..cur) were delivered since the last open. */
typedef struct model {
    mrec *v;
    size_t head;
    size_t cur;
    size_t n;
    size_t cap;
    uint64_t next_seq;
} model;

typedef struct run {
    const uint8_t *in;
    size_t in_len;
    size_t pos;
    model m;
    hopper_opts o;
    const char *base;
    hopper_queue *q;
    uint8_t scratch[MAX_BATCH][64u * 255u + 1u];
} run;

static int
next_byte(run *r, uint8_t *b)
{
    if (r->pos >= r->in_len) {
        return 0;
    }
    *b = r->in[r->pos++];
    return 1;
}

static uint64_t
model_backlog_bytes(const model *m)
{
    uint64_t b = 0;
    for (size_t i = m->head; i < m->n; i++) {
        b += m->v[i].len + 4u;
    }
    return b;
}

static void
model_push(model *m, const uint8_t *p, uint32_t len)
{
    if (m->n == m->cap) {
        /* Compact before growing. */
        if (m->head > 0) {
            memmove(m->v, m->v + m->head, (m->n - m->head) * sizeof(*m->v));
            m->n -= m->head;
            m->cur -= m->head;
            m->head = 0;
        }
        if (m->n == m->cap) {
            size_t ncap = m->cap ? m->cap * 2 : 64;
            mrec *nv = realloc(m->v, ncap * sizeof(*nv));
            FZ_CHECK(nv != NULL, "out of memory in the model");
            m->v = nv;
            m->cap = ncap;
        }
    }
    uint8_t *copy = NULL;
    if (len > 0) {
        copy = malloc(len);
        FZ_CHECK(copy != NULL, "out of memory in the model");
        memcpy(copy, p, len);
    }
    m->v[m->n++] = (mrec){.seq = m->next_seq++, .len = len, .data = copy};
}

/* The library's read position: one past the last delivered, or ack_next. */
static uint64_t
model_read_seq(const model *m)
{
    if (m->cur > m->head) {
        return m->v[m->cur - 1].seq + 1;
    }
    return m->head < m->n ? m->v[m->head].seq : m->next_seq;
}

static void
model_ack(model *m, uint64_t seq)
{
    uint64_t read_seq = model_read_seq(m);
    uint64_t upto = seq == UINT64_MAX ? read_seq : seq + 1;
    if (upto > read_seq) {
        upto = read_seq;
    }
    while (m->head < m->cur && m->v[m->head].seq < upto) {
        free(m->v[m->head].data);
        m->v[m->head].data = NULL;
        m->head++;
    }
}

static void
model_free(model *m)
{
    for (size_t i = m->head; i < m->n; i++) {
        free(m->v[i].data);
    }
    free(m->v);
    memset(m, 0, sizeof(*m));
}

/* Deterministic payload producer (zstd-style: a few shapes of data). */
static void
produce(const run *r, uint8_t *out, uint32_t len, int kind, uint64_t seq)
{
    uint32_t x = (uint32_t)(seq * 2654435761u) ^ (len * 40503u) ^ 0x9e3779b9u;
    for (uint32_t i = 0; i < len; i++) {
        switch (kind) {
        case 0:
            out[i] = (uint8_t)(seq + 'a');
            break;
        case 1:
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out[i] = (uint8_t)x;
            break;
        case 2:
            out[i] = r->in_len ? r->in[(seq + i) % r->in_len] : 0;
            break;
        default:
            out[i] = (uint8_t)("hopper record "[(i + seq) % 14]);
            break;
        }
    }
}

static void
check_stats(run *r)
{
    hopper_stats st = {.struct_size = sizeof(st)};
    FZ_CHECK(hopper_stats_get(r->q, &st) == 0, "stats");
#ifdef FZ_VERBOSE
    fprintf(stderr, "  stats: mem %llu/%llu B disk %llu B segs %llu backlog %llu next %llu\n",
            (unsigned long long)st.mem_records, (unsigned long long)st.mem_bytes,
            (unsigned long long)st.disk_bytes, (unsigned long long)st.segments,
            (unsigned long long)st.backlog_records, (unsigned long long)st.next_seq);
#endif
    FZ_CHECK(st.failed == 0, "queue failed: %s", hopper_err_name(st.failed));
    FZ_CHECK(st.backlog_records == r->m.n - r->m.head, "backlog_records %llu, model %zu",
             (unsigned long long)st.backlog_records, r->m.n - r->m.head);
    FZ_CHECK(st.next_seq == r->m.next_seq, "next_seq %llu, model %llu",
             (unsigned long long)st.next_seq, (unsigned long long)r->m.next_seq);
    FZ_CHECK(st.mem_bytes <= r->o.memory_bytes, "mem_bytes %llu > budget %llu",
             (unsigned long long)st.mem_bytes, (unsigned long long)r->o.memory_bytes);
    FZ_CHECK(st.disk_bytes <= r->o.disk_bytes + HOPPER_FRAME_OVERHEAD,
             "disk_bytes %llu > budget %llu + one frame header",
             (unsigned long long)st.disk_bytes, (unsigned long long)r->o.disk_bytes);
}

static void
queue_open(run *r)
{
    int rc = hopper_open(r->base, "q", &r->o, &r->q);
    FZ_CHECK(rc == 0, "hopper_open: %s", hopper_err_name(rc));
}

static void
queue_close(run *r)
{
    int rc = hopper_close(r->q);
    r->q = NULL;
    FZ_CHECK(rc == 0, "hopper_close: %s", hopper_err_name(rc));
}

/* A send of n records (recs) returned rc: update and check the model. */
static void
after_send(run *r, const hopper_iovec *recs, size_t n, int rc)
{
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) {
            model_push(&r->m, recs[i].data, (uint32_t)recs[i].len);
        }
        return;
    }
    FZ_CHECK(rc == HOPPER_EFULL, "send of %zu records: %s", n, hopper_err_name(rc));
    FZ_CHECK(model_backlog_bytes(&r->m) > 0,
             "HOPPER_EFULL with an empty backlog (send of %zu records, first %zu bytes)", n,
             recs[0].len);
}

/* Poll one record; compare with the model. Returns 1 if one was received. */
static int
recv_one(run *r, int and_ack)
{
    hopper_record rec;
    int rc = and_ack ? hopper_recv_ack(r->q, &rec, 0) : hopper_recv(r->q, &rec, 0);
    model *m = &r->m;
    if (m->cur == m->n) {
        FZ_CHECK(rc == -EAGAIN, "model is drained but recv gave %s (seq %llu)",
                 hopper_err_name(rc), rc == 0 ? (unsigned long long)rec.seq : 0ull);
        return 0;
    }
    const mrec *want = &m->v[m->cur];
    FZ_CHECK(rc == 0, "record seq %llu expected, recv gave %s", (unsigned long long)want->seq,
             hopper_err_name(rc));
    FZ_CHECK(rec.seq == want->seq, "recv seq %llu, expected %llu", (unsigned long long)rec.seq,
             (unsigned long long)want->seq);
    FZ_CHECK(rec.len == want->len, "seq %llu: %zu bytes, expected %u", (unsigned long long)rec.seq,
             rec.len, want->len);
    FZ_CHECK(rec.len == 0 || memcmp(rec.data, want->data, rec.len) == 0,
             "seq %llu: payload differs", (unsigned long long)rec.seq);
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
    after_send(r, &v, 1, rc);
}

static void
op_batch(run *r, uint8_t b)
{
    size_t n = 1 + ((b >> 3) & 7);
    hopper_iovec v[MAX_BATCH];
    for (size_t i = 0; i < n; i++) {
        uint8_t x;
        if (!next_byte(r, &x)) {
            n = i;
            break;
        }
        uint32_t len = (uint32_t)x * 8u;
        produce(r, r->scratch[i], len, (int)(i & 3), r->m.next_seq + i);
        v[i] = (hopper_iovec){.data = r->scratch[i], .len = len};
    }
    if (n == 0) {
        return;
    }
    int rc = hopper_send_batch(r->q, v, n, 0);
    after_send(r, v, n, rc);
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
        seq = m->cur > m->head ? m->v[m->head + (m->cur - m->head) / 2].seq : 0;
        break;
    case 2:
        seq = UINT64_MAX;
        break;
    default:
        seq = m->next_seq + 100;
        break;
    }
    int rc = hopper_ack(r->q, seq);
    FZ_CHECK(rc == 0, "hopper_ack(%llu): %s", (unsigned long long)seq, hopper_err_name(rc));
    model_ack(m, seq);
}

static void
op_reopen(run *r, uint8_t b)
{
    queue_close(r);
    if (b & 0x08) {
        r->o.durability = r->o.durability == HOPPER_DURABILITY_DISK ? HOPPER_DURABILITY_MEMORY
                                                                    : HOPPER_DURABILITY_DISK;
    }
    if (b & 0x10) {
        int c = (b >> 5) & 7;
        r->o.compression = c == 7 ? 9 : c;
    }
    /* Delivered but unacknowledged records come again. */
    r->m.cur = r->m.head;
    queue_open(r);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > FZ_MAX_INPUT) {
        return 0;
    }
    static run r; /* large scratch; fully reset below */
    memset(&r.m, 0, sizeof(r.m));
    r.in = data;
    r.in_len = size;
    r.pos = 1;
    r.q = NULL;
    hopper_opts_init(&r.o);
    r.o.durability = (data[0] & 1) ? HOPPER_DURABILITY_DISK : HOPPER_DURABILITY_MEMORY;
    int c = (data[0] >> 1) & 7;
    r.o.compression = c == 7 ? 9 : c;
    r.o.memory_bytes = 256u * (1u + (data[0] >> 4));
    r.o.disk_bytes = DISK_BUDGET;
    r.o.segment_bytes = SEGMENT_BYTES;
    r.o.fsync = HOPPER_FSYNC_NEVER;
    r.o.max_record_bytes = MAX_RECORD;
    r.o.checkpoint_interval_ms = UINT32_MAX; /* time-independent */

    r.base = fz_tmpdir("queue_ops");
    char qdir[PATH_MAX];
    fz_fresh_subdir(r.base, "q", qdir, sizeof(qdir));
    queue_open(&r);
    check_stats(&r);

    for (int ops = 0; ops < MAX_OPS; ops++) {
        uint8_t b;
        if (!next_byte(&r, &b)) {
            break;
        }
#ifdef FZ_VERBOSE /* triage: -DFZ_VERBOSE prints the script as it runs */
        fprintf(stderr, "op %d: 0x%02x (kind %d) model head %zu cur %zu n %zu next %llu\n", ops, b,
                b & 7, r.m.head, r.m.cur, r.m.n, (unsigned long long)r.m.next_seq);
#endif
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
            if (b & 0x08) {
                int rc = hopper_sync(r.q);
                FZ_CHECK(rc == 0, "hopper_sync: %s", hopper_err_name(rc));
            } else {
                (void)recv_one(&r, 1);
            }
            break;
        }
        check_stats(&r);
    }

    /* Drain: everything the model holds comes out, in order, then nothing. */
    while (recv_one(&r, 1)) {
    }
    int rc = hopper_ack(r.q, UINT64_MAX);
    FZ_CHECK(rc == 0, "final ack: %s", hopper_err_name(rc));
    model_ack(&r.m, UINT64_MAX);
    FZ_CHECK(r.m.head == r.m.n, "model not empty after the drain");
    check_stats(&r);
    queue_close(&r);
    queue_open(&r);
    check_stats(&r);
    (void)recv_one(&r, 0); /* must be -EAGAIN */
    queue_close(&r);

    model_free(&r.m);
    fz_rmtree(qdir, 0);
    return 0;
}
