/* SPDX-License-Identifier: MIT */
/* Segment index files, FORMAT.md §2.1: "<id>.hidx", written when a
 * segment is sealed, so that open can find a sealed segment's runs of
 * sequence numbers without reading the segment. Encoding, decoding and the
 * cross-check against the segment it describes: an index that disagrees
 * with its segment is not used (the segment is scanned instead,
 * recover.c). Declarations: segment.h. */
#include "segment.h"

#include "crc32c.h"
#include "fsio.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
hp_seg_idx_name(char out[HP_SEG_NAME_MAX], uint64_t id)
{
    snprintf(out, HP_SEG_NAME_MAX, "%016" PRIx64 ".hidx", id);
}

int
hp_idx_add(hp_segidx *x, uint64_t off, uint64_t bytes, uint64_t first_seq, uint32_t count,
           uint64_t raw, uint64_t ts_ms)
{
    x->records += count;
    x->raw += raw;
    if (off + bytes > x->size) {
        x->size = off + bytes;
    }
    if (count == 0) {
        return 0;
    }
    uint64_t last = first_seq + count - 1;
    if (x->n > 0) {
        hp_idx_run *r = &x->runs[x->n - 1];
        if (r->end == off && r->last_seq + 1 == first_seq) {
            r->end = off + bytes;
            r->last_seq = last;
            return 0;
        }
    }
    if (x->n == x->cap) {
        size_t nc = x->cap ? x->cap * 2 : 8;
        hp_idx_run *nr = realloc(x->runs, nc * sizeof(*nr));
        if (nr == NULL) {
            return -ENOMEM;
        }
        x->runs = nr;
        x->cap = nc;
    }
    x->runs[x->n++] = (hp_idx_run){.off = off, .end = off + bytes, .first_seq = first_seq,
                                   .last_seq = last, .ts_ms = ts_ms};
    return 0;
}

int
hp_idx_encode(const hp_segidx *x, hp_buf *out)
{
    out->len = 0;
    size_t total = HP_IDX_HDR + x->n * HP_IDX_RUN + 4;
    HP_GUARD(hp_buf_reserve(out, total));
    uint8_t *p = out->data;
    hp_put_u32(p, HP_IDX_MAGIC);
    hp_put_u16(p + 4, HP_IDX_VERSION);
    hp_put_u16(p + 6, HP_IDX_HDR);
    hp_put_u64(p + 8, x->id);
    hp_put_u64(p + 16, x->size);
    hp_put_u64(p + 24, x->records);
    hp_put_u64(p + 32, x->raw);
    hp_put_u32(p + 40, (uint32_t)x->n);
    hp_put_u32(p + 44, 0);
    uint8_t *r = p + HP_IDX_HDR;
    for (size_t i = 0; i < x->n; i++, r += HP_IDX_RUN) {
        hp_put_u64(r, x->runs[i].off);
        hp_put_u64(r + 8, x->runs[i].end);
        hp_put_u64(r + 16, x->runs[i].first_seq);
        hp_put_u64(r + 24, x->runs[i].last_seq);
        hp_put_u64(r + 32, x->runs[i].ts_ms);
    }
    hp_put_u32(r, hp_crc32c_extend(0, p, total - 4));
    out->len = total;
    return 0;
}

int
hp_idx_decode(const uint8_t *p, size_t n, uint64_t id, uint64_t size, hp_segidx *x)
{
    HP_ENSURE(n >= HP_IDX_HDR + 4, HOPPER_ECORRUPT);
    HP_ENSURE(hp_get_u32(p) == HP_IDX_MAGIC, HOPPER_ECORRUPT);
    HP_ENSURE(hp_get_u16(p + 4) == HP_IDX_VERSION, HOPPER_EVERSION);
    HP_ENSURE(hp_get_u16(p + 6) == HP_IDX_HDR, HOPPER_ECORRUPT);
    uint32_t nruns = hp_get_u32(p + 40);
    HP_ENSURE(nruns <= HP_IDX_MAX_RUNS, HOPPER_ECORRUPT);
    HP_ENSURE(n == HP_IDX_HDR + (size_t)nruns * HP_IDX_RUN + 4, HOPPER_ECORRUPT);
    HP_ENSURE(hp_get_u32(p + n - 4) == hp_crc32c_extend(0, p, n - 4), HOPPER_ECORRUPT);
    HP_ENSURE(hp_get_u64(p + 8) == id && hp_get_u64(p + 16) == size, HOPPER_ECORRUPT);
    HP_ENSURE(hp_get_u32(p + 44) == 0, HOPPER_ECORRUPT);
    hp_idx_run *runs = NULL;
    if (nruns > 0) {
        runs = malloc(nruns * sizeof(*runs));
        HP_ENSURE(runs != NULL, -ENOMEM);
    }
    uint64_t prev_end = HP_SEG_HDR;
    const uint8_t *r = p + HP_IDX_HDR;
    for (uint32_t i = 0; i < nruns; i++, r += HP_IDX_RUN) {
        hp_idx_run v = {.off = hp_get_u64(r), .end = hp_get_u64(r + 8),
                        .first_seq = hp_get_u64(r + 16), .last_seq = hp_get_u64(r + 24),
                        .ts_ms = hp_get_u64(r + 32)};
        /* Runs are disjoint, in file order, inside the segment body. */
        if (v.off < prev_end || v.end <= v.off || v.end > size || v.last_seq < v.first_seq ||
            v.last_seq >= HP_SEQ_LIMIT) {
            free(runs);
            return HOPPER_ECORRUPT;
        }
        prev_end = v.end;
        runs[i] = v;
    }
    free(x->runs);
    x->runs = runs;
    x->n = nruns;
    x->cap = nruns;
    x->id = id;
    x->size = size;
    x->records = hp_get_u64(p + 24);
    x->raw = hp_get_u64(p + 32);
    return 0;
}

void
hp_idx_free(hp_segidx *x)
{
    free(x->runs);
    memset(x, 0, sizeof(*x));
}

/* Cross-checking an index (FORMAT.md §2.1) must not cost what the index
 * saves, a read of the segment: per run it reads the first frame's header
 * and looks for the last frame in the run's last TAIL_SMALL (then TAIL_LARGE)
 * bytes, where a frame header ending exactly at the run's end must hold the
 * run's last seq. Only when that finds nothing (a last frame larger than the
 * window, or damage) are the run's headers walked from the start, in chunks
 * (a 4 KiB read per large frame, 64 KiB reads shared by small ones). */
#define TAIL_SMALL (64u * 1024u)
#define TAIL_LARGE (1024u * 1024u)
#define WALK_CHUNK_SMALL 4096u
#define WALK_CHUNK_LARGE (64u * 1024u)

typedef struct idx_check {
    hp_read_at_fn rd;
    void *ctx;
    uint64_t max_raw;
    hp_buf buf;
} idx_check;

/* Point *p at the n bytes at off (fewer at the end of the file: *got). */
static int
check_read(idx_check *c, uint64_t off, size_t n, const uint8_t **p, size_t *got)
{
    c->buf.len = 0;
    HP_GUARD(hp_buf_reserve(&c->buf, n));
    ssize_t r = c->rd(c->ctx, c->buf.data, n, off);
    if (r < 0) {
        return (int)r;
    }
    *p = c->buf.data;
    *got = (size_t)r;
    return 0;
}

/* Walk every frame header of run r: back to back from off to exactly end,
 * consecutive seqs from first_seq to exactly last_seq. */
static int
walk_run(idx_check *c, const hp_idx_run *r)
{
    uint64_t off = r->off;
    uint64_t seq = r->first_seq;
    uint64_t c_off = 0;
    size_t c_len = 0;
    const uint8_t *chunk = NULL;
    uint64_t last_frame = 0;
    while (off < r->end) {
        if (chunk == NULL || off < c_off || off - c_off + HP_FRAME_HDR > c_len) {
            size_t want = last_frame < WALK_CHUNK_LARGE / 4 ? WALK_CHUNK_LARGE : WALK_CHUNK_SMALL;
            HP_GUARD(check_read(c, off, want, &chunk, &c_len));
            c_off = off;
        }
        hp_frame_hdr h;
        HP_ENSURE(hp_rec_parse_header(chunk + (off - c_off), c_len - (size_t)(off - c_off),
                                      c->max_raw, &h) == 0,
                  HOPPER_ECORRUPT);
        HP_ENSURE(h.count > 0 && h.first_seq == seq, HOPPER_ECORRUPT);
        seq += h.count;
        last_frame = HP_FRAME_HDR + (uint64_t)h.stored_len;
        off += last_frame;
    }
    HP_ENSURE(off == r->end && seq - 1 == r->last_seq, HOPPER_ECORRUPT);
    return 0;
}

/* Is there, in the last `window` bytes of run r after `from`, a frame header
 * ending exactly at the run's end and holding its last seq? 0 yes, 1 no. */
static int
find_last_frame(idx_check *c, const hp_idx_run *r, uint64_t from, uint64_t window)
{
    uint64_t start = r->end - from > window ? r->end - window : from;
    const uint8_t *p = NULL;
    size_t got = 0;
    HP_GUARD(check_read(c, start, (size_t)(r->end - start), &p, &got));
    uint8_t magic[4];
    hp_put_u32(magic, HP_FRAME_MAGIC);
    for (size_t i = 0; i + HP_FRAME_HDR <= got; i++) {
        if (memcmp(p + i, magic, 4) != 0) {
            continue;
        }
        hp_frame_hdr h;
        if (hp_rec_parse_header(p + i, got - i, c->max_raw, &h) == 0 && h.count > 0 &&
            start + i + HP_FRAME_HDR + h.stored_len == r->end &&
            h.first_seq + h.count - 1 == r->last_seq) {
            return 0;
        }
    }
    return 1;
}

static int
check_run(idx_check *c, const hp_idx_run *r)
{
    const uint8_t *p = NULL;
    size_t got = 0;
    HP_GUARD(check_read(c, r->off, HP_FRAME_HDR, &p, &got));
    hp_frame_hdr h;
    HP_ENSURE(hp_rec_parse_header(p, got, c->max_raw, &h) == 0, HOPPER_ECORRUPT);
    HP_ENSURE(h.count > 0 && h.first_seq == r->first_seq && h.ts_ms == r->ts_ms,
              HOPPER_ECORRUPT);
    uint64_t first_end = r->off + HP_FRAME_HDR + h.stored_len;
    HP_ENSURE(first_end <= r->end, HOPPER_ECORRUPT);
    if (first_end == r->end) {
        return h.first_seq + h.count - 1 == r->last_seq ? 0 : HOPPER_ECORRUPT;
    }
    int rc = find_last_frame(c, r, first_end, TAIL_SMALL);
    if (rc == 1 && r->end - first_end > TAIL_SMALL) {
        rc = find_last_frame(c, r, first_end, TAIL_LARGE);
    }
    return rc == 1 ? walk_run(c, r) : rc;
}

int
hp_idx_verify(hp_read_at_fn rd, void *ctx, const hp_segidx *x, uint64_t max_raw)
{
    idx_check c = {.rd = rd, .ctx = ctx, .max_raw = max_raw};
    uint64_t off = HP_SEG_HDR;
    uint64_t records = 0;
    int rc = 0;
    for (size_t i = 0; i < x->n && rc == 0; i++) {
        const hp_idx_run *r = &x->runs[i];
        if (r->off != off) {
            rc = HOPPER_ECORRUPT; /* the runs tile the body */
            break;
        }
        rc = check_run(&c, r);
        records += r->last_seq - r->first_seq + 1;
        off = r->end;
    }
    hp_buf_free(&c.buf);
    if (rc == 0 && (off != x->size || records != x->records)) {
        rc = HOPPER_ECORRUPT; /* the records of a run are its seqs */
    }
    return rc;
}

int
hp_idx_load(int dirfd, uint64_t id, int seg_fd, uint64_t size, uint64_t max_raw, hp_segidx *x)
{
    char name[HP_SEG_NAME_MAX];
    hp_seg_idx_name(name, id);
    int fd;
    int rc = hp_fs_open_regular(dirfd, name, O_RDONLY, &fd);
    if (rc == -ENOENT || rc == 1) {
        return 0; /* none, or not a file of ours (FORMAT.md §1) */
    }
    if (rc < 0) {
        return rc;
    }
    uint8_t buf[HP_IDX_RESERVE + 1]; /* one byte more, to tell a longer file */
    ssize_t n = hp_fs_pread_full(fd, buf, sizeof(buf), 0);
    hp_fs_close(fd);
    if (n < 0) {
        return (int)n;
    }
    if ((size_t)n > HP_IDX_RESERVE) {
        return HOPPER_ECORRUPT; /* larger than any index we write */
    }
    rc = hp_idx_decode(buf, (size_t)n, id, size, x);
    if (rc == 0) {
        rc = hp_idx_verify(hp_read_at_fd, &seg_fd, x, max_raw);
    }
    if (rc == -ENOMEM || (rc < 0 && rc != HOPPER_ECORRUPT && rc != HOPPER_EVERSION)) {
        return rc;
    }
    return rc == 0 ? 1 : HOPPER_ECORRUPT;
}
