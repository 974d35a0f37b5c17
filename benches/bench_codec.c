/* SPDX-License-Identifier: MIT */
/* bench_codec: frame encoder and decoder speed per compression level.
 *
 *   bench_codec [SECONDS_PER_LEVEL=0.3] [KIND=log|random] [RECORD_BYTES=1024] [LEVELS=0-9]
 *
 * Lays out 16 MiB of records (JSON-like log lines or random bytes) as frame
 * bodies of HP_FRAME_TARGET bytes, exactly as the writer does (u32 length +
 * bytes), and times hp_rec_encode (deflate with a reused context, CRC-32C)
 * and hp_rec_decode (CRC, inflate, layout check) for each level. MB/s are
 * of raw body bytes (10^6). Also prints the stored/raw size ratio. */
#include "bench_common.h"
#include "record.h"

#define DATA_BYTES (16u << 20)

int
main(int argc, char **argv)
{
    double per_level = atof(bn_arg(argc, argv, 1, "0.3"));
    const char *kind = bn_arg(argc, argv, 2, "log");
    size_t rec_bytes = (size_t)strtoul(bn_arg(argc, argv, 3, "1024"), NULL, 10);
    const char *levels = bn_arg(argc, argv, 4, "0-9");
    int lo = 0;
    int hi = 9;
    if (sscanf(levels, "%d-%d", &lo, &hi) == 1) {
        hi = lo;
    }
    if (per_level <= 0 || rec_bytes < 256 || rec_bytes > 65536 || lo < 0 || hi > 9 || lo > hi) {
        fprintf(stderr, "usage: %s [SECONDS_PER_LEVEL] [log|random] [RECORD_BYTES] [LO-HI]\n",
                argv[0]);
        return 2;
    }
    size_t nrec = DATA_BYTES / rec_bytes;
    uint8_t *pool = bn_make_pool(kind, nrec, rec_bytes, 99);
    /* Frame bodies: records with their u32 prefix, cut at HP_FRAME_TARGET. */
    size_t per_frame = HP_FRAME_TARGET / (rec_bytes + HP_REC_PREFIX) + 1;
    size_t nframes = (nrec + per_frame - 1) / per_frame;
    hp_buf *bodies = calloc(nframes, sizeof(*bodies));
    uint32_t *counts = calloc(nframes, sizeof(*counts));
    for (size_t f = 0; f < nframes; f++) {
        for (size_t i = f * per_frame; i < nrec && i < (f + 1) * per_frame; i++) {
            uint8_t pre[4];
            hp_put_u32(pre, (uint32_t)rec_bytes);
            BN_CHECK(hp_buf_append(&bodies[f], pre, 4));
            BN_CHECK(hp_buf_append(&bodies[f], pool + i * rec_bytes, rec_bytes));
            counts[f]++;
        }
    }
    printf("codec.%s.fs_type - -\n", kind);
    printf("codec.%s.frame_body %u B\n", kind, HP_FRAME_TARGET);
    printf("codec.%s.record_bytes %zu B\n", kind, rec_bytes);
    hp_buf out = {0};
    hp_buf raw = {0};
    for (int level = lo; level <= hi; level++) {
        hp_encoder enc;
        BN_CHECK(hp_enc_init(&enc, level));
        uint64_t in = 0;
        uint64_t stored = 0;
        uint64_t t0 = bn_now_ns();
        uint64_t limit = t0 + (uint64_t)(per_level * 1e9);
        size_t f = 0;
        /* At least one full pass so the ratio covers all the data. */
        for (;;) {
            out.len = 0;
            BN_CHECK(hp_rec_encode(&enc, bodies[f].data, bodies[f].len, 1, counts[f], 0, &out));
            in += bodies[f].len;
            stored += out.len;
            if (++f == nframes) {
                f = 0;
                if (bn_now_ns() >= limit) {
                    break;
                }
            }
        }
        uint64_t t1 = bn_now_ns();
        printf("codec.%s.encode.l%d %.1f MB/s\n", kind, level, (double)in / 1e6 / bn_secs(t1 - t0));
        printf("codec.%s.ratio.l%d %.4f B/B\n", kind, level, (double)stored / (double)in);

        /* Decode the frames of one pass at this level. */
        hp_buf frames = {0};
        size_t *offs = calloc(nframes + 1, sizeof(*offs));
        for (f = 0; f < nframes; f++) {
            offs[f] = frames.len;
            BN_CHECK(hp_rec_encode(&enc, bodies[f].data, bodies[f].len, 1, counts[f], 0, &frames));
        }
        offs[nframes] = frames.len;
        hp_enc_free(&enc);
        hp_decoder dec;
        BN_CHECK(hp_dec_init(&dec));
        uint64_t max_raw = hp_frame_max_raw((uint32_t)rec_bytes);
        in = 0;
        t0 = bn_now_ns();
        limit = t0 + (uint64_t)(per_level * 1e9 / 2);
        f = 0;
        for (;;) {
            hp_frame_hdr h;
            size_t used;
            BN_CHECK(hp_rec_decode(&dec, frames.data + offs[f], offs[f + 1] - offs[f], max_raw,
                                   &h, &raw, &used));
            in += raw.len;
            if (++f == nframes) {
                f = 0;
                if (bn_now_ns() >= limit) {
                    break;
                }
            }
        }
        t1 = bn_now_ns();
        printf("codec.%s.decode.l%d %.1f MB/s\n", kind, level, (double)in / 1e6 / bn_secs(t1 - t0));
        hp_dec_free(&dec);
        hp_buf_free(&frames);
        free(offs);
    }
    for (size_t f = 0; f < nframes; f++) {
        hp_buf_free(&bodies[f]);
    }
    free(bodies);
    free(counts);
    hp_buf_free(&out);
    hp_buf_free(&raw);
    free(pool);
    return 0;
}
