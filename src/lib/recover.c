/* SPDX-License-Identifier: MIT */
/* Open-time recovery (FORMAT.md §5) and the close-time save of the records
 * that only memory holds (MEMORY mode). State and locking: queue_int.h.
 *
 * Recovery runs in hopper_open before the queue is shared, so it takes no
 * lock. It lists the directory (removing our own temp files and the indexes
 * of reclaimed segments, counting any that would not go; ignoring foreign
 * files), then per segment in id order: a bad header quarantines the file
 * (*.bad plus a *.why note); a valid index replaces the scan; otherwise the
 * frames are scanned with their CRCs, damage in the middle is skipped and
 * counted, and a torn tail of the LAST segment is truncated. Fully
 * acknowledged segments (a crash between the checkpoint and the unlink) are
 * deleted with their indexes. Then the positions: the next seq follows the
 * data (a checkpoint read position beyond it is clamped), and the seqs
 * between ack_next and it that no frame holds are the missing ones.
 */
#include "queue_int.h"

#include "fsio.h"

#include <assert.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- open: recovery (FORMAT.md §5) -------------------------------------- */

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
    HP_ARR_PUSH(q->runs, nr, rc);
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
    /* Ties (seqs that two segments claim) in segment and file order, as
     * hopper_inspect sorts them: qsort is not stable, and the two must
     * deliver the same records. */
    if (x->first_seq != y->first_seq) {
        return x->first_seq < y->first_seq ? -1 : 1;
    }
    if (x->seg_id != y->seg_id) {
        return x->seg_id < y->seg_id ? -1 : 1;
    }
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Delete one of our leftovers (a temp file, a stale index). Should it stay
 * (the unlink failed), it still takes space: it is counted in disk_bytes. */
static void
drop_leftover(hopper_queue *q, const char *name)
{
    hp_fs_discard(q->dirfd, name);
    uint64_t size;
    if (hp_fs_size_at(q->dirfd, name, &size) == 0) {
        q->disk_bytes += size;
    }
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
    drop_leftover(q, name);
    hp_seg_name(name, id);
    char text[160];
    int n = snprintf(text, sizeof(text), "%s: %s (%" PRIu64 " bytes)\n", name, why, size);
    int rc = hp_fs_atomic_write(q->dirfd, note, text, (size_t)n);
    if (rc < 0 && !hp_q_is_space_error(rc)) {
        return rc;
    }
    /* A full file system leaves the quarantine without its note: open must
     * still succeed there, so that draining can free space. */
    atomic_fetch_add(&q->c_quarantined, size);
    return 0;
}

/* Use the segment's index instead of scanning it, when it agrees with the
 * segment's frame headers (FORMAT.md §2.1). Returns 1 when the index was
 * used, 0 when the segment must be scanned, < 0 on I/O. */
static int
load_index(hopper_queue *q, uint64_t id, int fd, uint64_t size, scan_ctx *c)
{
    hp_segidx x = {0};
    int rc = hp_idx_load(q->dirfd, id, fd, size, q->max_raw, &x);
    if (rc == HOPPER_ECORRUPT) {
        /* Stale, damaged or lying: scan, and do not keep it. */
        char name[HP_SEG_NAME_MAX];
        hp_seg_idx_name(name, id);
        drop_leftover(q, name);
        rc = 0;
    }
    if (rc <= 0) {
        hp_idx_free(&x);
        return rc;
    }
    c->info->bytes = HP_IDX_HDR + (uint64_t)x.n * HP_IDX_RUN + 4;
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
        HP_ARR_PUSH(q->runs, run, rc);
        if (rc < 0) {
            break;
        }
    }
    hp_idx_free(&x);
    return rc < 0 ? rc : 1;
}

static int
recover_segment(hopper_queue *q, uint64_t id, int is_last, uint64_t *max_seq)
{
    char name[HP_SEG_NAME_MAX];
    hp_seg_name(name, id);
    int fd;
    int rc = hp_fs_open_regular(q->dirfd, name, O_RDWR, &fd);
    if (rc == 1) {
        /* A FIFO, directory, symlink... named like a segment is not the
         * queue's (FORMAT.md §1): left alone; its id is never reused. */
        return 0;
    }
    if (rc < 0) {
        return rc;
    }
    hp_window win = {.read = hp_read_at_fd, .ctx = &fd};
    uint64_t size = 0;
    rc = hp_seg_check_header(fd, id, &size);
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
    rc = load_index(q, id, fd, size, &c);
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
            /* Torn tail from a crash mid-append: cut at the last valid frame,
             * durably: should the cut be lost to a power cut after later
             * segments were written, the tail would come back as damage at
             * the end of an earlier segment, which stays (FORMAT.md §5). */
            rc = hp_fs_ftruncate(fd, valid_end);
            if (rc == 0) {
                rc = hp_fs_fdatasync(fd);
            }
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
        /* Fully acknowledged (a crash between checkpoint and unlink), or
         * empty: the segment goes, and its index with it (FORMAT.md §2.1). */
        rc = hp_fs_unlinkat(q->dirfd, name);
        if (rc == 0) {
            hp_seg_idx_name(name, id);
            drop_leftover(q, name);
        }
        goto out;
    }
    HP_ARR_PUSH(q->segs, info, rc);
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

/* Is `name` (of length n) the name of a segment's index? The segment's name
 * in seg. */
static int
index_name(const char *name, size_t n, char seg[HP_SEG_NAME_MAX])
{
    uint64_t id;
    if (n != 21 || strcmp(name + 16, ".hidx") != 0) {
        return 0;
    }
    memcpy(seg, name, 16);
    memcpy(seg + 16, ".hseg", 6);
    return hp_seg_parse_name(seg, &id) == 0;
}

/* Is `name` (of length n) the temp file of one of our files (FORMAT.md §1):
 * the checkpoint, a segment, an index or a quarantine note? */
static int
our_tmp_name(const char *name, size_t n)
{
    char base[HP_SEG_NAME_MAX + 16];
    char seg[HP_SEG_NAME_MAX];
    uint64_t id;
    if (n <= 4 || n - 4 >= sizeof(base) || strcmp(name + n - 4, ".tmp") != 0) {
        return 0;
    }
    memcpy(base, name, n - 4);
    base[n - 4] = '\0';
    if (n - 4 == 21 + 8 && strcmp(base + 21, ".bad.why") == 0) {
        base[21] = '\0'; /* a quarantine note */
    }
    return strcmp(base, HP_CKPT_NAME) == 0 || strcmp(base, HP_QID_NAME) == 0 ||
           hp_seg_parse_name(base, &id) == 0 ||
           index_name(base, strlen(base), seg);
}

/* One directory entry at open: collect segments, drop our own leftovers,
 * ignore everything that is not ours. */
static int
on_dir_entry(void *arg, const char *name)
{
    list_ctx *c = arg;
    hopper_queue *q = c->q;
    size_t n = strlen(name);
    uint64_t id;
    char seg[HP_SEG_NAME_MAX];
    if (hp_seg_parse_name(name, &id) == 0) {
        if (id >= q->next_seg_id) {
            q->next_seg_id = id + 1;
        }
        return hp_ids_push(&c->ids, id);
    }
    if (our_tmp_name(name, n)) {
        /* Our own temp file from an interrupted create: never complete. */
        drop_leftover(q, name);
    } else if (index_name(name, n, seg)) {
        if (hp_fs_exists(q->dirfd, seg) == -ENOENT) {
            drop_leftover(q, name); /* index of a reclaimed segment */
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

/* Seqs at or after ack_next, below the next seq, that no frame holds: a
 * deleted or truncated segment, damage found by the scan, a quarantined
 * segment, records only memory held at a crash (FORMAT.md §5). They are
 * counted as missing and are not part of the backlog. [open] */
static int
find_gaps(hopper_queue *q)
{
    hp_seqgaps g;
    hp_seqgaps_init(&g, q->ack_next);
    for (size_t i = 0; i < q->runs.n; i++) {
        uint64_t gap[2];
        hp_seqgaps_add(&g, q->runs.v[i].first_seq, q->runs.v[i].last_seq, gap);
        if (gap[0] < gap[1]) {
            int rc;
            HP_ARR_PUSH(q->gaps, ((hp_gap){.from = gap[0], .to = gap[1]}), rc);
            HP_GUARD(rc);
        }
    }
    assert(g.covered >= q->next_seq); /* the data ends within the runs */
    q->missing = g.missing;
    q->missing_left = g.missing;
    return 0;
}

/* List the directory, recover every segment in id order (only the last may
 * have a torn tail), sort the runs by seq and derive the positions. */
int
hp_q_recover(hopper_queue *q)
{
    list_ctx lc = {.q = q};
    int rc = hp_fs_dir_each(q->dirfd, on_dir_entry, &lc);
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
    /* The data ends at the larger of the acknowledged position and one past
     * the largest seq found. The checkpoint's read position cannot be
     * cross-checked beyond it: it is clamped there (and counted), so that a
     * claim of deliveries no frame holds neither leaves a backlog that never
     * drains nor uses up the sequence space (FORMAT.md §5). */
    uint64_t data_end = max_seq > q->ack_next ? max_seq : q->ack_next;
    if (q->redeliver_below > data_end) {
        q->ckpt_clamped = q->redeliver_below - data_end;
        q->redeliver_below = data_end;
    }
    q->next_seq = data_end;
    assert(q->next_seq <= HP_SEQ_LIMIT);
    rc = find_gaps(q);
    if (rc < 0) {
        return rc;
    }
    q->read_seq = q->ack_next;
    q->rd.caller_next = q->ack_next;
    q->visible_next = q->next_seq;
    q->written_next = q->next_seq;
    return 0;
}

/* ---- close: save what only memory holds --------------------------------- */

/* MEMORY mode: write what only memory holds, as frames of consecutive seqs,
 * one compression round's worth (HP_ENC_SLOTS frames of the frame target) at
 * a time through one reused buffer: saving a full memory budget needs no
 * second copy of it (the memory bound of README.md).
 * [mu held, writer role held, no other thread active]
 * I/O under mu: called by hopper_close() only, when no other thread can take
 * mu (see queue_int.h); records it cannot write are counted as lost. */
int
hp_q_save_memory(hopper_queue *q)
{
    hp_batch b = {0};
    int rc = 0;
    size_t i = 0;
    uint64_t next_id = q->next_seg_id;
    uint64_t active_id = q->active_id;
    const uint64_t chunk = HP_ENC_SLOTS * q->frame_target;
    hp_dpos p = hp_deque_begin(&q->mem);
    while (i < q->mem.count && rc == 0) {
        hp_dpos at = p;
        hp_entry *e = hp_dpos_entry(&at);
        b.raw.len = 0;
        b.first_seq = e->seq;
        b.count = 0;
        b.ts_ms = e->ts_ms;
        /* A chunk ends at a gap in seqs or past `chunk` bytes (a record
         * larger than that is a chunk, and a frame, of its own). */
        while (i < q->mem.count && rc == 0 && b.raw.len < chunk) {
            at = p;
            e = hp_dpos_entry(&at);
            if (e->seq != b.first_seq + b.count) {
                break;
            }
            p = at;
            hp_dpos_next(&p, e);
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
            int sync = HP_SYNC_NO; /* close syncs once at the end */
            rc = hp_q_write_batch(q, &b, &next_id, &active_id, &sync, 0); /* mu held */
            if (rc < 0 && hp_q_is_space_error(rc)) {
                /* Best effort: the records are counted as lost either way. */
                int undo_rc = hp_q_undo_batch(q, &active_id);
                (void)undo_rc;
            }
        }
        if (rc < 0) {
            atomic_fetch_add(&q->c_lost, q->mem.count - i + b.count);
        }
    }
    hp_buf_free(&b.raw);
    q->next_seg_id = next_id;
    q->active_id = active_id;
    return hp_q_is_space_error(rc) ? HOPPER_EFULL : rc;
}
