/* SPDX-License-Identifier: MIT */
/* The writer role: group commit, segment rotation and seal, ENOSPC undo,
 * requeue and rewind, and the fsync=interval syncer thread. The queue's state
 * and its lock map are in queue_int.h; the parallel compression of a batch's
 * frames is in compress.c.
 *
 * Group commit. Senders append encoded records to `pend` under `mu` (sender.c)
 * and park on a stack waiter linked into the pending batch. A sender whose
 * batch is not yet taken and who finds no writer active becomes the writer:
 * it takes the whole batch, drops `mu`, compresses, writes, fdatasyncs (per
 * policy), retakes `mu`, publishes runs and sizes, and marks the batch's
 * waiters done. The writer writes without `mu`; the one exception is the
 * close-time save of memory records (recover.c), see queue_int.h.
 *
 * Framing, segment rotation, writes and publication stay with the writer (a
 * single thread), so the record order and the ENOSPC undo are as for one
 * thread even when compression runs in parallel.
 *
 * ENOSPC. A batch that hits ENOSPC/EDQUOT is undone on disk (segments it
 * extended are truncated back, segments it created are unlinked). In DISK
 * mode its senders and those queued after it get HOPPER_EFULL and their
 * records are taken back (rewind); in MEMORY mode the records were already
 * accepted and go back in front of the pending batch (requeue). Disk admission
 * then pauses for ENOSPC_BACKOFF_NS. Any other write error fails the queue.
 */
#include "queue_int.h"

#include "fsio.h"

#include <fcntl.h>
#include <stdlib.h>

#define ENOSPC_BACKOFF_NS 500000000ull
#define LINGER_MAX_NS 200000ull

/* ---- budget and back-off ------------------------------------------------ */

/* A wait until `until` ends earlier when an ENOSPC back-off that is still
 * ahead ends before it: the file system is tried again then. [mu] */
uint64_t
hp_q_enospc_retry(const hopper_queue *q, uint64_t until)
{
    if (q->enospc_until_ns > hp_now_mono_ns() && q->enospc_until_ns < until) {
        return q->enospc_until_ns;
    }
    return until;
}

/* Disk bytes a batch of `raw` encoded bytes may take, at worst: stored frames
 * are never larger than raw, plus a header per frame and per segment it may
 * open (FORMAT.md §3.3). */
uint64_t
hp_q_reserve_for(const hopper_queue *q, uint64_t raw)
{
    if (raw == 0) {
        return 0;
    }
    return raw + HP_FRAME_HDR * (raw / q->frame_target + 1) +
           (HP_SEG_HDR + HP_IDX_RESERVE) * (raw / q->seg_cap + 1);
}

/* ---- the batch and its waiters ------------------------------------------ */

/* Empty a batch, keeping its buffer. */
static void
batch_reset(hp_batch *b)
{
    hp_buf_reset(&b->raw);
    b->first_seq = 0;
    b->count = 0;
    b->d_count = 0;
    b->ts_ms = 0;
    b->waiters = NULL;
    b->nwaiters = 0;
}

/* The writer role is free: wake whoever waits on `written`, and the newest
 * pending sender, which takes the role. [mu] */
static void
writer_released(hopper_queue *q)
{
    pthread_cond_broadcast(&q->written);
    if (q->pend.waiters != NULL) {
        pthread_cond_signal(&q->pend.waiters->cv);
    }
}

/* Complete the waiters of a batch with rc. [mu] */
static void
waiters_finish(hp_waiter *w, int rc)
{
    while (w != NULL) {
        hp_waiter *next = w->next; /* w lives on a sender's stack */
        w->rc = rc;
        w->done = 1;
        pthread_cond_signal(&w->cv); /* under mu: w outlives the call */
        w = next;
    }
}

/* The senders of the pending batch get rc; the batch keeps its records. [mu] */
static void
pend_finish_waiters(hopper_queue *q, int rc)
{
    waiters_finish(q->pend.waiters, rc);
    q->pend.waiters = NULL;
    q->pend.nwaiters = 0;
}

/* ---- segment files ------------------------------------------------------ */

/* Remember that segment `id` is created (size_before 0) or extended by this
 * batch, for hp_q_undo_batch(). [writer] */
static int
touch(hopper_queue *q, uint64_t id, uint64_t size_before)
{
    for (size_t i = 0; i < q->touched.n; i++) {
        if (q->touched.v[i].id == id) {
            return 0;
        }
    }
    int rc;
    hp_touched t = {.id = id, .size_before = size_before};
    HP_ARR_PUSH(q->touched, t, rc);
    return rc;
}

/* Append bytes to the active segment. [writer] */
static int
append_active(hopper_queue *q, const uint8_t *p, size_t n)
{
    HP_GUARD(hp_fs_write_all(q->active_fd, p, n));
    q->active_size += n;
    return 0;
}

/* Flush wbuf into the active segment. [writer] */
static int
flush_wbuf(hopper_queue *q)
{
    if (q->wbuf.len == 0) {
        return 0;
    }
    HP_GUARD(append_active(q, q->wbuf.data, q->wbuf.len));
    q->wbuf.len = 0;
    return 0;
}

/* Write the index of the segment being sealed (FORMAT.md §2.1). The index
 * only saves open a scan, so failing to write it is not an error. [writer] */
void
hp_q_seal_index(hopper_queue *q)
{
    if (q->aidx.id == 0 || q->aidx.n > HP_IDX_KEEP_RUNS) {
        return; /* a fragmented segment is scanned instead */
    }
    char name[HP_SEG_NAME_MAX];
    hp_seg_idx_name(name, q->aidx.id);
    if (hp_idx_encode(&q->aidx, &q->wbuf) == 0) {
        if (hp_fs_atomic_write(q->dirfd, name, q->wbuf.data, q->wbuf.len) < 0) {
            hp_fs_discard(q->dirfd, name); /* no index: the next open scans */
        } else {
            hp_sealed sd = {.id = q->aidx.id, .bytes = q->wbuf.len};
            int rc;
            HP_ARR_PUSH(q->sealed, sd, rc);
            (void)rc; /* only the byte count would be missing */
        }
    }
    q->wbuf.len = 0;
}

/* Start the active segment's index afresh (id 0: no active segment). [writer] */
static void
aidx_reset(hopper_queue *q, uint64_t id)
{
    q->aidx.id = id;
    q->aidx.size = HP_SEG_HDR;
    q->aidx.records = 0;
    q->aidx.raw = 0;
    q->aidx.n = 0;
}

/* Make sure a frame of `frame_bytes` fits the active segment, rotating if not.
 * [writer] */
static int
ensure_room(hopper_queue *q, uint64_t frame_bytes, uint64_t first_seq, uint64_t new_id)
{
    int full = q->active_fd >= 0 && q->active_size + q->wbuf.len > HP_SEG_HDR &&
               q->active_size + q->wbuf.len + frame_bytes > q->seg_cap;
    if (q->active_fd >= 0 && !full) {
        return 0;
    }
    if (q->active_fd >= 0) {
        HP_GUARD(flush_wbuf(q));
        /* A sealed segment is made durable before it stops being active,
         * whatever the fsync policy: close fdatasyncs only the active one,
         * and the index written next (fsynced) must not describe bytes that
         * a power cut can still take (FORMAT.md §2.1). One fdatasync per
         * segment_bytes written. */
        HP_GUARD(hp_fs_fdatasync(q->active_fd));
        hp_fs_close(q->active_fd);
        q->active_fd = -1;
        hp_q_seal_index(q);
    }
    aidx_reset(q, 0);
    int fd;
    HP_GUARD(touch(q, new_id, 0));
    HP_GUARD(hp_seg_create(q->dirfd, new_id, first_seq, &fd));
    q->active_fd = fd;
    q->active_size = HP_SEG_HDR;
    aidx_reset(q, new_id);
    return 1;
}

/* ---- one batch: write, undo, publish ------------------------------------ */

/* Encode `b` into frames and append them to the segment files. Runs without
 * mu, in the writer role. `*next_id` is the id for a new segment and is
 * advanced when one is created; `*active_id` follows the active segment.
 * `parallel`: waiting senders may help compress (the caller does not hold
 * mu). */
int
hp_q_write_batch(hopper_queue *q, const hp_batch *b, uint64_t *next_id, uint64_t *active_id,
            int *sync, int parallel)
{
    int when = *sync;
    *sync = 0;
    q->wlist.n = 0;
    q->aidx_snap = q->aidx;
    if (q->aidx.n > 0) {
        q->aidx_last = q->aidx.runs[q->aidx.n - 1];
    }
    size_t pos = 0;
    uint64_t seq = b->first_seq;
    const uint8_t *raw = b->raw.data;
    int rc = 0;
    if (q->active_fd >= 0) {
        rc = touch(q, *active_id, q->active_size);
        if (rc < 0) {
            return rc;
        }
    }
    q->cr.raw = raw;
    q->cr.ts_ms = b->ts_ms;
    q->cr.idle = b->waiters;
    while (pos < b->raw.len) {
        /* Greedy framing: take records until the body reaches the target;
         * up to HP_ENC_SLOTS frames per compression round. */
        uint32_t nt = 0;
        while (pos < b->raw.len && nt < HP_ENC_SLOTS) {
            hp_ctask *t = &q->cr.t[nt++];
            t->start = pos;
            t->seq = seq;
            t->n = 0;
            while (pos < b->raw.len && (t->n == 0 || pos - t->start < q->frame_target)) {
                pos += HP_REC_PREFIX + hp_get_u32(raw + pos);
                t->n++;
            }
            t->len = pos - t->start;
            seq += t->n;
        }
        HP_GUARD(hp_q_compress_round(q, nt, parallel));
        for (uint32_t i = 0; i < nt; i++) {
            const hp_ctask *t = &q->cr.t[i];
            const hp_buf *f = &q->eout[i];
            rc = ensure_room(q, f->len, t->seq, *next_id);
            if (rc < 0) {
                return rc;
            }
            if (rc == 1) {
                *active_id = *next_id;
                (*next_id)++;
            }
            hp_written w = {.seg_id = *active_id, .off = q->active_size + q->wbuf.len,
                            .first_seq = t->seq, .count = t->n,
                            .raw = t->len - (uint64_t)t->n * HP_REC_PREFIX, .bytes = f->len,
                            .ts_ms = b->ts_ms};
            if (f->len >= (1u << 20)) {
                /* A large frame goes out from its slot: never held twice. */
                HP_GUARD(flush_wbuf(q));
                HP_GUARD(append_active(q, f->data, f->len));
            } else {
                HP_GUARD(hp_buf_append(&q->wbuf, f->data, f->len));
            }
            HP_ARR_PUSH(q->wlist, w, rc);
            if (rc < 0) {
                return rc;
            }
            HP_GUARD(hp_idx_add(&q->aidx, w.off, w.bytes, w.first_seq, w.count, w.raw,
                                w.ts_ms));
            /* Coalesce writes, but do not hold more than a few MiB. */
            if (q->wbuf.len >= (4u << 20)) {
                HP_GUARD(flush_wbuf(q));
            }
        }
    }
    HP_GUARD(flush_wbuf(q));
    for (uint32_t i = 0; i < HP_ENC_SLOTS; i++) {
        hp_buf_reset(&q->eout[i]); /* a huge record's frame is not kept */
    }
    /* An interval that ran out while this batch was written is served now,
     * not after the next batch: on a loaded machine a batch can take longer
     * than the interval. last_sync_ns is written only in the writer role,
     * which this thread holds. */
    if (when == HP_SYNC_IF_DUE &&
        hp_now_mono_ns() - q->last_sync_ns >= (uint64_t)q->o.fsync_interval_ms * 1000000u) {
        when = HP_SYNC_YES;
    }
    if (when == HP_SYNC_YES) {
        uint64_t t0 = hp_now_mono_ns();
        HP_GUARD(hp_fs_fdatasync(q->active_fd));
        *sync = 1;
        q->sync_dur_ns = hp_now_mono_ns() - t0;
        atomic_fetch_add(&q->c_fsyncs, 1);
        atomic_fetch_add(&q->c_fsync_ns, q->sync_dur_ns);
    }
    return 0;
}

/* Undo a failed batch on disk: truncate the segments it extended back to
 * their size before the batch, unlink the ones it created, and make that
 * durable (fdatasync each truncated segment, then fsync the directory) before
 * the batch's seqs are given out again: a frame of the undone batch that the
 * kernel wrote back (or that a rotation fdatasynced) would otherwise come
 * back after a power cut, delivering records refused with HOPPER_EFULL under
 * seqs that now belong to others. Returns 0 when the files are back as they
 * were, durably. [writer] */
int
hp_q_undo_batch(hopper_queue *q, uint64_t *active_id)
{
    int rc = 0;
    q->wbuf.len = 0;
    for (size_t i = 0; i < q->touched.n; i++) {
        hp_touched *t = &q->touched.v[i];
        char name[HP_SEG_NAME_MAX];
        hp_seg_idx_name(name, t->id);
        hp_fs_discard(q->dirfd, name); /* an index sealed in this batch */
        hp_seg_name(name, t->id);
        int is_active = t->id == *active_id && q->active_fd >= 0;
        int r;
        if (t->size_before == 0) {
            if (is_active) {
                hp_fs_close(q->active_fd);
                q->active_fd = -1;
                *active_id = 0;
            }
            r = hp_fs_unlinkat(q->dirfd, name);
            if (r == -ENOENT) {
                r = 0;
            }
        } else if (is_active) {
            r = hp_fs_ftruncate(q->active_fd, t->size_before);
            if (r == 0) {
                r = hp_fs_fdatasync(q->active_fd);
            }
            q->active_size = t->size_before;
        } else {
            /* Extended, then sealed by a rotation within this batch. */
            r = hp_fs_openat(q->dirfd, name, O_WRONLY, 0);
            if (r >= 0) {
                int fd = r;
                r = hp_fs_ftruncate(fd, t->size_before);
                if (r == 0) {
                    r = hp_fs_fdatasync(fd);
                }
                hp_fs_close(fd);
            }
        }
        if (r < 0 && rc == 0) {
            rc = r;
        }
    }
    if (rc == 0 && q->touched.n > 0) {
        rc = hp_fs_fsync_dir(q->dirfd); /* the unlinks */
    }
    if (q->active_fd >= 0 && q->aidx_snap.id == *active_id) {
        /* Same active segment as before the batch: its index goes back too. */
        hp_idx_run *runs = q->aidx.runs;
        size_t cap = q->aidx.cap;
        q->aidx = q->aidx_snap;
        q->aidx.runs = runs;
        q->aidx.cap = cap;
        if (q->aidx.n > 0) {
            q->aidx.runs[q->aidx.n - 1] = q->aidx_last;
        }
    } else {
        aidx_reset(q, q->active_fd >= 0 ? *active_id : 0);
    }
    return rc;
}

/* ENOSPC and EDQUOT are pushed back as HOPPER_EFULL, never a failure. */
int
hp_q_is_space_error(int rc)
{
    return rc == -ENOSPC || rc == -EDQUOT;
}

/* The accounting of segment `id`, or NULL. [mu] */
static hp_seginfo *
seg_find(hopper_queue *q, uint64_t id)
{
    for (size_t i = 0; i < q->segs.n; i++) {
        if (q->segs.v[i].id == id) {
            return &q->segs.v[i];
        }
    }
    return NULL;
}

/* Publish a successful batch. [mu, writer] */
static int
publish_batch(hopper_queue *q, const hp_batch *b, uint64_t active_id, uint64_t d_first)
{
    int rc = 0;
    for (size_t i = 0; i < q->wlist.n; i++) {
        hp_written *w = &q->wlist.v[i];
        hp_seginfo *s = seg_find(q, w->seg_id);
        if (s == NULL) {
            hp_seginfo ns = {.id = w->seg_id, .bytes = HP_SEG_HDR};
            HP_ARR_PUSH(q->segs, ns, rc);
            if (rc < 0) {
                return rc;
            }
            q->disk_bytes += HP_SEG_HDR;
            s = &q->segs.v[q->segs.n - 1];
        }
        s->bytes += w->bytes;
        s->records += w->count;
        s->raw += w->raw;
        if (w->first_seq + w->count > s->max_seq) {
            s->max_seq = w->first_seq + w->count;
        }
        q->disk_bytes += w->bytes;
        uint64_t last = w->first_seq + w->count - 1;
        if (last < d_first) {
            continue; /* only cached records (DISK mode): read from memory */
        }
        hp_run *r = hp_q_runs_live(q) > 0 ? &q->runs.v[q->runs.n - 1] : NULL;
        if (r != NULL && r->seg_id == w->seg_id && r->end == w->off &&
            r->last_seq + 1 == w->first_seq) {
            r->end = w->off + w->bytes;
            r->last_seq = last;
        } else {
            hp_run nr = {.seg_id = w->seg_id, .off = w->off, .end = w->off + w->bytes,
                         .first_seq = w->first_seq, .last_seq = last, .ts_ms = w->ts_ms};
            HP_ARR_PUSH(q->runs, nr, rc);
            if (rc < 0) {
                return rc;
            }
        }
    }
    for (size_t i = 0; i < q->sealed.n; i++) {
        hp_seginfo *s = seg_find(q, q->sealed.v[i].id);
        if (s != NULL) {
            s->bytes += q->sealed.v[i].bytes;
            q->disk_bytes += q->sealed.v[i].bytes;
        }
    }
    q->sealed.n = 0;
    q->active_id = active_id;
    q->d_pending -= b->d_count;
    if (q->o.durability == HOPPER_DURABILITY_DISK) {
        q->written_next = b->first_seq + b->count;
        if (q->o.fsync != HOPPER_FSYNC_COMMIT) {
            q->visible_next = q->written_next; /* else hopper_commit() does */
        }
    }
    return 0;
}

/* ---- after ENOSPC: rewind (DISK mode) or requeue (MEMORY mode) ---------- */

/* Records of the failed batch and of everything queued after it are taken
 * back: their senders get `rc`, and the queue is as if they were never sent.
 * [mu, writer] */
static void
rewind_after(hopper_queue *q, hp_batch *b, int rc)
{
    uint64_t from = b->first_seq;
    uint64_t dropped = q->next_seq - from;
    /* The unread memory entries from the first of seq >= from on go. */
    hp_dpos p = q->mem.rd;
    size_t kept = q->mem.nread;
    while (kept < q->mem.count) {
        hp_dpos at = p;
        hp_entry *e = hp_dpos_entry(&at);
        if (e->seq >= from) {
            break;
        }
        p = at;
        hp_dpos_next(&p, e);
        kept++;
    }
    size_t gone = q->mem.count - kept;
    q->mem_bytes -= hp_deque_truncate(&q->mem, p, kept) + (uint64_t)gone * HP_ENTRY_COST;
    q->next_seq = from;
    q->d_pending -= b->d_count + q->pend.d_count;
    q->c_sent -= dropped;
    waiters_finish(b->waiters, rc);
    waiters_finish(q->pend.waiters, rc);
    batch_reset(&q->pend);
}

/* MEMORY mode after ENOSPC: put the batch back in front of the pending one.
 * On success *b holds the old pending buffer (for reuse). [mu, writer] */
static int
requeue(hopper_queue *q, hp_batch *b)
{
    if (q->pend.count > 0) {
        HP_GUARD(hp_buf_append(&b->raw, q->pend.raw.data, q->pend.raw.len));
        b->count += q->pend.count;
        b->d_count += q->pend.d_count;
    }
    hp_batch old = q->pend;
    q->pend = *b;
    q->pend.waiters = NULL;
    q->pend.nwaiters = 0;
    *b = old;
    return 0;
}

/* ---- the writer role ---------------------------------------------------- */

/* Take the pending batch and write it. Called and returns with mu held, in
 * no writer role; takes and releases the role. */
void
hp_q_run_writer(hopper_queue *q)
{
    if (q->writer_active || q->pend.count == 0) {
        return;
    }
    if (q->failed) {
        /* Nothing more reaches the files of a failed queue. */
        pend_finish_waiters(q, HOPPER_EFAILED);
        pthread_cond_broadcast(&q->written);
        return;
    }
    q->writer_active = 1;
    hp_batch b = q->pend;
    q->pend = q->spare;
    batch_reset(&q->pend);
    uint64_t reserve = hp_q_reserve_for(q, b.raw.len);
    q->inflight_reserve = reserve;
    uint64_t next_id = q->next_seg_id;
    uint64_t active_id = q->active_id;
    /* First seq of the batch that belongs to D: D records are the tail. */
    uint64_t d_first = b.first_seq + b.count - b.d_count;
    /* fsync=commit: the caller's hopper_commit() syncs (below). */
    int do_sync = q->o.fsync == HOPPER_FSYNC_ALWAYS     ? HP_SYNC_YES
                  : q->o.fsync == HOPPER_FSYNC_INTERVAL ? HP_SYNC_IF_DUE
                                                        : HP_SYNC_NO;
    hp_mutex_unlock(&q->mu);

    q->touched.n = 0;
    q->sealed.n = 0;
    int rc = hp_q_write_batch(q, &b, &next_id, &active_id, &do_sync, 1);
    int undo_rc = 0;
    if (rc < 0 && hp_q_is_space_error(rc)) {
        undo_rc = hp_q_undo_batch(q, &active_id);
    }

    hp_mutex_lock(&q->mu);
    q->next_seg_id = next_id;
    q->inflight_reserve = 0;
    if (rc == 0) {
        rc = publish_batch(q, &b, active_id, d_first);
    }
    if (rc == 0) {
        if (do_sync) {
            q->last_sync_ns = hp_now_mono_ns();
            q->dirty = 0;
            if (q->o.fsync == HOPPER_FSYNC_ALWAYS) {
                /* The next commit waits a little for the senders just
                 * released (see commit_linger). */
                q->linger_target = b.nwaiters + q->pend.nwaiters;
                uint64_t d = q->sync_dur_ns / 2;
                q->linger_until = q->last_sync_ns + (d < LINGER_MAX_NS ? d : LINGER_MAX_NS);
            }
        } else {
            q->dirty = 1;
        }
        waiters_finish(b.waiters, 0);
    } else if (hp_q_is_space_error(rc) && undo_rc == 0 &&
               (q->o.durability == HOPPER_DURABILITY_DISK || requeue(q, &b) == 0)) {
        /* The file system is full: nothing half-written remains. In DISK mode
         * the senders are told FULL and their records taken back; in MEMORY
         * mode the records were already accepted and wait in memory. */
        q->active_id = active_id;
        q->enospc_until_ns = hp_now_mono_ns() + ENOSPC_BACKOFF_NS;
        if (q->o.durability == HOPPER_DURABILITY_DISK) {
            rewind_after(q, &b, HOPPER_EFULL);
            atomic_fetch_add(&q->c_full, 1);
        }
    } else {
        q->active_id = active_id;
        waiters_finish(b.waiters, HOPPER_EFAILED);
        pend_finish_waiters(q, HOPPER_EFAILED);
        hp_q_fail_locked(q, rc);
    }
    batch_reset(&b);
    q->spare = b;
    q->writer_active = 0;
    writer_released(q);
    pthread_cond_broadcast(&q->not_empty);
    pthread_cond_broadcast(&q->not_full);
}

/* ---- hopper_commit (fsync=commit) --------------------------------------- */

/* The caller's group commit. Every batch whose send returned was written
 * and published under `mu` by the writer role's holder, raising
 * written_next; holding the role here keeps the active segment (its fd)
 * from changing and no batch is half-written meanwhile. The order that
 * makes an `ok` after hopper_commit() true:
 *   1. write   (the senders' batches: segment files, no fdatasync; a sealed
 *               segment was fdatasynced when sealed, a new one created
 *               durably, writer.c ensure_room and segment.c)
 *   2. fdatasync the active segment (here, without `mu`)
 *   3. visible_next = written_next as of step 2's start: only now may the
 *      consumer hand those records on, so nothing is relayed downstream
 *      that a power cut can still take (and whose seq a new record could
 *      then be given).
 * A failed fdatasync is sticky (STYLE §6 rule 5): the records stay
 * invisible, and everything after gets HOPPER_EFAILED. */
int
hopper_commit(hopper_queue *q)
{
    HP_ENSURE(q != NULL, -EINVAL);
    HP_ENSURE(q->o.fsync == HOPPER_FSYNC_COMMIT, -EINVAL);
    int rc = 0;
    hp_mutex_lock(&q->mu);
    while (q->writer_active && !q->failed) {
        hp_cond_wait(&q->written, &q->mu);
    }
    if (q->failed) {
        rc = HOPPER_EFAILED;
        goto unlock;
    }
    uint64_t upto = q->written_next;
    if (upto == q->visible_next) {
        goto unlock; /* nothing written since the last commit */
    }
    q->writer_active = 1;
    int fd = q->active_fd;
    hp_mutex_unlock(&q->mu);
    uint64_t t0 = hp_now_mono_ns();
    /* No active segment: the last one was sealed (fdatasynced) since. */
    rc = fd >= 0 ? hp_fs_fdatasync(fd) : 0;
    uint64_t t1 = hp_now_mono_ns();
    hp_mutex_lock(&q->mu);
    if (fd >= 0) {
        atomic_fetch_add(&q->c_fsyncs, 1);
        atomic_fetch_add(&q->c_fsync_ns, t1 - t0);
    }
    q->writer_active = 0;
    if (rc < 0) {
        hp_q_fail_locked(q, rc);
        rc = HOPPER_EFAILED;
    } else {
        q->dirty = 0;
        q->last_sync_ns = t1;
        q->visible_next = upto;
        pthread_cond_broadcast(&q->not_empty);
    }
    writer_released(q);
unlock:
    hp_mutex_unlock(&q->mu);
    return rc;
}

/* ---- interval syncer ---------------------------------------------------- */

/* fsync=interval: fdatasync the active segment once per interval when written
 * data is not yet synced and no writer is at work. It takes the writer role
 * for the fdatasync, so the active fd cannot change under it. */
void *
hp_q_syncer_main(void *arg)
{
    hopper_queue *q = arg;
    uint64_t period = (uint64_t)q->o.fsync_interval_ms * 1000000u;
    hp_mutex_lock(&q->mu);
    while (!q->closing) {
        /* Sleep until the interval since the last sync ends, not a period
         * after this wake-up: every batch wakes this thread, and re-arming
         * "now + period" each time let a record written just after a sync
         * wait almost two periods (the README promises at most one). */
        uint64_t now = hp_now_mono_ns();
        int may = !q->failed && q->dirty && !q->writer_active && q->active_fd >= 0;
        if (!may || now - q->last_sync_ns < period) {
            uint64_t until = may ? q->last_sync_ns + period : now + period;
            (void)hp_cond_wait_until(&q->written, &q->mu, until);
        }
        if (q->closing || q->failed || !q->dirty || q->writer_active || q->active_fd < 0) {
            continue;
        }
        if (hp_now_mono_ns() - q->last_sync_ns < period) {
            continue;
        }
        q->writer_active = 1;
        int fd = q->active_fd;
        hp_mutex_unlock(&q->mu);
        uint64_t t0 = hp_now_mono_ns();
        int rc = hp_fs_fdatasync(fd);
        uint64_t t1 = hp_now_mono_ns();
        hp_mutex_lock(&q->mu);
        atomic_fetch_add(&q->c_fsyncs, 1);
        atomic_fetch_add(&q->c_fsync_ns, t1 - t0);
        q->writer_active = 0;
        if (rc < 0) {
            hp_q_fail_locked(q, rc);
        } else {
            q->dirty = 0;
            q->last_sync_ns = t1;
        }
        writer_released(q);
    }
    hp_mutex_unlock(&q->mu);
    return NULL;
}
