/* SPDX-License-Identifier: MIT */
/* Corpus census (issue 15): how many DISTINCT valid on-disk structures a
 * corpus holds, to tell whether a fuzzer got past the CRCs.
 *
 *   fuzz_census TARGET DIR|FILE...
 *
 * Each input is materialised as the bytes recovery would read: for
 * `queue_dir` the directory qdir_build.h writes from the description (every
 * file in it), for every other target the input itself (segment_scan and
 * record_decode inputs are images). Those bytes are searched at every offset
 * for structures that a reader would accept up to their CRC:
 *   checkpoint slots  "HCKP", hp_ckpt_decode (version 2 or 1)
 *   indexes           "HIDX", hp_idx_decode against the id and size it names
 *   frame headers     "HPFR", hp_rec_parse_header + hp_rec_check (CRC)
 *   segment headers   "HSEG", hp_seg_header_decode
 * and counted once per distinct byte string (64-bit hash). Prints one line:
 *   TARGET: N inputs; distinct checkpoints C, indexes I, frame headers F,
 *   segment headers S */
#include "qdir_build.h"

typedef struct hset {
    uint64_t *v;
    size_t cap;
    size_t n;
} hset;

static uint64_t
fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 1099511628211ull;
    }
    return h | 1; /* 0 marks an empty slot */
}

static void
hset_add(hset *s, const uint8_t *p, size_t n)
{
    if (s->n * 2 >= s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 1024;
        uint64_t *nv = calloc(ncap, sizeof(*nv));
        if (nv == NULL) {
            qd_oom();
        }
        for (size_t i = 0; i < s->cap; i++) {
            if (s->v[i] != 0) {
                size_t k = s->v[i] & (ncap - 1);
                while (nv[k] != 0) {
                    k = (k + 1) & (ncap - 1);
                }
                nv[k] = s->v[i];
            }
        }
        free(s->v);
        s->v = nv;
        s->cap = ncap;
    }
    uint64_t h = fnv(p, n);
    size_t k = h & (s->cap - 1);
    while (s->v[k] != 0) {
        if (s->v[k] == h) {
            return;
        }
        k = (k + 1) & (s->cap - 1);
    }
    s->v[k] = h;
    s->n++;
}

static hset ckpts, idxs, frames, segs;

static void
scan(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i + 4 <= n; i++) {
        uint32_t magic = hp_get_u32(p + i);
        size_t left = n - i;
        if (magic == HP_CKPT_MAGIC && left >= HP_CKPT_SIZE) {
            uint64_t a;
            uint64_t r;
            uint32_t g;
            if (hp_ckpt_decode(p + i, HP_CKPT_SIZE, HP_CKPT_VERSION, &a, &r, &g) == 0 ||
                hp_ckpt_decode(p + i, HP_CKPT_SIZE, HP_CKPT_VERSION_1, &a, &r, &g) == 0) {
                hset_add(&ckpts, p + i, HP_CKPT_SIZE);
            }
        } else if (magic == HP_IDX_MAGIC && left >= HP_IDX_HDR + 4) {
            uint64_t runs = hp_get_u32(p + i + 40);
            if (runs <= (left - HP_IDX_HDR - 4) / HP_IDX_RUN) {
                size_t len = HP_IDX_HDR + (size_t)runs * HP_IDX_RUN + 4;
                hp_segidx x = {0};
                if (hp_idx_decode(p + i, len, hp_get_u64(p + i + 8), hp_get_u64(p + i + 16),
                                  &x) == 0) {
                    hset_add(&idxs, p + i, len);
                }
                hp_idx_free(&x);
            }
        } else if (magic == HP_FRAME_MAGIC && left >= HP_FRAME_HDR) {
            hp_frame_hdr h;
            if (hp_rec_parse_header(p + i, left, HP_FRAME_MAX_RAW, &h) == 0 &&
                hp_rec_check(p + i, left, &h) == 0) {
                hset_add(&frames, p + i, HP_FRAME_HDR);
            }
        } else if (magic == HP_SEG_MAGIC && left >= HP_SEG_HDR) {
            uint64_t id;
            uint64_t first;
            if (hp_seg_header_decode(p + i, HP_SEG_HDR, &id, &first) == 0) {
                hset_add(&segs, p + i, HP_SEG_HDR);
            }
        }
    }
}

static void
scan_dir_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char path[PATH_MAX];
        fz_join(path, sizeof(path), dir, de->d_name);
        struct stat sb;
        if (lstat(path, &sb) < 0 || !S_ISREG(sb.st_mode)) {
            continue;
        }
        FILE *f = fopen(path, "rb");
        if (f == NULL) {
            continue;
        }
        uint8_t *buf = malloc((size_t)sb.st_size + 1);
        size_t got = buf ? fread(buf, 1, (size_t)sb.st_size, f) : 0;
        fclose(f);
        if (buf != NULL) {
            scan(buf, got);
        }
        free(buf);
    }
    closedir(d);
}

static int is_queue_dir;
static unsigned long inputs;

static void
census_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return;
    }
    static uint8_t buf[FZ_MAX_INPUT + 1];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    if (n == 0 || n > FZ_MAX_INPUT) {
        return;
    }
    inputs++;
    if (!is_queue_dir) {
        scan(buf, n);
        return;
    }
    static qd_plan pl;
    const char *base = fz_tmpdir("census");
    char qdir[PATH_MAX];
    fz_fresh_subdir(base, "q", qdir, sizeof(qdir));
    qd_build(buf, n, qdir, &pl);
    scan_dir_files(qdir);
    fz_rmtree(qdir, 0);
}

static void
census_path(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) < 0) {
        fprintf(stderr, "census: %s: %s\n", path, strerror(errno));
        return;
    }
    if (S_ISREG(sb.st_mode)) {
        census_file(path);
        return;
    }
    DIR *d = opendir(path);
    if (d == NULL) {
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') {
            continue; /* also AFL++'s .state */
        }
        char sub[PATH_MAX];
        fz_join(sub, sizeof(sub), path, de->d_name);
        census_path(sub);
    }
    closedir(d);
}

int
main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s TARGET DIR|FILE...\n", argv[0]);
        return 2;
    }
    is_queue_dir = strcmp(argv[1], "queue_dir") == 0;
    for (int i = 2; i < argc; i++) {
        census_path(argv[i]);
    }
    printf("%s: %lu inputs; distinct checkpoints %zu, indexes %zu, frame headers %zu, "
           "segment headers %zu\n",
           argv[1], inputs, ckpts.n, idxs.n, frames.n, segs.n);
    return 0;
}
