/* SPDX-License-Identifier: MIT */
/* The queue-directory builder of fuzz_queue_dir.c (issue 15), shared with
 * census.c, which counts the structures a corpus produces. Header-only, like
 * fuzz_common.h, so each harness stays one translation unit.
 *
 * It turns a compact description into a queue directory whose structures
 * carry CORRECT CRCs: segment headers, frames (with any seqs, flags and
 * lengths, also past the sequence space), indexes (true or lying in one
 * field), a version-1 or version-2 checkpoint (any positions, generations),
 * leftovers (temp files, *.bad, orphan indexes, foreign and non-regular
 * names), and a few raw corruptions on top. Mutations of the description so
 * reach the recovery logic behind the CRCs.
 *
 * Description: byte 0 configures the run (fuzz_queue_dir.c reads it; here
 * only bits 0-1: the checkpoint layout, 0 none, 1 version 2, 2 version 1,
 * 3 version 2 with the newer slot torn). Then ops, one byte each (low 3
 * bits the op, high 5 bits `a`), some followed by argument bytes:
 *   0 SEG      start a new segment (at most QD_MAX_SEGS). Its id is the last
 *              id + 1 + gap, gap = a & 3 (3: the next byte). a & 4: the
 *              header names another id; a & 8: unknown version (CRC right);
 *              a & 16: header first_seq = the next frame's seq (else 0).
 *   1 FRAME    a frame in the current segment (one is started if none):
 *              seq by a & 3: 0 = the cursor (one past the last frame's last
 *              seq), 1 = cursor + (int8) next byte, 2 = 2^63 - next byte
 *              (the top of the sequence space, also past it by a little),
 *              3 = the next 8 bytes (LE); count 1 + (a >> 2) (1..8); next
 *              byte L: record i has (L + 5 i) & 63 bytes, L & 0x80 deflates
 *              (when that is smaller).
 *   2 INDEX    write an index for the current segment when it is finished:
 *              a = 0 the true one, else field a % 8 changed by the (int8)
 *              next byte (or a & 8: set near 2^63 / 2^64): 1 first_seq of a
 *              run, 2 last_seq, 3 off, 4 end, 5 records, 6 size, 7 drop the
 *              last run; re-encoded, so the CRC is right.
 *   3 CKPT     positions: ack_next = seq_ref(a & 3), read_next = ack_next +
 *              next byte (a & 4: minus); a >> 3 = the generation of the slot.
 *              seq_ref: 0 the cursor, 1 next byte, 2 2^63 - next byte,
 *              3 the next 8 bytes.
 *   4 RAW      a & 1 clear: xor the next byte into the current segment at
 *              offset (next 2 bytes, LE) mod its length; set: truncate it
 *              there.
 *   5 LEFTOVER a file that is not a segment of the queue: a % 10 picks
 *              `<id>.hseg.tmp`, `<id>.hidx.tmp`, `checkpoint.tmp`,
 *              `<id>.hseg.bad`, `<id>.hseg.bad.why`, an orphan index
 *              `<id+100>.hidx` (valid CRC; it may meet a segment of that id),
 *              `notes.txt`, and with F = 2^20 (past every segment id): a
 *              directory named `<id+F+50>.hseg`, a symlink `<id+F+60>.hseg`
 *              to the current segment, an empty segment `<id+F+70>.hseg`;
 *              content: next byte n, then n input bytes.
 *   6 JUNK     append next byte n, then n input bytes, to the current
 *              segment (damage between frames; every 'H' made 'h', so junk
 *              never holds a frame the builder did not write).
 *   7 DUP      append a copy of the last frame of the current segment.
 * Every structure is written through the library's encoders (hp_rec_encode,
 * hp_seg_header_encode, hp_idx_encode, hp_ckpt_encode); a frame past the
 * sequence space, which the encoder refuses, is encoded at seq 0 and patched
 * (its CRC recomputed). */
#ifndef HOPPER_FUZZ_QDIR_BUILD_H
#define HOPPER_FUZZ_QDIR_BUILD_H

#include "fuzz_common.h"

#include "buf.h"
#include "crc32c.h"
#include "record.h"
#include "segment.h"

#include <fcntl.h>
#include <inttypes.h>

#define QD_MAX_SEGS 8
#define QD_MAX_FRAMES 64   /* per segment */
#define QD_MAX_RECS 4096   /* written records remembered */
#define QD_TS 1700000000000ull
#define QD_FAR (UINT64_C(1) << 20) /* beyond every segment id the builder makes */

/* A record the builder wrote in a CRC-valid frame: its payload is
 * qd_payload(seq, len). */
typedef struct qd_rec {
    uint64_t seq;
    uint32_t len;
} qd_rec;

typedef struct qd_seg {
    uint64_t id;
    hp_buf b;
    size_t last_frame; /* offset of the last frame, 0 when none */
    int idx_mode;      /* -1 none; 0 true; 1..7 a lie (field); +8: near the top */
    int8_t idx_delta;
} qd_seg;

typedef struct qd_plan {
    int ckpt_layout;   /* byte 0 bits 0-1 */
    int have_ckpt_op;
    uint64_t ack_next; /* as written */
    uint64_t read_next;
    uint32_t gen;
    /* Honest: no lie and no damage anywhere (segment headers right, seqs
     * strictly increasing in id order below 2^62, indexes true, no raw
     * corruption, junk or duplicates): then every record at or after the
     * checkpoint's ack_next must be delivered. */
    int honest;
    qd_rec rec[QD_MAX_RECS];
    size_t nrec;
    int complete; /* 0 when rec[] overflowed: no phantom check */
    uint64_t frames, indexes, leftovers;
} qd_plan;

/* The payload of every record the builder writes: a function of seq and
 * length, so a delivered record can be checked without storing it. */
static inline void
qd_payload(uint8_t *out, uint64_t seq, uint32_t len)
{
    for (uint32_t i = 0; i < len; i++) {
        out[i] = (uint8_t)(seq * 31u + i * 7u + len);
    }
}

typedef struct qd_in {
    const uint8_t *p;
    size_t n;
    size_t pos;
} qd_in;

static inline uint8_t
qd_byte(qd_in *in)
{
    return in->pos < in->n ? in->p[in->pos++] : 0;
}

static inline uint64_t
qd_u64(qd_in *in)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v |= (uint64_t)qd_byte(in) << (8 * i);
    }
    return v;
}

static inline uint64_t
qd_seq_ref(qd_in *in, int how, uint64_t cursor)
{
    switch (how & 3) {
    case 0:
        return cursor;
    case 1:
        return qd_byte(in);
    case 2:
        return HP_SEQ_LIMIT - qd_byte(in);
    default:
        return qd_u64(in);
    }
}

static inline void
qd_oom(void)
{
    fprintf(stderr, "fuzz: out of memory in the directory builder\n");
    abort();
}

static inline void
qd_append(hp_buf *b, const void *p, size_t n)
{
    if (hp_buf_append(b, p, n) < 0) {
        qd_oom();
    }
}

static inline void
qd_recrc(uint8_t *fr)
{
    uint32_t stored = hp_get_u32(fr + 4);
    uint32_t c = hp_crc32c_extend(0, fr, 36);
    c = hp_crc32c_extend(c, fr + HP_FRAME_HDR, stored);
    hp_put_u32(fr + 36, c);
}

/* Append one frame of `count` records from `seq` to s->b. */
static inline void
qd_frame(qd_plan *pl, hp_encoder *enc, hp_encoder *store, qd_seg *s, uint64_t seq, uint32_t count,
         uint8_t L)
{
    uint8_t raw[8 * (4 + 63)];
    size_t rl = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t len = (uint32_t)((L + 5u * i) & 63u);
        hp_put_u32(raw + rl, len);
        qd_payload(raw + rl + 4, seq + i, len);
        rl += 4 + len;
    }
    size_t at = s->b.len;
    int past = seq > HP_SEQ_LIMIT - count; /* also when seq itself is past */
    int rc = hp_rec_encode((L & 0x80) ? enc : store, raw, rl, past ? 0 : seq, count,
                           QD_TS + pl->frames, &s->b);
    if (rc == -ENOMEM) {
        qd_oom();
    }
    FZ_CHECK(rc == 0, "hp_rec_encode: %s", hopper_err_name(rc));
    if (past) {
        hp_put_u64(s->b.data + at + 8, seq);
        qd_recrc(s->b.data + at);
    }
    s->last_frame = at;
    pl->frames++;
    if (past) {
        return; /* no reader may deliver these */
    }
    for (uint32_t i = 0; i < count; i++) {
        if (pl->nrec == QD_MAX_RECS) {
            pl->complete = 0;
            break;
        }
        pl->rec[pl->nrec++] = (qd_rec){.seq = seq + i, .len = (uint32_t)((L + 5u * i) & 63u)};
    }
}

static inline void
qd_seg_start(qd_seg *s, uint64_t id, uint64_t hdr_id, int bad_version, uint64_t first_seq)
{
    uint8_t hdr[HP_SEG_HDR];
    hp_seg_header_encode(hdr, hdr_id, first_seq);
    if (bad_version) {
        hp_put_u16(hdr + 4, HP_SEG_VERSION + 1);
        hp_put_u32(hdr + 28, hp_crc32c_extend(0, hdr, 28));
    }
    s->id = id;
    s->b.len = 0;
    qd_append(&s->b, hdr, sizeof(hdr));
    s->last_frame = 0;
    s->idx_mode = -1;
    s->idx_delta = 0;
}

/* The index of a finished segment: the true one (from its frame headers,
 * walked without CRC checks: the raw damage on top may break them), then
 * the lie asked for. Empty out when the index cannot be built. */
static inline void
qd_index(const qd_seg *s, hp_buf *out)
{
    out->len = 0;
    hp_segidx x = {0};
    x.id = s->id;
    x.size = s->b.len;
    uint64_t off = HP_SEG_HDR;
    while (off + HP_FRAME_HDR <= s->b.len) {
        hp_frame_hdr h;
        if (hp_rec_parse_header(s->b.data + off, s->b.len - off, HP_FRAME_MAX_RAW, &h) != 0 ||
            h.count == 0 || h.first_seq > UINT64_MAX - h.count ||
            (uint64_t)HP_FRAME_HDR + h.stored_len > s->b.len - off) {
            break;
        }
        uint64_t bytes = HP_FRAME_HDR + (uint64_t)h.stored_len;
        if (hp_idx_add(&x, off, bytes, h.first_seq, h.count, h.raw_len, h.ts_ms) < 0) {
            qd_oom();
        }
        off += bytes;
    }
    if (x.n == 0) {
        hp_idx_free(&x);
        return;
    }
    int field = s->idx_mode & 7;
    uint64_t d = (uint64_t)(int64_t)s->idx_delta;
    hp_idx_run *r = &x.runs[(size_t)(uint8_t)s->idx_delta % x.n];
    uint64_t top = (s->idx_mode & 8) ? HP_SEQ_LIMIT - 1 - (uint8_t)s->idx_delta : 0;
    switch (field) {
    case 0:
        break;
    case 1:
        r->first_seq = top ? top : r->first_seq + d;
        break;
    case 2:
        r->last_seq = top ? top : r->last_seq + d;
        break;
    case 3:
        r->off += d;
        break;
    case 4:
        r->end += d;
        break;
    case 5:
        x.records = top ? top : x.records + d;
        break;
    case 6:
        x.size += d;
        break;
    default:
        x.n--;
        break;
    }
    if (hp_idx_encode(&x, out) < 0) {
        qd_oom();
    }
    hp_idx_free(&x);
}

static inline void
qd_write_name(const char *dir, uint64_t id, const char *suffix, const uint8_t *p, size_t n)
{
    char name[HP_SEG_NAME_MAX + 16];
    snprintf(name, sizeof(name), "%016" PRIx64 "%s", id, suffix);
    fz_write_file(dir, name, p, n);
}

static inline void
qd_finish_seg(qd_plan *pl, const char *dir, qd_seg *s)
{
    char name[HP_SEG_NAME_MAX];
    hp_seg_name(name, s->id);
    fz_write_file(dir, name, s->b.data, s->b.len);
    if (s->idx_mode >= 0) {
        hp_buf ib = {0};
        qd_index(s, &ib);
        if (ib.len > 0) {
            hp_seg_idx_name(name, s->id);
            fz_write_file(dir, name, ib.data, ib.len);
            pl->indexes++;
        }
        hp_buf_free(&ib);
    }
}

static inline void
qd_leftover(qd_plan *pl, qd_in *in, const char *dir, uint64_t id, int kind)
{
    size_t n = qd_byte(in);
    if (n > in->n - in->pos) {
        n = in->n - in->pos;
    }
    const uint8_t *p = in->p + in->pos;
    in->pos += n;
    char path[PATH_MAX];
    char name[64];
    pl->leftovers++;
    switch (kind) {
    case 0:
        qd_write_name(dir, id, ".hseg.tmp", p, n);
        break;
    case 1:
        qd_write_name(dir, id, ".hidx.tmp", p, n);
        break;
    case 2:
        fz_write_file(dir, "checkpoint.tmp", p, n);
        break;
    case 3:
        qd_write_name(dir, id, ".hseg.bad", p, n);
        break;
    case 4:
        qd_write_name(dir, id, ".hseg.bad.why", p, n);
        break;
    case 5: { /* an index whose segment does not exist, CRC right */
        hp_segidx x = {0};
        x.id = id + 100;
        x.size = HP_SEG_HDR + HP_FRAME_HDR + 8;
        if (hp_idx_add(&x, HP_SEG_HDR, HP_FRAME_HDR + 8, n, 1, 4, QD_TS) < 0) {
            qd_oom();
        }
        hp_buf ib = {0};
        if (hp_idx_encode(&x, &ib) < 0) {
            qd_oom();
        }
        qd_write_name(dir, id + 100, ".hidx", ib.data, ib.len);
        hp_buf_free(&ib);
        hp_idx_free(&x);
        break;
    }
    case 6:
        fz_write_file(dir, "notes.txt", p, n);
        break;
    case 7: /* far from the ids of the segments (so never one of them) */
        snprintf(name, sizeof(name), "%016" PRIx64 ".hseg", id + QD_FAR + 50);
        fz_join(path, sizeof(path), dir, name);
        (void)mkdir(path, 0700);
        break;
    case 8:
        snprintf(name, sizeof(name), "%016" PRIx64 ".hseg", id + QD_FAR + 60);
        fz_join(path, sizeof(path), dir, name);
        {
            char target[HP_SEG_NAME_MAX];
            hp_seg_name(target, id);
            (void)symlink(target, path);
        }
        break;
    default:
        qd_write_name(dir, id + QD_FAR + 70, ".hseg", NULL, 0);
        break;
    }
}

/* Build the directory `dir` (existing, empty) from data[0..size) into *pl.
 * Returns the position after the ops (always size). */
static inline void
qd_build(const uint8_t *data, size_t size, const char *dir, qd_plan *pl)
{
    memset(pl, 0, offsetof(qd_plan, rec));
    pl->nrec = 0;
    pl->complete = 1;
    pl->honest = 1;
    pl->frames = pl->indexes = pl->leftovers = 0;
    pl->ckpt_layout = size > 0 ? data[0] & 3 : 0;
    qd_in in = {.p = data, .n = size, .pos = 1};
    hp_encoder enc;
    hp_encoder store;
    if (hp_enc_init(&enc, 1) < 0 || hp_enc_init(&store, 0) < 0) {
        qd_oom();
    }
    static qd_seg segs[QD_MAX_SEGS];
    int nseg = 0;
    qd_seg *cur = NULL;
    uint64_t cursor = 0;  /* one past the last seq written */
    uint64_t last_id = 0; /* ids start at 1 */
    uint64_t honest_next = 0;
    size_t nframes = 0;
    while (in.pos < in.n) {
        uint8_t b = qd_byte(&in);
        int a = b >> 3;
        int op = b & 7;
#ifdef FZ_VERBOSE /* triage: -DFZ_VERBOSE prints the ops as they are built */
        fprintf(stderr, "op 0x%02x: %d a=%d (segment %d, cursor %llu)\n", b, op, a, nseg,
                (unsigned long long)cursor);
#endif
        if (op != 0 && op != 5 && cur == NULL) {
            /* Every other op needs a segment: start segment 1. */
            qd_seg_start(&segs[0], 1, 1, 0, 0);
            cur = &segs[0];
            nseg = 1;
            last_id = 1;
            nframes = 0;
        }
        switch (op) {
        case 0: {
            if (nseg == QD_MAX_SEGS) {
                break;
            }
            uint64_t gap = (a & 3) == 3 ? qd_byte(&in) : (uint64_t)(a & 3);
            uint64_t id = last_id + 1 + gap;
            int lie = (a & 4) != 0;
            int badv = (a & 8) != 0;
            if (lie || badv) {
                pl->honest = 0;
            }
            cur = &segs[nseg++];
            qd_seg_start(cur, id, lie ? id + 1 : id, badv, (a & 16) ? cursor : 0);
            last_id = id;
            nframes = 0;
            break;
        }
        case 1: {
            if (nframes == QD_MAX_FRAMES) {
                break;
            }
            uint64_t seq;
            switch (a & 3) {
            case 0:
                seq = cursor;
                break;
            case 1:
                seq = cursor + (uint64_t)(int64_t)(int8_t)qd_byte(&in);
                break;
            case 2:
                seq = HP_SEQ_LIMIT - qd_byte(&in);
                break;
            default:
                seq = qd_u64(&in);
                break;
            }
            uint32_t count = 1u + (uint32_t)(a >> 2);
            uint8_t L = qd_byte(&in);
            if (seq < honest_next || seq >= (UINT64_C(1) << 62)) {
                pl->honest = 0;
            }
            qd_frame(pl, &enc, &store, cur, seq, count, L);
            nframes++;
            if (seq <= UINT64_MAX - count) {
                cursor = seq + count;
                honest_next = cursor > honest_next ? cursor : honest_next;
            } else {
                pl->honest = 0;
            }
            break;
        }
        case 2:
            cur->idx_mode = a & 15;
            if (cur->idx_mode != 0) {
                cur->idx_delta = (int8_t)qd_byte(&in);
                if (cur->idx_mode & 7) {
                    pl->honest = 0;
                } else {
                    cur->idx_mode = 0; /* a & 8 alone: the true index */
                }
            }
            break;
        case 3: {
            pl->have_ckpt_op = 1;
            pl->ack_next = qd_seq_ref(&in, a & 3, cursor);
            uint64_t d = qd_byte(&in);
            pl->read_next = (a & 4) ? pl->ack_next - d : pl->ack_next + d;
            pl->gen = (uint32_t)(a >> 3);
            break;
        }
        case 4: {
            uint32_t off = qd_byte(&in);
            off |= (uint32_t)qd_byte(&in) << 8;
            uint8_t x = qd_byte(&in);
            pl->honest = 0;
            if (cur->b.len == 0) {
                break;
            }
            off %= (uint32_t)cur->b.len;
            if (a & 1) {
                cur->b.len = off;
                if (cur->last_frame >= off) {
                    cur->last_frame = 0;
                }
            } else {
                cur->b.data[off] ^= x ? x : 0x01;
            }
            break;
        }
        case 5:
            qd_leftover(pl, &in, dir, last_id ? last_id : 1, a % 10);
            break;
        case 6: {
            size_t n = qd_byte(&in);
            if (n > in.n - in.pos) {
                n = in.n - in.pos;
            }
            size_t at = cur->b.len;
            qd_append(&cur->b, in.p + in.pos, n);
            in.pos += n;
            /* No frame magic in junk: a CRC-valid frame copied from the
             * input would be a record the builder did not write. */
            for (size_t i = at; i < cur->b.len; i++) {
                if (cur->b.data[i] == 'H') {
                    cur->b.data[i] = 'h';
                }
            }
            pl->honest = 0;
            break;
        }
        default:
            if (cur->last_frame != 0 && nframes < QD_MAX_FRAMES) {
                hp_frame_hdr h;
                const uint8_t *f = cur->b.data + cur->last_frame;
                if (hp_rec_parse_header(f, cur->b.len - cur->last_frame, HP_FRAME_MAX_RAW, &h) ==
                        0 &&
                    (uint64_t)HP_FRAME_HDR + h.stored_len <= cur->b.len - cur->last_frame) {
                    size_t at = cur->b.len;
                    size_t fl = HP_FRAME_HDR + h.stored_len;
                    if (hp_buf_reserve(&cur->b, fl) < 0) {
                        qd_oom();
                    }
                    memcpy(cur->b.data + at, cur->b.data + cur->last_frame, fl);
                    cur->b.len += fl;
                    cur->last_frame = at;
                    nframes++;
                    pl->frames++;
                    pl->honest = 0;
                }
            }
            break;
        }
    }
    for (int i = 0; i < nseg; i++) {
        qd_finish_seg(pl, dir, &segs[i]);
    }
    /* The checkpoint. */
    if (pl->ckpt_layout != 0 && pl->have_ckpt_op) {
        if (pl->ack_next > pl->read_next) {
            pl->honest = 0; /* a writer keeps ack_next <= read_next */
        }
        if (pl->ckpt_layout == 2) {
            uint8_t ck[HP_CKPT_SIZE];
            hp_ckpt_encode_v1(ck, pl->ack_next, pl->read_next);
            fz_write_file(dir, HP_CKPT_NAME, ck, sizeof(ck));
        } else {
            static uint8_t ck[HP_CKPT_FILE_SIZE];
            memset(ck, 0, sizeof(ck));
            int slot = pl->gen & 1;
            hp_ckpt_encode(ck + slot * HP_CKPT_SLOT_STRIDE, pl->ack_next, pl->read_next,
                           pl->gen);
            /* The other slot: an older position (generation - 1). Layout 3
             * tears the newer slot (a power cut in a mark): the older one
             * is used. */
            uint8_t *other = ck + (1 - slot) * HP_CKPT_SLOT_STRIDE;
            hp_ckpt_encode(other, pl->ack_next / 2, pl->ack_next / 2, pl->gen - 1);
            if (pl->ckpt_layout == 3) {
                ck[slot * HP_CKPT_SLOT_STRIDE + 8] ^= 0x40;
            }
            fz_write_file(dir, HP_CKPT_NAME, ck, sizeof(ck));
        }
    }
    for (int i = 0; i < nseg; i++) {
        hp_buf_free(&segs[i].b);
    }
    hp_enc_free(&enc);
    hp_enc_free(&store);
}

static inline int
qd_cmp_rec(const void *a, const void *b)
{
    const qd_rec *x = a;
    const qd_rec *y = b;
    if (x->seq != y->seq) {
        return x->seq < y->seq ? -1 : 1;
    }
    return x->len < y->len ? -1 : x->len > y->len;
}

#endif /* HOPPER_FUZZ_QDIR_BUILD_H */
