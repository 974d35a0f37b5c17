/* SPDX-License-Identifier: MIT */
/* Target functions: hopper_open (recovery: checkpoint, indexes and their
 *                   cross-check, segment scan, quarantine, leftovers, the
 *                   sequence ceiling), hopper_recv_ack, hopper_send,
 *                   hopper_recv, hopper_close, hopper_inspect, on a queue
 *                   directory built from a description with CORRECT CRCs
 *                   (qdir_build.h), so mutations reach the logic behind them
 *                   (issue 15).
 * Property: hopper_inspect never fails on the directory, and hopper_open
 * never does either; then
 *   - the drain (hopper_recv_ack until -EAGAIN) delivers strictly increasing
 *     seqs, none below the checkpoint's ack_next, each a record the builder
 *     wrote in a CRC-valid frame with exactly its bytes (no phantom), and
 *     exactly the seqs hopper_inspect visited, in its order; open's
 *     missing_records and checkpoint_clamped are inspect's; next_seq <= 2^63
 *     and above every delivered seq; nothing is left in the backlog;
 *   - when the description is honest (no lie, no damage: qdir_build.h), every
 *     written record at or after ack_next is delivered (no loss);
 *   - 1..4 sends after recovery get the next seqs (HOPPER_EEXHAUSTED exactly
 *     when a seq would reach 2^63, never a wrap), are received with their
 *     bytes, and, unacknowledged, come back exactly after close + reopen
 *     (nothing else does); once acknowledged and closed, hopper_inspect
 *     finds nothing left to deliver, nothing clamped, and (when a record
 *     was sent, so the acknowledgement passed every gap) nothing missing.
 * Input: byte 0: bits 0-1 checkpoint layout (qdir_build.h); bit 2
 * durability DISK; bit 3 compression for the sends; bits 4-5 sends - 1;
 * bit 6 fsync ALWAYS (else NEVER); bit 7 max_record_bytes 64 (else the
 * default). Then the builder's ops (qdir_build.h). The queue lives in one
 * temp dir per process, emptied at every iteration. */
#include "qdir_build.h"

#include "hopper.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_DRAIN 8192u

typedef struct visits {
    uint64_t seq[MAX_DRAIN];
    size_t n;
    int complete;
} visits;

static int
on_visit(void *ctx, const hopper_record *r)
{
    visits *v = ctx;
    if (v->n < MAX_DRAIN) {
        v->seq[v->n++] = r->seq;
    } else {
        v->complete = 0;
    }
    return 0;
}

/* Did the builder write (seq, len) in a valid frame? rec[] is sorted. */
static int
plan_has(const qd_plan *pl, uint64_t seq, size_t len)
{
    size_t lo = 0;
    size_t hi = pl->nrec;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (pl->rec[mid].seq < seq) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    for (; lo < pl->nrec && pl->rec[lo].seq == seq; lo++) {
        if (pl->rec[lo].len == len) {
            return 1;
        }
    }
    return 0;
}

static void
check_payload(const hopper_record *rec, uint64_t seq, const char *what)
{
    static uint8_t want[64];
    FZ_CHECK(rec->len < sizeof(want), "%s: seq %llu has %zu bytes", what,
             (unsigned long long)seq, rec->len);
    qd_payload(want, seq, (uint32_t)rec->len);
    FZ_CHECK(rec->len == 0 || memcmp(rec->data, want, rec->len) == 0,
             "%s: seq %llu: payload differs", what, (unsigned long long)seq);
}

static hopper_queue *
open_q(const char *base, const hopper_opts *o)
{
    hopper_queue *q = NULL;
    int rc = hopper_open(base, "q", o, &q);
    if (rc == -ENOMEM) {
        return NULL;
    }
    FZ_CHECK(rc == 0, "hopper_open: %s", hopper_err_name(rc));
    return q;
}

static void
close_q(hopper_queue *q)
{
    int rc = hopper_close(q);
    FZ_CHECK(rc == 0, "hopper_close: %s", hopper_err_name(rc));
}

static hopper_stats
stats_of(hopper_queue *q)
{
    hopper_stats st = {.struct_size = sizeof(st)};
    FZ_CHECK(hopper_stats_get(q, &st) == 0, "stats");
    return st;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > FZ_MAX_INPUT) {
        return 0;
    }
    static qd_plan pl;
    static visits vis;
    const char *base = fz_tmpdir("queue_dir");
    char qdir[PATH_MAX];
    fz_fresh_subdir(base, "q", qdir, sizeof(qdir));
    qd_build(data, size, qdir, &pl);
    if (pl.nrec > 1) {
        qsort(pl.rec, pl.nrec, sizeof(pl.rec[0]), qd_cmp_rec);
    }
    /* A seq written twice (two frames claim it: DUP, or seqs going back).
     * Then which copy is read first, and so what a damaged copy hides, is
     * the reader's choice: open and hopper_inspect may differ, and a seq
     * hidden that way stays in the backlog (a known limit, fuzz/README.md). */
    int dup_seqs = 0;
    for (size_t i = 1; i < pl.nrec; i++) {
        dup_seqs |= pl.rec[i].seq == pl.rec[i - 1].seq;
    }
    uint8_t cfg = data[0];
    hopper_opts o;
    hopper_opts_init(&o);
    o.durability = (cfg & 4) ? HOPPER_DURABILITY_DISK : HOPPER_DURABILITY_MEMORY;
    o.compression = (cfg & 8) ? 1 : 0;
    o.fsync = (cfg & 0x40) ? HOPPER_FSYNC_ALWAYS : HOPPER_FSYNC_NEVER;
    if (cfg & 0x80) {
        o.max_record_bytes = 64;
    }
    o.checkpoint_interval_ms = UINT32_MAX; /* time-independent */
    size_t nsend = 1 + ((cfg >> 4) & 3);

    /* What an offline reader sees; it changes nothing. */
    hopper_inspect_report rep = {.struct_size = sizeof(rep)};
    vis.n = 0;
    vis.complete = 1;
    int rc = hopper_inspect(base, "q", 0, on_visit, &vis, &rep);
    if (rc == -ENOMEM) {
        goto out;
    }
    FZ_CHECK(rc == 0, "hopper_inspect: %s", hopper_err_name(rc));

    hopper_queue *q = open_q(base, &o);
    if (q == NULL) {
        goto out;
    }
    hopper_stats st = stats_of(q);
    FZ_CHECK(st.missing_records == rep.missing_records &&
                 st.checkpoint_clamped == rep.checkpoint_clamped,
             "open: missing %llu clamped %llu, inspect: %llu / %llu",
             (unsigned long long)st.missing_records, (unsigned long long)st.checkpoint_clamped,
             (unsigned long long)rep.missing_records, (unsigned long long)rep.checkpoint_clamped);
    FZ_CHECK(st.next_seq <= HP_SEQ_LIMIT, "next_seq %llu past 2^63",
             (unsigned long long)st.next_seq);

    /* The drain. */
    size_t got = 0;
    size_t honest_i = 0; /* the next record of pl.rec an honest drain delivers */
    while (honest_i < pl.nrec && pl.rec[honest_i].seq < rep.ack_next) {
        honest_i++;
    }
    uint64_t last = 0;
    for (;;) {
        hopper_record rec;
        rc = hopper_recv_ack(q, &rec, 0);
        if (rc == -EAGAIN) {
            break;
        }
        if (rc == -ENOMEM) {
            close_q(q);
            goto out;
        }
        FZ_CHECK(rc == 0, "drain: %s", hopper_err_name(rc));
        FZ_CHECK(got == 0 || rec.seq > last, "seq %llu after %llu", (unsigned long long)rec.seq,
                 (unsigned long long)last);
        FZ_CHECK(rec.seq >= rep.ack_next, "seq %llu below ack_next %llu",
                 (unsigned long long)rec.seq, (unsigned long long)rep.ack_next);
        FZ_CHECK(rec.seq < st.next_seq, "seq %llu delivered, next_seq is %llu",
                 (unsigned long long)rec.seq, (unsigned long long)st.next_seq);
        if (pl.complete) {
            FZ_CHECK(plan_has(&pl, rec.seq, rec.len), "seq %llu (%zu bytes) was never written",
                     (unsigned long long)rec.seq, rec.len);
        }
        check_payload(&rec, rec.seq, "drain");
        if (vis.complete && !dup_seqs) {
            FZ_CHECK(got < vis.n && vis.seq[got] == rec.seq,
                     "delivery %zu is seq %llu, hopper_inspect visited %llu", got,
                     (unsigned long long)rec.seq,
                     got < vis.n ? (unsigned long long)vis.seq[got] : 0ull);
        }
        if (pl.honest && pl.complete) {
            FZ_CHECK(honest_i < pl.nrec && pl.rec[honest_i].seq == rec.seq,
                     "honest directory: delivery %zu is seq %llu, expected %llu", got,
                     (unsigned long long)rec.seq,
                     honest_i < pl.nrec ? (unsigned long long)pl.rec[honest_i].seq : 0ull);
            honest_i++;
        }
        last = rec.seq;
        got++;
        FZ_CHECK(got <= MAX_DRAIN, "more records than the builder can write");
    }
    if (vis.complete && !dup_seqs) {
        FZ_CHECK(got == vis.n, "%zu delivered, hopper_inspect visited %zu", got, vis.n);
    }
    if (pl.honest && pl.complete) {
        FZ_CHECK(honest_i == pl.nrec, "honest directory: %zu of %zu records delivered (lost)",
                 got, pl.nrec);
    }
    st = stats_of(q);
    FZ_CHECK(st.backlog_records == 0 || dup_seqs,
             "backlog %llu after the drain (%zu delivered, last seq %llu, next_seq %llu, "
             "missing at open %llu, corrupt frames %llu)",
             (unsigned long long)st.backlog_records, got, (unsigned long long)last,
             (unsigned long long)st.next_seq, (unsigned long long)st.missing_records,
             (unsigned long long)st.corrupt_frames);

    /* Sends after recovery: the next seqs, never a wrap. */
    uint64_t first = st.next_seq;
    size_t sent = 0;
    for (size_t i = 0; i < nsend; i++) {
        uint8_t p[64];
        uint32_t len = (uint32_t)(7 * i + (cfg & 3));
        uint64_t want = first + i;
        qd_payload(p, want, len);
        rc = hopper_send(q, p, len, 0);
        if (want >= HP_SEQ_LIMIT) {
            FZ_CHECK(rc == HOPPER_EEXHAUSTED, "send of seq %llu: %s", (unsigned long long)want,
                     hopper_err_name(rc));
            break;
        }
        if (rc == -ENOMEM) {
            break;
        }
        FZ_CHECK(rc == 0, "send %zu (seq %llu) after recovery: %s", i, (unsigned long long)want,
                 hopper_err_name(rc));
        sent++;
    }
    FZ_CHECK(stats_of(q).next_seq == first + sent, "next_seq after %zu sends", sent);
    for (int round = 0; round < 2; round++) {
        /* Round 0: receive without acknowledging; round 1 (after a reopen):
         * the same records again, acknowledged. */
        for (size_t i = 0; i < sent; i++) {
            hopper_record rec;
            rc = round ? hopper_recv_ack(q, &rec, 0) : hopper_recv(q, &rec, 0);
            FZ_CHECK(rc == 0, "round %d: record %zu of %zu sent: %s", round, i, sent,
                     hopper_err_name(rc));
            FZ_CHECK(rec.seq == first + i, "round %d: seq %llu, sent as %llu", round,
                     (unsigned long long)rec.seq, (unsigned long long)(first + i));
            FZ_CHECK(rec.len == 7 * i + (cfg & 3), "round %d: seq %llu: length", round,
                     (unsigned long long)rec.seq);
            check_payload(&rec, rec.seq, round ? "after reopen" : "after send");
        }
        hopper_record extra;
        rc = hopper_recv(q, &extra, 0);
        FZ_CHECK(rc == -EAGAIN, "round %d: a record more than sent: %s (seq %llu)", round,
                 hopper_err_name(rc), rc == 0 ? (unsigned long long)extra.seq : 0ull);
        close_q(q);
        if (round == 0) {
            q = open_q(base, &o);
            if (q == NULL) {
                goto out;
            }
        }
    }
    rep = (hopper_inspect_report){.struct_size = sizeof(rep)};
    vis.n = 0;
    vis.complete = 1;
    rc = hopper_inspect(base, "q", 0, on_visit, &vis, &rep);
    if (rc == 0) {
        /* Seqs lost at the very end (a damaged last frame found when read)
         * stay missing until an acknowledgement passes them: only when a
         * record was sent after them. */
        FZ_CHECK(vis.n == 0 && (sent == 0 || rep.missing_records == 0) &&
                     rep.checkpoint_clamped == 0,
                 "after ack + close: %llu to deliver, %llu missing [%llu, %llu), %llu clamped; "
                 "ack_next %llu, sent %llu..%llu",
                 (unsigned long long)vis.n, (unsigned long long)rep.missing_records,
                 (unsigned long long)rep.missing_first, (unsigned long long)rep.missing_first_end,
                 (unsigned long long)rep.checkpoint_clamped, (unsigned long long)rep.ack_next,
                 (unsigned long long)first, (unsigned long long)(first + sent));
    } else {
        FZ_CHECK(rc == -ENOMEM, "final hopper_inspect: %s", hopper_err_name(rc));
    }
out:
    fz_rmtree(qdir, 0);
    return 0;
}
