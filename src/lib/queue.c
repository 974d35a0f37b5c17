/* SPDX-License-Identifier: MIT */
/* hopper_queue: the in-memory deque, the segment set, the senders' group
 * commit and the single consumer, composed under one mutex.
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
 * Group commit. Senders append encoded records to `pend` under `mu` and park
 * on a stack waiter linked into the pending batch. A sender whose batch is not
 * yet taken and who finds no writer active becomes the writer: it takes the
 * whole batch, drops `mu`, compresses, writes, fdatasyncs (per policy),
 * retakes `mu`, publishes runs and sizes, and marks the batch's waiters done.
 * Disk I/O never happens under `mu`.
 *
 * Parallel compression. The writer cuts its batch into frames and compresses
 * them in rounds of up to HP_ENC_SLOTS frames (`cr`). A round of more than one
 * frame is opened under `mu`, `written` is broadcast (MEMORY-mode senders at
 * the write-behind bound wait there) and the DISK-mode senders of this batch
 * and of the next are signalled on their own condvars: each claims a frame
 * of the round with an atomic counter, compresses it outside `mu` with the
 * slot's own deflate context and output buffer, and counts it done under
 * `mu`. The writer compresses frames of its own round too, waits on `cr_done`
 * until all are done, then appends them in order. Only compression runs in
 * parallel; framing, segment rotation, writes and publication stay with the
 * writer, so the order and the ENOSPC undo are as for one thread.
 *
 * The writer role (`writer_active`) is held by at most one thread: a sender,
 * the consumer, the interval syncer or close. Only its holder touches
 * `active_fd`, `active_size` and `wbuf`; slot i of `enc`/`eout` belongs to
 * whoever claimed frame i of the open round (the writer between rounds).
 *
 * Lock order: `mu` is the only lock. Condvars: `not_empty` (consumer waits),
 * `not_full` (senders wait for budget), `written` (senders wait for their
 * batch, for the writer role or for a round to help with; the syncer waits
 * here too), `cr_done` (the writer waits for its round's helpers).
 *
 * Crash safety of reclaim: the checkpoint (ack position) is written
 * tmp -> fsync -> rename -> fsync(dir) BEFORE any segment whose records are all
 * acknowledged is unlinked; the directory is fsynced after the unlinks. A crash
 * in between leaves a fully acknowledged segment that the next open deletes.
 */
#include "internal.h"

#include "buf.h"
#include "crc32c.h"
#include "deque.h"
#include "fsio.h"
#include "record.h"
#include "segment.h"
#include "sync.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOCK_NAME "LOCK"
#define ENOSPC_BACKOFF_NS 500000000ull
#define LINGER_MAX_NS 200000ull
/* An index is written only for segments of at most this many runs, so its
 * size stays within HP_IDX_RESERVE (reserved per segment in the budget). */
#define HP_IDX_KEEP_RUNS 4u
#define HP_IDX_RESERVE (HP_IDX_HDR + HP_IDX_KEEP_RUNS * HP_IDX_RUN + 4u)

typedef struct hp_run {
    uint64_t seg_id;
    uint64_t off;       /* first frame */
    uint64_t end;       /* end of the last frame */
    uint64_t first_seq; /* first record of the first frame */
    uint64_t last_seq;  /* last record of the last frame */
    uint64_t ts_ms;     /* timestamp of the first frame */
} hp_run;

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

/* Frames compressed in parallel per round (see the top of this file). */
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
     * hopper_recv() without locking (memory copies in sbuf, or pointers into
     * the decoded frame in raw). */
    struct hp_staged {
        const uint8_t *data;
        size_t len;
        uint64_t seq;
    } *stage;
    size_t stage_cap;
    size_t stage_n;
    size_t stage_i;
    hp_buf sbuf;
    uint64_t caller_next; /* every seq below was returned to the caller */
} hp_reader;

#define STAGE_MAX_RECORDS 256u
#define STAGE_MAX_BYTES (256u * 1024u)

#define ARR(T)                                                                                 \
    struct {                                                                                   \
        T *v;                                                                                  \
        size_t n;                                                                              \
        size_t cap;                                                                            \
    }

struct hopper_queue {
    hopper_opts o;     /* immutable after open */
    uint64_t max_raw;  /* immutable: largest frame body accepted */
    uint64_t seg_cap;  /* immutable: segments are sealed past this size */
    uint64_t frame_target; /* immutable: frames are closed past this raw size */
    int dirfd;         /* immutable */
    int lockfd;        /* immutable */

    pthread_mutex_t mu;
    pthread_cond_t not_empty;
    pthread_cond_t not_full;
    pthread_cond_t written;
    pthread_cond_t cr_done;

    int failed;      /* [mu] sticky error code, 0 if healthy */
    int reader_waiting; /* [mu] the consumer sleeps on not_empty */
    _Atomic int failed_flag; /* mirrors failed != 0, for the lock-free recv path */
    int shutdown;    /* [mu] hopper_shutdown() was called */
    int closing;     /* [mu] close in progress: stops the syncer */
    uint64_t next_seq; /* [mu] */

    hp_deque mem;        /* [mu] M, plus delivered-unacknowledged entries */
    uint64_t mem_bytes;  /* [mu] bytes charged to mem: payload + HP_ENTRY_COST each */
    size_t mem_read;     /* [mu] index in mem of the next undelivered entry */
    uint64_t visible_next; /* [mu] DISK mode: entries below this seq are written */

    hp_batch pend;           /* [mu] batch being filled */
    hp_batch spare;          /* [writer] batch being written (buffer reuse) */
    uint64_t d_pending;      /* [mu] D records in pend or being written */
    uint64_t inflight_reserve; /* [mu] disk reservation of the batch being written */
    int writer_active;       /* [mu] */
    uint64_t enospc_until_ns; /* [mu] refuse disk admission until then */
    int dirty;               /* [mu] written data not yet fdatasynced */
    uint64_t last_sync_ns;   /* [mu] */
    uint64_t sync_dur_ns;    /* [writer] how long the last fdatasync took */
    uint32_t linger_target;  /* [mu] see commit_linger() */
    uint64_t linger_until;   /* [mu] */

    ARR(hp_seginfo) segs; /* [mu] sorted by id */
    ARR(hp_run) runs;     /* [mu] unread D ranges in seq order; front is being read */
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
    uint64_t ckpt_ack;       /* [consumer] ack_next stored in the checkpoint */
    uint64_t ckpt_ns;        /* [consumer] when it was written */
    uint64_t redeliver_below; /* immutable: seqs below were delivered before open */

    hp_reader rd;   /* [consumer] */
    hp_encoder enc[HP_ENC_SLOTS];  /* [slot] deflate contexts, created when first used */
    hp_buf eout[HP_ENC_SLOTS];     /* [slot] the frame compressed by the slot */
    hp_cround cr;                  /* see hp_cround */
    hp_buf wbuf;    /* [writer] encoded frames */
    ARR(hp_written) wlist; /* [writer] */
    ARR(hp_touched) touched; /* [writer] */
    ARR(hp_sealed) sealed;   /* [writer] index files written, published with the batch */

    pthread_t syncer;
    int has_syncer;

    /* Counters: written under mu or by the consumer, read by stats. */
    uint64_t c_sent;     /* [mu] */
    _Atomic uint64_t c_received, c_acked, c_redelivered, c_full, c_corrupt_frames,
        c_corrupt_bytes, c_quarantined, c_lost, c_fsyncs, c_fsync_ns, c_torn;
};

/* ---- small helpers ---------------------------------------------------- */

#define ARR_PUSH(a, val, rc)                                                                   \
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

/* Absolute deadline for a wait, computed lazily: the fast paths never wait
 * and need no clock read. *deadline starts at 0 ("not computed"). */
static uint64_t
deadline_of(uint64_t *deadline, int timeout_ms)
{
    if (*deadline == 0) {
        *deadline = timeout_ms < 0 ? UINT64_MAX
                                   : hp_now_mono_ns() + (uint64_t)timeout_ms * 1000000u;
    }
    return *deadline;
}

/* Disk bytes a batch of `raw` encoded bytes may take, at worst: stored frames
 * are never larger than raw, plus a header per frame and per segment it may
 * open (FORMAT.md §3.3). */
/* A wait until `until` ends earlier when an ENOSPC back-off that is still
 * ahead ends before it: the file system is tried again then. [mu] */
static uint64_t
enospc_retry(const hopper_queue *q, uint64_t until)
{
    if (q->enospc_until_ns > hp_now_mono_ns() && q->enospc_until_ns < until) {
        return q->enospc_until_ns;
    }
    return until;
}

static uint64_t
reserve_for(const hopper_queue *q, uint64_t raw)
{
    if (raw == 0) {
        return 0;
    }
    return raw + HP_FRAME_HDR * (raw / q->frame_target + 1) +
           (HP_SEG_HDR + HP_IDX_RESERVE) * (raw / q->seg_cap + 1);
}

/* Wake the consumer if it sleeps: a signal nobody waits for still costs. [mu] */
static void
wake_reader(hopper_queue *q)
{
    if (q->reader_waiting) {
        pthread_cond_signal(&q->not_empty);
    }
}

static size_t
runs_live(const hopper_queue *q)
{
    return q->runs.n - q->runs_head;
}

/* D is non-empty while a run is unread or a D record waits to be written. */
static int
d_active(const hopper_queue *q)
{
    return runs_live(q) > 0 || q->d_pending > 0;
}

static void
fail_locked(hopper_queue *q, int rc)
{
    if (!q->failed) {
        q->failed = rc < 0 ? rc : HOPPER_EFAILED;
        atomic_store(&q->failed_flag, 1);
    }
    pthread_cond_broadcast(&q->not_empty);
    pthread_cond_broadcast(&q->not_full);
    pthread_cond_broadcast(&q->written);
}

/* Every seq below this was returned to the consumer, in this open or an
 * earlier one. [consumer] */
static uint64_t
read_hwm(const hopper_queue *q)
{
    uint64_t given = q->rd.caller_next;
    return given > q->redeliver_below ? given : q->redeliver_below;
}

static int
failed_rc(const hopper_queue *q)
{
    (void)q;
    return HOPPER_EFAILED;
}

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

/* ---- options ---------------------------------------------------------- */

void
hopper_opts_init(hopper_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->struct_size = sizeof(*o);
    o->memory_bytes = 8u << 20;
    o->disk_bytes = 1ull << 30;
    o->segment_bytes = 64u << 20;
    o->compression = 1;
    o->fsync = HOPPER_FSYNC_INTERVAL;
    o->fsync_interval_ms = 1000;
    o->durability = HOPPER_DURABILITY_MEMORY;
    o->max_record_bytes = 16u << 20;
    o->checkpoint_interval_ms = 1000;
}

static int
check_opts(const hopper_opts *o)
{
    HP_ENSURE(o->struct_size >= sizeof(hopper_opts), -EINVAL);
    HP_ENSURE(o->disk_bytes >= 64u * 1024u, -EINVAL);
    HP_ENSURE(o->segment_bytes >= 4096u && o->segment_bytes <= (1ull << 40), -EINVAL);
    HP_ENSURE(o->compression >= 0 && o->compression <= 9, -EINVAL);
    HP_ENSURE(o->fsync >= HOPPER_FSYNC_NEVER && o->fsync <= HOPPER_FSYNC_ALWAYS, -EINVAL);
    HP_ENSURE(o->fsync != HOPPER_FSYNC_INTERVAL || o->fsync_interval_ms > 0, -EINVAL);
    HP_ENSURE(o->durability == HOPPER_DURABILITY_MEMORY ||
                  o->durability == HOPPER_DURABILITY_DISK,
              -EINVAL);
    HP_ENSURE(o->max_record_bytes <= (256u << 20), -EINVAL);
    return 0;
}

static int
check_name(const char *name)
{
    size_t n = strlen(name);
    HP_ENSURE(n >= 1 && n <= 128, -EINVAL);
    HP_ENSURE(strcmp(name, ".") != 0 && strcmp(name, "..") != 0, -EINVAL);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.' || c == '-';
        HP_ENSURE(ok, -EINVAL);
    }
    return 0;
}

/* ---- checkpoint (FORMAT.md §4) ---------------------------------------- */

static int
ckpt_write(hopper_queue *q, uint64_t ack_next, uint64_t read_next)
{
    uint8_t b[HP_CKPT_SIZE];
    hp_ckpt_encode(b, ack_next, read_next);
    return hp_fs_atomic_write(q->dirfd, HP_CKPT_NAME, b, sizeof(b));
}

/* ---- writer ------------------------------------------------------------ */

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
    ARR_PUSH(q->touched, t, rc);
    return rc;
}

/* Flush wbuf into the active segment. [writer] */
static int
flush_wbuf(hopper_queue *q)
{
    if (q->wbuf.len == 0) {
        return 0;
    }
    int rc = hp_fs_write_all(q->active_fd, q->wbuf.data, q->wbuf.len);
    if (rc < 0) {
        return rc;
    }
    q->active_size += q->wbuf.len;
    q->wbuf.len = 0;
    return 0;
}

/* Write the index of the segment being sealed (FORMAT.md §2.1). The index
 * only saves open a scan, so failing to write it is not an error. [writer] */
static void
seal_index(hopper_queue *q)
{
    if (q->aidx.id == 0 || q->aidx.n > HP_IDX_KEEP_RUNS) {
        return; /* a fragmented segment is scanned instead */
    }
    char name[HP_SEG_NAME_MAX];
    hp_seg_idx_name(name, q->aidx.id);
    if (hp_idx_encode(&q->aidx, &q->wbuf) == 0) {
        if (hp_fs_atomic_write(q->dirfd, name, q->wbuf.data, q->wbuf.len) < 0) {
            (void)unlinkat(q->dirfd, name, 0); /* no index: the next open scans */
        } else {
            hp_sealed sd = {.id = q->aidx.id, .bytes = q->wbuf.len};
            int rc;
            ARR_PUSH(q->sealed, sd, rc);
            (void)rc; /* only the byte count would be missing */
        }
    }
    q->wbuf.len = 0;
}

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
        /* A sealed segment is made durable before it stops being active. */
        if (q->o.fsync != HOPPER_FSYNC_NEVER) {
            HP_GUARD(hp_fs_fdatasync(q->active_fd));
        }
        hp_fs_close(q->active_fd);
        q->active_fd = -1;
        seal_index(q);
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
 * compresses unclaimed frames of the writer's open round. Returns 1 when it did some (its wait condition may have
 * changed meanwhile). [mu] */
static int
help_compress(hopper_queue *q)
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
static int
compress_round(hopper_queue *q, uint32_t n, int parallel)
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

/* Encode `b` into frames and append them to the segment files. Runs without
 * mu, in the writer role. `*next_id` is the id for a new segment and is
 * advanced when one is created; `*active_id` follows the active segment.
 * `parallel`: waiting senders may help compress (the caller does not hold
 * mu). */
static int
write_batch(hopper_queue *q, const hp_batch *b, uint64_t *next_id, uint64_t *active_id,
            int do_sync, int parallel)
{
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
        HP_GUARD(compress_round(q, nt, parallel));
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
                HP_GUARD(hp_fs_write_all(q->active_fd, f->data, f->len));
                q->active_size += f->len;
            } else {
                HP_GUARD(hp_buf_append(&q->wbuf, f->data, f->len));
            }
            ARR_PUSH(q->wlist, w, rc);
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
    if (do_sync) {
        uint64_t t0 = hp_now_mono_ns();
        HP_GUARD(hp_fs_fdatasync(q->active_fd));
        q->sync_dur_ns = hp_now_mono_ns() - t0;
        atomic_fetch_add(&q->c_fsyncs, 1);
        atomic_fetch_add(&q->c_fsync_ns, q->sync_dur_ns);
    }
    return 0;
}

/* Undo a failed batch on disk: truncate the segments it extended back to
 * their size before the batch, unlink the ones it created. Returns 0 when the
 * files are back as they were. [writer] */
static int
undo_batch(hopper_queue *q, uint64_t *active_id)
{
    int rc = 0;
    q->wbuf.len = 0;
    for (size_t i = 0; i < q->touched.n; i++) {
        hp_touched *t = &q->touched.v[i];
        char name[HP_SEG_NAME_MAX];
        hp_seg_idx_name(name, t->id);
        (void)unlinkat(q->dirfd, name, 0); /* an index sealed in this batch */
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
            q->active_size = t->size_before;
        } else {
            /* Extended, then sealed by a rotation within this batch. */
            r = hp_fs_openat(q->dirfd, name, O_WRONLY, 0);
            if (r >= 0) {
                int fd = r;
                r = hp_fs_ftruncate(fd, t->size_before);
                hp_fs_close(fd);
            }
        }
        if (r < 0 && rc == 0) {
            rc = r;
        }
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

static int
is_space_error(int rc)
{
    return rc == -ENOSPC || rc == -EDQUOT;
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
            ARR_PUSH(q->segs, ns, rc);
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
        hp_run *r = runs_live(q) > 0 ? &q->runs.v[q->runs.n - 1] : NULL;
        if (r != NULL && r->seg_id == w->seg_id && r->end == w->off &&
            r->last_seq + 1 == w->first_seq) {
            r->end = w->off + w->bytes;
            r->last_seq = last;
        } else {
            hp_run nr = {.seg_id = w->seg_id, .off = w->off, .end = w->off + w->bytes,
                         .first_seq = w->first_seq, .last_seq = last, .ts_ms = w->ts_ms};
            ARR_PUSH(q->runs, nr, rc);
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
        q->visible_next = b->first_seq + b->count;
    }
    return 0;
}

/* Records of the failed batch and of everything queued after it are taken
 * back: their senders get `rc`, and the queue is as if they were never sent.
 * [mu, writer] */
static void
rewind_after(hopper_queue *q, hp_batch *b, int rc)
{
    uint64_t from = b->first_seq;
    uint64_t dropped = q->next_seq - from;
    while (q->mem.count > q->mem_read && q->mem.count > 0) {
        hp_entry *e = hp_deque_at(&q->mem, q->mem.count - 1);
        if (e->seq < from) {
            break;
        }
        q->mem_bytes -= e->len + HP_ENTRY_COST;
        hp_deque_pop_back(&q->mem);
    }
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

/* Take the pending batch and write it. Called and returns with mu held, in
 * no writer role; takes and releases the role. */
static void
run_writer(hopper_queue *q)
{
    if (q->writer_active || q->pend.count == 0) {
        return;
    }
    if (q->failed) {
        /* Nothing more reaches the files of a failed queue. */
        pend_finish_waiters(q, failed_rc(q));
        pthread_cond_broadcast(&q->written);
        return;
    }
    q->writer_active = 1;
    hp_batch b = q->pend;
    q->pend = q->spare;
    batch_reset(&q->pend);
    uint64_t reserve = reserve_for(q, b.raw.len);
    q->inflight_reserve = reserve;
    uint64_t next_id = q->next_seg_id;
    uint64_t active_id = q->active_id;
    /* First seq of the batch that belongs to D: D records are the tail. */
    uint64_t d_first = b.first_seq + b.count - b.d_count;
    int do_sync = q->o.fsync == HOPPER_FSYNC_ALWAYS ||
                  (q->o.fsync == HOPPER_FSYNC_INTERVAL &&
                   hp_now_mono_ns() - q->last_sync_ns >=
                       (uint64_t)q->o.fsync_interval_ms * 1000000u);
    hp_mutex_unlock(&q->mu);

    q->touched.n = 0;
    q->sealed.n = 0;
    int rc = write_batch(q, &b, &next_id, &active_id, do_sync, 1);
    int undo_rc = 0;
    if (rc < 0 && is_space_error(rc)) {
        undo_rc = undo_batch(q, &active_id);
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
    } else if (is_space_error(rc) && undo_rc == 0 &&
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
        waiters_finish(b.waiters, failed_rc(q));
        pend_finish_waiters(q, failed_rc(q));
        fail_locked(q, rc);
    }
    batch_reset(&b);
    q->spare = b;
    q->writer_active = 0;
    writer_released(q);
    pthread_cond_broadcast(&q->not_empty);
    pthread_cond_broadcast(&q->not_full);
}

/* ---- interval syncer --------------------------------------------------- */

static void *
syncer_main(void *arg)
{
    hopper_queue *q = arg;
    uint64_t period = (uint64_t)q->o.fsync_interval_ms * 1000000u;
    hp_mutex_lock(&q->mu);
    while (!q->closing) {
        (void)hp_cond_wait_until(&q->written, &q->mu, hp_now_mono_ns() + period);
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
            fail_locked(q, rc);
        } else {
            q->dirty = 0;
            q->last_sync_ns = t1;
        }
        writer_released(q);
    }
    hp_mutex_unlock(&q->mu);
    return NULL;
}

/* ---- send -------------------------------------------------------------- */

/* Can the batch be admitted now? 0 yes, HOPPER_EFULL not now, HOPPER_ETOOBIG
 * never. Also reports how many leading records go to memory. [mu] */
static int
admit(hopper_queue *q, const hopper_iovec *recs, size_t n, size_t *to_mem)
{
    uint64_t mem_add = 0;
    size_t k = 0;
    if (!d_active(q)) {
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
    /* reserve_for(x) <= 2x + 1 KiB (frames >= 1 KiB, segments >= 4 KiB):
     * when even that fits, skip its divisions (the in-memory fast path). */
    int surely_fits = base < q->o.disk_bytes &&
                      2 * (new_pend + mem_raw) + 2048 <= q->o.disk_bytes - base;
    if (!surely_fits) {
        /* Would it fit an empty queue? If not, it never will. */
        if (HP_CKPT_SIZE + reserve_for(q, all_raw) > q->o.disk_bytes) {
            return HOPPER_ETOOBIG;
        }
        if (base + reserve_for(q, new_pend) + reserve_for(q, mem_raw) > q->o.disk_bytes) {
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
        while (q->mem.count > mem_before) {
            q->mem_bytes -= hp_deque_at(&q->mem, q->mem.count - 1)->len + HP_ENTRY_COST;
            hp_deque_pop_back(&q->mem);
        }
        q->pend.raw.len = raw_before;
        q->pend.count = count_before;
        q->pend.d_count = d_before;
        return rc;
    }
    q->d_pending += q->pend.d_count - d_before;
    q->next_seq = seq0 + n;
    return 0;
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
    uint64_t deadline = 0;
    hp_waiter w = {0};
    int has_cv = q->o.durability == HOPPER_DURABILITY_DISK;
    if (has_cv) {
        HP_GUARD(hp_cond_init(&w.cv));
    }
    int rc;
    size_t to_mem = 0;
    /* Read the clock before the lock: senders contend for mu, so what runs
     * under it must be short. */
    uint64_t ts = hp_now_wall_ms();
    hp_mutex_lock(&q->mu);
    for (;;) {
        if (q->failed) {
            rc = failed_rc(q);
            goto unlock;
        }
        if (q->shutdown) {
            rc = HOPPER_ECLOSED;
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
        uint64_t until = enospc_retry(q, deadline_of(&deadline, timeout_ms));
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
            if (!help_compress(q)) {
                hp_cond_wait(&q->written, &q->mu);
            }
        }
        if (q->pend.raw.len >= q->frame_target && !q->writer_active && !q->failed &&
            q->enospc_until_ns <= hp_now_mono_ns()) {
            run_writer(q);
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
                run_writer(q);
            }
            continue;
        }
        if (!help_compress(q)) {
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

/* ---- receive ----------------------------------------------------------- */

static void
reader_reset(hp_reader *r)
{
    hp_fs_close(r->fd);
    r->fd = -1;
    r->seg_id = 0;
    r->win.buf.len = 0;
    r->win.off = 0;
    r->left = 0;
    r->positioned = 0;
}

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

/* Stage visible memory records (copies: an acknowledgement may free the
 * entries). Returns the number staged, or -ENOMEM. [consumer, mu] */
static int
stage_from_memory(hopper_queue *q)
{
    hp_reader *r = &q->rd;
    r->stage_n = 0;
    r->stage_i = 0;
    r->sbuf.len = 0;
    HP_GUARD(stage_reserve(r, STAGE_MAX_RECORDS));
    /* First the extent (records visible, within the byte cap), then one
     * reservation and one pass that copies and stages. */
    size_t n = 0;
    size_t bytes = 0;
    while (q->mem_read + n < q->mem.count && n < STAGE_MAX_RECORDS) {
        hp_entry *e = hp_deque_at(&q->mem, q->mem_read + n);
        if (q->o.durability == HOPPER_DURABILITY_DISK && e->seq >= q->visible_next) {
            break; /* not written yet */
        }
        if (n > 0 && bytes + e->len > STAGE_MAX_BYTES) {
            break;
        }
        bytes += e->len;
        n++;
    }
    if (n == 0) {
        return 0;
    }
    if (hp_buf_reserve(&r->sbuf, bytes) < 0) {
        /* Short of memory: make progress one record at a time. */
        n = 1;
        bytes = hp_deque_at(&q->mem, q->mem_read)->len;
        HP_GUARD(hp_buf_reserve(&r->sbuf, bytes));
    }
    uint8_t *out = r->sbuf.data;
    for (size_t i = 0; i < n; i++) {
        hp_entry *e = hp_deque_at(&q->mem, q->mem_read + i);
        /* Empty records may leave sbuf without memory: never offset NULL. */
        const uint8_t *data = out != NULL ? out : (const uint8_t *)"";
        if (e->len > 0) {
            memcpy(out, hp_entry_data(e), e->len);
            out += e->len;
        }
        r->stage[i] = (struct hp_staged){.data = data, .len = e->len, .seq = e->seq};
        if (e->seq >= q->read_seq) {
            q->read_seq = e->seq + 1;
        }
    }
    r->sbuf.len = bytes;
    q->mem_read += n;
    r->stage_n = n;
    return (int)n;
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
    atomic_fetch_add_explicit(&q->c_received, 1, memory_order_relaxed);
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
        memmove(q->runs.v, q->runs.v + q->runs_head, runs_live(q) * sizeof(*q->runs.v));
        q->runs.n -= q->runs_head;
        q->runs_head = 0;
    }
    if (!d_active(q)) {
        /* D drained: new records may go to memory again. */
        pthread_cond_broadcast(&q->not_full);
    }
}

/* Read (and decode) the next frame of the current run, which ends at `end`,
 * skipping damage. [consumer, no mu] Returns 0 (maybe with nothing decoded
 * when the rest of the run was damaged) or a transient error. */
static int
read_frame(hopper_queue *q, uint64_t end)
{
    hp_reader *r = &q->rd;
    r->win.size = end;
    hp_frame_hdr h;
    int rc = hp_seg_frame_at(&r->win, r->next_off, q->max_raw, 0, &h);
    if (rc == 0) {
        const uint8_t *p;
        size_t total = HP_FRAME_HDR + (size_t)h.stored_len;
        size_t used;
        rc = hp_win_get(&r->win, r->next_off, total, &p);
        if (rc == 0) {
            rc = hp_rec_decode(&r->dec, p, total, q->max_raw, &h, &r->raw, &used);
        }
        if (rc == 0) {
            r->raw_pos = 0;
            r->left = h.count;
            r->rec_seq = h.first_seq;
            r->next_off += used;
            return 0;
        }
        if (rc == HOPPER_EVERSION) {
            /* CRC-valid frame we cannot interpret: skip exactly this frame. */
            atomic_fetch_add(&q->c_corrupt_frames, 1);
            atomic_fetch_add(&q->c_corrupt_bytes, total);
            r->next_off += total;
            return 0;
        }
    }
    if (rc != HOPPER_ECORRUPT && rc != HOPPER_ENEEDMORE) {
        return rc; /* I/O or memory: retry later, skip nothing */
    }
    uint64_t found = end;
    rc = hp_seg_resync(&r->win, r->next_off + 1, q->max_raw, &found, &h);
    if (rc < 0) {
        return rc;
    }
    if (rc == 1) {
        found = end;
    }
    atomic_fetch_add(&q->c_corrupt_frames, 1);
    atomic_fetch_add(&q->c_corrupt_bytes, found - r->next_off);
    r->next_off = found;
    return 0;
}

static int
reader_open_seg(hopper_queue *q, uint64_t id)
{
    hp_reader *r = &q->rd;
    reader_reset(r);
    char name[HP_SEG_NAME_MAX];
    hp_seg_name(name, id);
    int fd = hp_fs_openat(q->dirfd, name, O_RDONLY, 0);
    if (fd < 0) {
        return fd;
    }
    r->fd = fd;
    r->seg_id = id;
    r->win.read = hp_read_at_fd;
    r->win.ctx = &r->fd;
    return 0;
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
    int rc;
    hp_mutex_lock(&q->mu);
    for (;;) {
        if (q->failed) {
            rc = failed_rc(q);
            goto unlock;
        }
        if (q->mem_read < q->mem.count) {
            rc = stage_from_memory(q);
            if (rc < 0) {
                goto unlock;
            }
            if (rc > 0) {
                goto delivered;
            }
            /* Memory precedes disk: wait for this entry to be written. */
        } else if (stage_from_frame(q) > 0) {
            goto delivered;
        } else if (runs_live(q) > 0) {
            hp_run run = q->runs.v[q->runs_head];
            if (run.last_seq < q->read_seq ||
                (r->positioned && r->seg_id == run.seg_id && r->next_off >= run.end)) {
                /* Delivered already (its segment may even be reclaimed), or
                 * read to its end. */
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
            rc = read_frame(q, run.end);
            hp_mutex_lock(&q->mu);
            if (rc < 0) {
                goto unlock;
            }
            continue;
        } else if (q->pend.count > 0 && !q->writer_active &&
                   q->enospc_until_ns <= hp_now_mono_ns()) {
            run_writer(q); /* write-behind records we want now */
            continue;
        } else if (q->shutdown && q->d_pending == 0) {
            rc = HOPPER_ECLOSED;
            goto unlock;
        }
        if (timeout_ms == 0 && !q->writer_active) {
            rc = -EAGAIN;
            goto unlock;
        }
        uint64_t until = deadline_of(&deadline, timeout_ms);
        if (q->pend.count > 0) {
            until = enospc_retry(q, until); /* the write-behind */
        }
        q->reader_waiting = 1;
        int wrc = hp_cond_wait_until(&q->not_empty, &q->mu, until);
        q->reader_waiting = 0;
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

/* ---- acknowledge and reclaim ---------------------------------------- */

static int
fsync_dir(hopper_queue *q)
{
    HP_GUARD(hp_fault("fsync_dir"));
    return fsync(q->dirfd) < 0 ? -errno : 0;
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
        return failed_rc(q);
    }
    /* Clamp to what the caller was given (staged records are not). */
    uint64_t given = q->rd.caller_next;
    uint64_t upto = seq == UINT64_MAX ? given : seq + 1;
    if (upto > given) {
        upto = given;
    }
    if (upto > q->ack_next) {
        atomic_fetch_add(&q->c_acked, upto - q->ack_next);
        q->ack_next = upto;
        int freed = 0;
        while (q->mem_read > 0 && hp_deque_at(&q->mem, 0)->seq < upto) {
            q->mem_bytes -= hp_deque_at(&q->mem, 0)->len + HP_ENTRY_COST;
            hp_deque_pop_front(&q->mem);
            q->mem_read--;
            freed = 1;
        }
        if (freed) {
            pthread_cond_broadcast(&q->not_full);
        }
    }
    for (size_t i = 0; i < q->segs.n && nrec < 64; i++) {
        hp_seginfo *s = &q->segs.v[i];
        if (s->id != q->active_id && s->max_seq <= q->ack_next) {
            reclaim[nrec++] = s->id;
        }
    }
    uint64_t ack_next = q->ack_next;
    uint64_t read_next = read_hwm(q);
    hp_mutex_unlock(&q->mu);

    uint64_t now = hp_now_mono_ns();
    int due = ack_next != q->ckpt_ack &&
              (nrec > 0 || now - q->ckpt_ns >= (uint64_t)q->o.checkpoint_interval_ms * 1000000u);
    int rc = 0;
    if (due) {
        rc = ckpt_write(q, ack_next, read_next);
        if (rc < 0) {
            goto fail;
        }
        q->ckpt_ack = ack_next;
        q->ckpt_ns = now;
    }
    if (nrec == 0 || q->ckpt_ack < ack_next) {
        return 0;
    }
    /* Checkpoint durable first, then unlink, then fsync the directory. */
    for (size_t i = 0; i < nrec; i++) {
        char name[HP_SEG_NAME_MAX];
        hp_seg_name(name, reclaim[i]);
        if (q->rd.seg_id == reclaim[i]) {
            reader_reset(&q->rd);
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
    rc = fsync_dir(q);
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
    fail_locked(q, rc);
    hp_mutex_unlock(&q->mu);
    return HOPPER_EFAILED;
}

int
hopper_recv_ack(hopper_queue *q, hopper_record *rec, int timeout_ms)
{
    int rc = hopper_recv(q, rec, timeout_ms);
    if (rc < 0) {
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
    uint64_t read_next = read_hwm(q);
    hp_mutex_unlock(&q->mu);
    if (failed) {
        return HOPPER_EFAILED;
    }
    if (ack_next == q->ckpt_ack) {
        return 0;
    }
    int rc = ckpt_write(q, ack_next, read_next);
    if (rc < 0) {
        hp_mutex_lock(&q->mu);
        fail_locked(q, rc);
        hp_mutex_unlock(&q->mu);
        return HOPPER_EFAILED;
    }
    q->ckpt_ack = ack_next;
    q->ckpt_ns = hp_now_mono_ns();
    return 0;
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

/* ---- stats ------------------------------------------------------------- */

int
hopper_stats_get(hopper_queue *q, hopper_stats *st)
{
    HP_ENSURE(q != NULL && st != NULL && st->struct_size >= sizeof(*st), -EINVAL);
    size_t sz = st->struct_size;
    memset(st, 0, sizeof(*st));
    st->struct_size = sz;
    hp_mutex_lock(&q->mu);
    st->mem_records = q->mem.count;
    st->mem_bytes = q->mem_bytes;
    for (size_t i = 0; i < q->segs.n; i++) {
        st->disk_records += q->segs.v[i].records;
        st->disk_raw_bytes += q->segs.v[i].raw;
    }
    st->disk_bytes = q->disk_bytes;
    st->segments = q->segs.n;
    st->backlog_records = q->next_seq - q->ack_next;
    uint64_t oldest = 0;
    if (q->mem.count > 0) {
        oldest = hp_deque_at(&q->mem, 0)->ts_ms;
    }
    if (runs_live(q) > 0) {
        uint64_t t = q->runs.v[q->runs_head].ts_ms;
        if (oldest == 0 || t < oldest) {
            oldest = t;
        }
    }
    st->next_seq = q->next_seq;
    st->failed = q->failed;
    st->sent = q->c_sent;
    st->received = atomic_load(&q->c_received);
    hp_mutex_unlock(&q->mu);
    if (oldest != 0 && st->backlog_records > 0) {
        uint64_t now = hp_now_wall_ms();
        st->oldest_age_ms = now > oldest ? now - oldest : 0;
    }

    st->acked = atomic_load(&q->c_acked);
    st->redelivered = atomic_load(&q->c_redelivered);
    st->full_rejections = atomic_load(&q->c_full);
    st->corrupt_frames = atomic_load(&q->c_corrupt_frames);
    st->corrupt_bytes = atomic_load(&q->c_corrupt_bytes);
    st->quarantined_bytes = atomic_load(&q->c_quarantined);
    st->lost_records = atomic_load(&q->c_lost);
    st->fsyncs = atomic_load(&q->c_fsyncs);
    st->fsync_ns_total = atomic_load(&q->c_fsync_ns);
    st->torn_bytes = atomic_load(&q->c_torn);
    return 0;
}

/* ---- open: recovery (FORMAT.md §5) ------------------------------------ */

typedef struct scan_ctx {
    hopper_queue *q;
    uint64_t seg_id;
    hp_seginfo *info;
    int rc;
} scan_ctx;

static int
on_frame(void *arg, uint64_t off, const hp_frame_hdr *h)
{
    scan_ctx *c = arg;
    hopper_queue *q = c->q;
    if (h->count == 0) {
        return 0;
    }
    uint64_t end_seq = h->first_seq + h->count;
    c->info->records += h->count;
    c->info->raw += h->raw_len - (uint64_t)h->count * HP_REC_PREFIX;
    if (end_seq > c->info->max_seq) {
        c->info->max_seq = end_seq;
    }
    if (end_seq <= q->ack_next) {
        return 0; /* acknowledged: never read again */
    }
    uint64_t frame_end = off + HP_FRAME_HDR + h->stored_len;
    hp_run *r = q->runs.n > 0 ? &q->runs.v[q->runs.n - 1] : NULL;
    if (r != NULL && r->seg_id == c->seg_id && r->end == off && r->last_seq + 1 == h->first_seq) {
        r->end = frame_end;
        r->last_seq = end_seq - 1;
        return 0;
    }
    hp_run nr = {.seg_id = c->seg_id, .off = off, .end = frame_end, .first_seq = h->first_seq,
                 .last_seq = end_seq - 1, .ts_ms = h->ts_ms};
    int rc;
    ARR_PUSH(q->runs, nr, rc);
    return rc;
}

static void
on_skipped(void *arg, uint64_t off, uint64_t len)
{
    scan_ctx *c = arg;
    (void)off;
    atomic_fetch_add(&c->q->c_corrupt_frames, 1);
    atomic_fetch_add(&c->q->c_corrupt_bytes, len);
}

static int
cmp_run(const void *a, const void *b)
{
    const hp_run *x = a;
    const hp_run *y = b;
    return x->first_seq < y->first_seq ? -1 : x->first_seq > y->first_seq;
}

/* Rename a segment that cannot be read to *.bad and leave a note why. */
static int
quarantine(hopper_queue *q, uint64_t id, uint64_t size, const char *why)
{
    char name[HP_SEG_NAME_MAX];
    char bad[HP_SEG_NAME_MAX + 8];
    char note[HP_SEG_NAME_MAX + 16];
    hp_seg_name(name, id);
    snprintf(bad, sizeof(bad), "%s.bad", name);
    snprintf(note, sizeof(note), "%s.bad.why", name);
    HP_GUARD(hp_fs_renameat(q->dirfd, name, bad));
    hp_seg_idx_name(name, id);
    (void)unlinkat(q->dirfd, name, 0);
    hp_seg_name(name, id);
    char text[160];
    int n = snprintf(text, sizeof(text), "%s: %s (%" PRIu64 " bytes)\n", name, why, size);
    HP_GUARD(hp_fs_atomic_write(q->dirfd, note, text, (size_t)n));
    atomic_fetch_add(&q->c_quarantined, size);
    return 0;
}

/* Use the segment's index instead of scanning it. Returns 1 when the index
 * was valid and used, 0 when the segment must be scanned, < 0 on I/O. */
static int
load_index(hopper_queue *q, uint64_t id, uint64_t size, scan_ctx *c)
{
    char name[HP_SEG_NAME_MAX];
    hp_seg_idx_name(name, id);
    int fd = hp_fs_openat(q->dirfd, name, O_RDONLY, 0);
    if (fd == -ENOENT) {
        return 0;
    }
    if (fd < 0) {
        return fd;
    }
    struct stat sb;
    int rc = 0;
    uint8_t *buf = NULL;
    hp_segidx x = {0};
    if (fstat(fd, &sb) < 0) {
        rc = -errno;
        goto out;
    }
    if (sb.st_size < (off_t)(HP_IDX_HDR + 4) || sb.st_size > (off_t)HP_IDX_RESERVE) {
        (void)unlinkat(q->dirfd, name, 0);
        goto out; /* not one of our indexes: scan */
    }
    size_t n = (size_t)sb.st_size;
    buf = malloc(n);
    if (buf == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    ssize_t r = hp_fs_pread_full(fd, buf, n, 0);
    if (r < 0) {
        rc = (int)r;
        goto out;
    }
    rc = hp_idx_decode(buf, (size_t)r, id, size, &x);
    if (rc == -ENOMEM) {
        goto out;
    }
    if (rc < 0) {
        rc = 0; /* stale or damaged index: scan, and do not keep it */
        (void)unlinkat(q->dirfd, name, 0);
        goto out;
    }
    c->info->bytes = n;
    c->info->records = x.records;
    c->info->raw = x.raw;
    for (size_t i = 0; i < x.n; i++) {
        hp_idx_run *v = &x.runs[i];
        if (v->last_seq + 1 > c->info->max_seq) {
            c->info->max_seq = v->last_seq + 1;
        }
        if (v->last_seq < q->ack_next) {
            continue;
        }
        hp_run run = {.seg_id = id, .off = v->off, .end = v->end, .first_seq = v->first_seq,
                      .last_seq = v->last_seq, .ts_ms = v->ts_ms};
        ARR_PUSH(q->runs, run, rc);
        if (rc < 0) {
            goto out;
        }
    }
    rc = 1;
out:
    hp_idx_free(&x);
    free(buf);
    hp_fs_close(fd);
    return rc;
}

static int
recover_segment(hopper_queue *q, uint64_t id, int is_last, uint64_t *max_seq)
{
    char name[HP_SEG_NAME_MAX];
    hp_seg_name(name, id);
    int fd = hp_fs_openat(q->dirfd, name, O_RDWR, 0);
    if (fd < 0) {
        return fd;
    }
    hp_window win = {.read = hp_read_at_fd, .ctx = &fd};
    uint64_t size = 0;
    int rc = hp_seg_check_header(fd, id, &size);
    if (rc < 0 && rc != HOPPER_ECORRUPT && rc != HOPPER_EVERSION && rc != HOPPER_ENEEDMORE) {
        goto out; /* I/O: transient, never damage */
    }
    if (rc < 0) {
        const char *why = size == 0               ? "empty file"
                          : rc == HOPPER_EVERSION ? "unsupported format version"
                          : rc == HOPPER_ENEEDMORE ? "truncated segment header"
                                                   : "bad segment header";
        hp_fs_close(fd);
        fd = -1;
        return quarantine(q, id, size, why);
    }
    hp_seginfo info = {.id = id};
    scan_ctx c = {.q = q, .seg_id = id, .info = &info};
    rc = load_index(q, id, size, &c);
    if (rc < 0) {
        goto out;
    }
    if (rc == 1) {
        rc = 0;
        goto keep; /* sealed with a valid index: no scan needed */
    }
    hp_scan_ops ops = {.frame = on_frame, .skipped = on_skipped};
    win.size = size;
    uint64_t valid_end;
    rc = hp_seg_scan(&win, q->max_raw, 1, &ops, &c, &valid_end);
    if (rc < 0) {
        goto out;
    }
    if (valid_end < size) {
        if (is_last) {
            /* Torn tail from a crash mid-append: cut at the last valid frame. */
            rc = hp_fs_ftruncate(fd, valid_end);
            if (rc < 0) {
                goto out;
            }
            atomic_fetch_add(&q->c_torn, size - valid_end);
            size = valid_end;
        } else {
            atomic_fetch_add(&q->c_corrupt_frames, 1);
            atomic_fetch_add(&q->c_corrupt_bytes, size - valid_end);
        }
    }
keep:
    info.bytes += size; /* the segment, plus its index when one was used */
    if (info.max_seq > *max_seq) {
        *max_seq = info.max_seq;
    }
    if (info.max_seq <= q->ack_next) {
        /* Fully acknowledged (a crash between checkpoint and unlink), or empty. */
        rc = hp_fs_unlinkat(q->dirfd, name);
        goto out;
    }
    ARR_PUSH(q->segs, info, rc);
    if (rc == 0) {
        q->disk_bytes += info.bytes;
    }
out:
    hp_buf_free(&win.buf);
    hp_fs_close(fd);
    return rc;
}

typedef struct list_ctx {
    hopper_queue *q;
    hp_ids ids;
} list_ctx;

/* One directory entry at open: collect segments, drop our own leftovers,
 * ignore everything that is not ours. */
static int
on_dir_entry(void *arg, const char *name)
{
    list_ctx *c = arg;
    hopper_queue *q = c->q;
    size_t n = strlen(name);
    uint64_t id;
    if (hp_seg_parse_name(name, &id) == 0) {
        if (id >= q->next_seg_id) {
            q->next_seg_id = id + 1;
        }
        return hp_ids_push(&c->ids, id);
    }
    if (n > 4 && strcmp(name + n - 4, ".tmp") == 0 &&
        (strncmp(name, HP_CKPT_NAME, strlen(HP_CKPT_NAME)) == 0 ||
         strstr(name, ".hseg.tmp") != NULL)) {
        /* Our own temp file from an interrupted create: never complete. */
        (void)unlinkat(q->dirfd, name, 0);
    } else if (n == 21 && strcmp(name + 16, ".hidx") == 0) {
        char seg[HP_SEG_NAME_MAX];
        memcpy(seg, name, 16);
        memcpy(seg + 16, ".hseg", 6);
        if (faccessat(q->dirfd, seg, F_OK, 0) < 0 && errno == ENOENT) {
            (void)unlinkat(q->dirfd, name, 0); /* index of a reclaimed segment */
        }
    } else if (n > 4 && n - 4 < HP_SEG_NAME_MAX && strcmp(name + n - 4, ".bad") == 0) {
        char base[HP_SEG_NAME_MAX];
        memcpy(base, name, n - 4);
        base[n - 4] = '\0';
        if (hp_seg_parse_name(base, &id) == 0 && id >= q->next_seg_id) {
            q->next_seg_id = id + 1; /* never reuse a quarantined id */
        }
    }
    return 0;
}

static int
recover(hopper_queue *q)
{
    list_ctx lc = {.q = q};
    int rc = hp_dir_each(q->dirfd, on_dir_entry, &lc);
    hp_ids ids = lc.ids;
    if (rc < 0) {
        free(ids.v);
        return rc;
    }
    hp_ids_sort(&ids);
    uint64_t max_seq = 0;
    for (size_t i = 0; i < ids.n && rc == 0; i++) {
        rc = recover_segment(q, ids.v[i], i + 1 == ids.n, &max_seq);
    }
    free(ids.v);
    if (rc < 0) {
        return rc;
    }
    if (q->runs.n > 1) {
        qsort(q->runs.v, q->runs.n, sizeof(*q->runs.v), cmp_run);
    }
    if (q->next_seg_id == 0) {
        q->next_seg_id = 1;
    }
    q->next_seq = q->ack_next;
    if (q->redeliver_below > q->next_seq) {
        q->next_seq = q->redeliver_below;
    }
    if (max_seq > q->next_seq) {
        q->next_seq = max_seq;
    }
    q->read_seq = q->ack_next;
    q->rd.caller_next = q->ack_next;
    q->visible_next = q->next_seq;
    return 0;
}

static void
queue_free(hopper_queue *q)
{
    reader_reset(&q->rd);
    hp_buf_free(&q->rd.win.buf);
    hp_buf_free(&q->rd.raw);
    hp_buf_free(&q->rd.sbuf);
    free(q->rd.stage);
    hp_dec_free(&q->rd.dec);
    for (uint32_t i = 0; i < HP_ENC_SLOTS; i++) {
        hp_enc_free(&q->enc[i]);
        hp_buf_free(&q->eout[i]);
    }
    hp_buf_free(&q->wbuf);
    hp_buf_free(&q->pend.raw);
    hp_buf_free(&q->spare.raw);
    hp_deque_free(&q->mem);
    free(q->segs.v);
    free(q->runs.v);
    free(q->wlist.v);
    free(q->touched.v);
    free(q->sealed.v);
    hp_idx_free(&q->aidx);
    hp_fs_close(q->active_fd);
    hp_fs_close(q->lockfd); /* releases the flock */
    hp_fs_close(q->dirfd);
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
    pthread_cond_destroy(&q->written);
    pthread_cond_destroy(&q->cr_done);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

int
hopper_open(const char *dir, const char *name, const hopper_opts *opts, hopper_queue **out)
{
    HP_ENSURE(out != NULL, -EINVAL);
    *out = NULL;
    HP_ENSURE(dir != NULL && name != NULL, -EINVAL);
    HP_GUARD(check_name(name));
    hopper_opts defaults;
    if (opts == NULL) {
        hopper_opts_init(&defaults);
        opts = &defaults;
    }
    HP_GUARD(check_opts(opts));
    HP_GUARD(hp_fault("alloc"));
    hopper_queue *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        return -ENOMEM;
    }
    q->o = *opts;
    q->max_raw = hp_frame_max_raw(q->o.max_record_bytes);
    /* Space comes back a whole segment at a time, so no segment may hold more
     * than a quarter of the disk budget; frames stay well below a segment. */
    q->seg_cap = q->o.segment_bytes;
    if (q->seg_cap > q->o.disk_bytes / 4) {
        q->seg_cap = q->o.disk_bytes / 4 > 4096 ? q->o.disk_bytes / 4 : 4096;
    }
    q->frame_target = q->seg_cap / 4 < HP_FRAME_TARGET ? q->seg_cap / 4 : HP_FRAME_TARGET;
    if (q->frame_target < 1024) {
        q->frame_target = 1024;
    }
    q->dirfd = -1;
    q->lockfd = -1;
    q->active_fd = -1;
    q->rd.fd = -1;
    /* Critical sections are short: spin a little before sleeping (glibc's
     * adaptive mutex), which keeps contended sends off the futex path. */
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
    pthread_mutex_init(&q->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    int rc = hp_cond_init(&q->not_empty);
    if (rc == 0) {
        rc = hp_cond_init(&q->not_full);
    }
    if (rc == 0) {
        rc = hp_cond_init(&q->written);
    }
    if (rc == 0) {
        rc = hp_cond_init(&q->cr_done);
    }
    if (rc < 0) {
        free(q);
        return rc;
    }
    char path[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        rc = -ENAMETOOLONG;
        goto fail;
    }
    rc = hp_fault("mkdir");
    if (rc == 0 && mkdir(path, 0700) < 0 && errno != EEXIST) {
        rc = -errno;
    }
    if (rc < 0) {
        goto fail;
    }
    rc = hp_fs_open(path, O_RDONLY | O_DIRECTORY, 0);
    if (rc < 0) {
        goto fail;
    }
    q->dirfd = rc;
    rc = hp_fs_openat(q->dirfd, LOCK_NAME, O_RDWR | O_CREAT, 0600);
    if (rc < 0) {
        goto fail;
    }
    q->lockfd = rc;
    /* flock conflicts between open file descriptions, so a second opener in
     * this process is refused as well as one in another process. */
    if (flock(q->lockfd, LOCK_EX | LOCK_NB) < 0) {
        rc = errno == EWOULDBLOCK ? HOPPER_ELOCKED : -errno;
        goto fail;
    }
    uint64_t read_next;
    rc = hp_ckpt_read(q->dirfd, &q->ack_next, &read_next);
    if (rc < 0) {
        goto fail;
    }
    q->ckpt_ack = q->ack_next;
    q->ckpt_ns = hp_now_mono_ns();
    q->redeliver_below = read_next;
    q->disk_bytes = HP_CKPT_SIZE;
    rc = recover(q);
    if (rc < 0) {
        goto fail;
    }
    rc = hp_enc_init(&q->enc[0], q->o.compression);
    for (uint32_t i = 1; i < HP_ENC_SLOTS; i++) {
        q->enc[i].level = -1; /* created by the first frame of slot i */
    }
    if (rc == 0) {
        rc = hp_dec_init(&q->rd.dec);
    }
    if (rc < 0) {
        goto fail;
    }
    q->last_sync_ns = hp_now_mono_ns();
    if (q->o.fsync == HOPPER_FSYNC_INTERVAL) {
        rc = -pthread_create(&q->syncer, NULL, syncer_main, q);
        if (rc < 0) {
            goto fail;
        }
        q->has_syncer = 1;
    }
    *out = q;
    return 0;
fail:
    queue_free(q);
    return rc;
}

/* ---- close -------------------------------------------------------------- */

/* MEMORY mode: write what only memory holds, as frames of consecutive seqs.
 * [mu held, writer role held, no other thread active] */
static int
save_memory(hopper_queue *q)
{
    hp_batch b = {0};
    int rc = 0;
    size_t i = 0;
    uint64_t next_id = q->next_seg_id;
    uint64_t active_id = q->active_id;
    while (i < q->mem.count && rc == 0) {
        hp_entry *e = hp_deque_at(&q->mem, i);
        b.raw.len = 0;
        b.first_seq = e->seq;
        b.count = 0;
        b.ts_ms = e->ts_ms;
        while (i < q->mem.count && rc == 0) {
            e = hp_deque_at(&q->mem, i);
            if (e->seq != b.first_seq + b.count) {
                break;
            }
            uint8_t pre[HP_REC_PREFIX];
            hp_put_u32(pre, e->len);
            rc = hp_buf_append(&b.raw, pre, sizeof(pre));
            if (rc == 0) {
                rc = hp_buf_append(&b.raw, hp_entry_data(e), e->len);
            }
            b.count++;
            i++;
        }
        if (rc == 0) {
            q->touched.n = 0;
            rc = write_batch(q, &b, &next_id, &active_id, 0, 0); /* mu held */
            if (rc < 0 && is_space_error(rc)) {
                (void)undo_batch(q, &active_id);
            }
        }
        if (rc < 0) {
            atomic_fetch_add(&q->c_lost, q->mem.count - i + b.count);
        }
    }
    hp_buf_free(&b.raw);
    q->next_seg_id = next_id;
    q->active_id = active_id;
    return is_space_error(rc) ? HOPPER_EFULL : rc;
}

int
hopper_close(hopper_queue *q)
{
    if (q == NULL) {
        return 0;
    }
    hp_mutex_lock(&q->mu);
    q->closing = 1;
    q->shutdown = 1;
    pthread_cond_broadcast(&q->written);
    pthread_cond_broadcast(&q->not_empty);
    pthread_cond_broadcast(&q->not_full);
    hp_mutex_unlock(&q->mu);
    if (q->has_syncer) {
        pthread_join(q->syncer, NULL);
    }
    hp_mutex_lock(&q->mu);
    while (q->writer_active) {
        hp_cond_wait(&q->written, &q->mu);
    }
    int rc = q->failed ? HOPPER_EFAILED : 0;
    if (rc == 0 && q->pend.count > 0) {
        run_writer(q); /* write-behind records (MEMORY mode) */
        rc = q->failed ? HOPPER_EFAILED : 0;
        if (rc == 0 && q->pend.count > 0) {
            atomic_fetch_add(&q->c_lost, q->pend.count);
            rc = HOPPER_EFULL;
        }
    }
    if (rc == 0 && q->o.durability == HOPPER_DURABILITY_MEMORY && q->mem.count > 0) {
        rc = save_memory(q);
    }
    uint64_t ack_next = q->ack_next;
    uint64_t read_next = read_hwm(q);
    hp_mutex_unlock(&q->mu);
    /* Graceful close: everything written is made durable. */
    if (q->active_fd >= 0 && q->failed == 0) {
        int r = hp_fs_fdatasync(q->active_fd);
        if (r < 0 && rc == 0) {
            rc = r;
        }
        if (r == 0 && q->aidx.id == q->active_id) {
            seal_index(q); /* the next open need not scan this segment */
        }
    }
    if (q->failed == 0 && (ack_next != q->ckpt_ack || read_next > q->redeliver_below)) {
        int r = ckpt_write(q, ack_next, read_next);
        if (r < 0 && rc == 0) {
            rc = r;
        }
    }
    queue_free(q);
    return rc;
}
