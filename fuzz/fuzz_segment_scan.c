/* SPDX-License-Identifier: MIT */
/* Target functions: hp_seg_header_decode hp_seg_scan hp_seg_resync
 *                   hp_seg_frame_at hp_win_get hp_idx_decode hp_idx_encode
 *                   hp_idx_verify
 *                   (in memory), and hopper_open
 *                   (recovery) + hopper_recv_ack + hopper_close (on files)
 * Property: an arbitrary segment image never crashes or hangs the scan; every
 * frame the scan reports lies inside the image, after the previous one, has a
 * valid CRC, and the first one is the one hp_seg_resync finds; frames, skipped
 * ranges and the torn tail tile the body exactly. Written as segment files
 * (and/or as the checkpoint) of a queue, hopper_open never fails on the
 * damage (no HOPPER_ECORRUPT), its counters (corrupt, torn, quarantined)
 * agree with the in-memory scan, and draining with hopper_recv_ack delivers
 * records with strictly increasing seqs, none below the checkpoint's
 * ack_next, each equal to the record of that seq in a CRC-valid frame of the
 * image (no phantom records), exactly the seqs hopper_inspect visited before
 * the open, with the same missing_records and checkpoint_clamped; the next
 * seq stays within the sequence space (2^63); after close, a reopen
 * delivers nothing more.
 * An index that hp_idx_decode accepts has disjoint runs in file order inside
 * the segment and re-encodes (hp_idx_encode) to the same bytes; a segment
 * with a usable index (one that hp_idx_verify finds in agreement with the
 * frame headers) is not scanned (no corrupt/torn counts from it).
 *
 * Input: when it starts with the segment magic "HSEG" the whole input is one
 * segment file (named after the id in its header when that decodes), scanned
 * in memory and opened as a queue. Otherwise byte 0 selects:
 *   bits 0-1  mode: 0 = in-memory scan only of the rest;
 *             1 = the rest is segment 1 of a queue;
 *             2 = the next byte k is a side file length (255: no side
 *                 file), k bytes form the side file, the rest is segment 1;
 *                 the side file is the checkpoint (bit 2 clear) or the index
 *                 of segment 1, 0000000000000001.hidx (bit 2 set);
 *             3 = the next two bytes (LE) split the rest into segments 1 and 2;
 *   bit 2     mode 0: verify CRCs during the scan; mode 2: see above;
 *   bits 3-4  max_record_bytes: 16 MiB, 64, 4096, 65536 (the limit of the
 *             mode 0 scan, and the queue's option; the queue reads stored
 *             frames up to the format-wide limit whatever the option).
 * The queue lives in one temp dir created once per process, emptied at every
 * iteration. */
#include "fuzz_common.h"

#include "buf.h"
#include "crc32c.h"
#include "record.h"
#include "segment.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_REF_RECORDS (1u << 16)
#define MAX_REF_BYTES (4u << 20)
#define MAX_DRAIN (1u << 20)

/* Records seen in CRC-valid, decodable frames of the images. */
typedef struct ref_rec {
    uint64_t seq;
    size_t off; /* in ref.arena */
    size_t len;
} ref_rec;

typedef struct ref_set {
    ref_rec *v;
    size_t n;
    size_t cap;
    hp_buf arena;
    int complete; /* 0 when the limits were hit: no phantom check */
} ref_set;

typedef struct mem_img {
    const uint8_t *p;
    size_t n;
} mem_img;

static ssize_t
mem_read(void *ctx, void *buf, size_t n, uint64_t off)
{
    const mem_img *m = ctx;
    if (off >= m->n) {
        return 0;
    }
    size_t k = m->n - (size_t)off < n ? m->n - (size_t)off : n;
    memcpy(buf, m->p + off, k);
    return (ssize_t)k;
}

typedef struct scan_state {
    const uint8_t *img;
    size_t n;
    int verify;
    uint64_t max_raw;
    uint64_t expect_off; /* where the next event must start */
    uint64_t frames;
    uint64_t frame_bytes;
    uint64_t skips;
    uint64_t skip_bytes;
    uint64_t first_frame; /* UINT64_MAX when none */
    hp_decoder *dec;
    hp_buf raw;
    ref_set *ref;
} scan_state;

static void
ref_add(ref_set *ref, uint64_t seq, const uint8_t *p, size_t len)
{
    if (!ref->complete) {
        return;
    }
    if (ref->n == MAX_REF_RECORDS || ref->arena.len + len > MAX_REF_BYTES) {
        ref->complete = 0;
        return;
    }
    if (ref->n == ref->cap) {
        size_t ncap = ref->cap ? ref->cap * 2 : 256;
        ref_rec *nv = realloc(ref->v, ncap * sizeof(*nv));
        if (nv == NULL) {
            ref->complete = 0;
            return;
        }
        ref->v = nv;
        ref->cap = ncap;
    }
    size_t at = ref->arena.len;
    if (hp_buf_append(&ref->arena, p, len) < 0) {
        ref->complete = 0;
        return;
    }
    ref->v[ref->n++] = (ref_rec){.seq = seq, .off = at, .len = len};
}

static int
cmp_ref(const void *a, const void *b)
{
    const ref_rec *x = a;
    const ref_rec *y = b;
    if (x->seq != y->seq) {
        return x->seq < y->seq ? -1 : 1;
    }
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Is (seq, p[0..len)) a record of the reference set? It must be sorted. */
static int
ref_has(const ref_set *ref, uint64_t seq, const void *p, size_t len)
{
    size_t lo = 0;
    size_t hi = ref->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ref->v[mid].seq < seq) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    for (size_t i = lo; i < ref->n && ref->v[i].seq == seq; i++) {
        const ref_rec *r = &ref->v[i];
        if (r->len == len && (len == 0 || memcmp(ref->arena.data + r->off, p, len) == 0)) {
            return 1;
        }
    }
    return 0;
}

static int
on_frame(void *ctx, uint64_t off, const hp_frame_hdr *h)
{
    scan_state *s = ctx;
    FZ_CHECK(off == s->expect_off, "frame at %llu, expected %llu", (unsigned long long)off,
             (unsigned long long)s->expect_off);
    uint64_t total = HP_FRAME_HDR + (uint64_t)h->stored_len;
    FZ_CHECK(off >= HP_SEG_HDR && off <= s->n && total <= s->n - off,
             "frame [%llu, +%llu) outside the image of %zu", (unsigned long long)off,
             (unsigned long long)total, s->n);
    hp_frame_hdr h2;
    int rc = hp_rec_parse_header(s->img + off, s->n - (size_t)off, s->max_raw, &h2);
    FZ_CHECK(rc == 0, "reported frame header does not parse: %d", rc);
    FZ_CHECK(h2.stored_len == h->stored_len && h2.first_seq == h->first_seq &&
                 h2.count == h->count && h2.raw_len == h->raw_len && h2.flags == h->flags,
             "reported header differs from the bytes");
    if (s->frames == 0) {
        s->first_frame = off;
    }
    s->frames++;
    s->frame_bytes += total;
    s->expect_off = off + total;
    if (!s->verify) {
        return 0;
    }
    rc = hp_rec_check(s->img + off, (size_t)total, h);
    FZ_CHECK(rc == 0, "reported frame fails its CRC: %d", rc);
    hp_frame_hdr h3;
    size_t used = 0;
    rc = hp_rec_decode(s->dec, s->img + off, (size_t)total, s->max_raw, &h3, &s->raw, &used);
    FZ_CHECK(rc == 0 || rc == HOPPER_ECORRUPT || rc == HOPPER_EVERSION || rc == -ENOMEM,
             "decode of a scanned frame: rc %d", rc);
    if (rc != 0) {
        return 0;
    }
    FZ_CHECK(used == total, "decode used %zu of %llu", used, (unsigned long long)total);
    if (s->ref != NULL) {
        size_t pos = 0;
        for (uint32_t i = 0; i < h->count; i++) {
            const uint8_t *p;
            size_t len;
            rc = hp_rec_next(s->raw.data, s->raw.len, &pos, &p, &len);
            FZ_CHECK(rc == 0, "decoded frame does not tile: %d", rc);
            ref_add(s->ref, h->first_seq + i, p, len);
        }
    }
    return 0;
}

static void
on_skipped(void *ctx, uint64_t off, uint64_t len)
{
    scan_state *s = ctx;
    FZ_CHECK(off == s->expect_off, "skip at %llu, expected %llu", (unsigned long long)off,
             (unsigned long long)s->expect_off);
    FZ_CHECK(len > 0 && off <= s->n && len <= s->n - off, "skip [%llu, +%llu) of %zu",
             (unsigned long long)off, (unsigned long long)len, s->n);
    s->skips++;
    s->skip_bytes += len;
    s->expect_off = off + len;
}

typedef struct scan_result {
    int header_rc;
    uint64_t header_id;
    uint64_t valid_end;
    uint64_t skips;
    uint64_t skip_bytes;
} scan_result;

/* Scan img[0..n) in memory as a whole segment file and check the walk. */
static scan_result
scan_image(const uint8_t *img, size_t n, uint64_t max_raw, int verify, hp_decoder *dec,
           ref_set *ref)
{
    scan_result res = {0};
    uint64_t first_seq;
    res.header_rc = hp_seg_header_decode(img, n, &res.header_id, &first_seq);
    FZ_CHECK(res.header_rc == 0 || res.header_rc == HOPPER_ENEEDMORE ||
                 res.header_rc == HOPPER_ECORRUPT || res.header_rc == HOPPER_EVERSION,
             "hp_seg_header_decode rc %d", res.header_rc);
    FZ_CHECK((res.header_rc == HOPPER_ENEEDMORE) == (n < HP_SEG_HDR), "header ENEEDMORE");

    mem_img m = {.p = img, .n = n};
    hp_window w = {.read = mem_read, .ctx = &m, .size = n};
    scan_state s = {.img = img, .n = n, .verify = verify, .max_raw = max_raw,
                    .expect_off = HP_SEG_HDR, .first_frame = UINT64_MAX, .dec = dec,
                    .ref = ref};
    hp_scan_ops ops = {.frame = on_frame, .skipped = on_skipped};
    uint64_t valid_end = 0;
    int rc = hp_seg_scan(&w, max_raw, verify, &ops, &s, &valid_end);
    FZ_CHECK(rc == 0 || rc == -ENOMEM, "hp_seg_scan rc %d", rc);
    if (rc == 0) {
        if (n < HP_SEG_HDR) {
            FZ_CHECK(s.frames == 0 && s.skips == 0 && valid_end == HP_SEG_HDR,
                     "short image: events or valid_end %llu", (unsigned long long)valid_end);
        } else {
            FZ_CHECK(valid_end <= n, "valid_end %llu > %zu", (unsigned long long)valid_end, n);
            FZ_CHECK(valid_end == (s.frames ? s.expect_off : HP_SEG_HDR),
                     "valid_end %llu is not the end of the last frame",
                     (unsigned long long)valid_end);
            FZ_CHECK(s.frame_bytes + s.skip_bytes + (n - valid_end) == n - HP_SEG_HDR,
                     "frames %llu + skipped %llu + tail %llu != body %zu",
                     (unsigned long long)s.frame_bytes, (unsigned long long)s.skip_bytes,
                     (unsigned long long)(n - valid_end), n - HP_SEG_HDR);
        }
        if (verify && n >= HP_SEG_HDR) {
            /* The first valid frame is the one a resync from the start finds. */
            uint64_t found = 0;
            hp_frame_hdr h;
            int r = hp_seg_resync(&w, HP_SEG_HDR, max_raw, &found, &h);
            FZ_CHECK(r == 0 || r == 1 || r == -ENOMEM, "hp_seg_resync rc %d", r);
            if (r == 0) {
                FZ_CHECK(found == s.first_frame, "resync found %llu, scan first frame %llu",
                         (unsigned long long)found, (unsigned long long)s.first_frame);
            } else if (r == 1) {
                FZ_CHECK(s.frames == 0, "resync found nothing but the scan found frames");
            }
        }
    }
    res.valid_end = valid_end;
    res.skips = s.skips;
    res.skip_bytes = s.skip_bytes;
    hp_buf_free(&s.raw);
    hp_buf_free(&w.buf);
    return res;
}

/* Expected counter contributions of one segment file at open. */
typedef struct expect {
    uint64_t corrupt_frames;
    uint64_t corrupt_bytes;
    uint64_t torn;
    uint64_t quarantined;
} expect;

static void
expect_add(expect *e, const scan_result *r, size_t n, uint64_t id, int is_last)
{
    if (r->header_rc != 0 || r->header_id != id) {
        e->quarantined += n;
        return;
    }
    e->corrupt_frames += r->skips;
    e->corrupt_bytes += r->skip_bytes;
    if (r->valid_end < n) {
        if (is_last) {
            e->torn += n - r->valid_end;
        } else {
            e->corrupt_frames += 1;
            e->corrupt_bytes += n - r->valid_end;
        }
    }
}

/* What hopper_inspect saw before the open: its report and the seqs it
 * visited (the first MAX_VISITS of them). */
#define MAX_VISITS (1u << 16)

typedef struct inspected {
    hopper_inspect_report rep;
    uint64_t *seq;
    size_t n;
    int complete; /* 0: more than MAX_VISITS, or no memory: no comparison */
} inspected;

static int
on_visit(void *ctx, const hopper_record *r)
{
    inspected *in = ctx;
    if (in->complete && in->n < MAX_VISITS && in->seq != NULL) {
        in->seq[in->n++] = r->seq;
    } else {
        in->complete = 0;
    }
    return 0;
}

/* Open the queue, check the counters, drain it. Returns 1 when the drain hit
 * its cap (then the reopen check is skipped). With `in`, the library must
 * agree with hopper_inspect: the same missing records and checkpoint clamp,
 * and the same records delivered as visited, in the same order. */
static int
open_and_drain(const char *base, const hopper_opts *o, const ref_set *ref, uint64_t ack_floor,
               const expect *ex, const inspected *in, uint64_t *delivered)
{
    hopper_queue *q = NULL;
    int rc = hopper_open(base, "q", o, &q);
    if (rc == -ENOMEM) {
        return 1;
    }
    FZ_CHECK(rc == 0, "hopper_open failed on damaged data: %s", hopper_err_name(rc));
    hopper_stats st = {.struct_size = sizeof(st)};
    FZ_CHECK(hopper_stats_get(q, &st) == 0, "stats");
    if (ex != NULL) {
        FZ_CHECK(st.corrupt_frames == ex->corrupt_frames && st.corrupt_bytes == ex->corrupt_bytes,
                 "corrupt counters %llu/%llu, scan says %llu/%llu",
                 (unsigned long long)st.corrupt_frames, (unsigned long long)st.corrupt_bytes,
                 (unsigned long long)ex->corrupt_frames, (unsigned long long)ex->corrupt_bytes);
        FZ_CHECK(st.torn_bytes == ex->torn, "torn %llu, scan says %llu",
                 (unsigned long long)st.torn_bytes, (unsigned long long)ex->torn);
        FZ_CHECK(st.quarantined_bytes == ex->quarantined, "quarantined %llu, expected %llu",
                 (unsigned long long)st.quarantined_bytes, (unsigned long long)ex->quarantined);
    }
    if (in != NULL) {
        FZ_CHECK(st.missing_records == in->rep.missing_records &&
                     st.checkpoint_clamped == in->rep.checkpoint_clamped,
                 "missing %llu / clamped %llu, hopper_inspect says %llu / %llu",
                 (unsigned long long)st.missing_records,
                 (unsigned long long)st.checkpoint_clamped,
                 (unsigned long long)in->rep.missing_records,
                 (unsigned long long)in->rep.checkpoint_clamped);
        FZ_CHECK(st.next_seq <= (UINT64_C(1) << 63), "next_seq %llu past the sequence space",
                 (unsigned long long)st.next_seq);
    }
    int capped = 0;
    int have_last = 0;
    uint64_t last = 0;
    *delivered = 0;
    for (;;) {
        if (*delivered == MAX_DRAIN) {
            capped = 1;
            break;
        }
        hopper_record rec;
        rc = hopper_recv_ack(q, &rec, 0);
        if (rc == -EAGAIN) {
            break;
        }
        if (rc == -ENOMEM) {
            capped = 1;
            break;
        }
        FZ_CHECK(rc == 0, "hopper_recv_ack: %s", hopper_err_name(rc));
        FZ_CHECK(!have_last || rec.seq > last, "seq %llu after %llu",
                 (unsigned long long)rec.seq, (unsigned long long)last);
        FZ_CHECK(rec.seq >= ack_floor, "seq %llu below the checkpoint's ack_next %llu",
                 (unsigned long long)rec.seq, (unsigned long long)ack_floor);
        FZ_CHECK(rec.len == 0 || rec.data != NULL, "NULL data");
        if (ref->complete) {
            FZ_CHECK(ref_has(ref, rec.seq, rec.data, rec.len),
                     "record seq %llu (%zu bytes) is in no valid frame of the image",
                     (unsigned long long)rec.seq, rec.len);
        }
        if (in != NULL && in->complete) {
            FZ_CHECK(*delivered < in->n && in->seq[*delivered] == rec.seq,
                     "delivery %llu is seq %llu, hopper_inspect visited %s%llu",
                     (unsigned long long)*delivered, (unsigned long long)rec.seq,
                     *delivered < in->n ? "" : "nothing, ",
                     *delivered < in->n ? (unsigned long long)in->seq[*delivered] : 0ull);
        }
        have_last = 1;
        last = rec.seq;
        (*delivered)++;
    }
    if (in != NULL && in->complete && !capped) {
        FZ_CHECK(*delivered == in->n, "%llu delivered, hopper_inspect visited %zu",
                 (unsigned long long)*delivered, in->n);
    }
    rc = hopper_close(q);
    FZ_CHECK(rc == 0, "hopper_close: %s", hopper_err_name(rc));
    return capped;
}

/* Parse a checkpoint image the way FORMAT.md §4 defines it: ack_next, or 0
 * (also for positions past the sequence space, 2^63). */
static uint64_t
ckpt_ack_next(const uint8_t *p, size_t n)
{
    if (n != 32 || hp_get_u32(p) != 0x504b4348u || hp_get_u16(p + 4) != 1 ||
        hp_get_u16(p + 6) != 32 || hp_get_u32(p + 28) != hp_crc32c_extend(0, p, 28) ||
        hp_get_u64(p + 8) > (UINT64_C(1) << 63) || hp_get_u64(p + 16) > (UINT64_C(1) << 63)) {
        return 0;
    }
    return hp_get_u64(p + 8);
}

/* Decode an index image for segment `id` (image seg[0..seg_size)); check
 * what it accepts. Returns 1 when open would use it: valid, of a size open
 * reads (52..212 bytes, at most 4 runs), and in agreement with the
 * segment's frame headers (hp_idx_verify, FORMAT.md §2.1). */
static int
check_index(const uint8_t *p, size_t n, uint64_t id, const uint8_t *seg, size_t seg_size)
{
    hp_segidx x = {0};
    int rc = hp_idx_decode(p, n, id, seg_size, &x);
    FZ_CHECK(rc == 0 || rc == HOPPER_ECORRUPT || rc == HOPPER_EVERSION || rc == -ENOMEM,
             "hp_idx_decode rc %d", rc);
    if (rc != 0) {
        hp_idx_free(&x);
        return 0;
    }
    FZ_CHECK(x.id == id && x.size == seg_size, "decoded id/size");
    uint64_t prev_end = HP_SEG_HDR;
    for (size_t i = 0; i < x.n; i++) {
        const hp_idx_run *r = &x.runs[i];
        FZ_CHECK(r->off >= prev_end && r->end > r->off && r->end <= seg_size,
                 "run %zu [%llu, %llu) after %llu in %llu", i, (unsigned long long)r->off,
                 (unsigned long long)r->end, (unsigned long long)prev_end,
                 (unsigned long long)seg_size);
        FZ_CHECK(r->first_seq <= r->last_seq && r->last_seq != UINT64_MAX, "run %zu seqs", i);
        prev_end = r->end;
    }
    hp_buf out = {0};
    rc = hp_idx_encode(&x, &out);
    FZ_CHECK(rc == 0 || rc == -ENOMEM, "hp_idx_encode rc %d", rc);
    if (rc == 0) {
        FZ_CHECK(out.len == n && memcmp(out.data, p, n) == 0,
                 "a decoded index does not re-encode to the same bytes");
    }
    hp_buf_free(&out);
    size_t nruns = x.n;
    mem_img m = {.p = seg, .n = seg_size};
    rc = hp_idx_verify(mem_read, &m, &x, HP_FRAME_MAX_RAW);
    FZ_CHECK(rc == 0 || rc == HOPPER_ECORRUPT || rc == -ENOMEM, "hp_idx_verify rc %d", rc);
    hp_idx_free(&x);
    return n >= HP_IDX_HDR + 4 && nruns <= 4 && rc == 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > FZ_MAX_INPUT) {
        return 0;
    }
    static const uint32_t max_records[4] = {16u << 20, 64u, 4096u, 65536u};
    int mode;
    int verify = 1;
    uint32_t max_record = 16u << 20;
    const uint8_t *body = data;
    size_t blen = size;
    int raw_segment = size >= 4 && hp_get_u32(data) == HP_SEG_MAGIC;
    if (raw_segment) {
        mode = 1;
    } else {
        mode = data[0] & 3;
        verify = mode != 0 || (data[0] & 4) != 0;
        max_record = max_records[(data[0] >> 3) & 3];
        body = data + 1;
        blen = size - 1;
    }
    uint64_t max_raw = hp_frame_max_raw(max_record);

    hp_decoder dec;
    int rc = hp_dec_init(&dec);
    if (rc == -ENOMEM) {
        return 0;
    }
    FZ_CHECK(rc == 0, "hp_dec_init rc %d", rc);
    ref_set ref = {.complete = 1};

    if (mode == 0) {
        (void)scan_image(body, blen, max_raw, verify, &dec, NULL);
        goto out;
    }

    /* Lay out the files. */
    const uint8_t *ckpt = NULL;
    size_t ckpt_len = 0;
    int have_ckpt = 0;
    int side_is_index = !raw_segment && (data[0] & 4) != 0;
    const uint8_t *seg[2] = {NULL, NULL};
    size_t seg_len[2] = {0, 0};
    int nseg = 1;
    if (mode == 1) {
        seg[0] = body;
        seg_len[0] = blen;
    } else if (mode == 2) {
        size_t k = blen > 0 ? body[0] : 255;
        const uint8_t *rest = blen > 0 ? body + 1 : body;
        size_t rlen = blen > 0 ? blen - 1 : 0;
        if (k != 255) {
            have_ckpt = 1;
            ckpt_len = k < rlen ? k : rlen;
            ckpt = rest;
            rest += ckpt_len;
            rlen -= ckpt_len;
        }
        seg[0] = rest;
        seg_len[0] = rlen;
    } else {
        size_t split = blen >= 2 ? (size_t)hp_get_u16(body) : 0;
        const uint8_t *rest = blen >= 2 ? body + 2 : body;
        size_t rlen = blen >= 2 ? blen - 2 : 0;
        if (split > rlen) {
            split = rlen;
        }
        seg[0] = rest;
        seg_len[0] = split;
        seg[1] = rest + split;
        seg_len[1] = rlen - split;
        nseg = 2;
    }
    uint64_t ids[2] = {1, 2};
    if (raw_segment) {
        uint64_t hid;
        uint64_t hfirst;
        if (hp_seg_header_decode(seg[0], seg_len[0], &hid, &hfirst) == 0) {
            ids[0] = hid;
        }
    }

    /* A usable index replaces the scan of segment 1 (FORMAT.md §2.1). */
    int index_used = 0;
    if (have_ckpt && side_is_index) {
        index_used = check_index(ckpt, ckpt_len, ids[0], seg[0], seg_len[0]);
    }

    /* Reference scan of each image, with CRC checks and the limit every queue
     * reads stored frames with (the format-wide one, whatever the queue's
     * max_record_bytes: FORMAT.md §3.4). */
    expect ex = {0};
    for (int i = 0; i < nseg; i++) {
        scan_result r = scan_image(seg[i], seg_len[i], HP_FRAME_MAX_RAW, 1, &dec, &ref);
        if (i == 0 && index_used && r.header_rc == 0 && r.header_id == ids[0]) {
            continue; /* not scanned at open: no counters from it */
        }
        expect_add(&ex, &r, seg_len[i], ids[i], i + 1 == nseg);
    }
    if (ref.complete && ref.n > 1) {
        qsort(ref.v, ref.n, sizeof(*ref.v), cmp_ref);
    }

    const char *base = fz_tmpdir("segment_scan");
    char qdir[PATH_MAX];
    fz_fresh_subdir(base, "q", qdir, sizeof(qdir));
    for (int i = 0; i < nseg; i++) {
        char name[HP_SEG_NAME_MAX];
        hp_seg_name(name, ids[i]);
        fz_write_file(qdir, name, seg[i], seg_len[i]);
    }
    uint64_t ack_floor = 0;
    if (have_ckpt && side_is_index) {
        char name[HP_SEG_NAME_MAX];
        hp_seg_idx_name(name, ids[0]);
        fz_write_file(qdir, name, ckpt, ckpt_len);
    } else if (have_ckpt) {
        fz_write_file(qdir, "checkpoint", ckpt, ckpt_len);
        ack_floor = ckpt_ack_next(ckpt, ckpt_len);
    }

    hopper_opts o;
    hopper_opts_init(&o);
    o.fsync = HOPPER_FSYNC_NEVER;
    o.durability = HOPPER_DURABILITY_MEMORY;
    o.max_record_bytes = max_record;
    o.checkpoint_interval_ms = UINT32_MAX; /* time-independent: at reclaim and close only */
    /* hopper_inspect first: it changes nothing, and must see what the
     * library will deliver (same recovery rules, FORMAT.md §5). */
    inspected in = {.complete = 1};
    in.rep.struct_size = sizeof(in.rep);
    in.seq = malloc(MAX_VISITS * sizeof(*in.seq));
    rc = hopper_inspect(base, "q", 0, on_visit, &in, &in.rep);
    FZ_CHECK(rc == 0 || rc == -ENOMEM, "hopper_inspect: %s", hopper_err_name(rc));
    uint64_t delivered = 0;
    int capped = open_and_drain(base, &o, &ref, ack_floor, &ex, rc == 0 ? &in : NULL, &delivered);
    free(in.seq);
    if (!capped) {
        /* Everything delivered was acknowledged and checkpointed at close. */
        uint64_t again = 0;
        (void)open_and_drain(base, &o, &ref, 0, NULL, NULL, &again);
        FZ_CHECK(again == 0, "%llu records delivered again after ack + close + reopen",
                 (unsigned long long)again);
    }
    fz_rmtree(qdir, 0);
out:
    free(ref.v);
    hp_buf_free(&ref.arena);
    hp_dec_free(&dec);
    return 0;
}
