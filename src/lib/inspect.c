/* SPDX-License-Identifier: MIT */
/* hopper_inspect: a read-only walk of a queue directory for offline tools.
 *
 * It applies the recovery rules of FORMAT.md §5 without their side effects:
 * segments with a bad header are counted instead of renamed, a torn tail is
 * counted instead of truncated, an index that disagrees with its segment is
 * not used (but not deleted), nothing is deleted. A segment is scanned (CRCs
 * checked) unless recovery would use its index; then the records are visited
 * in seq order across segments, the way a reopened queue would deliver them,
 * and every frame is checked in full (§3.4) as it is decoded. A shared flock on LOCK keeps an
 * opener (which takes it exclusively) out for the duration. */
#include "internal.h"

#include "buf.h"
#include "fsio.h"
#include "record.h"
#include "segment.h"

#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct in_run {
    uint64_t seg_id;
    hp_idx_run r;
} in_run;

typedef struct walk {
    int dirfd;
    uint64_t max_raw;
    hopper_inspect_report *rep;
    hp_segidx idx; /* frames of the segment being scanned */
    in_run *runs;
    size_t nruns;
    size_t cap;
} walk;

static int
on_frame(void *arg, uint64_t off, const hp_frame_hdr *h)
{
    walk *w = arg;
    /* Counted when decoded (below): a frame can pass its CRC and still not
     * decode. Here only its place in the seq order is recorded. */
    return hp_idx_add(&w->idx, off, HP_FRAME_HDR + (uint64_t)h->stored_len, h->first_seq,
                      h->count, 0, h->ts_ms);
}

static void
on_skipped(void *arg, uint64_t off, uint64_t len)
{
    walk *w = arg;
    (void)off;
    w->rep->corrupt_frames++;
    w->rep->corrupt_bytes += len;
}

static int
cmp_run(const void *a, const void *b)
{
    const in_run *x = a;
    const in_run *y = b;
    /* The order recovery sorts runs in (recover.c cmp_run). */
    if (x->r.first_seq != y->r.first_seq) {
        return x->r.first_seq < y->r.first_seq ? -1 : 1;
    }
    if (x->seg_id != y->seg_id) {
        return x->seg_id < y->seg_id ? -1 : 1;
    }
    return x->r.off < y->r.off ? -1 : x->r.off > y->r.off;
}

static int
collect_id(void *ctx, const char *name)
{
    uint64_t id;
    return hp_seg_parse_name(name, &id) == 0 ? hp_ids_push(ctx, id) : 0;
}

/* Scan one segment: header, frames (CRC), torn or damaged end. */
static int
scan_segment(walk *w, uint64_t id, int is_last)
{
    char name[HP_SEG_NAME_MAX];
    hp_seg_name(name, id);
    int fd;
    int rc = hp_fs_open_regular(w->dirfd, name, O_RDONLY, &fd);
    if (rc == 1) {
        return 0; /* not a file: not the queue's (FORMAT.md §1), as at open */
    }
    if (rc < 0) {
        return rc;
    }
    hp_window win = {.read = hp_read_at_fd, .ctx = &fd};
    uint64_t size = 0;
    rc = hp_seg_check_header(fd, id, &size);
    w->rep->segments++;
    w->rep->segment_bytes += size;
    if (rc == HOPPER_ECORRUPT || rc == HOPPER_EVERSION || rc == HOPPER_ENEEDMORE) {
        w->rep->unreadable_segments++;
        rc = 0;
        goto out;
    }
    if (rc < 0) {
        goto out;
    }
    hp_idx_free(&w->idx);
    /* Where recovery would use the index (it agrees with the frame headers),
     * so does the walk: the library and inspect then know the same frames,
     * and every frame is still checked in full when visited. */
    rc = hp_idx_load(w->dirfd, id, fd, size, w->max_raw, &w->idx);
    if (rc < 0 && rc != HOPPER_ECORRUPT) {
        goto out;
    }
    if (rc == 1) {
        rc = 0;
        goto runs;
    }
    hp_idx_free(&w->idx);
    w->idx.id = id;
    win.size = size;
    hp_scan_ops ops = {.frame = on_frame, .skipped = on_skipped};
    uint64_t valid_end;
    rc = hp_seg_scan(&win, w->max_raw, 1, &ops, w, &valid_end);
    if (rc < 0) {
        goto out;
    }
    if (valid_end < size) {
        if (is_last) {
            w->rep->torn_bytes += size - valid_end;
        } else {
            w->rep->corrupt_frames++;
            w->rep->corrupt_bytes += size - valid_end;
        }
    }
runs:
    for (size_t i = 0; i < w->idx.n; i++) {
        if (w->nruns == w->cap) {
            size_t nc = w->cap ? w->cap * 2 : 16;
            in_run *nv = realloc(w->runs, nc * sizeof(*nv));
            if (nv == NULL) {
                rc = -ENOMEM;
                goto out;
            }
            w->runs = nv;
            w->cap = nc;
        }
        w->runs[w->nruns++] = (in_run){.seg_id = id, .r = w->idx.runs[i]};
    }
out:
    hp_buf_free(&win.buf);
    hp_fs_close(fd);
    return rc;
}

/* Decode the frames of the runs (sorted by seq) and visit their records. */
static int
visit(walk *w, uint64_t from, hopper_inspect_fn fn, void *ctx)
{
    hp_decoder dec;
    HP_GUARD(hp_dec_init(&dec));
    hp_buf raw = {0};
    int fd = -1;
    uint64_t fd_id = 0;
    hp_window win = {.read = hp_read_at_fd, .ctx = &fd};
    uint64_t next = from;
    int rc = 0;
    for (size_t i = 0; i < w->nruns && rc == 0; i++) {
        in_run *run = &w->runs[i];
        if (fd < 0 || fd_id != run->seg_id) {
            hp_fs_close(fd);
            char name[HP_SEG_NAME_MAX];
            hp_seg_name(name, run->seg_id);
            rc = hp_fs_open_regular(w->dirfd, name, O_RDONLY, &fd);
            if (rc == 1) {
                /* Replaced since the scan by something that is not a file. */
                w->rep->corrupt_frames++;
                w->rep->corrupt_bytes += run->r.end - run->r.off;
                rc = 0;
                continue;
            }
            if (rc < 0) {
                break;
            }
            fd_id = run->seg_id;
            win.buf.len = 0;
            win.off = 0;
        }
        uint64_t off = run->r.off;
        while (off < run->r.end && rc == 0) {
            /* The consumer's reading rules (hp_run_read_frame): what it
             * skips as damaged is counted here, the rest visited. */
            hp_frame_hdr h;
            uint64_t skipped = 0;
            rc = hp_run_read_frame(&win, &off, run->r.end, w->max_raw, run->r.first_seq,
                                   run->r.last_seq, &dec, &raw, &h, &skipped);
            if (rc == 1) {
                w->rep->corrupt_frames++;
                w->rep->corrupt_bytes += skipped;
                rc = 0;
                continue;
            }
            if (rc < 0) {
                break;
            }
            w->rep->frames++;
            w->rep->records += h.count;
            size_t pos = 0;
            for (uint64_t seq = h.first_seq; seq < h.first_seq + h.count; seq++) {
                const uint8_t *rec;
                size_t len;
                if (hp_rec_next(raw.data, raw.len, &pos, &rec, &len) != 0) {
                    break; /* decode checked the layout */
                }
                if (fn == NULL || seq < next) {
                    continue;
                }
                next = seq + 1;
                hopper_record hr = {.data = rec, .len = len, .seq = seq};
                w->rep->visited++;
                rc = fn(ctx, &hr);
                if (rc < 0) {
                    break;
                }
                rc = 0;
            }
        }
    }
    hp_fs_close(fd);
    hp_buf_free(&win.buf);
    hp_buf_free(&raw);
    hp_dec_free(&dec);
    return rc;
}

/* The sequence numbers no frame holds, and the checkpoint's read position
 * beyond the data, by the rules recovery applies (FORMAT.md §5). The runs
 * are sorted by first_seq. */
static void
find_gaps(walk *w, uint64_t read_next)
{
    hopper_inspect_report *rep = w->rep;
    hp_seqgaps g;
    hp_seqgaps_init(&g, rep->ack_next);
    uint64_t data_end = rep->ack_next;
    for (size_t i = 0; i < w->nruns; i++) {
        uint64_t gap[2];
        hp_seqgaps_add(&g, w->runs[i].r.first_seq, w->runs[i].r.last_seq, gap);
        if (w->runs[i].r.last_seq + 1 > data_end) {
            data_end = w->runs[i].r.last_seq + 1;
        }
    }
    rep->missing_records = g.missing;
    rep->missing_ranges = g.ranges;
    rep->missing_first = g.first[0];
    rep->missing_first_end = g.first[1];
    rep->checkpoint_clamped = read_next > data_end ? read_next - data_end : 0;
}

static int
inspect_walk(const char *dir, const char *name, unsigned flags, hopper_inspect_fn fn, void *ctx,
             hopper_inspect_report *rep)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/%s", dir, name);
    HP_ENSURE(n > 0 && (size_t)n < sizeof(path), -ENAMETOOLONG);
    int dirfd = hp_fs_open(path, O_RDONLY | O_DIRECTORY, 0);
    if (dirfd < 0) {
        return dirfd;
    }
    walk w = {.dirfd = dirfd, .max_raw = HP_FRAME_MAX_RAW, .rep = rep};
    hp_ids ids = {0};
    /* O_NONBLOCK: a FIFO named LOCK must not block the walk. */
    int lockfd = hp_fs_openat(dirfd, HP_LOCK_NAME, O_RDONLY | O_NONBLOCK, 0);
    int rc = 0;
    if (lockfd >= 0) {
        rc = hp_fs_trylock(lockfd, 0);
        if (rc < 0) {
            goto out;
        }
    }
    uint64_t read_next;
    rc = hp_ckpt_read(dirfd, &rep->ack_next, &read_next);
    if (rc < 0) {
        goto out;
    }
    rep->checkpoint_ok = rc == 0;
    rc = hp_fs_dir_each(dirfd, collect_id, &ids);
    hp_ids_sort(&ids);
    for (size_t i = 0; i < ids.n && rc == 0; i++) {
        rc = scan_segment(&w, ids.v[i], i + 1 == ids.n);
    }
    if (rc == 0) {
        if (w.nruns > 1) {
            qsort(w.runs, w.nruns, sizeof(*w.runs), cmp_run);
        }
        find_gaps(&w, read_next);
        rc = visit(&w, (flags & HOPPER_INSPECT_ACKED) ? 0 : rep->ack_next, fn, ctx);
    }
out:
    free(ids.v);
    free(w.runs);
    hp_idx_free(&w.idx);
    hp_fs_close(lockfd);
    hp_fs_close(dirfd);
    return rc;
}

/* The first version of the report ended with checkpoint_ok: callers built
 * with it pass this struct_size and get the fields it has. */
#define REPORT_V1_SIZE offsetof(hopper_inspect_report, missing_records)

int
hopper_inspect(const char *dir, const char *name, unsigned flags, hopper_inspect_fn fn,
               void *ctx, hopper_inspect_report *rep)
{
    HP_ENSURE(rep != NULL && rep->struct_size >= REPORT_V1_SIZE, -EINVAL);
    size_t sz = rep->struct_size;
    hopper_inspect_report full;
    memset(&full, 0, sizeof(full));
    full.struct_size = sizeof(full);
    int rc = -EINVAL;
    if (dir != NULL && name != NULL && strchr(name, '/') == NULL) {
        rc = inspect_walk(dir, name, flags, fn, ctx, &full);
    }
    memcpy(rep, &full, sz < sizeof(full) ? sz : sizeof(full));
    rep->struct_size = sz;
    return rc;
}
