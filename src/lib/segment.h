/* SPDX-License-Identifier: MIT */
/* Segment files (FORMAT.md §2): header codec, creation, and the scan that
 * walks frames, skips damage and finds the torn tail. The scan reads through a
 * callback so it runs over files and over memory images (fuzzing) alike. */
#ifndef HOPPER_SRC_LIB_SEGMENT_H
#define HOPPER_SRC_LIB_SEGMENT_H
#include "buf.h"
#include "internal.h"
#include "record.h"

#include <stdint.h>
#include <sys/types.h>

#define HP_SEG_MAGIC 0x47455348u /* "HSEG" */
#define HP_SEG_VERSION 1u
#define HP_SEG_HDR 32u
#define HP_SEG_NAME_MAX 32

/* "%016" PRIx64 ".hseg" */
void hp_seg_name(char out[HP_SEG_NAME_MAX], uint64_t id);
/* Parse a file name; 0 and *id on a match, -1 otherwise. */
int hp_seg_parse_name(const char *name, uint64_t *id);

void hp_seg_header_encode(uint8_t out[HP_SEG_HDR], uint64_t id, uint64_t first_seq);
/* Returns 0, HOPPER_ENEEDMORE, HOPPER_ECORRUPT or HOPPER_EVERSION. */
HP_MUST_USE int hp_seg_header_decode(const uint8_t *p, size_t n, uint64_t *id,
                                     uint64_t *first_seq);

/* Size an open segment file and check its header belongs to segment `id`.
 * Returns 0 with *size; HOPPER_ECORRUPT, HOPPER_EVERSION or HOPPER_ENEEDMORE
 * (short file) when the header cannot be used; -errno on I/O errors. */
HP_MUST_USE int hp_seg_check_header(int fd, uint64_t id, uint64_t *size);

/* Create segment `id` durably (temp name, header, fsync, rename, fsync dir)
 * and return an fd open for appending at offset HP_SEG_HDR. 0 or -errno. */
HP_MUST_USE int hp_seg_create(int dirfd, uint64_t id, uint64_t first_seq, int *fd_out);

/* Reads up to n bytes at off into buf; returns bytes read or -errno. */
typedef ssize_t (*hp_read_at_fn)(void *ctx, void *buf, size_t n, uint64_t off);
ssize_t hp_read_at_fd(void *ctx, void *buf, size_t n, uint64_t off); /* ctx = int *fd */

/* A read window over a file (or image) of known size. */
typedef struct hp_window {
    hp_read_at_fn read;
    void *ctx;
    uint64_t size; /* bytes that may be read */
    hp_buf buf;
    uint64_t off; /* file offset of buf.data[0] */
} hp_window;

/* Point *p at n bytes at file offset off. Returns 0, HOPPER_ENEEDMORE (past
 * size), -ENOMEM or a read error. */
HP_MUST_USE int hp_win_get(hp_window *w, uint64_t off, size_t n, const uint8_t **p);

/* Is there a whole valid frame (header sane and CRC right) at off? 0 yes with
 * *h filled; HOPPER_ECORRUPT / HOPPER_ENEEDMORE no; other < 0: I/O error. */
HP_MUST_USE int hp_seg_frame_at(hp_window *w, uint64_t off, uint64_t max_raw, int verify_crc,
                                hp_frame_hdr *h);

/* Find the first offset >= from holding a valid frame (CRC checked).
 * Returns 0 with *found, 1 when there is none before the end, < 0 on I/O. */
HP_MUST_USE int hp_seg_resync(hp_window *w, uint64_t from, uint64_t max_raw, uint64_t *found,
                              hp_frame_hdr *h);

/* Read the frame at *off of a run [.., end) whose seqs must lie in
 * [first_seq, last_seq], the way every reader of the runs does (the
 * consumer, hopper_inspect): check it (CRC), decode it into raw and check
 * its seqs against the run. Returns
 *   0   a frame: *h and raw hold it, *off is past it;
 *   1   damage skipped, *skipped bytes of it (one corrupt frame): a frame
 *       that passes its CRC but does not decode or holds seqs outside the
 *       run is skipped exactly; other damage up to the next offset holding
 *       a frame that passes its CRC, or to `end`; *off is past it;
 *   < 0 an I/O or memory error (-ENOMEM): nothing skipped, retry later. */
HP_MUST_USE int hp_run_read_frame(hp_window *w, uint64_t *off, uint64_t end, uint64_t max_raw,
                                  uint64_t first_seq, uint64_t last_seq, hp_decoder *dec,
                                  hp_buf *raw, hp_frame_hdr *h, uint64_t *skipped);

typedef struct hp_scan_ops {
    /* A valid frame at off. Return < 0 to stop the scan with that error. */
    int (*frame)(void *ctx, uint64_t off, const hp_frame_hdr *h);
    /* Bytes [off, off+len) were skipped as damaged, followed by a valid frame. */
    void (*skipped)(void *ctx, uint64_t off, uint64_t len);
} hp_scan_ops;

/* Walk the frames of a segment body from HP_SEG_HDR to w->size. With
 * verify_crc every frame's CRC is checked; without, only headers are walked
 * and frames are checked when read. Damage followed by a valid frame is
 * reported through ops->skipped; damage up to the end is not a frame and ends
 * the scan: *valid_end is the end of the last valid frame (the torn tail
 * starts there). Returns 0 or an I/O error / -ENOMEM / the callback's error. */
HP_MUST_USE int hp_seg_scan(hp_window *w, uint64_t max_raw, int verify_crc,
                            const hp_scan_ops *ops, void *ctx, uint64_t *valid_end);

/* Segment index (FORMAT.md §2.1): written when a segment is sealed, so that
 * open need not scan it. Optional: a missing or invalid index means "scan". */
#define HP_IDX_MAGIC 0x58444948u /* "HIDX" */
#define HP_IDX_VERSION 1u
#define HP_IDX_HDR 48u
#define HP_IDX_RUN 40u
#define HP_IDX_MAX_RUNS (1u << 20)
/* An index is written only for segments of at most this many runs, so its
 * size stays within HP_IDX_RESERVE (reserved per segment in the budget);
 * a reader ignores a larger file. */
#define HP_IDX_KEEP_RUNS 4u
#define HP_IDX_RESERVE (HP_IDX_HDR + HP_IDX_KEEP_RUNS * HP_IDX_RUN + 4u)

typedef struct hp_idx_run {
    uint64_t off;       /* first frame */
    uint64_t end;       /* end of the last frame */
    uint64_t first_seq; /* first record */
    uint64_t last_seq;  /* last record */
    uint64_t ts_ms;     /* timestamp of the first frame */
} hp_idx_run;

typedef struct hp_segidx {
    uint64_t id;
    uint64_t size;    /* segment bytes the index covers (= file size) */
    uint64_t records; /* records in the segment */
    uint64_t raw;     /* their payload bytes */
    hp_idx_run *runs; /* frames of consecutive seqs, merged, in file order */
    size_t n;
    size_t cap;
} hp_segidx;

/* "%016" PRIx64 ".hidx" */
void hp_seg_idx_name(char out[HP_SEG_NAME_MAX], uint64_t id);
/* Account one frame; merges with the last run when contiguous. 0 / -ENOMEM. */
HP_MUST_USE int hp_idx_add(hp_segidx *x, uint64_t off, uint64_t bytes, uint64_t first_seq,
                           uint32_t count, uint64_t raw, uint64_t ts_ms);
/* Serialize (replacing out's content). 0 / -ENOMEM. */
HP_MUST_USE int hp_idx_encode(const hp_segidx *x, hp_buf *out);
/* Parse and validate an index for segment `id` of `size` bytes into x (whose
 * runs it replaces). 0, HOPPER_ECORRUPT, HOPPER_EVERSION or -ENOMEM. */
HP_MUST_USE int hp_idx_decode(const uint8_t *p, size_t n, uint64_t id, uint64_t size,
                              hp_segidx *x);
void hp_idx_free(hp_segidx *x);
/* Does a frame of a run [first_seq, last_seq] hold only seqs of it? A frame
 * that does not is damaged when read (only an index that lies in the middle
 * of a run, which hp_idx_verify does not walk, can put one there): its seqs
 * may be given to new records. */
static inline int
hp_run_holds(uint64_t first_seq, uint64_t last_seq, const hp_frame_hdr *h)
{
    return h->count > 0 && h->first_seq >= first_seq && h->first_seq + h->count - 1 <= last_seq;
}

/* Does a decoded index agree with its segment (FORMAT.md §2.1)? Its runs
 * must tile the body [HP_SEG_HDR, size) exactly; each run's first frame
 * header (parsed with max_raw, no CRC: frames are checked when read) must
 * hold the run's first seq and timestamp, and a frame header ending exactly
 * at the run's end its last seq (found in the run's last bytes, or by a walk
 * of the run's headers); the index's record total must be its runs' seqs.
 * Reads a few headers per run through rd, never the segment. Returns 0
 * (agrees), HOPPER_ECORRUPT (it does not), -ENOMEM or a read error. */
HP_MUST_USE int hp_idx_verify(hp_read_at_fn rd, void *ctx, const hp_segidx *x,
                              uint64_t max_raw);
/* Load the index of segment `id` (open as seg_fd, `size` bytes) from dirfd
 * and check it against the segment (hp_idx_verify). Returns 1 with *x
 * filled when it can be used instead of a scan; 0 when there is none (or
 * its name holds something other than a regular file); HOPPER_ECORRUPT when
 * there is one that must not be used (stale, damaged, lying: the caller may
 * delete it); -ENOMEM or a read error. Opens nothing but the index. */
HP_MUST_USE int hp_idx_load(int dirfd, uint64_t id, int seg_fd, uint64_t size, uint64_t max_raw,
                            hp_segidx *x);

/* The directory lock (FORMAT.md §1): an exclusive flock by the one opener. */
#define HP_LOCK_NAME "LOCK"

/* The queue identity (FORMAT.md §1.1): 32 lower-case hex digits and '\n'. */
#define HP_QID_NAME "queue.id"
#define HP_QID_HEX 32

/* Checkpoint file (FORMAT.md §4). Version 2: two 32-byte slots, at offsets
 * 0 and HP_CKPT_SLOT_STRIDE, each with a generation number; the valid slot
 * of the newer generation holds the positions. Version 1 (still read): the
 * file is one 32-byte slot. */
#define HP_CKPT_NAME "checkpoint"
#define HP_CKPT_MAGIC 0x504b4348u /* "HCKP" */
#define HP_CKPT_VERSION 2u
#define HP_CKPT_VERSION_1 1u
#define HP_CKPT_SIZE 32u /* one slot; the whole file in version 1 */
#define HP_CKPT_SLOT_STRIDE 4096u
#define HP_CKPT_FILE_SIZE (HP_CKPT_SLOT_STRIDE + HP_CKPT_SIZE)

/* What a checkpoint file holds. */
typedef struct hp_ckpt {
    uint64_t ack_next;
    uint64_t read_next;
    uint32_t gen; /* generation of the slot used (0 in version 1) */
    int slot;     /* the slot used: 0 or 1 */
    int layout;   /* 2: two slots (version 2); 1: a version-1 file; 0: unusable */
} hp_ckpt;

/* Encode one version-2 slot. */
void hp_ckpt_encode(uint8_t out[HP_CKPT_SIZE], uint64_t ack_next, uint64_t read_next,
                    uint32_t gen);
/* Encode a version-1 checkpoint (a whole version-1 file). */
void hp_ckpt_encode_v1(uint8_t out[HP_CKPT_SIZE], uint64_t ack_next, uint64_t read_next);
/* Decode one slot of `version` (1 or 2): 0 with the fields (gen 0 in version
 * 1), HOPPER_ECORRUPT when it is not a valid slot of that version. */
HP_MUST_USE int hp_ckpt_decode(const uint8_t *p, size_t n, unsigned version, uint64_t *ack_next,
                               uint64_t *read_next, uint32_t *gen);
/* Parse a whole checkpoint file image: 0 with *c, or HOPPER_ECORRUPT when no
 * slot is usable (then c->layout is 0 and the positions 0). */
HP_MUST_USE int hp_ckpt_parse(const uint8_t *p, size_t n, hp_ckpt *c);
/* Read and parse the open checkpoint file fd: 0 with *c, 1 when it is
 * unusable (damaged: *c zeroed), < 0 on I/O errors. */
HP_MUST_USE int hp_ckpt_read_fd(int fd, hp_ckpt *c);
/* Read dirfd/checkpoint: 0 with the positions, 1 when there is no usable
 * checkpoint (missing or damaged: positions 0), < 0 on I/O errors. */
HP_MUST_USE int hp_ckpt_read(int dirfd, uint64_t *ack_next, uint64_t *read_next);

/* Sequence numbers that no frame holds (FORMAT.md §5): fed the runs of
 * frames (first and last seq of each) in first_seq order, it finds the gaps
 * at or after `from`, the consumer's position (ack_next). */
typedef struct hp_seqgaps {
    uint64_t covered;   /* every seq in [from, covered) is held by a run */
    uint64_t missing;   /* seqs in the gaps so far */
    uint64_t ranges;    /* gaps so far */
    uint64_t first[2];  /* the first gap, [first[0], first[1]) */
} hp_seqgaps;

void hp_seqgaps_init(hp_seqgaps *g, uint64_t from);
/* Account the run [first_seq, last_seq]; the gap before it, if any, is
 * returned as [gap[0], gap[1]) (gap[0] == gap[1]: none). */
void hp_seqgaps_add(hp_seqgaps *g, uint64_t first_seq, uint64_t last_seq, uint64_t gap[2]);

/* A growable list of segment ids. */
typedef struct hp_ids {
    uint64_t *v;
    size_t n;
    size_t cap;
} hp_ids;

HP_MUST_USE int hp_ids_push(hp_ids *a, uint64_t id);
void hp_ids_sort(hp_ids *a);

#endif
