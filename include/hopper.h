/* SPDX-License-Identifier: MIT */
/**
 * @file hopper.h
 * @brief libhopper: a persistent, crash-safe, byte-bounded MPSC queue.
 *
 * A queue is a directory `DIR/NAME/` holding a lock file, a checkpoint file
 * and numbered segment files (see docs/FORMAT.md, the normative on-disk
 * specification). Records are opaque byte strings of 0..max_record_bytes
 * bytes. Every record gets a sequence number below 2^63 when it is
 * accepted; sequence numbers grow by one per record, never wrap, and are
 * never reused for a record that was reported accepted, with one exception:
 * after a kill -9 in MEMORY mode, the numbers of records lost with the
 * memory (see @ref durability_sec) may be given to new records.
 *
 * @section model_sec Memory and disk
 * Records are held in an in-memory deque up to `memory_bytes` (each record
 * costs its payload plus 48 bytes of bookkeeping, so small records are
 * counted honestly). The memory the deque allocates follows the high-water
 * mark of what it held, never more than about `memory_bytes`: chunks freed
 * by acknowledgements are kept for reuse while the queue is busy, and all
 * but a few are given back once the consumer's hopper_recv() waits out a
 * timeout on an empty queue.
 * Past that budget they spill to segment files as CRC-protected,
 * deflate-compressed frames (several records per frame), up to `disk_bytes`
 * of files on disk (headers included). The receiver always gets records in
 * sequence order: memory and disk together form one FIFO.
 *
 * @section threads_sec Threading model
 * One `hopper_queue` handle is shared by all threads. Any number of threads
 * may call hopper_send() / hopper_send_batch() concurrently. Exactly one
 * thread at a time may act as the consumer (hopper_recv(), hopper_recv_ack(),
 * hopper_ack()); calling consumer functions from two threads at once is
 * undefined. hopper_stats_get(), hopper_commit() and hopper_shutdown() may be
 * called from any thread. hopper_close() must be called once, after every
 * other call on the handle has returned.
 *
 * The library starts one background thread per queue only when the fsync
 * policy is HOPPER_FSYNC_INTERVAL; it performs the periodic fdatasync and is
 * joined by hopper_close(). The library never logs, never installs signal
 * handlers and never calls exit().
 *
 * @section durability_sec Durability
 * | mode                     | clean close + reopen | kill -9 of the process          | power loss                     |
 * |--------------------------|----------------------|---------------------------------|--------------------------------|
 * | MEMORY, any fsync        | nothing lost         | records only in memory are lost | also unsynced disk records     |
 * | DISK, fsync NEVER        | nothing lost         | nothing lost                    | unsynced records may be lost   |
 * | DISK, fsync INTERVAL(T)  | nothing lost         | nothing lost                    | at most the last T of records  |
 * | DISK, fsync ALWAYS       | nothing lost         | nothing lost                    | nothing lost                   |
 * | DISK, fsync COMMIT       | nothing lost         | nothing lost                    | records not yet committed      |
 *
 * With HOPPER_FSYNC_COMMIT a record is durable once a hopper_commit() that
 * started after its send returned has returned 0; the consumer never
 * receives a record before that, so a record handed on downstream is never
 * taken back by a power cut (and its sequence number never given to another
 * record).
 * In MEMORY mode a record that reached a segment file (because memory was
 * full) is never lost by a kill -9. Delivery is at-least-once: records that
 * were received but not acknowledged are delivered again after a reopen, and
 * so may be the last acknowledged ones:
 * | acknowledged records | clean close | kill -9                | power loss                  |
 * |----------------------|-------------|------------------------|-----------------------------|
 * | delivered again      | none        | at most the last 4096  | those of the last           |
 * |                      |             |                        | `checkpoint_interval_ms`    |
 * (none acknowledged before a hopper_sync() that returned 0 comes back).
 * The acknowledged position is written into the checkpoint in place, without
 * fsync, every 4096 records or 5 ms and whenever hopper_recv() finds nothing
 * to hand out (a kill -9 keeps the page cache); it is made durable (fsynced)
 * every `checkpoint_interval_ms`, before a segment is reclaimed, by
 * hopper_sync() and by hopper_close() (docs/FORMAT.md §4).
 *
 * @section caveats_sec Caveats
 * - One process, one opener: a second hopper_open() of the same queue (from
 *   this or another process) fails with HOPPER_ELOCKED.
 * - A failed write, fsync or rename on the persistence path makes the queue
 *   fail stickily: every later call returns HOPPER_EFAILED until the handle
 *   is closed and the queue reopened. A full file system (ENOSPC, EDQUOT) is
 *   not such a failure: sends get HOPPER_EFULL, and the consumer can still
 *   receive, acknowledge and so free space (the checkpoint is overwritten in
 *   place and needs no new block).
 * - The disk budget may be exceeded by at most one frame header
 *   (HOPPER_FRAME_OVERHEAD bytes) per queue; in practice it is not exceeded.
 *
 * Every fallible function returns 0 on success or a negative code: either
 * `-errno` (for example -ENOMEM, -EINVAL, -EMFILE) or one of HOPPER_E*.
 * hopper_strerror() renders any code.
 */
#ifndef HOPPER_INCLUDE_HOPPER_H
#define HOPPER_INCLUDE_HOPPER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define HOPPER_API __attribute__((visibility("default")))
#else
#define HOPPER_API
#endif

/* HOPPER_VERSION_MAJOR, _MINOR, _PATCH and _STRING: generated from the
 * project version by CMake and installed beside this header. */
#include "hopper_version.h"

/** Library error codes, all negative and far from -errno values.
 *  Append-only: values are never renumbered. */
#define HOPPER_ERRNO_MAP(XX)                                                                   \
    XX(ECLOSED, -1001, "queue is shut down")                                                   \
    XX(ECORRUPT, -1002, "on-disk data failed validation")                                      \
    XX(EVERSION, -1003, "unsupported on-disk format version")                                  \
    XX(ETOOBIG, -1004, "record exceeds the configured maximum size")                          \
    XX(EFULL, -1005, "memory and disk budgets exhausted")                                      \
    XX(EFAILED, -1006, "queue failed after an I/O error; close and reopen")                   \
    XX(ELOCKED, -1007, "queue directory is in use by another opener")                         \
    XX(ENEEDMORE, -1008, "decoder needs more bytes")                                          \
    XX(EEXHAUSTED, -1009, "sequence numbers exhausted; drain the queue and recreate it")

enum {
#define HOPPER_XX_(name, val, msg) HOPPER_##name = (val),
    HOPPER_ERRNO_MAP(HOPPER_XX_)
#undef HOPPER_XX_
};

/** Render any return code (0, -errno or HOPPER_E*). Never returns NULL.
 *  A -errno renders as the system's message for it, in English (the C
 *  locale's wording); a value that is neither a library code nor an errno
 *  the system defines renders as "unknown error".
 *  Ownership: the string is a static constant (never a strerror() buffer):
 *  valid for the life of the program, the same pointer for the same code.
 *  Thread safety: any thread. */
HOPPER_API const char *hopper_strerror(int err);

/** Short symbolic name of a code: "OK" for 0, "EFULL" etc. for the library's
 *  codes, the errno macro's name for every -errno the system defines
 *  ("ENOSPC", "ESPIPE", "EISDIR", ...), "EUNKNOWN" for anything else. Never
 *  NULL. Ownership, thread safety: as hopper_strerror(). */
HOPPER_API const char *hopper_err_name(int err);

/** Runtime version as (major << 16) | (minor << 8) | patch; equal to the
 *  HOPPER_VERSION_* macros of the hopper_version.h the library was built with. */
HOPPER_API unsigned hopper_version(void);
/** Runtime version as "major.minor.patch" (HOPPER_VERSION_STRING). Static string. */
HOPPER_API const char *hopper_version_string(void);

/** Fsync policies. */
enum hopper_fsync {
    HOPPER_FSYNC_NEVER = 0,    /**< leave it to the kernel (and to close; a segment is
                                    still fdatasynced once, when it is sealed) */
    HOPPER_FSYNC_INTERVAL = 1, /**< fdatasync at most fsync_interval_ms after a write */
    HOPPER_FSYNC_ALWAYS = 2,   /**< group commit: fdatasync before send returns; after a
                                    commit the next one waits (at most half an fdatasync,
                                    200 us) for the senders just released, so one
                                    fdatasync covers as many of them as possible */
    HOPPER_FSYNC_COMMIT = 3,   /**< DISK mode only: group commit driven by the caller.
                                    Send returns once the records are written (not
                                    fdatasynced); hopper_commit() fdatasyncs every record
                                    written so far, and only then may the consumer receive
                                    them. For a caller that acknowledges many producers'
                                    requests from one thread (an event loop): send each,
                                    commit once, then answer them all */
};

/** Durability modes (see @ref durability_sec). */
enum hopper_durability {
    HOPPER_DURABILITY_MEMORY = 0, /**< memory first, spill when the memory budget is full */
    HOPPER_DURABILITY_DISK = 1,   /**< every record is in a segment file before send returns */
};

/** Bytes of framing per frame on disk (FORMAT.md §3). */
#define HOPPER_FRAME_OVERHEAD 40u
/** Bytes of a segment header (FORMAT.md §2). */
#define HOPPER_SEGMENT_HEADER 32u

/** Open options. Initialise with hopper_opts_init() and change fields. */
typedef struct hopper_opts {
    size_t struct_size;           /**< set by hopper_opts_init() */
    uint64_t memory_bytes;        /**< memory for records held in memory: each costs its
                                   *  payload + 48 bytes of bookkeeping; default 8 MiB */
    uint64_t disk_bytes;          /**< bytes of files on disk; default 1 GiB; >= 64 KiB */
    uint64_t segment_bytes;       /**< rotate segments past this size; default 64 MiB */
    int compression;              /**< 0 = off, 1..9 = deflate level; default 1. Frames of a
                                       batch are compressed in parallel by the writer and the
                                       senders waiting for it. On 1 KiB JSON log lines, 2 cores:
                                       level 1 ~0.28 disk bytes per payload byte at ~300 MB/s,
                                       level 5 ~0.235 at ~145 MB/s (docs/BENCHMARKS.md) */
    int fsync;                    /**< enum hopper_fsync; default HOPPER_FSYNC_INTERVAL */
    uint32_t fsync_interval_ms;   /**< for HOPPER_FSYNC_INTERVAL; default 1000 */
    int durability;               /**< enum hopper_durability; default MEMORY */
    uint32_t max_record_bytes;    /**< largest record hopper_send() accepts; default
                                   *  16 MiB; at most 256 MiB (the format-wide limit).
                                   *  Records already stored are read whatever their
                                   *  size, also after a reopen with a smaller value */
    uint32_t checkpoint_interval_ms; /**< make the ack position durable (fsync) at most
                                      *  this often (also at segment reclaim, sync and
                                      *  close); between, it is written without fsync every
                                      *  4096 records or 5 ms; default 1000 */
} hopper_opts;

/** Fill `opts` with the defaults. Thread safety: any thread. */
HOPPER_API void hopper_opts_init(hopper_opts *opts);

/** An opaque queue handle. */
typedef struct hopper_queue hopper_queue;

/**
 * Open (creating if needed) the queue `name` under `dir`, recovering what
 * was left on disk: the consumer resumes right after the last acknowledged
 * record. Damaged data never makes open fail: a torn tail is truncated, a
 * corrupt frame is skipped (and counted), an unreadable segment is renamed
 * `*.bad` beside a `*.bad.why` note. Files that are not the queue's are
 * ignored, and so is anything that is not a regular file (a FIFO, directory
 * or symlink named like a segment, an index or the checkpoint): it is never
 * opened for reading (so open never blocks on it) and its segment id is
 * never reused. Nothing on disk is trusted that cannot be cross-checked
 * (docs/FORMAT.md §5): an index that disagrees with its segment is deleted
 * and the segment scanned; a checkpoint read position beyond the data is
 * clamped (hopper_stats.checkpoint_clamped); sequence numbers after the
 * acknowledged position that no segment holds are counted as missing
 * (hopper_stats.missing_records), never delivered and not in the backlog.
 *
 * @param[in]  dir   existing directory; the queue lives in dir/name/ (created 0700)
 * @param[in]  name  queue name, 1..128 characters of [A-Za-z0-9_.-], not "." or ".."
 * @param[in]  opts  options, or NULL for the defaults; copied
 * @param[out] out   set to NULL on entry, to the handle on success
 * Ownership: on success *out is owned by the caller; release with hopper_close().
 * Thread safety: any thread.
 * @return 0 on success, or one of: -EINVAL (bad name or option), -ENOMEM,
 *   -EMFILE/-ENFILE (no file descriptors), -EACCES, -ENOENT (dir missing),
 *   -ENOSPC, -EIO or another -errno from the file system, HOPPER_ELOCKED
 *   (another opener holds the queue), HOPPER_ECORRUPT (the one exception to
 *   "damage never makes open fail": `queue.id` exists but does not hold an
 *   identity; it is not replaced, since a new identity would defeat
 *   deduplication downstream; see hopper_queue_id()).
 */
HOPPER_API int hopper_open(const char *dir, const char *name, const hopper_opts *opts,
                           hopper_queue **out);

/**
 * Close the queue gracefully: stop the background thread, write every record
 * still held only in memory (MEMORY mode) to the segment files, fdatasync,
 * write the checkpoint, release the lock. Close + reopen loses nothing and
 * keeps order. The handle is freed even when an error is returned.
 * Accepts NULL (returns 0).
 * Ownership: consumes `q`. Thread safety: call once, when no other call on
 *   `q` is in progress.
 * @return 0 on success, or one of: HOPPER_EFAILED (the queue had failed;
 *   records only in memory could not be saved), HOPPER_EFULL (the disk budget
 *   or the file system had no room for the in-memory records; they are lost
 *   and counted), -ENOSPC/-EDQUOT (no room to write the checkpoint: nothing is
 *   lost, acknowledgements not yet durable may be delivered again), -EIO or
 *   another -errno from write/fsync/rename.
 */
HOPPER_API int hopper_close(hopper_queue *q);

/**
 * Wake every waiter and refuse further sends: hopper_send() returns
 * HOPPER_ECLOSED; hopper_recv() still returns what is stored and then
 * HOPPER_ECLOSED instead of blocking. Idempotent.
 * Thread safety: any thread.
 */
HOPPER_API void hopper_shutdown(hopper_queue *q);

/** One record to send. */
typedef struct hopper_iovec {
    const void *data; /**< may be NULL when len is 0 */
    size_t len;
} hopper_iovec;

/**
 * Send one record. The payload is copied (or written) before the call
 * returns; the caller may reuse the buffer at once. On success the record is
 * visible to the receiver immediately (with HOPPER_FSYNC_COMMIT: once a
 * hopper_commit() made it durable). In DISK mode it is in a segment file
 * (and fdatasynced with HOPPER_FSYNC_ALWAYS) when the call returns.
 *
 * @param[in] timeout_ms 0 = do not wait for space; -1 = wait forever; N = wait at most N ms
 * Ownership: `data` is borrowed for the duration of the call.
 * Thread safety: any number of threads concurrently.
 * @return 0 on success, or one of: HOPPER_EFULL (no room in the budgets or
 *   the file system reported ENOSPC/EDQUOT, within the timeout; the record was
 *   not accepted), HOPPER_ETOOBIG (len > max_record_bytes), HOPPER_ECLOSED
 *   (hopper_shutdown() was called), HOPPER_EFAILED (sticky I/O failure: the
 *   outcome of this record is unknown — when the write succeeded and only the
 *   fdatasync failed, the record may still be delivered after a reopen),
 *   HOPPER_EEXHAUSTED (the record would get a sequence number at or past
 *   2^63, the end of the sequence space; only a damaged or hand-made queue
 *   directory gets there: drain the queue, then recreate it), -ENOMEM,
 *   -EINVAL. HOPPER_EFULL, HOPPER_ETOOBIG and HOPPER_EEXHAUSTED guarantee
 *   that the record was not stored.
 */
HOPPER_API int hopper_send(hopper_queue *q, const void *data, size_t len, int timeout_ms);

/**
 * Send `n` records atomically with respect to admission: either all are
 * accepted (with consecutive sequence numbers) or none is.
 * Ownership, thread safety: as hopper_send().
 * @return as hopper_send(); HOPPER_ETOOBIG also when the batch can never fit
 *   the budgets.
 */
HOPPER_API int hopper_send_batch(hopper_queue *q, const hopper_iovec *recs, size_t n,
                                 int timeout_ms);

/**
 * Group commit for HOPPER_FSYNC_COMMIT: make every record written so far
 * durable (fdatasync of the segment being appended; segments sealed before
 * were fdatasynced when sealed), then let the consumer receive them. Every
 * record whose hopper_send()/hopper_send_batch() returned 0 before this call
 * started is durable once it returns 0. Returns at once, without an
 * fdatasync, when nothing was written since the last commit. Each fdatasync
 * counts in hopper_stats.fsyncs and fsync_ns_total. Senders may go on
 * concurrently; their writes wait while the fdatasync runs (it holds the
 * writer role), and what they write meanwhile needs the next commit.
 * Until a commit, written records are not received (hopper_recv() waits or
 * returns -EAGAIN), also after hopper_shutdown(); hopper_close() fdatasyncs
 * them and a reopen delivers them.
 * Ownership: borrows `q`.
 * Thread safety: any thread, concurrently with senders, the consumer and
 *   other commits (commits are serialised).
 * @return 0 on success, or one of: -EINVAL (q is NULL, or the queue was not
 *   opened with HOPPER_FSYNC_COMMIT), HOPPER_EFAILED (the fdatasync failed:
 *   sticky, and the records' outcome is unknown, as for hopper_send(); or the
 *   queue had failed before).
 */
HOPPER_API int hopper_commit(hopper_queue *q);

/** A received record. */
typedef struct hopper_record {
    const void *data; /**< library-owned; see hopper_recv() for its lifetime */
    size_t len;
    uint64_t seq; /**< sequence number; pass it to hopper_ack() */
} hopper_record;

/**
 * Receive the next record in sequence order. Records are taken from the
 * queue a batch at a time (up to 256 per lock) and handed out one per call;
 * a record counts as received (stats, redelivery) when it is returned.
 *
 * When it has nothing to hand out, it first writes the acknowledged position
 * to the checkpoint if that moved (see @ref durability_sec). Then, with a
 * timeout other than 0 and more than one CPU, it spins for at most 20
 * microseconds for a sender (gathering up to 64 records once they come)
 * before it sleeps.
 *
 * @param[out] rec filled on success. `rec->data` is owned by the queue and is
 *   valid only until the next hopper_recv()/hopper_recv_ack() or hopper_close()
 *   on this queue; do not modify or free it.
 * @param[in] timeout_ms 0 = poll; -1 = wait forever; N = wait at most N ms
 * Thread safety: the single consumer thread only.
 * @return 0 on success, or one of: -EAGAIN (poll found nothing), -ETIMEDOUT,
 *   HOPPER_ECLOSED (shut down and nothing left), HOPPER_EFAILED (also when
 *   writing the checkpoint failed: sticky), -ENOMEM, -EMFILE/-EIO or another
 *   -errno from reading a segment (retryable; the record is not skipped).
 */
HOPPER_API int hopper_recv(hopper_queue *q, hopper_record *rec, int timeout_ms);

/**
 * Acknowledge every record with sequence number <= `seq`. Acknowledged
 * records are not delivered again once the position is in the checkpoint:
 * within 4096 records or 5 ms for a kill -9, once it is durable (at most
 * checkpoint_interval_ms later, at segment reclaim, hopper_sync() and close)
 * for a power loss (see @ref durability_sec). Segment files whose records are
 * all acknowledged are deleted (durable checkpoint first); so is the segment
 * being written once all of it is acknowledged, if the file system said
 * ENOSPC/EDQUOT since the last reclaim (it may be the only one to free).
 * A full file system while writing the checkpoint is not an error: the
 * acknowledgement holds, the old checkpoint stays, and the write (and the
 * reclaim) is tried again by a later call.
 * Acknowledging a position not yet received is clamped to the last received.
 * Thread safety: the single consumer thread only.
 * @return 0 on success, or one of: HOPPER_EFAILED, -EIO or another -errno
 *   from writing the checkpoint or deleting a segment (sticky).
 */
HOPPER_API int hopper_ack(hopper_queue *q, uint64_t seq);

/**
 * hopper_recv() followed by hopper_ack() of the record returned (at-most-once
 * from the caller's point of view once the checkpoint is written).
 *
 * An error can come from either step, and the two mean different things:
 * - from the receive: nothing was received; `rec->seq` is UINT64_MAX (never
 *   a real seq: seqs stay below 2^63) and the rest of `rec` is unspecified.
 * - from the acknowledgement (`rec->seq` != UINT64_MAX): the record in `rec`
 *   WAS received and its acknowledgement may already be recorded, even
 *   durably (a failed deletion of a reclaimed segment is reported after the
 *   checkpoint was written and fsynced), so it may never be delivered again:
 *   process `rec` as delivered. These errors make the queue failed (sticky).
 * Thread safety: the single consumer thread only.
 * @param[out] rec as hopper_recv(); `rec->seq` as above on error.
 * @return 0, an error of hopper_recv() (nothing received), or an error of
 *   hopper_ack() (the record in `rec` was received).
 */
HOPPER_API int hopper_recv_ack(hopper_queue *q, hopper_record *rec, int timeout_ms);

/** Write the checkpoint now (fsynced) if the ack position moved. It makes
 *  only the acknowledged position durable, no record (records: the fsync
 *  policy, or hopper_commit() with HOPPER_FSYNC_COMMIT).
 *  Thread safety: the consumer thread.
 *  @return 0, or one of: -ENOSPC/-EDQUOT (no room: not sticky, the old
 *  checkpoint stands; call again later), HOPPER_EFAILED (also when the write
 *  or fsync failed otherwise: sticky). */
HOPPER_API int hopper_sync(hopper_queue *q);

/** Length of a queue identity in characters (hex digits), without the NUL. */
#define HOPPER_QUEUE_ID_LEN 32

/**
 * The queue's identity: 128 random bits created once with the queue
 * directory (or at the first open of a queue that has none) and stored in it
 * (`queue.id`, FORMAT.md §1.1), as 32 lower-case hex digits. It never
 * changes for the life of the directory; a deleted and recreated queue gets
 * a new one. Together with a record's sequence number (never reused) it
 * names a record uniquely, e.g. as a deduplication key downstream.
 * @param[out] out  receives the 32 digits and a terminating NUL (33 bytes,
 *   owned by the caller).
 * Thread safety: any thread (the identity is immutable after open).
 * @return 0, or -EINVAL (q or out NULL).
 */
HOPPER_API int hopper_queue_id(hopper_queue *q, char out[HOPPER_QUEUE_ID_LEN + 1]);

/** Queue statistics. Gauges describe the moment of the call. Fields are only
 *  ever appended: a caller built with an older hopper.h (smaller struct_size)
 *  gets the fields its struct has. */
typedef struct hopper_stats {
    size_t struct_size;           /**< set by the caller to sizeof(hopper_stats) */
    uint64_t mem_records;         /**< records held in memory */
    uint64_t mem_bytes;           /**< memory charged to them: payload + 48 bytes each */
    uint64_t disk_records;        /**< records in segment files not yet reclaimed */
    uint64_t disk_raw_bytes;      /**< payload bytes of those records */
    uint64_t disk_bytes;          /**< bytes of the queue's files: segments, indexes,
                                   *  the checkpoint (4128), queue.id (33), leftovers not yet deleted */
    uint64_t segments;            /**< segment files */
    uint64_t backlog_records;     /**< accepted, not yet acknowledged, and not known
                                   *  missing (see missing_records) */
    uint64_t oldest_age_ms;       /**< age of the oldest unacknowledged record, 0 if none */
    uint64_t sent;                /**< records accepted since open */
    uint64_t received;            /**< records delivered since open */
    uint64_t acked;               /**< records acknowledged since open */
    uint64_t redelivered;         /**< deliveries of records delivered before a reopen */
    uint64_t full_rejections;     /**< sends refused with HOPPER_EFULL */
    uint64_t corrupt_frames;      /**< damaged frames skipped (open and read) */
    uint64_t corrupt_bytes;       /**< bytes skipped with them */
    uint64_t quarantined_bytes;   /**< bytes of segments renamed *.bad */
    uint64_t lost_records;        /**< records known lost (close without room) */
    uint64_t torn_bytes;          /**< bytes cut from a torn tail at open */
    uint64_t fsyncs;              /**< fdatasyncs of appended data (group commit, the
                                   *  fsync interval and hopper_commit(); not those at
                                   *  rotation or close) */
    uint64_t fsync_ns_total;      /**< time spent in them */
    uint64_t next_seq;            /**< sequence number the next record will get */
    int failed;                   /**< 0, or the sticky error code */
    /* Appended later (a caller's struct_size says whether it has them): */
    uint64_t missing_records;     /**< found at open: sequence numbers from the checkpoint's
                                   *  ack position up to next_seq that no frame holds (a
                                   *  segment deleted or truncated at a frame boundary,
                                   *  damaged frames, an unreadable segment, records only
                                   *  memory held at a kill -9 in MEMORY mode). They are
                                   *  never delivered and not part of backlog_records */
    uint64_t checkpoint_clamped;  /**< found at open: by how many sequence numbers the
                                   *  checkpoint's read position was beyond the data (it
                                   *  was clamped to the data; after a kill -9 in MEMORY
                                   *  mode these are records delivered and lost with the
                                   *  memory) */
} hopper_stats;

/** Fill `st` (whose struct_size the caller sets: sizeof(hopper_stats) of the
 *  hopper.h it was built with; the fields that struct has are filled).
 *  Thread safety: any thread.
 *  @return 0, or -EINVAL (NULL, or struct_size smaller than the first
 *  version of the struct). */
HOPPER_API int hopper_stats_get(hopper_queue *q, hopper_stats *st);

/** What hopper_inspect() found. Fields are only ever appended (a smaller
 *  struct_size gets the fields its struct has). */
typedef struct hopper_inspect_report {
    size_t struct_size;           /**< set by the caller to sizeof(hopper_inspect_report) */
    uint64_t segments;            /**< segment files examined */
    uint64_t unreadable_segments; /**< bad header or unknown version: nothing read from them */
    uint64_t segment_bytes;       /**< bytes of segment files */
    uint64_t frames;              /**< valid frames (CRC and decoding checked) */
    uint64_t records;             /**< records in valid frames */
    uint64_t visited;             /**< records passed to the callback */
    uint64_t corrupt_frames;      /**< damaged ranges skipped */
    uint64_t corrupt_bytes;       /**< bytes in them */
    uint64_t torn_bytes;          /**< damage at the end of the newest segment (a torn tail) */
    uint64_t ack_next;            /**< from the checkpoint: first unacknowledged seq */
    int checkpoint_ok;            /**< 1 valid, 0 missing or damaged (ack_next is then 0) */
    /* Appended later (see struct_size), found by the rules open applies: */
    uint64_t missing_records;     /**< seqs from ack_next up to the next seq no frame holds */
    uint64_t missing_ranges;      /**< the separate gaps they form */
    uint64_t missing_first;       /**< the first gap: seqs missing_first .. */
    uint64_t missing_first_end;   /**< .. missing_first_end - 1 (both 0 when none) */
    uint64_t checkpoint_clamped;  /**< by how many seqs the checkpoint's read position is
                                   *  beyond the data */
} hopper_inspect_report;

/** hopper_inspect() flag: also visit records the checkpoint says are acknowledged. */
#define HOPPER_INSPECT_ACKED 1u

/** Called by hopper_inspect() for each record, in sequence order. `rec->data`
 *  is valid only during the call. Return 0 to go on, < 0 to stop the walk
 *  (hopper_inspect() then returns that value). */
typedef int (*hopper_inspect_fn)(void *ctx, const hopper_record *rec);

/**
 * Read-only walk of the queue `name` under `dir`, for offline tools (verify,
 * dump, salvage): checks every frame (header, CRC, decoding), counts damage,
 * and calls `fn` (when not NULL) for every readable record not yet
 * acknowledged (all of them with HOPPER_INSPECT_ACKED), in sequence order,
 * each seq at most once. Never modifies, truncates, renames or deletes a
 * file, and ignores what recovery ignores (names held by something that is
 * not a regular file are never opened, so a FIFO never blocks the walk).
 * Takes a shared lock on the queue, so it fails while the queue is open.
 *
 * @param[out] rep filled (struct_size set by the caller), also on error
 * Ownership: everything is borrowed for the duration of the call.
 * Thread safety: any thread; independent of open handles.
 * @return 0 (damage is reported in `rep`, not as an error), or one of:
 *   HOPPER_ELOCKED (the queue is open), -ENOENT (no such queue), -EINVAL,
 *   -ENOMEM, -EMFILE or another -errno from reading, or fn's negative value.
 */
HOPPER_API int hopper_inspect(const char *dir, const char *name, unsigned flags,
                              hopper_inspect_fn fn, void *ctx, hopper_inspect_report *rep);

#ifdef __cplusplus
}
#endif
#endif /* HOPPER_INCLUDE_HOPPER_H */
