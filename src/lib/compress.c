/* SPDX-License-Identifier: MIT */
/* The writer's parallel compression rounds (writer.c owns the rest of the
 * writer role; the state is in queue_int.h).
 *
 * The writer cuts its batch into frames and compresses them in rounds of up
 * to HP_ENC_SLOTS frames (`cr`). A round of more than one frame is opened
 * under `mu`, `written` is broadcast (MEMORY-mode senders at the write-behind
 * bound wait there) and the DISK-mode senders of this batch and of the next
 * are signalled on their own condvars: each claims a frame of the round with
 * an atomic counter, compresses it outside `mu` with the slot's own deflate
 * context and output buffer, and counts it done under `mu`. The writer
 * compresses frames of its own round too, waits on `cr_done` until all are
 * done, then appends them in order. Only compression runs in parallel.
 */
#include "queue_int.h"

#include <stdatomic.h>

/* Compress frame i of the open round into eout[i]. [slot i] */
static void
compress_task(hopper_queue *q, uint32_t i)
{
    hp_ctask *t = &q->cr.t[i];
    hp_encoder *e = &q->enc[i];
    t->rc = 0;
    if (e->level < 0) {
        t->rc = hp_enc_init(e, q->o.compression);
        if (t->rc < 0) {
            e->level = -1; /* still not created: try again next time */
            return;
        }
    }
    q->eout[i].len = 0;
    t->rc = hp_rec_encode(e, q->cr.raw + t->start, t->len, t->seq, t->n, q->cr.ts_ms,
                          &q->eout[i]);
}

/* A sender that would otherwise sleep (on `written`, or on its own condvar)
 * compresses unclaimed frames of the writer's open round. Returns 1 when it
 * did some (its wait condition may have changed meanwhile). [mu; dropped
 * while compressing] */
int
hp_q_help_compress(hopper_queue *q)
{
    int helped = 0;
    while (q->cr.open) {
        uint32_t i = atomic_fetch_add(&q->cr.next, 1);
        if (i >= q->cr.n) {
            break;
        }
        hp_mutex_unlock(&q->mu);
        compress_task(q, i);
        hp_mutex_lock(&q->mu);
        if (++q->cr.done == q->cr.n) {
            pthread_cond_signal(&q->cr_done);
        }
        helped = 1;
    }
    return helped;
}

/* Compress the n frames of a round, with the help of waiting senders when
 * `parallel` and n > 1. Returns 0 or the first frame's error. [writer; not mu
 * when parallel] */
int
hp_q_compress_round(hopper_queue *q, uint32_t n, int parallel)
{
    if (!parallel || n == 1) {
        for (uint32_t i = 0; i < n; i++) {
            compress_task(q, i);
        }
    } else {
        hp_mutex_lock(&q->mu);
        q->cr.n = n;
        atomic_store(&q->cr.next, 0);
        q->cr.done = 0;
        q->cr.open = 1;
        pthread_cond_broadcast(&q->written);
        /* Idle DISK-mode senders help too: first those of this batch, then
         * those of the next one. */
        uint32_t k = 1;
        for (hp_waiter *w = q->cr.idle; w != NULL && k < n; w = w->next, k++) {
            pthread_cond_signal(&w->cv);
        }
        for (hp_waiter *w = q->pend.waiters; w != NULL && k < n; w = w->next, k++) {
            pthread_cond_signal(&w->cv);
        }
        hp_mutex_unlock(&q->mu);
        uint32_t mine = 0;
        uint32_t i;
        while ((i = atomic_fetch_add(&q->cr.next, 1)) < n) {
            compress_task(q, i);
            mine++;
        }
        hp_mutex_lock(&q->mu);
        q->cr.done += mine;
        while (q->cr.done < n) {
            hp_cond_wait(&q->cr_done, &q->mu);
        }
        q->cr.open = 0;
        hp_mutex_unlock(&q->mu);
    }
    for (uint32_t i = 0; i < n; i++) {
        HP_GUARD(q->cr.t[i].rc);
    }
    return 0;
}
