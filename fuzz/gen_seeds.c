/* SPDX-License-Identifier: MIT */
/* Seed generator (zstd decodecorpus style): writes small valid inputs for
 * every fuzz target into OUTDIR/<target>/: the library targets' seeds are
 * made with the real encoder (hp_rec_encode, hp_seg_header_encode,
 * hp_idx_encode); the hopperd targets' seeds are text. Deterministic: the same
 * bytes on every run (timestamps and seqs are constants). Every file is
 * well under 4 KiB.
 *
 *   gen_seeds fuzz/corpus
 *
 * The input layouts are documented at the top of each fuzz_<target>.c. */
#include "buf.h"
#include "crc32c.h"
#include "record.h"
#include "segment.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TS 1700000000000ull /* a fixed timestamp */

static const char *outdir;
static int failed;

static void
die_oom(void)
{
    fprintf(stderr, "gen_seeds: out of memory\n");
    exit(1);
}

static void
emit(const char *target, const char *name, const hp_buf *b)
{
    char dir[PATH_MAX];
    char path[PATH_MAX];
    int k1 = snprintf(dir, sizeof(dir), "%s/%s", outdir, target);
    int k2 = snprintf(path, sizeof(path), "%s/%s/%s", outdir, target, name);
    if (k1 < 0 || (size_t)k1 >= sizeof(dir) || k2 < 0 || (size_t)k2 >= sizeof(path)) {
        fprintf(stderr, "gen_seeds: path too long\n");
        failed = 1;
        return;
    }
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "gen_seeds: %s: %s\n", dir, strerror(errno));
        failed = 1;
        return;
    }
    FILE *f = fopen(path, "wb");
    if (f == NULL || (b->len > 0 && fwrite(b->data, 1, b->len, f) != b->len) || fclose(f) != 0) {
        fprintf(stderr, "gen_seeds: cannot write %s\n", path);
        failed = 1;
        return;
    }
    if (b->len >= 4096) {
        fprintf(stderr, "gen_seeds: %s is %zu bytes (keep seeds < 4 KiB)\n", path, b->len);
        failed = 1;
    }
    printf("%s (%zu bytes)\n", path, b->len);
}

static void
put(hp_buf *b, const void *p, size_t n)
{
    if (hp_buf_append(b, p, n) < 0) {
        die_oom();
    }
}

static void
put_u8(hp_buf *b, uint8_t v)
{
    put(b, &v, 1);
}

static void
put_u16(hp_buf *b, uint16_t v)
{
    uint8_t t[2];
    hp_put_u16(t, v);
    put(b, t, 2);
}

static void
put_u64(hp_buf *b, uint64_t v)
{
    uint8_t t[8];
    hp_put_u64(t, v);
    put(b, t, 8);
}

/* Raw body: records given as NUL-terminated strings. */
static void
body_of(hp_buf *raw, const char *const *recs, uint32_t n)
{
    raw->len = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t pre[4];
        size_t len = strlen(recs[i]);
        hp_put_u32(pre, (uint32_t)len);
        put(raw, pre, 4);
        put(raw, recs[i], len);
    }
}

/* Append one frame of `n` records to out at compression `level`. */
static void
frame(hp_buf *out, int level, uint64_t first_seq, const char *const *recs, uint32_t n)
{
    hp_encoder enc;
    hp_buf raw = {0};
    if (hp_enc_init(&enc, level) < 0) {
        die_oom();
    }
    body_of(&raw, recs, n);
    if (hp_rec_encode(&enc, raw.data, raw.len, first_seq, n, TS, out) < 0) {
        die_oom();
    }
    hp_enc_free(&enc);
    hp_buf_free(&raw);
}

static void
seg_header(hp_buf *out, uint64_t id, uint64_t first_seq)
{
    uint8_t h[HP_SEG_HDR];
    hp_seg_header_encode(h, id, first_seq);
    put(out, h, sizeof(h));
}

static void
checkpoint(hp_buf *out, uint64_t ack_next, uint64_t read_next)
{
    uint8_t b[32];
    hp_put_u32(b, 0x504b4348u); /* "HCKP" */
    hp_put_u16(b + 4, 1);
    hp_put_u16(b + 6, 32);
    hp_put_u64(b + 8, ack_next);
    hp_put_u64(b + 16, read_next);
    hp_put_u32(b + 24, 0);
    hp_put_u32(b + 28, hp_crc32c_extend(0, b, 28));
    put(out, b, sizeof(b));
}

static const char *const small3[] = {"alpha", "", "gamma gamma gamma"};
static const char *const text4[] = {
    "<14>1 2024-01-01T00:00:00Z host app 1 - - hello hello hello hello hello",
    "<14>1 2024-01-01T00:00:01Z host app 1 - - hello hello hello hello world",
    "<14>1 2024-01-01T00:00:02Z host app 1 - - hello hello hello world world",
    "<14>1 2024-01-01T00:00:03Z host app 1 - - hello hello world world world",
};
static const char *const one[] = {"x"};
static const char *const two[] = {"first", "second"};

static void
gen_record_decode(void)
{
    const char *t = "record_decode";
    hp_buf b = {0};

    frame(&b, 0, 0, small3, 3); /* starts with "HPFR": replayed as is */
    emit(t, "stored-3.bin", &b);

    b.len = 0;
    put_u8(&b, 0x01); /* max_record 4096 */
    frame(&b, 6, 100, text4, 4);
    emit(t, "deflate-4.bin", &b);

    b.len = 0;
    put_u8(&b, 0x03); /* max_record 16 MiB */
    frame(&b, 0, 7, two, 2);
    frame(&b, 1, 9, text4, 4);
    emit(t, "two-frames.bin", &b);

    b.len = 0;
    frame(&b, 0, 42, NULL, 0); /* empty frame */
    emit(t, "empty-frame.bin", &b);

    /* A frame with an unknown flag bit and a valid CRC: HOPPER_EVERSION. */
    b.len = 0;
    put_u8(&b, 0x02);
    size_t at = b.len;
    frame(&b, 0, 5, one, 1);
    hp_put_u16(b.data + at + 32, 0x0002);
    uint32_t crc = hp_crc32c_extend(0, b.data + at, 36);
    crc = hp_crc32c_extend(crc, b.data + at + HP_FRAME_HDR, b.len - at - HP_FRAME_HDR);
    hp_put_u32(b.data + at + 36, crc);
    emit(t, "unknown-flag.bin", &b);

    /* A truncated frame: HOPPER_ENEEDMORE. */
    b.len = 0;
    put_u8(&b, 0x00);
    frame(&b, 0, 1, small3, 3);
    b.len -= 5;
    emit(t, "truncated.bin", &b);
    hp_buf_free(&b);
}

static void
gen_record_roundtrip(void)
{
    const char *t = "record_roundtrip";
    hp_buf b = {0};

    put_u64(&b, 1000);
    put_u64(&b, TS);
    put_u8(&b, 5);
    put(&b, "hello", 5);
    put_u8(&b, 0);
    put_u8(&b, 5);
    put(&b, "world", 5);
    emit(t, "three-small.bin", &b);

    /* One compressible 1 KiB record: length 0x84 0x00 = 1024. */
    b.len = 0;
    put_u64(&b, 0);
    put_u64(&b, 0);
    put_u8(&b, 0x84);
    put_u8(&b, 0x00);
    for (int i = 0; i < 1024; i++) {
        put_u8(&b, (uint8_t)("abcabcabd"[i % 9]));
    }
    emit(t, "one-1k.bin", &b);

    /* Many tiny records, first_seq near the top of the range. */
    b.len = 0;
    put_u64(&b, UINT64_MAX - 3);
    put_u64(&b, TS);
    for (int i = 0; i < 40; i++) {
        put_u8(&b, (uint8_t)(i % 4));
        for (int j = 0; j < i % 4; j++) {
            put_u8(&b, (uint8_t)('a' + i));
        }
    }
    emit(t, "many-tiny.bin", &b);

    b.len = 0;
    put(&b, "a", 1);
    emit(t, "short.bin", &b);
    hp_buf_free(&b);
}

static void
gen_segment_scan(void)
{
    const char *t = "segment_scan";
    hp_buf b = {0};

    /* A raw segment file (starts with "HSEG"). */
    seg_header(&b, 1, 0);
    frame(&b, 0, 0, two, 2);
    frame(&b, 1, 2, text4, 4);
    emit(t, "raw-segment.bin", &b);

    /* Mode 1: segment 1 with a torn tail. */
    b.len = 0;
    put_u8(&b, 0x01);
    seg_header(&b, 1, 0);
    frame(&b, 0, 0, small3, 3);
    frame(&b, 0, 3, two, 2);
    frame(&b, 1, 5, text4, 4);
    b.len -= 17;
    emit(t, "torn-tail.bin", &b);

    /* Mode 0, verify: damage in the middle frame of three. */
    b.len = 0;
    put_u8(&b, 0x04);
    seg_header(&b, 1, 0);
    frame(&b, 0, 0, one, 1);
    size_t mid = b.len;
    frame(&b, 0, 1, small3, 3);
    frame(&b, 0, 4, two, 2);
    b.data[mid + HP_FRAME_HDR + 2] ^= 0x55;
    emit(t, "damaged-middle.bin", &b);

    /* Mode 2: checkpoint (ack_next 2, read_next 4) + segment 1. */
    b.len = 0;
    put_u8(&b, 0x02);
    put_u8(&b, 32);
    checkpoint(&b, 2, 4);
    seg_header(&b, 1, 0);
    frame(&b, 0, 0, small3, 3);
    frame(&b, 6, 3, text4, 4);
    emit(t, "checkpoint.bin", &b);

    /* Mode 3: two segments; segment 2 holds lower seqs (saved from memory at
     * close), so runs must be ordered by seq. */
    hp_buf s1 = {0};
    hp_buf s2 = {0};
    seg_header(&s1, 1, 10);
    frame(&s1, 0, 10, two, 2);
    seg_header(&s2, 2, 0);
    frame(&s2, 0, 0, small3, 3);
    frame(&s2, 0, 3, one, 1);
    b.len = 0;
    put_u8(&b, 0x03);
    put_u16(&b, (uint16_t)s1.len);
    put(&b, s1.data, s1.len);
    put(&b, s2.data, s2.len);
    emit(t, "two-segments.bin", &b);
    hp_buf_free(&s1);
    hp_buf_free(&s2);

    /* Mode 1: a CRC-valid frame with an unknown flag between two good ones. */
    b.len = 0;
    put_u8(&b, 0x01);
    seg_header(&b, 1, 0);
    frame(&b, 0, 0, one, 1);
    size_t at = b.len;
    frame(&b, 0, 1, two, 2);
    hp_put_u16(b.data + at + 32, 0x0004);
    uint32_t crc = hp_crc32c_extend(0, b.data + at, 36);
    crc = hp_crc32c_extend(crc, b.data + at + HP_FRAME_HDR, b.len - at - HP_FRAME_HDR);
    hp_put_u32(b.data + at + 36, crc);
    frame(&b, 0, 3, one, 1);
    emit(t, "unknown-flag.bin", &b);

    /* Mode 2 with an index (bit 2): a sealed segment 1 and its .hidx, then
     * the same segment with an index whose runs lie about the seqs. */
    hp_buf seg = {0};
    seg_header(&seg, 1, 0);
    size_t f1 = seg.len;
    frame(&seg, 0, 0, small3, 3);
    size_t f2 = seg.len;
    frame(&seg, 1, 3, text4, 4);
    size_t f3 = seg.len;
    frame(&seg, 0, 20, one, 1); /* a gap in seqs: a second run */
    hp_segidx x = {.id = 1, .size = HP_SEG_HDR};
    hp_buf idx = {0};
    if (hp_idx_add(&x, f1, f2 - f1, 0, 3, 22, TS) < 0 ||
        hp_idx_add(&x, f2, f3 - f2, 3, 4, 4 * 71, TS) < 0 ||
        hp_idx_add(&x, f3, seg.len - f3, 20, 1, 1, TS) < 0 || hp_idx_encode(&x, &idx) < 0) {
        die_oom();
    }
    b.len = 0;
    put_u8(&b, 0x06);
    put_u8(&b, (uint8_t)idx.len);
    put(&b, idx.data, idx.len);
    put(&b, seg.data, seg.len);
    emit(t, "index.bin", &b);

    x.runs[0].last_seq = 1000; /* claims more records than the frames hold */
    if (hp_idx_encode(&x, &idx) < 0) {
        die_oom();
    }
    b.len = 0;
    put_u8(&b, 0x06);
    put_u8(&b, (uint8_t)idx.len);
    put(&b, idx.data, idx.len);
    put(&b, seg.data, seg.len);
    emit(t, "index-lies.bin", &b);
    hp_idx_free(&x);
    hp_buf_free(&idx);
    hp_buf_free(&seg);
    hp_buf_free(&b);
}

/* fuzz_queue_dir: descriptions of queue directories (qdir_build.h), which
 * the harness writes with correct CRCs. Op byte = op | a << 3. */
static void
gen_queue_dir(void)
{
    static const uint8_t honest[] = {
        0x11,             /* version-2 checkpoint, MEMORY, 2 sends */
        0x41, 0x85,       /* frame: 3 records from the cursor, deflated */
        0x01, 10,         /* frame: 1 record */
        0x02,             /* the true index */
        0x08,             /* segment, id gap 1 */
        0x41, 3, 0x02,    /* frame of 3, true index */
        0x18, 5,          /* segment, id gap 5 */
        0x01, 0x90,       /* frame of 1 */
        0x0b, 2, 3,       /* checkpoint: ack_next 2, read_next 5 */
    };
    static const uint8_t seq_top[] = {
        0x34,             /* no checkpoint, DISK, 4 sends */
        0x01, 5,          /* frame seq 0 */
        0x11, 3, 4,       /* frame at 2^63 - 3: two seqs fit, then EEXHAUSTED */
    };
    static const uint8_t index_lie[] = {
        0x00,
        0x81, 1,          /* frame of 5 records */
        0x12, 50,         /* an index whose last_seq is 50 more */
        0x00, 0x01, 2,    /* segment 2, frame of 1 */
    };
    static const uint8_t leftovers[] = {
        0x02,             /* version-1 checkpoint */
        0x01, 1,
        0x05, 3, 'a', 'b', 'c', 0x0d, 2, 'x', 'y', 0x15, 0, 0x1d, 1, 'z', 0x25, 0,
        0x2d, 0, 0x35, 4, 'n', 'o', 't', 'e', 0x3d, 0, 0x45, 0, 0x4d, 0,
        0x00, 0x01, 2,
        0x03, 0,          /* checkpoint: ack_next = the cursor */
    };
    static const uint8_t ckpt_beyond[] = {
        0x03,             /* version 2, newer slot torn */
        0x41, 1,
        0x4b, 1, 200,     /* ack_next 1, read_next 201, generation 1 */
    };
    static const uint8_t damage[] = {
        0x40,             /* fsync ALWAYS */
        0x41, 7,
        0x04, 40, 0, 0xff, /* flip a byte of the first frame */
        0x01, 2,
        0x06, 4, 'H', 'P', 'F', 'R', /* junk */
        0x07,             /* the last frame again */
        0x20,             /* a segment whose header names another id */
        0x01, 1,
        0x00,
        0x09, 0xfe, 3,    /* frame two seqs back from the cursor */
        0x0c, 60, 0, 0,   /* truncate the segment at 60 */
    };
    static const struct {
        const char *name;
        const uint8_t *p;
        size_t n;
    } seeds[] = {
        {"honest.bin", honest, sizeof(honest)},
        {"seq-top.bin", seq_top, sizeof(seq_top)},
        {"index-lie.bin", index_lie, sizeof(index_lie)},
        {"leftovers.bin", leftovers, sizeof(leftovers)},
        {"ckpt-beyond.bin", ckpt_beyond, sizeof(ckpt_beyond)},
        {"damage.bin", damage, sizeof(damage)},
    };
    for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
        hp_buf b = {0};
        put(&b, seeds[i].p, seeds[i].n);
        emit("queue_dir", seeds[i].name, &b);
        hp_buf_free(&b);
    }
}

static void
gen_queue_ops(void)
{
    const char *t = "queue_ops";
    hp_buf b = {0};

    /* MEMORY, compression 1, memory 256 B: spill, recv, ack, reopen. */
    static const uint8_t mem_small[] = {
        0x02,             /* MEMORY, compression 1, memory 256 */
        0x00, 100,        /* send 100 bytes, fill */
        0x08, 20,         /* send 320 bytes (16x), fill */
        0x28, 30,         /* send 480 bytes, PRNG */
        0x03,             /* recv */
        0x05,             /* ack last */
        0x0c,             /* recv up to 2 */
        0x06,             /* close + reopen */
        0x04 | (7 << 3),  /* recv up to 8 */
        0x15,             /* ack UINT64_MAX */
        0x00, 0,          /* send empty */
        0x07,             /* recv_ack */
    };
    put(&b, mem_small, sizeof(mem_small));
    emit(t, "memory-spill.bin", &b);

    /* DISK mode, batches, reopen toggling to MEMORY with compression 9. */
    static const uint8_t disk[] = {
        0x01 | (3 << 4),     /* DISK, compression 0, memory 1024 */
        0x02 | (3 << 3), 10, 20, 30, 40, /* batch of 4 */
        0x10, 50,            /* send 50 * 64 = 3200 bytes, fill */
        0x03, 0x03,          /* recv, recv */
        0x0d,                /* ack middle */
        0x06 | 0x08 | 0x10 | (7 << 5), /* reopen: toggle mode, compression 9 */
        0x04 | (15 << 3),    /* recv up to 16 */
        0x0f,                /* sync */
        0x07, 0x07,          /* recv_ack x2 */
    };
    b.len = 0;
    put(&b, disk, sizeof(disk));
    emit(t, "disk-batch-reopen.bin", &b);

    /* Fill the 64 KiB disk budget with 16 KiB records until EFULL, then
     * drain some and send again. */
    b.len = 0;
    put_u8(&b, 0x02 | (7 << 4)); /* MEMORY, compression 1, memory 2048 */
    for (int i = 0; i < 6; i++) {
        put_u8(&b, 0x30); /* send 64x, PRNG */
        put_u8(&b, 255);
    }
    put_u8(&b, 0x04 | (2 << 3)); /* recv up to 3 */
    put_u8(&b, 0x05);            /* ack last */
    put_u8(&b, 0x30);
    put_u8(&b, 255);
    put_u8(&b, 0x06); /* reopen */
    put_u8(&b, 0x04 | (31 << 3));
    emit(t, "fill-efull.bin", &b);

    /* Compressible text records across several segments, DISK, compression
     * 5, fsync ALWAYS. */
    b.len = 0;
    put_u8(&b, 0x01 | (6 << 1) | (1 << 4));
    for (int i = 0; i < 24; i++) {
        put_u8(&b, 0x08 | 0x60); /* send 16x, text */
        put_u8(&b, (uint8_t)(40 + i));
    }
    put_u8(&b, 0x04 | (9 << 3));  /* recv up to 10 */
    put_u8(&b, 0x0d);             /* ack middle */
    put_u8(&b, 0x06);             /* reopen */
    put_u8(&b, 0x04 | (31 << 3)); /* recv up to 32 */
    put_u8(&b, 0x1d);             /* ack far beyond (clamped) */
    emit(t, "rotate-text.bin", &b);

    /* No reopen inside the script: spill, rotate, drain and ack in one open. */
    static const uint8_t one_open[] = {
        0x02 | (1 << 4),       /* MEMORY, compression 1, memory 512 */
        0x08, 40, 0x08, 60,    /* send 640 and 960 bytes */
        0x28, 200, 0x48, 10,   /* send 3200 PRNG, send 160 input bytes */
        0x02 | (7 << 3), 1, 2, 3, 4, 5, 6, 7, 8, /* batch of 8 */
        0x04 | (3 << 3),       /* recv up to 4 */
        0x0d,                  /* ack middle */
        0x07, 0x07,            /* recv_ack x2 */
        0x10, 100,             /* send 6400 bytes */
        0x04 | (31 << 3),      /* recv up to 32 */
        0x05,                  /* ack last */
        0x0f,                  /* sync */
    };
    b.len = 0;
    put(&b, one_open, sizeof(one_open));
    emit(t, "one-open.bin", &b);

    /* Crashes (op 7/2) and faults (op 7/3), issue 15. */
    static const uint8_t crash_disk_always[] = {
        0x09,                   /* DISK, fsync ALWAYS, compression 0, memory 256 */
        0x00, 50, 0x08, 30,     /* send 50 and 480 bytes */
        0x12, 10, 20, 30,       /* batch of 3 */
        0x03, 0x05, 0x0f,       /* recv, ack last, sync */
        0x10, 60,               /* send 3840 bytes: rotates */
        0x77, 0x05,             /* power cut inside that send (strict) */
        0x00, 7, 0x08, 90,      /* two more */
        0x57,                   /* torn power cut now */
        0x3c,                   /* recv up to 8 */
        0x37,                   /* strict power cut now */
        0x00, 1, 0x17,          /* send, kill -9 */
        0x97, 0x33,             /* torn cut inside the kill's reopen */
    };
    static const uint8_t fault_write_eio[] = {
        0x01,                   /* DISK, fsync NEVER */
        0x00, 40,               /* send */
        0x1f, 0x00,             /* next write fails with EIO */
        0x00, 41, 0x00, 42,     /* the failing send, then EFAILED */
        0x03, 0x05,             /* recv, ack: EFAILED */
        0x06,                   /* close (fails) + reopen: kill -9 rules */
        0x04 | (7 << 3),        /* recv up to 8 */
    };
    static const uint8_t fault_enospc[] = {
        0x09,                   /* DISK, fsync ALWAYS */
        0x00, 20,
        0x1f, 0x01,             /* next write: ENOSPC -> EFULL, files put back */
        0x00, 21, 0x00, 22,
        0x3f, 0x03,             /* the 2nd fsync from now: ENOSPC */
        0x10, 50, 0x10, 50, 0x10, 50,
        0x5f, 0x02,             /* the 2nd rename from now (segment creation): EIO */
        0x10, 50, 0x10, 50, 0x10, 50,
        0x04 | (7 << 3), 0x15,  /* recv up to 8, ack all */
        0x57,                   /* torn power cut */
    };
    static const uint8_t memory_faults[] = {
        0x02,                   /* MEMORY, compression 1, memory 256 */
        0x7f, 0x00,             /* fsync_dir: EIO */
        0x08, 20, 0x08, 20, 0x08, 20, /* spill */
        0xff, 0x00,             /* pread: EIO (transient) */
        0x03, 0x03, 0x03,
        0xdf, 0x01,             /* unlink: ENOSPC */
        0x15, 0x07,             /* ack all, recv_ack */
        0x06,                   /* reopen */
        0xbf, 0x00,             /* ftruncate: EIO */
        0x08, 40, 0x17,         /* send, kill -9 */
    };
    /* Group commit (HOPPER_FSYNC_COMMIT): nothing received before a
     * commit, a power cut takes what was not committed, a kill -9 does not,
     * a failed commit is sticky. */
    static const uint8_t commit_group[] = {
        0x81,                   /* DISK, fsync COMMIT, compression 0, memory 256 */
        0x00, 50, 0x08, 30,     /* two sends: written, not yet received */
        0x03,                   /* recv: nothing before a commit */
        0x2f,                   /* commit */
        0x3c,                   /* recv up to 8 */
        0x12, 10, 20, 30,       /* batch of 3 */
        0x37,                   /* strict power cut now: the batch may go */
        0x00, 40, 0x2f, 0x05,   /* send, commit, ack last */
        0x10, 60, 0x2f,         /* 3840 bytes (rotates), commit */
        0x00, 9, 0x17,          /* send, kill -9: written, so it survives */
        0x3f, 0x00,             /* next fsync: EIO */
        0x00, 11, 0x2f,         /* send; the commit fails (sticky) */
        0x06,                   /* close (fails) + reopen */
        0x04 | (7 << 3), 0x15,  /* recv up to 8, ack all */
    };
    static const struct {
        const char *name;
        const uint8_t *p;
        size_t n;
    } more[] = {
        {"commit-group.bin", commit_group, sizeof(commit_group)},
        {"crash-disk-always.bin", crash_disk_always, sizeof(crash_disk_always)},
        {"fault-write-eio.bin", fault_write_eio, sizeof(fault_write_eio)},
        {"fault-enospc.bin", fault_enospc, sizeof(fault_enospc)},
        {"memory-faults.bin", memory_faults, sizeof(memory_faults)},
    };
    for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++) {
        b.len = 0;
        put(&b, more[i].p, more[i].n);
        emit(t, more[i].name, &b);
    }
    hp_buf_free(&b);
}

/* hopperd targets: plain text, no daemon code needed to write them. */
static void
text_seed(const char *target, const char *name, const char *prefix, size_t plen,
          const char *text)
{
    hp_buf b = {0};
    put(&b, prefix, plen);
    put(&b, text, strlen(text));
    emit(target, name, &b);
    hp_buf_free(&b);
}

static void
gen_framers(void)
{
    const char *t = "framers";
    /* byte 0: format (bit 0) and max_record (bits 1-2); byte 1: chunk seed */
    text_seed(t, "lines.bin", "\x04\x07", 2,
              "<14>1 2024-01-01T00:00:00Z host app - - - hello\n"
              "second line\r\n\nlast line without newline");
    text_seed(t, "lines-oversize.bin", "\x02\x01", 2,
              "short\nthis line is longer than sixteen bytes\nok\n");
    text_seed(t, "octet.bin", "\x05\x03", 2, "5 hello11 hello world1 x");
    text_seed(t, "octet-oversize.bin", "\x03\x09", 2, "3 abc40 0123456789012345678901234567890123456789"
              "2 ok");
    text_seed(t, "octet-bad.bin", "\x05\x00", 2, "5 hello05 bad");
}

static void
gen_config(void)
{
    const char *t = "config";
    text_seed(t, "full.conf", "", 0,
              "# hopperd example\n"
              "[hopperd]\n"
              "state_dir = /var/lib/hopperd\n"
              "log_level = info   # inline comment\n"
              "metrics_listen = 127.0.0.1:9100\n"
              "shutdown_timeout = 10s\n"
              "\n"
              "[queue main]\n"
              "memory_bytes = 8MiB\n"
              "disk_bytes = 1GiB\n"
              "segment_bytes = 64MiB\n"
              "max_record_bytes = 64KiB\n"
              "compression = 1\n"
              "checkpoint_interval = 1s\n"
              "durability = disk\n"
              "fsync = 200ms\n"
              "when_full = drop_oldest\n"
              "\n"
              "[source syslog]\n"
              "type = tcp\n"
              "listen = [::1]:6514\n"
              "format = octet-counted\n"
              "queue = main\n"
              "max_connections = 256\n"
              "\n"
              "[source local]\n"
              "type = unix\n"
              "path = /run/hopperd.sock\n"
              "mode = 0660\n"
              "queue = main\n"
              "allowed_uids = root, 1000\n"
              "allowed_gids = 0\n"
              "\n"
              "[source nat]\n"
              "type = tcp\n"
              "listen = 127.0.0.1:7766\n"
              "format = native\n"
              "queue = main\n"
              "queues = main\n"
              "allow_subscribe = on\n"
              "\n"
              "[sink out]\n"
              "type = tcp\n"
              "connect = collector.example:514\n"
              "format = lines\n"
              "queue = main\n"
              "connect_timeout = 5s\n"
              "reconnect_min = 100ms\n"
              "reconnect_max = 30s\n");
    text_seed(t, "file-sink.conf", "", 0,
              "[hopperd]\n[queue q]\ndisk_bytes = 64KiB\nsegment_bytes = 64KiB\n"
              "max_record_bytes = 32KiB\n[sink f]\ntype = file\npath = /tmp/out\n"
              "queue = q\nfsync = always\n");
    text_seed(t, "error-duplicate.conf", "", 0,
              "[hopperd]\nlog_level = debug\nlog_level = warn\n");
    text_seed(t, "error-missing-queue.conf", "", 0,
              "[hopperd]\n[source s]\ntype = tcp\nlisten = :514\nqueue = nope\n");
}

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR   (for example fuzz/corpus)\n", argv[0]);
        return 2;
    }
    outdir = argv[1];
    if (mkdir(outdir, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "gen_seeds: %s: %s\n", outdir, strerror(errno));
        return 1;
    }
    gen_record_decode();
    gen_record_roundtrip();
    gen_segment_scan();
    gen_queue_ops();
    gen_queue_dir();
    gen_framers();
    gen_config();
    return failed;
}
