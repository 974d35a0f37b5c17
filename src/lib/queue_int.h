/* SPDX-License-Identifier: MIT */
/* The queue's private header: struct hopper_queue, what guards each of its
 * fields, and the internal functions that cross the queue's files. Included
 * only by the queue's own files (queue.c, writer.c, compress.c, sender.c,
 * receiver.c, recover.c, checkpoint.c); nothing below them (record,
 * segment, fsio, deque, buf) may include it (STYLE.md §3).
 *
 * Logical order. Every accepted record gets the next sequence number. The
 * unacknowledged records form one FIFO made of two parts:
 *   [M: records held in memory] [D: records readable only from disk]
 * Every record of M precedes every record of D. A new record goes to M only
 * while D is empty (no unread run and no pending D write) and the memory
 * budget has room; otherwise it goes to D. The consumer reads M first, then
 * D through `runs` (contiguous frame ranges of segment files, in sequence
 * order). In DISK mode every record is also written to the segment files and
 * M is a read-ahead cache whose entries become visible once written.
 *
 * Who does what:
 *   queue.c     options, name check, directory lock, open/close, stats,
 *               the sticky failure (hp_q_fail_locked)
 *   sender.c    admission and placement of records (hopper_send*)
 *   writer.c    the writer role: group commit, ENOSPC undo/requeue/rewind,
 *               segment rotation and seal, the interval syncer thread
 *   compress.c  the writer's parallel compression rounds
 *   receiver.c  the consumer: staging, disk reads, hopper_recv, ack,
 *               when to checkpoint, reclaim, hopper_sync, hopper_shutdown
 *   recover.c   open-time recovery and close-time save of memory records
 *   checkpoint.c  the checkpoint file: two slots written in place
 *
 * Locking. `mu` is the only lock, so there is no lock order to keep; an
 * internal function takes or releases no lock unless its comment says so.
 * Condvars (all waited on with `mu`, all in predicate loops):
 *   not_empty  the consumer waits for records (senders signal it only while
 *              `reader_waiting`, see sender.c wake_reader; broadcast after
 *              each batch, on failure, shutdown and close)
 *   not_full   senders wait for budget (memory freed, D drained, segments
 *              reclaimed, a failure or shutdown)
 *   written    senders wait for their batch (MEMORY mode), for the writer
 *              role or for a round to help with; the syncer and close wait
 *              here for the writer role to be free
 *   cr_done    the writer waits for its round's helpers (compress.c)
 *   hp_waiter.cv  one per waiting DISK-mode sender, on its own stack
 *
 * Field tags:
 *   [mu]        read and written only with `mu` held
 *   [writer]    only the holder of the writer role (`writer_active`, taken
 *               and released under `mu`) touches it, with or without `mu`;
 *               the role is held by at most one thread: a sender, the
 *               consumer, the interval syncer or close (hopper_ack also
 *               retires the active segment under `mu` while the role is
 *               free: taking and dropping it within one critical section)
 *   [slot]      slot i of `enc`/`eout` belongs to whoever claimed frame i of
 *               the open compression round (the writer between rounds)
 *   [consumer]  only the one consumer thread (hopper_recv/ack/sync, and
 *               close once no other thread runs)
 *   immutable   set by hopper_open before the queue is shared
 * The counters c_* are atomics read by stats without `mu`, but c_sent ([mu]).
 *
 * I/O and `mu`. Disk I/O runs without `mu` (the writer drops it to write, the
 * consumer to read a frame, ack to write the checkpoint and unlink), with one
 * exception: hopper_close() writes the memory-only records (recover.c
 * hp_q_save_memory) with `mu` held, when no sender, consumer or syncer can
 * run any more, so nobody can be waiting for it.
 */
#ifndef HOPPER_SRC_LIB_QUEUE_INT_H
#define HOPPER_SRC_LIB_QUEUE_INT_H
#include "internal.h"

#include "buf.h"
#include "deque.h"
#include "record.h"
#include "segment.h"
#include "sync.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct hp_run {
    uint64_t seg_id;
    uint64_t off;       /* first frame */
    uint64_t end;       /* end of the last frame */
    uint64_t first_seq; /* first record of the first frame */
    uint64_t last_seq;  /* last record of the last frame */
    uint64_t ts_ms;     /* timestamp of the first frame */
} hp_run;

/* Seqs [from, to) that no frame held at open (FORMAT.md §5), or that the
 * reader found only in damaged frames. */
typedef struct hp_gap {
    uint64_t from;
    uint64_t to;
} hp_gap;

typedef struct hp_seginfo {
    uint64_t id;
    uint64_t bytes;   /* file size */
    uint64_t records; /* records in valid frames */
    uint64_t raw;     /* payload bytes of those */
    uint64_t max_seq; /* largest record seq + 1, 0 when empty */
} hp_seginfo;

/* A DISK-mode sender waiting for its batch, on its own stack. It sleeps on
 * its own condvar, signalled when its batch is done, when the writer role
 * becomes free while its batch is the pending one (only the newest waiter is
 * woken: it takes the role), or when a compression round opens. No sender is
 * woken for nothing, which matters with many senders and few cores. */
typedef struct hp_waiter {
    int done;
    int rc;
    pthread_cond_t cv;
    struct hp_waiter *next;
} hp_waiter;

/* A batch of encoded records waiting to be written. */
typedef struct hp_batch {
    hp_buf raw;           /* count x (u32 len, bytes) */
    uint64_t first_seq;   /* of the first record in raw */
    uint32_t count;
    uint64_t d_count;     /* records of the batch that belong to D */
    uint64_t ts_ms;
    hp_waiter *waiters;
    uint32_t nwaiters;
} hp_batch;

/* A frame the writer produced, published under mu afterwards. */
typedef struct hp_written {
    uint64_t seg_id;
    uint64_t off;
    uint64_t first_seq;
    uint32_t count;
    uint64_t raw;
    uint64_t bytes; /* header + stored */
    uint64_t ts_ms;
} hp_written;

/* An index file the writer wrote while sealing a segment. */
typedef struct hp_sealed {
    uint64_t id;
    uint64_t bytes;
} hp_sealed;

/* A segment the writer created or extended during one batch. */
typedef struct hp_touched {
    uint64_t id;
    uint64_t size_before; /* 0 = created in this batch */
} hp_touched;

/* Frames compressed in parallel per round (see compress.c). */
#define HP_ENC_SLOTS 4u

/* One frame of a round: records raw[start .. start+len) of the batch. */
typedef struct hp_ctask {
    size_t start;
    size_t len;
    uint64_t seq;
    uint32_t n;
    int rc; /* of its compression */
} hp_ctask;

/* The writer's compression round. */
typedef struct hp_cround {
    const uint8_t *raw;        /* the batch's records */
    hp_waiter *idle;           /* [writer] the batch's own senders, idle meanwhile */
    uint64_t ts_ms;
    hp_ctask t[HP_ENC_SLOTS];  /* [writer; read by a claimer after its claim] */
    uint32_t n;                /* [mu] frames in the round */
    _Atomic uint32_t next;     /* next frame to claim (claims past n are void) */
    uint32_t done;             /* [mu] frames compressed */
    int open;                  /* [mu] helpers may claim */
} hp_cround;

/* Consumer-owned disk read state (touched only by the consumer thread). */
typedef struct hp_reader {
    int fd;
    uint64_t seg_id;
    hp_window win;
    hp_decoder dec;
    hp_buf raw;        /* decoded body of the current frame */
    size_t raw_pos;    /* next record in raw */
    uint64_t rec_seq;  /* seq of the record at raw_pos */
    uint32_t left;     /* records left in raw */
    uint64_t next_off; /* next frame to read in seg_id */
    int positioned;    /* next_off is meaningful for seg_id */
    /* Records taken from the queue under one lock and handed out one per
     * hopper_recv() without locking (pointers into mem's chunks, or into
     * the decoded frame in raw). */
    struct hp_staged {
        const uint8_t *data;
        size_t len;
        uint64_t seq;
    } *stage;
    size_t stage_cap;
    size_t stage_n;
    size_t stage_i;
    uint64_t caller_next; /* every seq below was returned to the caller */
    /* The spin before a sleep adapts (receiver.c spin_adaptive): after
     * RECV_SPIN_TOLERATE spins in a row that saw no send (spin_fails
     * counts them; one that did resets it, as calloc leaves it) each next
     * spin gets half the budget; too small a budget is not spun: the
     * consumer sleeps at once and tries a full spin again every
     * RECV_SPIN_PROBE waits (spin_skips counts them). */
    uint32_t spin_fails;
    uint32_t spin_skips;
} hp_reader;

#define HP_ARR(T)                                                                              \
    struct {                                                                                   \
        T *v;                                                                                  \
        size_t n;                                                                              \
        size_t cap;                                                                            \
    }

/* The queue. Field tags, condvars and the one exception to "no I/O under mu"
 * are explained at the top of this file. */
struct hopper_queue {
    hopper_opts o;     /* immutable after open */
    uint64_t max_raw;  /* immutable: largest frame body read (HP_FRAME_MAX_RAW) */
    uint64_t seg_cap;  /* immutable: segments are sealed past this size */
    uint64_t frame_target; /* immutable: frames are closed past this raw size */
    int dirfd;         /* immutable */
    int lockfd;        /* immutable */
    char qid[HP_QID_HEX + 1]; /* immutable: the queue identity (FORMAT.md §1.1) */

    pthread_mutex_t mu;        /* the only lock: guards every field tagged [mu] */
    pthread_cond_t not_empty;  /* the consumer waits for records */
    pthread_cond_t not_full;   /* senders wait for budget */
    pthread_cond_t written;    /* batch done, writer role free, round open */
    pthread_cond_t cr_done;    /* the writer waits for its round's helpers */

    int failed;      /* [mu] sticky error code, 0 if healthy */
    int reader_waiting; /* [mu] the consumer sleeps on not_empty and no sender
                         * signalled it since */
    int spin_ok;        /* immutable: more than one CPU, so the consumer may spin
                         * for a send before it sleeps (receiver.c) */
    _Atomic int failed_flag; /* mirrors failed != 0, for the lock-free recv path */
    int shutdown;    /* [mu] hopper_shutdown() was called */
    int closing;     /* [mu] close in progress: stops the syncer */
    uint64_t next_seq; /* [mu] */
    /* next_seq as of the last placement, stored under mu, read by the
     * consumer's spin without it; padded to a cache line of its own (the
     * queue comes from calloc, so no _Alignas) so that the spin does not
     * pull in the lines senders write under mu. */
    char seq_pub_before[64];
    _Atomic uint64_t seq_pub;
    char seq_pub_after[64 - sizeof(uint64_t)];

    hp_deque mem;        /* [mu] M, plus delivered-unacknowledged entries (mem.nread
                          * of them, before the read cursor); the payloads of
                          * delivered entries are also read by the consumer
                          * without mu (they never change; deque.h) */
    uint64_t mem_bytes;  /* [mu] bytes charged to mem: payload + HP_ENTRY_COST each */
    uint64_t visible_next; /* [mu] DISK mode: records below this seq may be handed to the
                            * consumer: they are written (and, with fsync=commit,
                            * fdatasynced by hopper_commit) */
    uint64_t written_next; /* [mu] DISK mode: records below this seq are written; with
                            * fsync=commit hopper_commit() raises visible_next to it */

    hp_batch pend;           /* [mu] batch being filled */
    hp_batch spare;          /* [writer] batch being written (buffer reuse) */
    uint64_t d_pending;      /* [mu] D records in pend or being written */
    uint64_t inflight_reserve; /* [mu] disk reservation of the batch being written */
    int writer_active;       /* [mu] */
    uint64_t enospc_until_ns; /* [mu] refuse disk admission until then */
    int dirty;               /* [mu] written data not yet fdatasynced */
    uint64_t last_sync_ns;   /* [mu; written only in the writer role, so the writer may read it without mu] */
    uint64_t sync_dur_ns;    /* [writer] how long the last fdatasync took */
    uint32_t linger_target;  /* [mu] see sender.c commit_linger() */
    uint64_t linger_until;   /* [mu] */

    HP_ARR(hp_seginfo) segs; /* [mu] sorted by id */
    HP_ARR(hp_run) runs;     /* [mu] unread D ranges in seq order; front is being read */
    size_t runs_head;     /* [mu] index of the first live run */
    uint64_t disk_bytes;  /* [mu] segment files + checkpoint */
    uint64_t next_seg_id; /* [mu] */
    uint64_t active_id;   /* [mu] id of the segment being appended, 0 = none */
    int active_fd;        /* [writer] */
    uint64_t active_size; /* [writer] */
    hp_segidx aidx;       /* [writer] index of the active segment, written at seal */
    hp_segidx aidx_snap;  /* [writer] aidx before the batch (runs unused) */
    hp_idx_run aidx_last; /* [writer] its last run before the batch */

    uint64_t read_seq;       /* [mu] every seq below was delivered (or skipped) */
    uint64_t ack_next;       /* [mu] every seq below is acknowledged */
    uint64_t redeliver_below; /* immutable: seqs below were delivered before open */
    HP_ARR(hp_gap) gaps;      /* [mu] gaps found at open, or in a run's damaged tail when
                               * read (receiver.c skip_lost_tail), sorted, not yet passed
                               * by ack_next */
    size_t gaps_head;         /* [mu] first gap of `gaps` still (partly) above ack_next */
    uint64_t missing_left;    /* [mu] seqs of those gaps at or above ack_next */
    uint64_t missing;         /* immutable: seqs in the gaps found at open */
    uint64_t ckpt_clamped;    /* immutable: seqs the checkpoint's read_next was beyond the data */

    /* The checkpoint file (checkpoint.c, FORMAT.md §4), all [consumer]: */
    int ckpt_fd;             /* open for in-place writes, -1 when there is none */
    int ckpt_layout;         /* 2: two slots; 1: a version-1 file; 0: no usable file */
    int ckpt_w;              /* layout 2: the working slot (the other is durable) */
    uint32_t ckpt_gen;       /* layout 2: generation of the durable slot */
    uint64_t ckpt_ack;       /* ack_next made durable */
    uint64_t ckpt_ns;        /* when */
    uint64_t ckpt_mark_ack;  /* ack_next last written, durable or not */
    uint64_t ckpt_mark_ns;   /* when */
    uint64_t ckpt_retry_ns;  /* after ENOSPC: no durable write before this */

    hp_reader rd;   /* [consumer] */
    hp_encoder enc[HP_ENC_SLOTS];  /* [slot] deflate contexts, created when first used */
    hp_buf eout[HP_ENC_SLOTS];     /* [slot] the frame compressed by the slot */
    hp_cround cr;                  /* see hp_cround */
    hp_buf wbuf;    /* [writer] encoded frames */
    HP_ARR(hp_written) wlist; /* [writer] */
    HP_ARR(hp_touched) touched; /* [writer] */
    HP_ARR(hp_sealed) sealed;   /* [writer] index files written, published with the batch */

    pthread_t syncer;  /* immutable: the fsync=interval thread (writer.c) */
    int has_syncer;    /* immutable */

    /* Counters: written under mu or by the consumer, read by stats. */
    uint64_t c_sent;     /* [mu] */
    _Atomic uint64_t c_received, c_acked, c_redelivered, c_full, c_corrupt_frames,
        c_corrupt_bytes, c_quarantined, c_lost, c_fsyncs, c_fsync_ns, c_torn;
};

/* Append val to an HP_ARR; rc = 0 or -ENOMEM (the array is unchanged). */
#define HP_ARR_PUSH(a, val, rc)                                                                \
    do {                                                                                       \
        (rc) = 0;                                                                              \
        if ((a).n == (a).cap) {                                                                \
            size_t nc_ = (a).cap ? (a).cap * 2 : 16;                                           \
            void *nv_ = realloc((a).v, nc_ * sizeof(*(a).v));                                  \
            if (nv_ == NULL) {                                                                 \
                (rc) = -ENOMEM;                                                                \
                break;                                                                         \
            }                                                                                  \
            (a).v = nv_;                                                                       \
            (a).cap = nc_;                                                                     \
        }                                                                                      \
        (a).v[(a).n++] = (val);                                                                \
    } while (0)

/* ---- small helpers shared by the queue's files -------------------------- */

/* Absolute deadline for a wait, computed lazily: the fast paths never wait
 * and need no clock read. *deadline starts at 0 ("not computed"). */
static inline uint64_t
hp_q_deadline(uint64_t *deadline, int timeout_ms)
{
    if (*deadline == 0) {
        *deadline = timeout_ms < 0 ? UINT64_MAX
                                   : hp_now_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    }
    return *deadline;
}

/* Unread runs of D. [mu] */
static inline size_t
hp_q_runs_live(const hopper_queue *q)
{
    return q->runs.n - q->runs_head;
}

/* D is non-empty while a run is unread or a D record waits to be written. [mu] */
static inline int
hp_q_d_active(const hopper_queue *q)
{
    return hp_q_runs_live(q) > 0 || q->d_pending > 0;
}

/* fsync=commit: the consumer may hand out only seqs below this (committed);
 * UINT64_MAX in every other mode. Frames are written a batch at a time and a
 * commit covers whole batches, so no frame straddles the limit. [mu] */
static inline uint64_t
hp_q_commit_limit(const hopper_queue *q)
{
    return q->o.fsync == HOPPER_FSYNC_COMMIT ? q->visible_next : UINT64_MAX;
}

/* Every seq below this was returned to the consumer, in this open or an
 * earlier one. [consumer] */
static inline uint64_t
hp_q_read_hwm(const hopper_queue *q)
{
    uint64_t given = q->rd.caller_next;
    return given > q->redeliver_below ? given : q->redeliver_below;
}

/* ---- queue.c ------------------------------------------------------------ */

/* Enter the sticky failed state (STYLE §6 rule 5) with the first error, and
 * wake every waiter so it sees it. [mu] */
void hp_q_fail_locked(hopper_queue *q, int rc);

/* ---- writer.c ----------------------------------------------------------- */

/* Worst-case disk bytes for a batch of `raw` encoded bytes. */
uint64_t hp_q_reserve_for(const hopper_queue *q, uint64_t raw);
/* `until`, or earlier when an ENOSPC back-off ends before it. [mu] */
uint64_t hp_q_enospc_retry(const hopper_queue *q, uint64_t until);
/* Take the writer role, write the pending batch, release the role. Called
 * and returns with `mu` held; drops it while writing. [mu, no writer role] */
void hp_q_run_writer(hopper_queue *q);
/* When hp_q_write_batch fdatasyncs the active segment after writing. */
enum hp_sync_when {
    HP_SYNC_NO = 0,
    HP_SYNC_YES,
    HP_SYNC_IF_DUE, /* fsync=interval: when the interval has run out by the end */
};
/* Encode a batch into frames and append them to the segment files, then sync
 * as `*sync` says; on return `*sync` is 1 when it fdatasynced, else 0.
 * [writer; `mu` not held when parallel, held at close] 0 or -errno/-ENOMEM. */
HP_MUST_USE int hp_q_write_batch(hopper_queue *q, const hp_batch *b, uint64_t *next_id,
                                 uint64_t *active_id, int *sync, int parallel);
/* Put the files back as they were before a failed batch. [writer] */
HP_MUST_USE int hp_q_undo_batch(hopper_queue *q, uint64_t *active_id);
/* ENOSPC or EDQUOT: the file system is full, nothing else is wrong. */
int hp_q_is_space_error(int rc);
/* Write the index of the active segment (best effort). [writer] */
void hp_q_seal_index(hopper_queue *q);
/* The fsync=interval thread (created by hopper_open, joined by close). */
void *hp_q_syncer_main(void *arg);

/* ---- compress.c --------------------------------------------------------- */

/* Compress the round's n frames into eout[0..n). [writer; not `mu`] */
HP_MUST_USE int hp_q_compress_round(hopper_queue *q, uint32_t n, int parallel);
/* A waiting sender compresses unclaimed frames of the open round; 1 when it
 * did (drops and retakes `mu` meanwhile). [mu] */
int hp_q_help_compress(hopper_queue *q);

/* ---- receiver.c --------------------------------------------------------- */

/* Close the reader's segment and forget its position. [consumer] */
void hp_q_reader_reset(hp_reader *r);

/* ---- checkpoint.c ------------------------------------------------------- */

/* The acknowledged position is marked (written in place without fsync) once
 * this many records or this much time passed since the last write, so a
 * kill -9 repeats at most HP_CKPT_MARK_RECORDS acknowledged records. */
#define HP_CKPT_MARK_RECORDS 4096u
#define HP_CKPT_MARK_NS 5000000ull

/* Open (creating or converting when needed) the checkpoint and set ack_next,
 * ckpt_* and *read_next. [open] 0 or -errno. */
HP_MUST_USE int hp_q_ckpt_open(hopper_queue *q, uint64_t *read_next);
/* Write the position durably (FORMAT.md §4). [consumer; not `mu`] 0, a space
 * error (ENOSPC/EDQUOT: not a failure, the old checkpoint stands; retry
 * after ckpt_retry_ns) or another -errno (sticky). */
HP_MUST_USE int hp_q_ckpt_write(hopper_queue *q, uint64_t ack_next, uint64_t read_next);
/* Write the position in place without fsync (survives a kill -9, not a power
 * loss). [consumer; not `mu`] 0, a space error (ignored) or -errno (sticky). */
HP_MUST_USE int hp_q_ckpt_mark(hopper_queue *q, uint64_t ack_next, uint64_t read_next);

/* ---- recover.c ---------------------------------------------------------- */

/* Rebuild segs, runs and positions from the directory (FORMAT.md §5).
 * [open: the queue is not shared yet] */
HP_MUST_USE int hp_q_recover(hopper_queue *q);
/* MEMORY mode at close: write the records only memory holds. [mu, writer
 * role, no other thread active] 0, HOPPER_EFULL or -errno. */
HP_MUST_USE int hp_q_save_memory(hopper_queue *q);

#endif /* HOPPER_SRC_LIB_QUEUE_INT_H */
