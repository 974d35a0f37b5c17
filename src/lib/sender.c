/* SPDX-License-Identifier: MIT */
/* Senders: hopper_send / hopper_send_batch. Admission (memory and disk
 * budgets, the ENOSPC back-off), placement of the records in memory (M) and
 * in the pending batch (D, or every record in DISK mode), then the wait that
 * the durability mode asks for:
 *   MEMORY  accepted once placed; spilled records are written behind by a
 *           sender once a frame's worth is pending, or by the consumer when
 *           it wants them; write-behind is bounded to one compression round
 *   DISK    the sender parks on its own condvar until its batch is written
 *           (group commit, writer.c), taking the writer role when it is free
 *           and helping with compression rounds meanwhile (compress.c)
 * State and locking: queue_int.h. Everything here runs under `mu` except the
 * argument checks, the waiter's condvar setup and the clock read before the
 * lock, and the compression done for the writer (hp_q_help_compress drops
 * `mu` for it).
 */
#include "queue_int.h"

#include <stdatomic.h>

/* Wake the consumer if it sleeps: a signal nobody waits for still costs,
 * and so does a second one before the consumer ran: the first sender clears
 * reader_waiting. [mu] */
static void
wake_reader(hopper_queue *q)
{
    if (q->reader_waiting) {
        q->reader_waiting = 0;
        pthread_cond_signal(&q->not_empty);
    }
}

/* Does the disk budget surely hold the pending batch grown to `new_pend`
 * bytes and, in MEMORY mode, `mem_raw` bytes of memory records (which close
 * must be able to save)? hp_q_reserve_for(x) <= 2x + 1 KiB (frames >= 1
 * KiB, segments >= 4 KiB): when even that fits, its divisions are not
 * needed. [mu] */
static int
disk_surely_fits(const hopper_queue *q, uint64_t new_pend, uint64_t mem_raw)
{
    uint64_t base = q->disk_bytes + q->inflight_reserve;
    return base < q->o.disk_bytes && 2 * (new_pend + mem_raw) + 2048 <= q->o.disk_bytes - base;
}

/* Can the batch be admitted now? 0 yes, HOPPER_EFULL not now, HOPPER_ETOOBIG
 * never. Also reports how many leading records go to memory. [mu] */
static int
admit(hopper_queue *q, const hopper_iovec *recs, size_t n, size_t *to_mem)
{
    uint64_t mem_add = 0;
    size_t k = 0;
    if (!hp_q_d_active(q)) {
        while (k < n && q->mem_bytes + mem_add + recs[k].len + HP_ENTRY_COST <= q->o.memory_bytes) {
            mem_add += recs[k].len + HP_ENTRY_COST;
            k++;
        }
    }
    uint64_t disk_raw = 0;
    uint64_t all_raw = 0;
    for (size_t i = 0; i < n; i++) {
        all_raw += recs[i].len + HP_REC_PREFIX;
        if (i >= k) {
            disk_raw += recs[i].len + HP_REC_PREFIX;
        }
    }
    int disk_mode = q->o.durability == HOPPER_DURABILITY_DISK;
    uint64_t new_pend = q->pend.raw.len + (disk_mode ? all_raw : disk_raw);
    /* MEMORY mode keeps room on disk for what is in memory, so that close can
     * always save it (see hopper.h, durability). */
    /* (The charge per record, HP_ENTRY_COST, exceeds its 4-byte prefix.) */
    uint64_t mem_raw = disk_mode ? 0 : q->mem_bytes + mem_add;
    uint64_t base = q->disk_bytes + q->inflight_reserve;
    if (!disk_surely_fits(q, new_pend, mem_raw)) {
        /* Would it fit an empty queue? If not, it never will. */
        if (HP_CKPT_FILE_SIZE + hp_q_reserve_for(q, all_raw) > q->o.disk_bytes) {
            return HOPPER_ETOOBIG;
        }
        if (base + hp_q_reserve_for(q, new_pend) + hp_q_reserve_for(q, mem_raw) > q->o.disk_bytes) {
            return HOPPER_EFULL;
        }
    }
    if ((disk_mode || k < n) && q->enospc_until_ns > hp_now_mono_ns()) {
        return HOPPER_EFULL;
    }
    *to_mem = k;
    return 0;
}

static int
place(hopper_queue *q, const hopper_iovec *recs, size_t n, size_t to_mem, uint64_t ts)
{
    int disk_mode = q->o.durability == HOPPER_DURABILITY_DISK;
    size_t mem_before = q->mem.count;
    hp_dpos mem_end = hp_deque_end(&q->mem);
    size_t raw_before = q->pend.raw.len;
    uint32_t count_before = q->pend.count;
    uint64_t d_before = q->pend.d_count;
    uint64_t seq0 = q->next_seq;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t seq = seq0 + i;
        uint32_t len = (uint32_t)recs[i].len;
        if (i < to_mem) {
            rc = hp_deque_push(&q->mem, seq, ts, recs[i].data, len);
            if (rc < 0) {
                break;
            }
            q->mem_bytes += len + HP_ENTRY_COST;
        }
        if (i >= to_mem || disk_mode) {
            uint8_t pre[HP_REC_PREFIX];
            hp_put_u32(pre, len);
            if (q->pend.count == 0) {
                q->pend.first_seq = seq;
                q->pend.ts_ms = ts;
            }
            rc = hp_buf_append(&q->pend.raw, pre, sizeof(pre));
            if (rc == 0) {
                rc = hp_buf_append(&q->pend.raw, recs[i].data, len);
            }
            if (rc < 0) {
                break;
            }
            q->pend.count++;
            if (i >= to_mem) {
                q->pend.d_count++;
            }
        }
    }
    if (rc < 0) {
        size_t dropped = q->mem.count - mem_before;
        q->mem_bytes -= hp_deque_truncate(&q->mem, mem_end, mem_before) +
                        (uint64_t)dropped * HP_ENTRY_COST;
        q->pend.raw.len = raw_before;
        q->pend.count = count_before;
        q->pend.d_count = d_before;
        return rc;
    }
    q->d_pending += q->pend.d_count - d_before;
    q->next_seq = seq0 + n;
    atomic_store_explicit(&q->seq_pub, q->next_seq, memory_order_relaxed);
    return 0;
}

/* The in-memory fast path of one record in MEMORY mode (the common case
 * while the consumer keeps up): nothing on disk waits (so the record goes to
 * memory), the budgets surely hold it and the queue is healthy. Places it
 * and returns 1; returns 0, changing nothing, when the general path must
 * decide. The checks are admit()'s and send_batch's for this case. [mu] */
static int
send_one_fast(hopper_queue *q, const void *data, uint32_t len, uint64_t ts)
{
    uint64_t mem_after = q->mem_bytes + len + HP_ENTRY_COST;
    if (q->failed || q->shutdown || q->next_seq >= HP_SEQ_LIMIT || hp_q_d_active(q) ||
        mem_after > q->o.memory_bytes || !disk_surely_fits(q, q->pend.raw.len, mem_after)) {
        return 0;
    }
    if (hp_deque_push(&q->mem, q->next_seq, ts, data, len) < 0) {
        return 0; /* the general path reports -ENOMEM */
    }
    q->mem_bytes = mem_after;
    q->next_seq++;
    atomic_store_explicit(&q->seq_pub, q->next_seq, memory_order_relaxed);
    q->c_sent++;
    wake_reader(q);
    return 1;
}

/* Group commit with synchronous senders (fsync=always). Each sender has one
 * batch in flight, so without care the senders split into two groups taking
 * turns: while one group's commit is synced, the other fills the next batch,
 * and the group just released arrives too late for it (each commit carries
 * about half of them). So when a commit ends, the next one waits until as
 * many senders are pending as took part in the last two batches
 * (`linger_target`), but never past `linger_until` (half the last fdatasync
 * time, at most LINGER_MAX_NS). Returns 1 after waiting (the caller looks
 * again), 0 when the commit should start now. [mu] */
static int
commit_linger(hopper_queue *q, hp_waiter *w)
{
    if (q->pend.nwaiters >= q->linger_target || q->failed || q->shutdown) {
        return 0;
    }
    if (hp_now_mono_ns() >= q->linger_until) {
        return 0;
    }
    (void)hp_cond_wait_until(&w->cv, &q->mu, q->linger_until);
    return 1;
}

int
hopper_send_batch(hopper_queue *q, const hopper_iovec *recs, size_t n, int timeout_ms)
{
    HP_ENSURE(q != NULL && (recs != NULL || n == 0), -EINVAL);
    if (n == 0) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        HP_ENSURE(recs[i].data != NULL || recs[i].len == 0, -EINVAL);
        HP_ENSURE(recs[i].len <= q->o.max_record_bytes, HOPPER_ETOOBIG);
    }
    int has_cv = q->o.durability == HOPPER_DURABILITY_DISK;
    /* Read the clock before the lock: senders contend for mu, so what runs
     * under it must be short. */
    uint64_t ts = hp_now_wall_ms();
    uint64_t deadline = 0;
    hp_waiter w = {0};
    if (has_cv) {
        HP_GUARD(hp_cond_init(&w.cv));
    }
    int rc;
    size_t to_mem = 0;
    hp_mutex_lock(&q->mu);
    if (n == 1 && !has_cv && send_one_fast(q, recs[0].data, (uint32_t)recs[0].len, ts)) {
        rc = 0;
        goto unlock;
    }
    for (;;) {
        if (q->failed) {
            rc = HOPPER_EFAILED;
            goto unlock;
        }
        if (q->shutdown) {
            rc = HOPPER_ECLOSED;
            goto unlock;
        }
        if (n > HP_SEQ_LIMIT - q->next_seq) {
            /* The sequence space ends here (FORMAT.md §1): never wrap. */
            rc = HOPPER_EEXHAUSTED;
            goto unlock;
        }
        rc = admit(q, recs, n, &to_mem);
        if (rc == 0) {
            break;
        }
        if (rc == HOPPER_ETOOBIG) {
            goto unlock;
        }
        if (timeout_ms == 0) {
            atomic_fetch_add(&q->c_full, 1);
            goto unlock;
        }
        uint64_t until = hp_q_enospc_retry(q, hp_q_deadline(&deadline, timeout_ms));
        if (hp_cond_wait_until(&q->not_full, &q->mu, until) == -ETIMEDOUT &&
            hp_now_mono_ns() >= deadline) {
            atomic_fetch_add(&q->c_full, 1);
            rc = HOPPER_EFULL;
            goto unlock;
        }
        ts = hp_now_wall_ms(); /* the record is accepted after the wait */
    }
    uint32_t pend_before = q->pend.count;
    rc = place(q, recs, n, to_mem, ts);
    if (rc < 0) {
        goto unlock;
    }
    q->c_sent += n;
    if (to_mem > 0) {
        wake_reader(q);
    }
    if (q->pend.count == pend_before) {
        goto unlock; /* memory only: accepted */
    }
    if (q->o.durability == HOPPER_DURABILITY_MEMORY) {
        /* Spilled records are written behind, a frame at a time: by a sender
         * once a frame's worth is pending, or by the consumer as soon as it
         * wants them (never stranded). */
        wake_reader(q);
        /* Bounded write-behind: while a writer is busy, at most one round's
         * worth (HP_ENC_SLOTS frames) may wait; past that, senders help the
         * writer compress or wait for it (memory stays bounded, and the
         * sender takes its turn at writing). */
        while (q->pend.raw.len >= HP_ENC_SLOTS * q->frame_target && q->writer_active &&
               !q->failed) {
            if (!hp_q_help_compress(q)) {
                hp_cond_wait(&q->written, &q->mu);
            }
        }
        if (q->pend.raw.len >= q->frame_target && !q->writer_active && !q->failed &&
            q->enospc_until_ns <= hp_now_mono_ns()) {
            hp_q_run_writer(q);
        }
        rc = 0;
        goto unlock;
    }
    w.next = q->pend.waiters;
    q->pend.waiters = &w;
    q->pend.nwaiters++;
    /* When the linger target is met now, this sender starts the commit
     * itself (below); the lingering ones wait on. */
    while (!w.done) {
        /* Our batch is still pending if we are on its list; take the writer
         * role when it is free. */
        int mine_pending = 0;
        for (hp_waiter *p = q->pend.waiters; p != NULL; p = p->next) {
            if (p == &w) {
                mine_pending = 1;
                break;
            }
        }
        if (mine_pending && !q->writer_active) {
            if (!commit_linger(q, &w)) {
                q->linger_target = 0;
                hp_q_run_writer(q);
            }
            continue;
        }
        if (!hp_q_help_compress(q)) {
            hp_cond_wait(&w.cv, &q->mu);
        }
    }
    rc = w.rc;
unlock:
    hp_mutex_unlock(&q->mu);
    if (has_cv) {
        pthread_cond_destroy(&w.cv);
    }
    return rc;
}

int
hopper_send(hopper_queue *q, const void *data, size_t len, int timeout_ms)
{
    hopper_iovec v = {.data = data, .len = len};
    return hopper_send_batch(q, &v, 1, timeout_ms);
}
