/* SPDX-License-Identifier: MIT */
/* bench_spill: backlog ingest with the consumer stopped, then drain.
 *
 *   bench_spill [MIB=256] [KIND=log|random] [PRODUCERS=4] [DURABILITY=memory|disk]
 *               [FSYNC=never|interval] [COMPRESSION=1] [MEMORY_KIB=64] [RECORD_BYTES=1024]
 *
 * Producers send MIB MiB of RECORD_BYTES records (from an 8 MiB pool of
 * distinct, deterministically generated records: JSON-like log lines with
 * varying fields, or random bytes) while nobody consumes; the tiny memory
 * budget forces almost everything to segment files. Prints ingest MB/s
 * (payload), disk bytes per payload byte (hopper_stats disk_bytes after
 * ingest / payload), then one consumer drains it all (hopper_recv, ack every
 * 1024 records) and drain MB/s is printed, with peak RSS (VmHWM) minus the
 * pool. MB = 10^6 bytes.
 *
 * Baseline, in the same run and spool directory, after the queue is gone:
 * one thread writes the same payload, uncompressed, to a plain file in
 * 1 MiB write()s (no fsync, as FSYNC=never) and reads it back the same way;
 * `ingest_vs_file` and `drain_vs_file` are hopper's rates over those. */
#include "bench_common.h"
#include "fsio.h"

#include <pthread.h>
#include <stdatomic.h>

#define POOL_BYTES (8u << 20)
#define CHUNK (1u << 20)

/* The baseline: the payload through a plain file. Rates in MB/s. */
static void
baseline_file(const char *dir, const uint8_t *pool, size_t pool_len, uint64_t payload,
              double *wr, double *rd)
{
    char path[8192];
    snprintf(path, sizeof(path), "%s/baseline", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        bn_die("open baseline", -errno);
    }
    uint64_t t0 = bn_now_ns();
    for (uint64_t off = 0; off < payload; off += CHUNK) {
        size_t n = payload - off < CHUNK ? (size_t)(payload - off) : CHUNK;
        BN_CHECK(hp_fs_write_all(fd, pool + (off / CHUNK) % (pool_len / CHUNK) * CHUNK, n));
    }
    uint64_t t1 = bn_now_ns();
    uint8_t *buf = malloc(CHUNK);
    volatile uint8_t sink = 0; /* keep the reads */
    for (uint64_t off = 0; off < payload;) {
        ssize_t r = pread(fd, buf, CHUNK, (off_t)off);
        if (r <= 0) {
            bn_die("read baseline", r < 0 ? -errno : -EIO);
        }
        sink = buf[r - 1];
        off += (uint64_t)r;
    }
    uint64_t t2 = bn_now_ns();
    free(buf);
    close(fd);
    (void)unlink(path);
    *wr = (double)payload / 1e6 / bn_secs(t1 - t0);
    *rd = (double)payload / 1e6 / bn_secs(t2 - t1);
    (void)sink;
}

typedef struct shared {
    hopper_queue *q;
    const uint8_t *pool;
    size_t pool_recs;
    size_t rec_bytes;
    uint64_t per_producer;
    int index;
} shared;

typedef struct prod_arg {
    shared *s;
    int index;
    int nprod;
} prod_arg;

static void *
producer_main(void *arg)
{
    prod_arg *a = arg;
    shared *s = a->s;
    /* Producers interleave over the pool so neighbours in the queue differ. */
    size_t k = (size_t)a->index;
    for (uint64_t i = 0; i < s->per_producer; i++) {
        const uint8_t *rec = s->pool + (k % s->pool_recs) * s->rec_bytes;
        BN_CHECK(hopper_send(s->q, rec, s->rec_bytes, -1));
        k += (size_t)a->nprod;
    }
    return NULL;
}

int
main(int argc, char **argv)
{
    uint64_t mib = strtoull(bn_arg(argc, argv, 1, "256"), NULL, 10);
    const char *kind = bn_arg(argc, argv, 2, "log");
    int nprod = atoi(bn_arg(argc, argv, 3, "4"));
    const char *dur = bn_arg(argc, argv, 4, "memory");
    const char *fs = bn_arg(argc, argv, 5, "never");
    int level = atoi(bn_arg(argc, argv, 6, "1"));
    uint64_t mem_kib = strtoull(bn_arg(argc, argv, 7, "64"), NULL, 10);
    size_t rec_bytes = (size_t)strtoul(bn_arg(argc, argv, 8, "1024"), NULL, 10);
    if (mib == 0 || nprod < 1 || nprod > 64 || rec_bytes < 256 || rec_bytes > 65536 ||
        (strcmp(kind, "log") != 0 && strcmp(kind, "random") != 0)) {
        fprintf(stderr, "usage: %s [MIB] [log|random] [PRODUCERS] [memory|disk] "
                        "[never|interval] [LEVEL] [MEMORY_KIB] [RECORD_BYTES>=256]\n", argv[0]);
        return 2;
    }
    shared s = {.rec_bytes = rec_bytes};
    s.pool_recs = POOL_BYTES / rec_bytes;
    s.pool = bn_make_pool(kind, s.pool_recs, rec_bytes, 42);
    uint64_t total_recs = (mib << 20) / rec_bytes;
    s.per_producer = total_recs / (uint64_t)nprod;
    total_recs = s.per_producer * (uint64_t)nprod;
    uint64_t payload = total_recs * rec_bytes;

    char dir[4096];
    bn_spool(dir, sizeof(dir), "spill");
    hopper_opts o;
    hopper_opts_init(&o);
    o.memory_bytes = mem_kib << 10;
    o.disk_bytes = payload + payload / 8 + (128u << 20);
    o.compression = level;
    o.durability = strcmp(dur, "disk") == 0 ? HOPPER_DURABILITY_DISK : HOPPER_DURABILITY_MEMORY;
    o.fsync = strcmp(fs, "interval") == 0 ? HOPPER_FSYNC_INTERVAL : HOPPER_FSYNC_NEVER;
    hopper_queue *q;
    BN_CHECK(hopper_open(dir, "q", &o, &q));
    s.q = q;
    char name[160];
    snprintf(name, sizeof(name), "spill.%s.%s.%s.p%d", kind, dur, fs, nprod);
    bn_print_context(name, dir, &o);
    printf("%s.payload %" PRIu64 " B\n", name, payload);
    printf("%s.record_bytes %zu B\n", name, rec_bytes);

    /* Ingest. */
    pthread_t th[64];
    prod_arg args[64];
    uint64_t t0 = bn_now_ns();
    for (int i = 0; i < nprod; i++) {
        args[i] = (prod_arg){.s = &s, .index = i, .nprod = nprod};
        pthread_create(&th[i], NULL, producer_main, &args[i]);
    }
    for (int i = 0; i < nprod; i++) {
        pthread_join(th[i], NULL);
    }
    uint64_t t1 = bn_now_ns();
    hopper_stats st = {.struct_size = sizeof(st)};
    BN_CHECK(hopper_stats_get(q, &st));
    double ingest = (double)payload / 1e6 / bn_secs(t1 - t0);
    printf("%s.ingest %.1f MB/s\n", name, ingest);
    printf("%s.ingest_rate %.0f rec/s\n", name, (double)total_recs / bn_secs(t1 - t0));
    printf("%s.disk_per_payload %.4f B/B\n", name, (double)st.disk_bytes / (double)payload);
    printf("%s.disk_per_record %.1f B\n", name, (double)st.disk_bytes / (double)total_recs);
    printf("%s.spilled_fraction %.4f -\n", name,
           (double)st.disk_records / (double)total_recs);

    /* Drain. */
    uint64_t got = 0;
    uint64_t sum = 0;
    uint64_t t2 = bn_now_ns();
    while (got < total_recs) {
        hopper_record rec;
        int rc = hopper_recv(q, &rec, 1000);
        BN_CHECK(rc);
        sum += ((const uint8_t *)rec.data)[rec.len - 1];
        got++;
        if (got % 1024 == 0) {
            BN_CHECK(hopper_ack(q, rec.seq));
        }
    }
    BN_CHECK(hopper_ack(q, UINT64_MAX));
    uint64_t t3 = bn_now_ns();
    double drain = (double)payload / 1e6 / bn_secs(t3 - t2);
    printf("%s.drain %.1f MB/s\n", name, drain);
    printf("%s.drain_rate %.0f rec/s\n", name, (double)total_recs / bn_secs(t3 - t2));
    long hwm = bn_status_kib("VmHWM");
    printf("%s.peak_rss %.1f MiB\n", name, (double)hwm / 1024.0);
    printf("%s.peak_rss_minus_pool %.1f MiB\n", name,
           (double)hwm / 1024.0 - (double)POOL_BYTES / 1048576.0);
    if (sum == 1) {
        printf("#\n"); /* keep the reads */
    }
    BN_CHECK(hopper_close(q));
    double wr;
    double rd;
    baseline_file(dir, s.pool, s.pool_recs * rec_bytes, payload, &wr, &rd);
    bn_rmtree(dir, "q");
    printf("%s.baseline_file_write %.1f MB/s\n", name, wr);
    printf("%s.baseline_file_read %.1f MB/s\n", name, rd);
    printf("%s.ingest_vs_file %.2f x\n", name, ingest / wr);
    printf("%s.drain_vs_file %.2f x\n", name, drain / rd);
    free((void *)(uintptr_t)s.pool);
    return 0;
}
