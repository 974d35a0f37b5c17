/* SPDX-License-Identifier: MIT */
/* Segment files, FORMAT.md §2 (header) and §5 (recovery scan); the
 * checkpoint codec (§4), sequence gaps and id lists. The index (§2.1):
 * segindex.c.
 *
 * Creation order (crash safety): write the header to "<name>.tmp" created
 * O_EXCL, fsync it, rename it to "<name>", fsync the directory. A crash leaves
 * either no segment or a complete header; stale temp files are removed at open.
 *
 * The scan trusts nothing: a frame is accepted only when its header is sane
 * and (with verify_crc) its CRC matches. After damage it resynchronises on the
 * next offset that holds a whole valid frame, so the records before and after
 * a damaged frame are kept. */
#include "segment.h"

#include "crc32c.h"
#include "fsio.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#define WINDOW_CHUNK (1u << 20)

void
hp_seg_name(char out[HP_SEG_NAME_MAX], uint64_t id)
{
    snprintf(out, HP_SEG_NAME_MAX, "%016" PRIx64 ".hseg", id);
}

int
hp_seg_parse_name(const char *name, uint64_t *id)
{
    if (strlen(name) != 21 || strcmp(name + 16, ".hseg") != 0) {
        return -1;
    }
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = name[i];
        int d;
        if (c >= '0' && c <= '9') {
            d = c - '0';
        } else if (c >= 'a' && c <= 'f') {
            d = c - 'a' + 10;
        } else {
            return -1;
        }
        v = (v << 4) | (uint64_t)d;
    }
    *id = v;
    return 0;
}

/* The segment header (§2) and a checkpoint slot (§4) share one layout: magic
 * u32, version u16, size u16 (32), two u64, a u32 (flags 0 in the header,
 * the generation in a version-2 slot), CRC-32C u32 of the 28 bytes before it. */
_Static_assert(HP_SEG_HDR == 32 && HP_CKPT_SIZE == 32, "FORMAT.md §2 and §4: 32 bytes");

static void
put_block32(uint8_t out[32], uint32_t magic, uint16_t version, uint64_t a, uint64_t b,
            uint32_t word)
{
    hp_put_u32(out, magic);
    hp_put_u16(out + 4, version);
    hp_put_u16(out + 6, 32);
    hp_put_u64(out + 8, a);
    hp_put_u64(out + 16, b);
    hp_put_u32(out + 24, word);
    hp_put_u32(out + 28, hp_crc32c_extend(0, out, 28));
}

void
hp_seg_header_encode(uint8_t out[HP_SEG_HDR], uint64_t id, uint64_t first_seq)
{
    put_block32(out, HP_SEG_MAGIC, HP_SEG_VERSION, id, first_seq, 0);
}

int
hp_seg_header_decode(const uint8_t *p, size_t n, uint64_t *id, uint64_t *first_seq)
{
    HP_ENSURE(n >= HP_SEG_HDR, HOPPER_ENEEDMORE);
    HP_ENSURE(hp_get_u32(p) == HP_SEG_MAGIC, HOPPER_ECORRUPT);
    HP_ENSURE(hp_get_u32(p + 28) == hp_crc32c_extend(0, p, 28), HOPPER_ECORRUPT);
    HP_ENSURE(hp_get_u16(p + 4) == HP_SEG_VERSION, HOPPER_EVERSION);
    HP_ENSURE(hp_get_u16(p + 6) == HP_SEG_HDR, HOPPER_ECORRUPT);
    HP_ENSURE(hp_get_u32(p + 24) == 0, HOPPER_EVERSION);
    *id = hp_get_u64(p + 8);
    *first_seq = hp_get_u64(p + 16);
    return 0;
}

int
hp_seg_check_header(int fd, uint64_t id, uint64_t *size)
{
    HP_GUARD(hp_fs_size(fd, size));
    uint8_t hdr[HP_SEG_HDR];
    ssize_t r = hp_fs_pread_full(fd, hdr, sizeof(hdr), 0);
    if (r < 0) {
        return (int)r;
    }
    uint64_t hid;
    uint64_t hfirst;
    HP_GUARD(hp_seg_header_decode(hdr, (size_t)r, &hid, &hfirst));
    return hid == id ? 0 : HOPPER_ECORRUPT;
}

int
hp_seg_create(int dirfd, uint64_t id, uint64_t first_seq, int *fd_out)
{
    char name[HP_SEG_NAME_MAX];
    char tmp[HP_SEG_NAME_MAX + 8];
    *fd_out = -1;
    hp_seg_name(name, id);
    snprintf(tmp, sizeof(tmp), "%s.tmp", name);
    hp_fs_discard(dirfd, tmp);
    int fd = hp_fs_openat(dirfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_APPEND, 0600);
    if (fd < 0) {
        return fd;
    }
    uint8_t hdr[HP_SEG_HDR];
    hp_seg_header_encode(hdr, id, first_seq);
    int rc = hp_fs_write_all(fd, hdr, sizeof(hdr));
    if (rc == 0) {
        rc = hp_fs_fdatasync(fd);
    }
    if (rc == 0) {
        rc = hp_fs_renameat(dirfd, tmp, name);
    }
    if (rc == 0) {
        rc = hp_fs_fsync_dir(dirfd);
        if (rc < 0) {
            hp_fs_discard(dirfd, name);
        }
    } else {
        hp_fs_discard(dirfd, tmp);
    }
    if (rc < 0) {
        hp_fs_close(fd);
        return rc;
    }
    *fd_out = fd;
    return 0;
}

ssize_t
hp_read_at_fd(void *ctx, void *buf, size_t n, uint64_t off)
{
    return hp_fs_pread_full(*(int *)ctx, buf, n, off);
}

int
hp_win_get(hp_window *w, uint64_t off, size_t n, const uint8_t **p)
{
    HP_ENSURE(off <= w->size && n <= w->size - off, HOPPER_ENEEDMORE);
    if (off >= w->off && off + n <= w->off + w->buf.len) {
        *p = w->buf.data + (off - w->off);
        return 0;
    }
    size_t want = n > WINDOW_CHUNK ? n : WINDOW_CHUNK;
    if (want > w->size - off) {
        want = (size_t)(w->size - off);
    }
    w->buf.len = 0;
    HP_GUARD(hp_buf_reserve(&w->buf, want));
    ssize_t r = w->read(w->ctx, w->buf.data, want, off);
    if (r < 0) {
        return (int)r;
    }
    w->off = off;
    w->buf.len = (size_t)r;
    /* The file shrank under us (or the read came up short): not a frame. */
    HP_ENSURE((size_t)r >= n, HOPPER_ENEEDMORE);
    *p = w->buf.data;
    return 0;
}

int
hp_seg_frame_at(hp_window *w, uint64_t off, uint64_t max_raw, int verify_crc, hp_frame_hdr *h)
{
    const uint8_t *p = NULL;
    HP_GUARD(hp_win_get(w, off, HP_FRAME_HDR, &p));
    HP_GUARD(hp_rec_parse_header(p, HP_FRAME_HDR, max_raw, h));
    size_t total = HP_FRAME_HDR + (size_t)h->stored_len;
    if (!verify_crc) {
        HP_ENSURE(off + total <= w->size, HOPPER_ENEEDMORE);
        return 0;
    }
    HP_GUARD(hp_win_get(w, off, total, &p));
    return hp_rec_check(p, total, h);
}

int
hp_seg_resync(hp_window *w, uint64_t from, uint64_t max_raw, uint64_t *found, hp_frame_hdr *h)
{
    uint8_t magic[4];
    hp_put_u32(magic, HP_FRAME_MAGIC);
    uint64_t off = from;
    while (off + HP_FRAME_HDR <= w->size) {
        size_t avail = (size_t)(w->size - off < WINDOW_CHUNK ? w->size - off : WINDOW_CHUNK);
        const uint8_t *p;
        HP_GUARD(hp_win_get(w, off, avail, &p));
        /* Copy the chunk position: hp_seg_frame_at may move the window. */
        size_t i = 0;
        uint64_t next_chunk = off + (avail > 3 ? avail - 3 : 1);
        while (i + 4 <= avail) {
            const uint8_t *m = memchr(p + i, magic[0], avail - i - 3);
            if (m == NULL) {
                break;
            }
            i = (size_t)(m - p);
            if (memcmp(m, magic, 4) == 0) {
                uint64_t cand = off + i;
                int rc = hp_seg_frame_at(w, cand, max_raw, 1, h);
                if (rc == 0) {
                    *found = cand;
                    return 0;
                }
                if (rc != HOPPER_ECORRUPT && rc != HOPPER_ENEEDMORE) {
                    return rc;
                }
                /* The window may have moved; fetch the chunk again. */
                HP_GUARD(hp_win_get(w, off, avail, &p));
            }
            i++;
        }
        off = next_chunk;
    }
    return 1;
}

int
hp_run_read_frame(hp_window *w, uint64_t *off, uint64_t end, uint64_t max_raw,
                  uint64_t first_seq, uint64_t last_seq, hp_decoder *dec, hp_buf *raw,
                  hp_frame_hdr *h, uint64_t *skipped)
{
    w->size = end;
    int rc = hp_seg_frame_at(w, *off, max_raw, 0, h);
    if (rc == 0) {
        const uint8_t *p;
        size_t total = HP_FRAME_HDR + (size_t)h->stored_len;
        size_t used = 0;
        rc = hp_win_get(w, *off, total, &p);
        if (rc == 0) {
            rc = hp_rec_decode(dec, p, total, max_raw, h, raw, &used);
        }
        if (rc == 0 && !hp_run_holds(first_seq, last_seq, h)) {
            rc = HOPPER_EVERSION; /* not the run's seqs (an index lied) */
        }
        if (rc == 0) {
            *off += used;
            return 0;
        }
        if (rc == HOPPER_EVERSION) {
            /* Passes its CRC but cannot be interpreted, or its seqs are
             * not its run's: skip exactly this frame. */
            *skipped = total;
            *off += total;
            return 1;
        }
    }
    if (rc != HOPPER_ECORRUPT && rc != HOPPER_ENEEDMORE) {
        return rc;
    }
    uint64_t found = end;
    hp_frame_hdr next;
    rc = hp_seg_resync(w, *off + 1, max_raw, &found, &next);
    if (rc < 0) {
        return rc;
    }
    if (rc == 1) {
        found = end;
    }
    *skipped = found - *off;
    *off = found;
    return 1;
}

int
hp_seg_scan(hp_window *w, uint64_t max_raw, int verify_crc, const hp_scan_ops *ops, void *ctx,
            uint64_t *valid_end)
{
    uint64_t off = HP_SEG_HDR;
    *valid_end = HP_SEG_HDR;
    while (off < w->size) {
        hp_frame_hdr h;
        int rc = hp_seg_frame_at(w, off, max_raw, verify_crc, &h);
        if (rc == 0) {
            HP_GUARD(ops->frame(ctx, off, &h));
            off += HP_FRAME_HDR + h.stored_len;
            *valid_end = off;
            continue;
        }
        if (rc != HOPPER_ECORRUPT && rc != HOPPER_ENEEDMORE) {
            return rc;
        }
        uint64_t found;
        rc = hp_seg_resync(w, off + 1, max_raw, &found, &h);
        if (rc < 0) {
            return rc;
        }
        if (rc == 1) {
            return 0; /* damage runs to the end: the torn tail */
        }
        if (ops->skipped) {
            ops->skipped(ctx, off, found - off);
        }
        off = found;
    }
    return 0;
}

/* ---- checkpoint, FORMAT.md §4 ------------------------------------------ */

void
hp_ckpt_encode(uint8_t out[HP_CKPT_SIZE], uint64_t ack_next, uint64_t read_next, uint32_t gen)
{
    put_block32(out, HP_CKPT_MAGIC, HP_CKPT_VERSION, ack_next, read_next, gen);
}

void
hp_ckpt_encode_v1(uint8_t out[HP_CKPT_SIZE], uint64_t ack_next, uint64_t read_next)
{
    put_block32(out, HP_CKPT_MAGIC, HP_CKPT_VERSION_1, ack_next, read_next, 0);
}

int
hp_ckpt_decode(const uint8_t *p, size_t n, unsigned version, uint64_t *ack_next,
               uint64_t *read_next, uint32_t *gen)
{
    HP_ENSURE(n >= HP_CKPT_SIZE && hp_get_u32(p) == HP_CKPT_MAGIC, HOPPER_ECORRUPT);
    HP_ENSURE(hp_get_u16(p + 4) == version && hp_get_u16(p + 6) == HP_CKPT_SIZE,
              HOPPER_ECORRUPT);
    HP_ENSURE(hp_get_u32(p + 28) == hp_crc32c_extend(0, p, 28), HOPPER_ECORRUPT);
    uint64_t ack = hp_get_u64(p + 8);
    uint64_t read = hp_get_u64(p + 16);
    /* Positions past the sequence space were never written by us. */
    HP_ENSURE(ack <= HP_SEQ_LIMIT && read <= HP_SEQ_LIMIT, HOPPER_ECORRUPT);
    *ack_next = ack;
    *read_next = read;
    /* Version 1 calls the field reserved; its writers left it 0. */
    *gen = version == HP_CKPT_VERSION_1 ? 0 : hp_get_u32(p + 24);
    return 0;
}

/* The two slots of a version-2 file (s1 NULL: a version-1 file of one). */
static int
ckpt_pick(const uint8_t *s0, const uint8_t *s1, hp_ckpt *c)
{
    memset(c, 0, sizeof(*c));
    if (s1 == NULL) {
        HP_GUARD(hp_ckpt_decode(s0, HP_CKPT_SIZE, HP_CKPT_VERSION_1, &c->ack_next,
                                &c->read_next, &c->gen));
        c->layout = 1;
        return 0;
    }
    hp_ckpt s[2];
    int ok[2];
    for (int i = 0; i < 2; i++) {
        ok[i] = hp_ckpt_decode(i == 0 ? s0 : s1, HP_CKPT_SIZE, HP_CKPT_VERSION, &s[i].ack_next,
                               &s[i].read_next, &s[i].gen) == 0;
    }
    HP_ENSURE(ok[0] || ok[1], HOPPER_ECORRUPT);
    /* Generations compare as serial numbers (RFC 1982), so they may wrap. */
    int use = !ok[0] || (ok[1] && (uint32_t)(s[1].gen - s[0].gen) - 1u < 0x7fffffffu);
    *c = s[use];
    c->slot = use;
    c->layout = 2;
    return 0;
}

int
hp_ckpt_parse(const uint8_t *p, size_t n, hp_ckpt *c)
{
    memset(c, 0, sizeof(*c));
    if (n == HP_CKPT_SIZE) {
        return ckpt_pick(p, NULL, c);
    }
    HP_ENSURE(n == HP_CKPT_FILE_SIZE, HOPPER_ECORRUPT);
    return ckpt_pick(p, p + HP_CKPT_SLOT_STRIDE, c);
}

int
hp_ckpt_read_fd(int fd, hp_ckpt *c)
{
    memset(c, 0, sizeof(*c));
    uint64_t size;
    HP_GUARD(hp_fs_size(fd, &size));
    if (size != HP_CKPT_SIZE && size != HP_CKPT_FILE_SIZE) {
        return 1;
    }
    uint8_t b[2 * HP_CKPT_SIZE];
    for (int i = 0; i < (size == HP_CKPT_SIZE ? 1 : 2); i++) {
        ssize_t r = hp_fs_pread_full(fd, b + i * HP_CKPT_SIZE, HP_CKPT_SIZE,
                                     (uint64_t)i * HP_CKPT_SLOT_STRIDE);
        if (r < 0) {
            return (int)r;
        }
        if (r != HP_CKPT_SIZE) {
            return 1; /* shrank under us */
        }
    }
    int rc = ckpt_pick(b, size == HP_CKPT_SIZE ? NULL : b + HP_CKPT_SIZE, c);
    return rc == 0 ? 0 : 1;
}

int
hp_ckpt_read(int dirfd, uint64_t *ack_next, uint64_t *read_next)
{
    *ack_next = 0;
    *read_next = 0;
    int fd;
    int rc = hp_fs_open_regular(dirfd, HP_CKPT_NAME, O_RDONLY, &fd);
    if (rc == -ENOENT || rc == 1) {
        return 1; /* none, or not a file (a FIFO would block the read) */
    }
    if (rc < 0) {
        return rc;
    }
    hp_ckpt c;
    rc = hp_ckpt_read_fd(fd, &c);
    hp_fs_close(fd);
    *ack_next = c.ack_next;
    *read_next = c.read_next;
    return rc;
}

/* ---- sequence gaps, FORMAT.md §5 --------------------------------------- */

void
hp_seqgaps_init(hp_seqgaps *g, uint64_t from)
{
    memset(g, 0, sizeof(*g));
    g->covered = from;
}

void
hp_seqgaps_add(hp_seqgaps *g, uint64_t first_seq, uint64_t last_seq, uint64_t gap[2])
{
    gap[0] = gap[1] = 0;
    if (first_seq > g->covered) {
        gap[0] = g->covered;
        gap[1] = first_seq;
        if (g->ranges == 0) {
            g->first[0] = gap[0];
            g->first[1] = gap[1];
        }
        g->missing += first_seq - g->covered;
        g->ranges++;
    }
    if (last_seq >= g->covered) {
        g->covered = last_seq + 1; /* last_seq < 2^63: no wrap */
    }
}

/* ---- segment id lists ------------------------------------------------- */

int
hp_ids_push(hp_ids *a, uint64_t id)
{
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 16;
        uint64_t *nv = realloc(a->v, nc * sizeof(*nv));
        if (nv == NULL) {
            return -ENOMEM;
        }
        a->v = nv;
        a->cap = nc;
    }
    a->v[a->n++] = id;
    return 0;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void
hp_ids_sort(hp_ids *a)
{
    if (a->n > 1) {
        qsort(a->v, a->n, sizeof(*a->v), cmp_u64);
    }
}
