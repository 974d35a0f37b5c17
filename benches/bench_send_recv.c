/* SPDX-License-Identifier: MIT */
/* bench_send_recv: in-memory MPSC throughput, nothing spills.
 *
 *   bench_send_recv [PRODUCERS=4] [RECORD_BYTES=8] [SECONDS=1] [ACK_EVERY=64] [MEMORY_MIB=64]
 *                   [WHICH=both|hopper|baseline] [ROUNDS=5]
 *
 * P producer threads send RECORD_BYTES records for SECONDS; one consumer
 * receives (hopper_recv_ack when ACK_EVERY is 1, else hopper_recv and
 * hopper_ack every ACK_EVERY records). Then the consumer drains what is
 * left; records/s = records / (time until the last one was received).
 * The same shape runs in the same process against a BASELINE: a plain
 * bounded ring (one mutex, two condvars, 4096 slots, copy in and copy out),
 * the C equivalent of a synchronous channel. ROUNDS rounds alternate the
 * two (this 2-core machine's scheduling makes single runs of either vary by
 * up to 2x); prints the median of each and the median of the rounds'
 * ratios, each with `runs=ROUNDS range=MIN..MAX`.
 * The memory budget must be large enough that nothing spills; the bench
 * samples the stats and prints how many records ever reached disk. */
#include "bench_common.h"

#include <pthread.h>
#include <stdatomic.h>

/* ---- baseline: a plain mutex/condvar bounded ring --------------------- */

#define RING_SLOTS 4096u

typedef struct ring {
    pthread_mutex_t mu;
    pthread_cond_t not_empty;
    pthread_cond_t not_full;
    uint8_t *slots; /* RING_SLOTS x slot bytes */
    uint32_t *lens;
    size_t slot;
    size_t head;
    size_t count;
} ring;

static void
ring_init(ring *r, size_t slot)
{
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->not_empty, NULL);
    pthread_cond_init(&r->not_full, NULL);
    r->slots = malloc(RING_SLOTS * slot);
    r->lens = malloc(RING_SLOTS * sizeof(*r->lens));
    if (r->slots == NULL || r->lens == NULL) {
        bn_die("ring malloc", -ENOMEM);
    }
    r->slot = slot;
    r->head = 0;
    r->count = 0;
}

static void
ring_free(ring *r)
{
    free(r->slots);
    free(r->lens);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->not_empty);
    pthread_cond_destroy(&r->not_full);
}

static void
ring_push(ring *r, const void *data, size_t len)
{
    pthread_mutex_lock(&r->mu);
    while (r->count == RING_SLOTS) {
        pthread_cond_wait(&r->not_full, &r->mu);
    }
    size_t i = (r->head + r->count) % RING_SLOTS;
    memcpy(r->slots + i * r->slot, data, len);
    r->lens[i] = (uint32_t)len;
    r->count++;
    pthread_cond_signal(&r->not_empty);
    pthread_mutex_unlock(&r->mu);
}

/* Copies the record out into buf; returns its length, or -1 after 50 ms
 * with nothing to pop (so the consumer can notice the producers are done). */
static long
ring_pop(ring *r, void *buf)
{
    pthread_mutex_lock(&r->mu);
    while (r->count == 0) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_nsec += 50 * 1000 * 1000;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        if (pthread_cond_timedwait(&r->not_empty, &r->mu, &dl) == ETIMEDOUT &&
            r->count == 0) {
            pthread_mutex_unlock(&r->mu);
            return -1;
        }
    }
    size_t i = r->head;
    long len = r->lens[i];
    memcpy(buf, r->slots + i * r->slot, (size_t)len);
    r->head = (r->head + 1) % RING_SLOTS;
    r->count--;
    pthread_cond_signal(&r->not_full);
    pthread_mutex_unlock(&r->mu);
    return len;
}

/* ---- shared driver ----------------------------------------------------- */

typedef struct run {
    int use_hopper;
    hopper_queue *q;
    ring rg;
    size_t rec_bytes;
    int ack_every;
    atomic_int stop;
    atomic_uint_fast64_t sent;
    atomic_int producers_left;
    uint64_t received;
    uint64_t checksum;
    uint64_t t_end;
} run;

static void *
producer_main(void *arg)
{
    run *r = arg;
    uint8_t rec[65536];
    memset(rec, 0xA5, sizeof(rec));
    uint64_t n = 0;
    /* At least one burst per producer: on a loaded machine a producer may
     * first run after the stop (a round of 0 records, a ratio of 0). */
    do {
        for (int k = 0; k < 256; k++) {
            memcpy(rec, &n, sizeof(n));
            if (r->use_hopper) {
                BN_CHECK(hopper_send(r->q, rec, r->rec_bytes, -1));
            } else {
                ring_push(&r->rg, rec, r->rec_bytes);
            }
            n++;
        }
    } while (!atomic_load_explicit(&r->stop, memory_order_relaxed));
    atomic_fetch_add(&r->sent, n);
    atomic_fetch_sub(&r->producers_left, 1);
    return NULL;
}

static void *
consumer_main(void *arg)
{
    run *r = arg;
    uint8_t buf[65536];
    uint64_t got = 0;
    uint64_t sum = 0;
    for (;;) {
        if (atomic_load(&r->producers_left) == 0 && got == atomic_load(&r->sent)) {
            break;
        }
        if (r->use_hopper) {
            hopper_record rec;
            int rc = r->ack_every <= 1 ? hopper_recv_ack(r->q, &rec, 50)
                                       : hopper_recv(r->q, &rec, 50);
            if (rc == -ETIMEDOUT) {
                continue;
            }
            BN_CHECK(rc);
            sum += ((const uint8_t *)rec.data)[0];
            got++;
            if (r->ack_every > 1 && got % (uint64_t)r->ack_every == 0) {
                BN_CHECK(hopper_ack(r->q, rec.seq));
            }
        } else {
            if (ring_pop(&r->rg, buf) < 0) {
                continue; /* timed out: re-check the totals */
            }
            sum += buf[0];
            got++;
        }
    }
    if (r->use_hopper && r->ack_every > 1) {
        BN_CHECK(hopper_ack(r->q, UINT64_MAX));
    }
    r->received = got;
    r->checksum = sum;
    r->t_end = bn_now_ns();
    return NULL;
}

#define MAX_ROUNDS 15

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median of v[0..n); sorts v in place. */
static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Returns records/s; *max_spilled gets the largest disk_records seen. */
static double
run_once(int use_hopper, int producers, size_t rec_bytes, double seconds, int ack_every,
         hopper_queue *q, uint64_t *max_spilled)
{
    run *r = calloc(1, sizeof(*r));
    r->use_hopper = use_hopper;
    r->q = q;
    r->rec_bytes = rec_bytes;
    r->ack_every = ack_every;
    atomic_store(&r->producers_left, producers);
    if (!use_hopper) {
        ring_init(&r->rg, rec_bytes);
    }
    pthread_t cons;
    pthread_t prod[64];
    uint64_t t0 = bn_now_ns();
    pthread_create(&cons, NULL, consumer_main, r);
    for (int i = 0; i < producers; i++) {
        pthread_create(&prod[i], NULL, producer_main, r);
    }
    uint64_t until = t0 + (uint64_t)(seconds * 1e9);
    *max_spilled = 0;
    while (bn_now_ns() < until) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (use_hopper) {
            hopper_stats st = {.struct_size = sizeof(st)};
            if (hopper_stats_get(q, &st) == 0 && st.disk_records > *max_spilled) {
                *max_spilled = st.disk_records;
            }
        }
    }
    atomic_store(&r->stop, 1);
    for (int i = 0; i < producers; i++) {
        pthread_join(prod[i], NULL);
    }
    pthread_join(cons, NULL);
    double rate = (double)r->received / bn_secs(r->t_end - t0);
    if (r->received != atomic_load(&r->sent)) {
        fprintf(stderr, "bench_send_recv: sent %" PRIu64 " received %" PRIu64 "\n",
                (uint64_t)atomic_load(&r->sent), r->received);
        exit(1);
    }
    if (!use_hopper) {
        ring_free(&r->rg);
    }
    free(r);
    return rate;
}

int
main(int argc, char **argv)
{
    int producers = atoi(bn_arg(argc, argv, 1, "4"));
    size_t rec_bytes = (size_t)strtoul(bn_arg(argc, argv, 2, "8"), NULL, 10);
    double seconds = atof(bn_arg(argc, argv, 3, "1"));
    int ack_every = atoi(bn_arg(argc, argv, 4, "64"));
    uint64_t mem_mib = strtoull(bn_arg(argc, argv, 5, "64"), NULL, 10);
    const char *which = bn_arg(argc, argv, 6, "both"); /* one side only: for profiling */
    int rounds = atoi(bn_arg(argc, argv, 7, "5"));
    if (producers < 1 || producers > 64 || rec_bytes < 8 || rec_bytes > 65536 || seconds <= 0 ||
        rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "usage: %s [PRODUCERS<=64] [RECORD_BYTES 8..65536] [SECONDS] "
                        "[ACK_EVERY] [MEMORY_MIB] [both|hopper|baseline] [ROUNDS<=%d]\n",
                argv[0], MAX_ROUNDS);
        return 2;
    }
    char dir[4096];
    bn_spool(dir, sizeof(dir), "sendrecv");
    hopper_opts o;
    hopper_opts_init(&o);
    o.memory_bytes = mem_mib << 20;
    o.disk_bytes = (mem_mib << 21) + (64u << 20);
    o.fsync = HOPPER_FSYNC_NEVER;
    hopper_queue *q;
    BN_CHECK(hopper_open(dir, "q", &o, &q));
    char name[128];
    snprintf(name, sizeof(name), "send_recv.p%d.b%zu.ack%d", producers, rec_bytes, ack_every);
    bn_print_context(name, dir, &o);

    /* Rounds alternate baseline and hopper, so that both see the same
     * machine; the figures are medians over the rounds, the ratio the median
     * of the rounds' ratios. */
    uint64_t spilled = 0;
    int do_base = strcmp(which, "hopper") != 0;
    int do_hop = strcmp(which, "baseline") != 0;
    double bases[MAX_ROUNDS];
    double hops[MAX_ROUNDS];
    double ratios[MAX_ROUNDS];
    for (int i = 0; i < rounds; i++) {
        uint64_t sp = 0;
        bases[i] = do_base ? run_once(0, producers, rec_bytes, seconds, ack_every, NULL, &sp) : 0;
        hops[i] = do_hop ? run_once(1, producers, rec_bytes, seconds, ack_every, q, &sp) : 0;
        spilled = sp > spilled ? sp : spilled;
        ratios[i] = bases[i] > 0 ? hops[i] / bases[i] : 0;
    }
    /* Every median is printed with the number of rounds it is taken over
     * and its range (median() sorts the arrays). */
    double base = median(bases, rounds);
    double hop = median(hops, rounds);
    printf("%s.rounds %d -\n", name, rounds);
    if (do_hop) {
        printf("%s.hopper %.0f rec/s runs=%d range=%.0f..%.0f\n", name, hop, rounds, hops[0],
               hops[rounds - 1]);
        printf("%s.hopper_mb %.1f MB/s runs=%d\n", name, hop * (double)rec_bytes / 1e6, rounds);
        printf("%s.spilled_max %" PRIu64 " records runs=%d\n", name, spilled, rounds);
    }
    if (do_base) {
        printf("%s.baseline %.0f rec/s runs=%d range=%.0f..%.0f\n", name, base, rounds, bases[0],
               bases[rounds - 1]);
    }
    if (do_hop && do_base) {
        double ratio = median(ratios, rounds);
        printf("%s.ratio %.3f x runs=%d range=%.3f..%.3f\n", name, ratio, rounds, ratios[0],
               ratios[rounds - 1]);
    }
    BN_CHECK(hopper_close(q));
    bn_rmtree(dir, "q");
    return 0;
}
