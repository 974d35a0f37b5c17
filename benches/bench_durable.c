/* SPDX-License-Identifier: MIT */
/* bench_durable: DISK durability, fsync on every acknowledgement (group
 * commit), many producers, small records.
 *
 *   bench_durable [PRODUCERS=16] [RECORD_BYTES=200] [SECONDS=2] [FSYNC=always|never|interval]
 *                 [COMPRESSION=1] [BATCH=1]
 *
 * A record counts once hopper_send() returned 0 (it is in a segment file and
 * fdatasynced). BATCH > 1: each producer sends BATCH records per
 * hopper_send_batch() call (as a native client's batch does) and the
 * figures get a `.xBATCH` suffix; the latency is then per call. Prints acknowledged records/s, p50/p99/max send latency,
 * fdatasync calls per second, records per fdatasync and mean fdatasync time
 * (from hopper_stats). Nobody consumes: the backlog only grows.
 *
 * With FSYNC=always it first runs a baseline on the same spool directory for
 * the same SECONDS: one thread appending RECORD_BYTES to a file and
 * fdatasyncing after each append. A producer calling hopper_send()
 * synchronously waits for at least one such commit per record, so
 * PRODUCERS x BATCH / (baseline p50) bounds the acknowledged rate however well the
 * group commit batches; `ceiling` prints that bound and `ceiling_ratio` how
 * much of it hopper reached. */
#include "bench_common.h"
#include "fsio.h"

#include <pthread.h>
#include <stdatomic.h>

#define LAT_CAP (1u << 20)

typedef struct prod {
    hopper_queue *q;
    size_t rec_bytes;
    int batch; /* records per hopper_send_batch call */
    atomic_int *stop;
    uint64_t n;
    uint32_t *lat_us; /* LAT_CAP samples at most */
    size_t nlat;
} prod;

static void *
producer_main(void *arg)
{
    prod *p = arg;
    uint8_t rec[65536];
    uint64_t seed = (uint64_t)(uintptr_t)p;
    bn_log_line((char *)rec, p->rec_bytes < 256 ? 256 : p->rec_bytes, &seed, 0);
    hopper_iovec v[64];
    for (int i = 0; i < p->batch; i++) {
        v[i] = (hopper_iovec){.data = rec, .len = p->rec_bytes};
    }
    while (!atomic_load_explicit(p->stop, memory_order_relaxed)) {
        memcpy(rec + 20, &p->n, sizeof(p->n));
        uint64_t t0 = bn_now_ns();
        BN_CHECK(hopper_send_batch(p->q, v, (size_t)p->batch, -1));
        uint64_t dt = bn_now_ns() - t0;
        if (p->nlat < LAT_CAP) {
            p->lat_us[p->nlat++] = (uint32_t)(dt / 1000u);
        }
        p->n += (uint64_t)p->batch;
    }
    return NULL;
}

static int
cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a;
    uint32_t y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Append `rec_bytes` to dir/baseline + fdatasync, through the same fsio calls
 * as the queue's writer, for `seconds`. Stores up to LAT_CAP latencies (us,
 * sorted) in lat_us and returns their count. */
static size_t
baseline_append_sync(const char *dir, size_t rec_bytes, double seconds, uint32_t *lat_us)
{
    char path[8192];
    snprintf(path, sizeof(path), "%s/baseline", dir);
    int fd = hp_fs_open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND, 0600);
    if (fd < 0) {
        bn_die("open baseline", fd);
    }
    uint8_t rec[65536];
    uint64_t seed = 42;
    bn_log_line((char *)rec, rec_bytes < 256 ? 256 : rec_bytes, &seed, 0);
    size_t n = 0;
    uint64_t end = bn_now_ns() + (uint64_t)(seconds * 1e9);
    for (uint64_t t0 = bn_now_ns(); t0 < end && n < LAT_CAP; t0 = bn_now_ns()) {
        BN_CHECK(hp_fs_write_all(fd, rec, rec_bytes));
        BN_CHECK(hp_fs_fdatasync(fd));
        lat_us[n++] = (uint32_t)((bn_now_ns() - t0) / 1000u);
    }
    hp_fs_close(fd);
    (void)unlink(path);
    qsort(lat_us, n, sizeof(uint32_t), cmp_u32);
    return n;
}

int
main(int argc, char **argv)
{
    int nprod = atoi(bn_arg(argc, argv, 1, "16"));
    size_t rec_bytes = (size_t)strtoul(bn_arg(argc, argv, 2, "200"), NULL, 10);
    double seconds = atof(bn_arg(argc, argv, 3, "2"));
    const char *fs = bn_arg(argc, argv, 4, "always");
    int level = atoi(bn_arg(argc, argv, 5, "1"));
    int batch = atoi(bn_arg(argc, argv, 6, "1"));
    if (nprod < 1 || nprod > 256 || rec_bytes < 16 || rec_bytes > 65536 || seconds <= 0 ||
        batch < 1 || batch > 64) {
        fprintf(stderr, "usage: %s [PRODUCERS<=256] [RECORD_BYTES] [SECONDS] "
                        "[always|never|interval] [LEVEL] [BATCH<=64]\n", argv[0]);
        return 2;
    }
    char dir[4096];
    bn_spool(dir, sizeof(dir), "durable");
    int is_always = strcmp(fs, "always") == 0;
    uint32_t *base = malloc(LAT_CAP * sizeof(uint32_t));
    size_t nbase = is_always ? baseline_append_sync(dir, rec_bytes, seconds, base) : 0;
    hopper_opts o;
    hopper_opts_init(&o);
    o.durability = HOPPER_DURABILITY_DISK;
    o.fsync = strcmp(fs, "never") == 0      ? HOPPER_FSYNC_NEVER
              : strcmp(fs, "interval") == 0 ? HOPPER_FSYNC_INTERVAL
                                            : HOPPER_FSYNC_ALWAYS;
    o.compression = level;
    o.disk_bytes = 4ull << 30;
    hopper_queue *q;
    BN_CHECK(hopper_open(dir, "q", &o, &q));
    char name[160];
    if (batch == 1) {
        snprintf(name, sizeof(name), "durable.%s.p%d.b%zu", fs, nprod, rec_bytes);
    } else {
        snprintf(name, sizeof(name), "durable.%s.p%d.b%zu.x%d", fs, nprod, rec_bytes, batch);
    }
    bn_print_context(name, dir, &o);

    atomic_int stop = 0;
    prod *ps = calloc((size_t)nprod, sizeof(*ps));
    pthread_t *th = calloc((size_t)nprod, sizeof(*th));
    hopper_stats s0 = {.struct_size = sizeof(s0)};
    BN_CHECK(hopper_stats_get(q, &s0));
    uint64_t t0 = bn_now_ns();
    for (int i = 0; i < nprod; i++) {
        ps[i] = (prod){.q = q, .rec_bytes = rec_bytes, .batch = batch, .stop = &stop,
                       .lat_us = malloc(LAT_CAP * sizeof(uint32_t))};
        pthread_create(&th[i], NULL, producer_main, &ps[i]);
    }
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&ts, NULL);
    atomic_store(&stop, 1);
    uint64_t total = 0;
    size_t nlat = 0;
    for (int i = 0; i < nprod; i++) {
        pthread_join(th[i], NULL);
        total += ps[i].n;
        nlat += ps[i].nlat;
    }
    uint64_t t1 = bn_now_ns();
    hopper_stats s1 = {.struct_size = sizeof(s1)};
    BN_CHECK(hopper_stats_get(q, &s1));
    uint32_t *all = malloc((nlat + 1) * sizeof(uint32_t));
    size_t k = 0;
    for (int i = 0; i < nprod; i++) {
        memcpy(all + k, ps[i].lat_us, ps[i].nlat * sizeof(uint32_t));
        k += ps[i].nlat;
        free(ps[i].lat_us);
    }
    qsort(all, nlat, sizeof(uint32_t), cmp_u32);
    double secs = bn_secs(t1 - t0);
    uint64_t fsyncs = s1.fsyncs - s0.fsyncs;
    printf("%s.acked %.0f rec/s\n", name, (double)total / secs);
    printf("%s.acked_mb %.1f MB/s\n", name, (double)total * (double)rec_bytes / 1e6 / secs);
    printf("%s.lat_p50 %u us\n", name, nlat ? all[nlat / 2] : 0);
    printf("%s.lat_p99 %u us\n", name, nlat ? all[nlat * 99 / 100] : 0);
    printf("%s.lat_max %u us\n", name, nlat ? all[nlat - 1] : 0);
    printf("%s.fsyncs %.0f 1/s\n", name, (double)fsyncs / secs);
    printf("%s.records_per_fsync %.1f rec\n", name, fsyncs ? (double)total / (double)fsyncs : 0.0);
    printf("%s.fsync_mean %.0f us\n", name,
           fsyncs ? (double)(s1.fsync_ns_total - s0.fsync_ns_total) / 1e3 / (double)fsyncs : 0.0);
    printf("%s.disk_per_record %.1f B\n", name, (double)s1.disk_bytes / (double)total);
    if (nbase > 0) {
        double mean = 0.0;
        for (size_t i = 0; i < nbase; i++) {
            mean += (double)base[i];
        }
        mean /= (double)nbase;
        /* On tmpfs fdatasync reaches no device and the p50 can round to 0 us. */
        double p50 = base[nbase / 2] > 0 ? (double)base[nbase / 2] : 1.0;
        double ceiling = (double)nprod * batch * 1e6 / p50;
        printf("%s.baseline_commits %.0f 1/s\n", name, (double)nbase / seconds);
        printf("%s.baseline_p50 %u us\n", name, base[nbase / 2]);
        printf("%s.baseline_p99 %u us\n", name, base[nbase * 99 / 100]);
        printf("%s.baseline_mean %.0f us\n", name, mean);
        printf("%s.ceiling %.0f rec/s\n", name, ceiling);
        printf("%s.ceiling_ratio %.2f -\n", name, (double)total / secs / ceiling);
    }
    free(base);
    free(all);
    free(ps);
    free(th);
    BN_CHECK(hopper_close(q));
    bn_rmtree(dir, "q");
    return 0;
}
