/* SPDX-License-Identifier: MIT */
/* The single consumer: hopper_recv (staging of records from memory and from
 * disk, frame reads that skip damage), hopper_ack with the checkpoint and the
 * reclaim of fully acknowledged segments, hopper_sync and hopper_shutdown.
 * State and locking: queue_int.h.
 *
 * Staging. hopper_recv takes up to STAGE_MAX_RECORDS records under one lock
 * (pointers into the memory deque's chunks, which keep them until the next
 * hopper_recv, or into the decoded frame) and hands them out one per call
 * without locking. A consumer that caught up spins briefly for senders
 * before it sleeps (spin_for_send), for as long as such spins have been
 * paying off (spin_adaptive). Frame reads and segment opens run with
 * `mu` dropped; the consumer's reader state is its own ([consumer]).
 *
 * Crash safety of reclaim: the checkpoint (ack position) is written durably
 * (in place, then fdatasync; checkpoint.c) BEFORE any segment whose records
 * are all acknowledged is unlinked; the directory is fsynced after the
 * unlinks. A crash in between leaves a fully acknowledged segment that the
 * next open deletes. Between durable writes the position is marked in place
 * without fsync, often, so that a kill -9 repeats few acknowledgements.
 */
#include "queue_int.h"

#include "fsio.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>

/* The most records staged from memory under one lock. */
#define STAGE_MAX_RECORDS 256u

/* ---- staging and disk reads --------------------------------------------- */

/* Close the reader's segment and forget its position. [consumer] */
void
hp_q_reader_reset(hp_reader *r)
{
    hp_fs_close(r->fd);
    r->fd = -1;
    r->seg_id = 0;
    r->win.buf.len = 0;
    r->win.off = 0;
    r->left = 0;
    r->positioned = 0;
}

/* Room for n staged records. 0 or -ENOMEM. [consumer] */
static int
stage_reserve(hp_reader *r, size_t n)
{
    if (n <= r->stage_cap) {
        return 0;
    }
    struct hp_staged *ns = realloc(r->stage, n * sizeof(*ns));
    if (ns == NULL) {
        return -ENOMEM;
    }
    r->stage = ns;
    r->stage_cap = n;
    return 0;
}

/* Stage the undelivered records of the decoded frame. Returns the number
 * staged. [consumer, mu] */
static size_t
stage_from_frame(hopper_queue *q)
{
    hp_reader *r = &q->rd;
    r->stage_n = 0;
    r->stage_i = 0;
    if (r->left == 0 || stage_reserve(r, r->left) < 0) {
        /* Out of memory for the stage: hand out one record at a time. */
        if (r->left == 0 || stage_reserve(r, 1) < 0) {
            return 0;
        }
    }
    while (r->left > 0 && r->stage_n < r->stage_cap) {
        if (r->rec_seq >= hp_q_commit_limit(q)) {
            break; /* not committed yet (a frame never straddles a commit) */
        }
        const uint8_t *p;
        size_t len;
        if (hp_rec_next(r->raw.data, r->raw.len, &r->raw_pos, &p, &len) != 0) {
            r->left = 0; /* decode checked the layout; cannot happen */
            break;
        }
        uint64_t seq = r->rec_seq++;
        r->left--;
        if (seq < q->read_seq) {
            continue; /* delivered before (or acknowledged) */
        }
        q->read_seq = seq + 1;
        r->stage[r->stage_n++] = (struct hp_staged){.data = p, .len = len, .seq = seq};
    }
    return r->stage_n;
}

/* Stage visible memory records: pointers into the deque's chunks, where a
 * record never moves and stays until its chunk is recycled, which waits for
 * the next hopper_recv() (deque.h, retired chunks). Returns the number
 * staged. [consumer, mu] */
static size_t
stage_from_memory(hopper_queue *q)
{
    hp_reader *r = &q->rd;
    r->stage_n = 0;
    r->stage_i = 0;
    size_t avail = q->mem.count - q->mem.nread;
    size_t max = avail < STAGE_MAX_RECORDS ? avail : STAGE_MAX_RECORDS;
    int disk_mode = q->o.durability == HOPPER_DURABILITY_DISK;
    hp_dpos p = q->mem.rd;
    size_t n = 0;
    while (n < max) {
        hp_entry *e = hp_dpos_entry(&p);
        if (disk_mode && e->seq >= q->visible_next) {
            break; /* not written yet */
        }
        r->stage[n++] = (struct hp_staged){.data = hp_entry_data(e), .len = e->len, .seq = e->seq};
        hp_dpos_next(&p, e);
    }
    if (n == 0) {
        return 0;
    }
    uint64_t last = r->stage[n - 1].seq;
    if (last >= q->read_seq) {
        q->read_seq = last + 1;
    }
    hp_deque_read_advance(&q->mem, n, p);
    r->stage_n = n;
    return n;
}

/* Hand out the next staged record; it counts as delivered now. [consumer] */
static int
take_staged(hopper_queue *q, hopper_record *rec)
{
    hp_reader *r = &q->rd;
    if (r->stage_i >= r->stage_n) {
        return 0;
    }
    struct hp_staged *e = &r->stage[r->stage_i++];
    rec->data = e->data;
    rec->len = e->len;
    rec->seq = e->seq;
    r->caller_next = e->seq + 1;
    /* The consumer is the counters' only writer: a load and a store, not a
     * locked read-modify-write per record. */
    atomic_store_explicit(&q->c_received,
                          atomic_load_explicit(&q->c_received, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    if (e->seq < q->redeliver_below) {
        atomic_fetch_add_explicit(&q->c_redelivered, 1, memory_order_relaxed);
    }
    return 1;
}

/* The front run is fully read. [consumer, mu] */
static void
pop_run(hopper_queue *q)
{
    q->runs_head++;
    q->rd.positioned = 0; /* the next run may start anywhere */
    if (q->runs_head == q->runs.n) {
        q->runs_head = 0;
        q->runs.n = 0;
    } else if (q->runs_head > 1024 && q->runs_head * 2 > q->runs.n) {
        memmove(q->runs.v, q->runs.v + q->runs_head, hp_q_runs_live(q) * sizeof(*q->runs.v));
        q->runs.n -= q->runs_head;
        q->runs_head = 0;
    }
    if (!hp_q_d_active(q)) {
        /* D drained: new records may go to memory again. */
        pthread_cond_broadcast(&q->not_full);
    }
}

/* Record seqs [from, to) as missing: gaps stay sorted (they never overlap:
 * those found at open lie outside every run, these inside no later run).
 * [consumer, mu] Returns 0, or -ENOMEM (the backlog stays overstated,
 * nothing is lost). */
static int
add_gap(hopper_queue *q, uint64_t from, uint64_t to)
{
    size_t at = q->gaps.n;
    while (at > q->gaps_head && q->gaps.v[at - 1].from > from) {
        at--;
    }
    int rc;
    HP_ARR_PUSH(q->gaps, ((hp_gap){.from = from, .to = to}), rc);
    if (rc < 0) {
        return rc;
    }
    memmove(q->gaps.v + at + 1, q->gaps.v + at, (q->gaps.n - 1 - at) * sizeof(*q->gaps.v));
    q->gaps.v[at] = (hp_gap){.from = from, .to = to};
    q->missing_left += to - from;
    return 0;
}

/* The front run `run` was read to its end (or its file is gone) and its
 * last seqs were not delivered: their frames were damaged (found only now,
 * when an index spared the scan at open) or lost. Those that no later run
 * holds (seqs of two segments may overlap) are known missing from now on,
 * like the gaps found at open (FORMAT.md §5 rule 8): they leave the
 * backlog, and an acknowledgement past them can reclaim the segment. The
 * read position passes the first of them when it starts at the position.
 * [consumer, mu] */
static void
skip_lost_tail(hopper_queue *q, const hp_run *run)
{
    uint64_t cur = run->first_seq > q->read_seq ? run->first_seq : q->read_seq;
    uint64_t to = run->last_seq + 1;
    int first = 1;
    /* Later runs are in first_seq order: sweep the ones starting below
     * `to`, recording the pieces of [cur, to) none of them holds. */
    for (size_t i = q->runs_head + 1; cur < to && i <= q->runs.n; i++) {
        uint64_t held_from = to;
        uint64_t held_to = to;
        if (i < q->runs.n && q->runs.v[i].first_seq < to) {
            held_from = q->runs.v[i].first_seq;
            held_to = q->runs.v[i].last_seq + 1;
        } else {
            i = q->runs.n; /* the last piece, up to `to` */
        }
        if (held_to <= cur) {
            continue;
        }
        if (held_from > cur) {
            if (add_gap(q, cur, held_from) < 0) {
                return;
            }
            if (first && cur == q->read_seq) {
                q->read_seq = held_from;
            }
        }
        first = 0;
        cur = held_to > cur ? held_to : cur;
    }
}

/* Read (and decode) the next frame of the current run, `run`, skipping
 * damage. [consumer, no mu] Returns 0 (maybe with nothing decoded when the
 * rest of the run was damaged) or a transient error. */
static int
read_frame(hopper_queue *q, const hp_run *run)
{
    hp_reader *r = &q->rd;
    hp_frame_hdr h;
    uint64_t skipped = 0;
    int rc = hp_run_read_frame(&r->win, &r->next_off, run->end, q->max_raw, run->first_seq,
                               run->last_seq, &r->dec, &r->raw, &h, &skipped);
    if (rc == 0) {
        r->raw_pos = 0;
        r->left = h.count;
        r->rec_seq = h.first_seq;
    } else if (rc == 1) {
        atomic_fetch_add(&q->c_corrupt_frames, 1);
        atomic_fetch_add(&q->c_corrupt_bytes, skipped);
        rc = 0;
    }
    return rc; /* < 0: I/O or memory: retry later, nothing skipped */
}

/* Open segment `id` for reading. [consumer, no mu] 0 or -errno (-ENOENT also
 * when the name no longer holds a regular file). */
static int
reader_open_seg(hopper_queue *q, uint64_t id)
{
    hp_reader *r = &q->rd;
    hp_q_reader_reset(r);
    char name[HP_SEG_NAME_MAX];
    hp_seg_name(name, id);
    int fd;
    int rc = hp_fs_open_regular(q->dirfd, name, O_RDONLY, &fd);
    if (rc == 1) {
        return -ENOENT; /* replaced by something that is not a file: gone */
    }
    if (rc < 0) {
        return rc;
    }
    r->fd = fd;
    r->seg_id = id;
    r->win.read = hp_read_at_fd;
    r->win.ctx = &r->fd;
    return 0;
}

/* ---- when to write the checkpoint (checkpoint.c writes it) -------------- */

static uint64_t
ckpt_interval_ns(const hopper_queue *q)
{
    return (uint64_t)q->o.checkpoint_interval_ms * 1000000u;
}

/* Is a durable write of ack_next due: it moved, no ENOSPC pause is on, and
 * a reclaim waits for it or checkpoint_interval_ms passed? [consumer] */
static int
ckpt_due(const hopper_queue *q, uint64_t ack_next, uint64_t now, int reclaim)
{
    return ack_next != q->ckpt_ack && now >= q->ckpt_retry_ns &&
           (reclaim || now - q->ckpt_ns >= ckpt_interval_ns(q));
}

/* ---- hopper_recv -------------------------------------------------------- */

/* How long the consumer spins for a send before it sleeps, at most. */
#define RECV_SPIN_NS 20000u
/* Below this budget a spin is not worth starting: the consumer sleeps at
 * once, and tries a full spin again after RECV_SPIN_PROBE such waits. A
 * consumer fed in bursts (a relay at 10k records/s gets one burst per
 * millisecond) would otherwise burn RECV_SPIN_NS for nothing after every
 * burst; one that keeps finding records while it spins keeps the full
 * budget. */
#define RECV_SPIN_MIN_NS 1000u
#define RECV_SPIN_PROBE 32u
/* Spins that saw no send in a row before the budget starts to halve: a
 * consumer that keeps up with busy producers misses now and then. */
#define RECV_SPIN_TOLERATE 4u
/* Once sends come in, the spin goes on until this many records arrived or
 * none came for RECV_GATHER_IDLE polls (about a microsecond): a consumer
 * that keeps up then takes records a batch per lock instead of one per
 * lock, and leaves the lock to the senders meanwhile. */
#define RECV_GATHER 64u
#define RECV_GATHER_IDLE 6u
/* Pauses between two polls of seq_pub (a PAUSE takes 40-60 ns on the EPYC
 * measured): each poll pulls the line away from the sender that stores to
 * it for every placement, so polling a few hundred nanoseconds apart leaves
 * most of those stores local. */
#define RECV_POLL_PAUSES 4u

/* Spin without `mu` until senders published new records or budget_ns
 * passed with none. 1 when records came, else 0. [consumer, no mu] */
static int
spin_for_send(hopper_queue *q, uint64_t seen, uint64_t budget_ns)
{
    uint64_t end = 0;
    uint64_t last = seen;
    unsigned idle = 0;
    for (unsigned i = 1;; i++) {
        uint64_t pub = atomic_load_explicit(&q->seq_pub, memory_order_relaxed);
        if (pub != last) {
            last = pub;
            idle = 0;
            if (pub - seen >= RECV_GATHER) {
                return 1;
            }
        } else if (last != seen && ++idle >= RECV_GATHER_IDLE) {
            return 1;
        }
        for (unsigned k = 0; k < RECV_POLL_PAUSES; k++) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
        if (i % 8u == 0) {
            uint64_t now = hp_now_mono_ns();
            if (end == 0) {
                end = now + budget_ns;
            } else if (now >= end) {
                return last != seen;
            }
        }
    }
}

/* Spin before sleeping, within the adaptive budget (hp_reader.spin_fails).
 * [consumer, no mu] */
static void
spin_adaptive(hopper_queue *q, hp_reader *r)
{
    uint32_t fails = r->spin_fails;
    uint32_t budget = fails < RECV_SPIN_TOLERATE ? RECV_SPIN_NS
                      : fails - RECV_SPIN_TOLERATE + 1 >= 32u
                          ? 0
                          : RECV_SPIN_NS >> (fails - RECV_SPIN_TOLERATE + 1);
    if (budget < RECV_SPIN_MIN_NS) {
        if (++r->spin_skips < RECV_SPIN_PROBE) {
            return;
        }
        budget = RECV_SPIN_NS; /* a probe: has the senders' pace changed? */
    }
    r->spin_skips = 0;
    uint64_t seen = atomic_load_explicit(&q->seq_pub, memory_order_relaxed);
    if (spin_for_send(q, seen, budget)) {
        r->spin_fails = 0;
    } else if (fails < UINT32_MAX) {
        r->spin_fails = fails + 1;
    }
}

int
hopper_recv(hopper_queue *q, hopper_record *rec, int timeout_ms)
{
    HP_ENSURE(q != NULL && rec != NULL, -EINVAL);
    hp_reader *r = &q->rd;
    if (!atomic_load_explicit(&q->failed_flag, memory_order_relaxed) && take_staged(q, rec)) {
        return 0; /* taken under an earlier lock */
    }
    uint64_t deadline = 0;
    int spun = 0;
    int rc;
    hp_mutex_lock(&q->mu);
    /* The record the last call returned is dead now: chunks popped since
     * can be reused. */
    hp_deque_release_retired(&q->mem);
    if (stage_reserve(r, STAGE_MAX_RECORDS) < 0) {
        rc = -ENOMEM;
        goto unlock;
    }
    for (;;) {
        if (q->failed) {
            rc = HOPPER_EFAILED;
            goto unlock;
        }
        if (q->mem.nread < q->mem.count) {
            if (stage_from_memory(q) > 0) {
                goto delivered;
            }
            /* Memory precedes disk: wait for this entry to be written. */
        } else if (stage_from_frame(q) > 0) {
            goto delivered;
        } else if (hp_q_runs_live(q) > 0 && r->left == 0 && q->read_seq < hp_q_commit_limit(q)) {
            /* (fsync=commit: the rest of D waits for hopper_commit().) */
            hp_run run = q->runs.v[q->runs_head];
            if (run.last_seq < q->read_seq ||
                (r->positioned && r->seg_id == run.seg_id && r->next_off >= run.end)) {
                /* Delivered already (its segment may even be reclaimed), or
                 * read to its end. */
                if (run.last_seq >= q->read_seq) {
                    skip_lost_tail(q, &run);
                }
                pop_run(q);
                continue;
            }
            if (!r->positioned || r->seg_id != run.seg_id || r->next_off < run.off) {
                if (r->fd < 0 || r->seg_id != run.seg_id) {
                    hp_mutex_unlock(&q->mu);
                    rc = reader_open_seg(q, run.seg_id);
                    hp_mutex_lock(&q->mu);
                    if (rc == -ENOENT) {
                        /* The file vanished under us: its records are lost. */
                        atomic_fetch_add(&q->c_corrupt_frames, 1);
                        skip_lost_tail(q, &run);
                        pop_run(q);
                        continue;
                    }
                    if (rc < 0) {
                        goto unlock;
                    }
                }
                r->next_off = run.off;
                r->positioned = 1;
            }
            hp_mutex_unlock(&q->mu);
            rc = read_frame(q, &run);
            hp_mutex_lock(&q->mu);
            if (rc < 0) {
                goto unlock;
            }
            continue;
        } else if (q->pend.count > 0 && !q->writer_active &&
                   q->enospc_until_ns <= hp_now_mono_ns()) {
            hp_q_run_writer(q); /* write-behind records we want now */
            continue;
        } else if (q->shutdown && q->d_pending == 0) {
            rc = HOPPER_ECLOSED;
            goto unlock;
        }
        /* Nothing to hand out. Before returning empty-handed or waiting,
         * the acknowledged position goes to the checkpoint: durably when
         * that is due, else marked, so a kill -9 of a consumer that caught
         * up repeats nothing. */
        uint64_t now = hp_now_mono_ns();
        int due = ckpt_due(q, q->ack_next, now, 0);
        if (due || q->ack_next != q->ckpt_mark_ack) {
            uint64_t ack_next = q->ack_next;
            uint64_t read_next = hp_q_read_hwm(q);
            hp_mutex_unlock(&q->mu);
            rc = due ? hp_q_ckpt_write(q, ack_next, read_next)
                     : hp_q_ckpt_mark(q, ack_next, read_next);
            hp_mutex_lock(&q->mu);
            if (rc < 0 && !hp_q_is_space_error(rc)) {
                hp_q_fail_locked(q, rc);
            }
            continue;
        }
        if (timeout_ms == 0 && !q->writer_active) {
            rc = -EAGAIN;
            goto unlock;
        }
        uint64_t until = hp_q_deadline(&deadline, timeout_ms);
        if (q->pend.count > 0) {
            until = hp_q_enospc_retry(q, until); /* the write-behind */
        }
        if (q->ack_next != q->ckpt_ack) {
            /* Wake up when the durable write comes due. */
            uint64_t at = q->ckpt_ns + ckpt_interval_ns(q);
            at = at > q->ckpt_retry_ns ? at : q->ckpt_retry_ns;
            until = at < until ? at : until;
        }
        if (!spun && q->spin_ok && timeout_ms != 0) {
            /* Spin briefly before sleeping: a producer that is sending will
             * add a record within microseconds, and a sleep costs both
             * sides a futex call and the consumer a wake-up (issue 14). */
            spun = 1;
            hp_mutex_unlock(&q->mu);
            spin_adaptive(q, r);
            hp_mutex_lock(&q->mu);
            /* Look at everything again, records or not: a shutdown, a
             * failure or a write may have come while mu was free, and its
             * broadcast found nobody waiting. */
            continue;
        }
        q->reader_waiting = 1;
        int wrc = hp_cond_wait_until(&q->not_empty, &q->mu, until);
        q->reader_waiting = 0;
        if (wrc == -ETIMEDOUT && q->mem.count == 0) {
            hp_deque_trim(&q->mem); /* idle: the spare chunks go back */
        }
        if (wrc == -ETIMEDOUT && hp_now_mono_ns() >= deadline) {
            rc = timeout_ms == 0 ? -EAGAIN : -ETIMEDOUT;
            goto unlock;
        }
    }
delivered:
    rc = 0;
    take_staged(q, rec);
unlock:
    hp_mutex_unlock(&q->mu);
    return rc;
}

/* ---- checkpoint, acknowledge and reclaim -------------------------------- */

/* The acknowledged position moves to `upto`: the missing seqs it passes
 * (gaps found at open) leave the backlog. Returns how many. [consumer, mu] */
static uint64_t
pass_gaps(hopper_queue *q, uint64_t upto)
{
    uint64_t passed = 0;
    while (q->gaps_head < q->gaps.n && q->gaps.v[q->gaps_head].from < upto) {
        hp_gap *g = &q->gaps.v[q->gaps_head];
        uint64_t end = g->to < upto ? g->to : upto;
        passed += end - g->from;
        g->from = end;
        if (g->from == g->to) {
            q->gaps_head++;
        }
    }
    q->missing_left -= passed;
    return passed;
}

/* After an acknowledgement: write the position durably when a reclaim waits
 * for it or checkpoint_interval_ms passed, else mark it (in place, no fsync)
 * every HP_CKPT_MARK_RECORDS records or HP_CKPT_MARK_NS. A full file system
 * is not a failure: the old checkpoint stands. [consumer, no mu] 0 or a
 * sticky -errno. */
static int
ckpt_after_ack(hopper_queue *q, uint64_t ack_next, uint64_t read_next, int reclaim)
{
    uint64_t now = hp_now_mono_ns();
    int rc = 0;
    if (ckpt_due(q, ack_next, now, reclaim)) {
        rc = hp_q_ckpt_write(q, ack_next, read_next);
    } else if (ack_next - q->ckpt_mark_ack >= HP_CKPT_MARK_RECORDS ||
               (ack_next != q->ckpt_mark_ack && now - q->ckpt_mark_ns >= HP_CKPT_MARK_NS)) {
        rc = hp_q_ckpt_mark(q, ack_next, read_next);
    }
    return hp_q_is_space_error(rc) ? 0 : rc;
}

/* The active segment is fully acknowledged. After ENOSPC (and no reclaim
 * since) it is retired so that it can be reclaimed: when it is the only
 * segment, or holds most of the space, nothing else would give space back.
 * Otherwise it stays, so a consumer that keeps up does not churn segments.
 * Returns 1 with its fd (to close without `mu`) when it was retired. [mu,
 * consumer; takes the free writer role for the moment: active_fd and aidx
 * are the writer's] */
static int
retire_active(hopper_queue *q, int *fd)
{
    if (q->enospc_until_ns == 0 || q->writer_active) {
        return 0;
    }
    *fd = q->active_fd;
    q->active_fd = -1;
    q->active_id = 0;
    q->aidx.id = 0; /* no index: the segment is about to go */
    q->aidx.n = 0;
    return 1;
}

int
hopper_ack(hopper_queue *q, uint64_t seq)
{
    HP_ENSURE(q != NULL, -EINVAL);
    uint64_t reclaim[64];
    size_t nrec = 0;
    hp_mutex_lock(&q->mu);
    if (q->failed) {
        hp_mutex_unlock(&q->mu);
        return HOPPER_EFAILED;
    }
    /* Clamp to what the caller was given (staged records are not). */
    uint64_t given = q->rd.caller_next;
    uint64_t upto = seq == UINT64_MAX ? given : seq + 1;
    if (upto > given) {
        upto = given;
    }
    if (upto > q->ack_next) {
        uint64_t passed = pass_gaps(q, upto);
        atomic_fetch_add(&q->c_acked, upto - q->ack_next - passed);
        q->ack_next = upto;
        int freed = 0;
        while (q->mem.nread > 0 && hp_deque_front(&q->mem)->seq < upto) {
            q->mem_bytes -= hp_deque_front(&q->mem)->len + HP_ENTRY_COST;
            hp_deque_pop_front(&q->mem);
            freed = 1;
        }
        if (freed) {
            pthread_cond_broadcast(&q->not_full);
        }
    }
    int retired_fd = -1;
    for (size_t i = 0; i < q->segs.n && nrec < 64; i++) {
        hp_seginfo *s = &q->segs.v[i];
        if (s->max_seq <= q->ack_next &&
            (s->id != q->active_id || retire_active(q, &retired_fd))) {
            reclaim[nrec++] = s->id;
        }
    }
    uint64_t ack_next = q->ack_next;
    uint64_t read_next = hp_q_read_hwm(q);
    hp_mutex_unlock(&q->mu);
    hp_fs_close(retired_fd);

    int rc = ckpt_after_ack(q, ack_next, read_next, nrec > 0);
    if (rc < 0) {
        goto fail;
    }
    if (nrec == 0 || q->ckpt_ack < ack_next) {
        return 0;
    }
    /* Checkpoint durable first, then unlink, then fsync the directory. */
    for (size_t i = 0; i < nrec; i++) {
        char name[HP_SEG_NAME_MAX];
        hp_seg_name(name, reclaim[i]);
        if (q->rd.seg_id == reclaim[i]) {
            hp_q_reader_reset(&q->rd);
        }
        rc = hp_fs_unlinkat(q->dirfd, name);
        if (rc < 0 && rc != -ENOENT) {
            goto fail;
        }
        hp_seg_idx_name(name, reclaim[i]);
        rc = hp_fs_unlinkat(q->dirfd, name);
        if (rc < 0 && rc != -ENOENT) {
            goto fail;
        }
    }
    rc = hp_fs_fsync_dir(q->dirfd);
    if (rc < 0) {
        goto fail;
    }
    hp_mutex_lock(&q->mu);
    for (size_t i = 0; i < nrec; i++) {
        for (size_t j = 0; j < q->segs.n; j++) {
            if (q->segs.v[j].id == reclaim[i]) {
                q->disk_bytes -= q->segs.v[j].bytes;
                memmove(&q->segs.v[j], &q->segs.v[j + 1],
                        (q->segs.n - j - 1) * sizeof(*q->segs.v));
                q->segs.n--;
                break;
            }
        }
    }
    q->enospc_until_ns = 0;
    pthread_cond_broadcast(&q->not_full);
    hp_mutex_unlock(&q->mu);
    return 0;
fail:
    hp_mutex_lock(&q->mu);
    hp_q_fail_locked(q, rc);
    hp_mutex_unlock(&q->mu);
    return HOPPER_EFAILED;
}

int
hopper_recv_ack(hopper_queue *q, hopper_record *rec, int timeout_ms)
{
    /* Seqs stay below 2^63: UINT64_MAX tells the caller nothing was
     * received, so an error from the ack step (rec filled) is told apart. */
    if (rec != NULL) {
        rec->seq = UINT64_MAX;
    }
    int rc = hopper_recv(q, rec, timeout_ms);
    if (rc < 0) {
        if (rec != NULL) {
            rec->seq = UINT64_MAX;
        }
        return rc;
    }
    return hopper_ack(q, rec->seq);
}

int
hopper_sync(hopper_queue *q)
{
    HP_ENSURE(q != NULL, -EINVAL);
    hp_mutex_lock(&q->mu);
    int failed = q->failed;
    uint64_t ack_next = q->ack_next;
    uint64_t read_next = hp_q_read_hwm(q);
    hp_mutex_unlock(&q->mu);
    if (failed) {
        return HOPPER_EFAILED;
    }
    if (ack_next == q->ckpt_ack) {
        return 0;
    }
    int rc = hp_q_ckpt_write(q, ack_next, read_next);
    if (rc < 0 && !hp_q_is_space_error(rc)) {
        hp_mutex_lock(&q->mu);
        hp_q_fail_locked(q, rc);
        hp_mutex_unlock(&q->mu);
        return HOPPER_EFAILED;
    }
    return rc; /* a full file system: the old checkpoint stands */
}

void
hopper_shutdown(hopper_queue *q)
{
    if (q == NULL) {
        return;
    }
    hp_mutex_lock(&q->mu);
    q->shutdown = 1;
    pthread_cond_broadcast(&q->not_empty);
    pthread_cond_broadcast(&q->not_full);
    pthread_cond_broadcast(&q->written);
    hp_mutex_unlock(&q->mu);
}
