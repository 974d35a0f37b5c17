/* SPDX-License-Identifier: MIT */
/* hopper_queue: options, the queue name check, the directory lock, open and
 * close, stats and the sticky failure. The queue's state, its lock map and
 * the split of the rest into files are described in queue_int.h.
 *
 * Open: check the options, create DIR/NAME, take the exclusive flock on
 * LOCK (HOPPER_ELOCKED while another opener holds it), read the checkpoint
 * (converting an old or missing one, checkpoint.c), recover the segments
 * (recover.c), create the compressor and decompressor and, with
 * fsync=interval, start the syncer thread (writer.c).
 *
 * Close: stop and join the syncer, wait for the writer role, write the
 * write-behind records and (MEMORY mode) what only memory holds, fdatasync
 * the active segment and seal its index, then write the checkpoint. The
 * handle is released even when close reports an error (STYLE §7 rule 1).
 */
#include "queue_int.h"

#include "fsio.h"

#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>

/* ---- failure ------------------------------------------------------------ */

void
hp_q_fail_locked(hopper_queue *q, int rc)
{
    if (!q->failed) {
        q->failed = rc < 0 ? rc : HOPPER_EFAILED;
        atomic_store(&q->failed_flag, 1);
    }
    pthread_cond_broadcast(&q->not_empty);
    pthread_cond_broadcast(&q->not_full);
    pthread_cond_broadcast(&q->written);
}

/* ---- options ------------------------------------------------------------ */

void
hopper_opts_init(hopper_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->struct_size = sizeof(*o);
    o->memory_bytes = 8u << 20;
    o->disk_bytes = 1ull << 30;
    o->segment_bytes = 64u << 20;
    o->compression = 1;
    o->fsync = HOPPER_FSYNC_INTERVAL;
    o->fsync_interval_ms = 1000;
    o->durability = HOPPER_DURABILITY_MEMORY;
    o->max_record_bytes = 16u << 20;
    o->checkpoint_interval_ms = 1000;
}

static int
check_opts(const hopper_opts *o)
{
    HP_ENSURE(o->struct_size >= sizeof(hopper_opts), -EINVAL);
    HP_ENSURE(o->disk_bytes >= 64u * 1024u, -EINVAL);
    HP_ENSURE(o->segment_bytes >= 4096u && o->segment_bytes <= (1ull << 40), -EINVAL);
    HP_ENSURE(o->compression >= 0 && o->compression <= 9, -EINVAL);
    HP_ENSURE(o->fsync >= HOPPER_FSYNC_NEVER && o->fsync <= HOPPER_FSYNC_COMMIT, -EINVAL);
    HP_ENSURE(o->fsync != HOPPER_FSYNC_INTERVAL || o->fsync_interval_ms > 0, -EINVAL);
    HP_ENSURE(o->durability == HOPPER_DURABILITY_MEMORY ||
                  o->durability == HOPPER_DURABILITY_DISK,
              -EINVAL);
    /* MEMORY mode hands records out before they reach a file: nothing for
     * hopper_commit() to hold back. */
    HP_ENSURE(o->fsync != HOPPER_FSYNC_COMMIT || o->durability == HOPPER_DURABILITY_DISK,
              -EINVAL);
    HP_ENSURE(o->max_record_bytes <= HP_RECORD_MAX, -EINVAL);
    return 0;
}

static int
check_name(const char *name)
{
    size_t n = strlen(name);
    HP_ENSURE(n >= 1 && n <= 128, -EINVAL);
    HP_ENSURE(strcmp(name, ".") != 0 && strcmp(name, "..") != 0, -EINVAL);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.' || c == '-';
        HP_ENSURE(ok, -EINVAL);
    }
    return 0;
}

/* ---- identity ------------------------------------------------------------ */

/* Read DIR/NAME/queue.id, or create it when there is none (a new queue, or
 * one created before the file existed). Called with the directory lock
 * held, so no other opener races the creation. A file that is there but
 * does not hold 32 hex digits is HOPPER_ECORRUPT: replacing it would change
 * the identity, which consumers may use to deduplicate. */
static int
queue_id_load(hopper_queue *q)
{
    char text[HP_QID_HEX + 2];
    int fd = hp_fs_openat(q->dirfd, HP_QID_NAME, O_RDONLY, 0);
    if (fd >= 0) {
        ssize_t n = hp_fs_pread_full(fd, text, sizeof(text), 0);
        hp_fs_close(fd);
        if (n < 0) {
            return (int)n;
        }
        HP_ENSURE(n == HP_QID_HEX + 1 && text[HP_QID_HEX] == '\n', HOPPER_ECORRUPT);
        for (int i = 0; i < HP_QID_HEX; i++) {
            char c = text[i];
            HP_ENSURE((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'), HOPPER_ECORRUPT);
        }
        memcpy(q->qid, text, HP_QID_HEX);
        q->qid[HP_QID_HEX] = '\0';
        return 0;
    }
    HP_ENSURE(fd == -ENOENT, fd);
    uint8_t raw[HP_QID_HEX / 2];
    size_t got = 0;
    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        if (n < 0) {
            HP_ENSURE(errno == EINTR, -errno);
            continue;
        }
        got += (size_t)n;
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof(raw); i++) {
        text[2 * i] = hex[raw[i] >> 4];
        text[2 * i + 1] = hex[raw[i] & 15];
    }
    text[HP_QID_HEX] = '\n';
    HP_GUARD(hp_fs_atomic_write(q->dirfd, HP_QID_NAME, text, HP_QID_HEX + 1));
    memcpy(q->qid, text, HP_QID_HEX);
    q->qid[HP_QID_HEX] = '\0';
    return 0;
}

int
hopper_queue_id(hopper_queue *q, char out[HOPPER_QUEUE_ID_LEN + 1])
{
    HP_ENSURE(q != NULL && out != NULL, -EINVAL);
    memcpy(out, q->qid, HP_QID_HEX + 1);
    return 0;
}

/* ---- open and close ----------------------------------------------------- */

/* The number of online CPUs, asked once per process: sysconf() reads sysfs
 * (three system calls) each time, and hopper_open() only needs to know
 * whether spinning can ever help. */
static long
online_cpus(void)
{
    static _Atomic long cached;
    long n = atomic_load_explicit(&cached, memory_order_relaxed);
    if (n == 0) {
        n = sysconf(_SC_NPROCESSORS_ONLN);
        n = n > 0 ? n : 1;
        atomic_store_explicit(&cached, n, memory_order_relaxed);
    }
    return n;
}

/* Release everything; handles every partial state of hopper_open (fds start
 * at -1, pointers at NULL). */
static void
queue_free(hopper_queue *q)
{
    hp_q_reader_reset(&q->rd);
    hp_buf_free(&q->rd.win.buf);
    hp_buf_free(&q->rd.raw);
    free(q->rd.stage);
    hp_dec_free(&q->rd.dec);
    for (uint32_t i = 0; i < HP_ENC_SLOTS; i++) {
        hp_enc_free(&q->enc[i]);
        hp_buf_free(&q->eout[i]);
    }
    hp_buf_free(&q->wbuf);
    hp_buf_free(&q->pend.raw);
    hp_buf_free(&q->spare.raw);
    hp_deque_free(&q->mem);
    free(q->segs.v);
    free(q->runs.v);
    free(q->gaps.v);
    free(q->wlist.v);
    free(q->touched.v);
    free(q->sealed.v);
    hp_idx_free(&q->aidx);
    hp_fs_close(q->active_fd);
    hp_fs_close(q->ckpt_fd);
    hp_fs_close(q->lockfd); /* releases the flock */
    hp_fs_close(q->dirfd);
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
    pthread_cond_destroy(&q->written);
    pthread_cond_destroy(&q->cr_done);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

int
hopper_open(const char *dir, const char *name, const hopper_opts *opts, hopper_queue **out)
{
    HP_ENSURE(out != NULL, -EINVAL);
    *out = NULL;
    HP_ENSURE(dir != NULL && name != NULL, -EINVAL);
    HP_GUARD(check_name(name));
    hopper_opts defaults;
    if (opts == NULL) {
        hopper_opts_init(&defaults);
        opts = &defaults;
    }
    HP_GUARD(check_opts(opts));
    HP_GUARD(hp_fault("alloc"));
    hopper_queue *q = calloc(1, sizeof(*q));
    if (q == NULL) {
        return -ENOMEM;
    }
    q->o = *opts;
    /* Stored frames are judged by the format-wide limit, not by this open's
     * max_record_bytes: a queue reopened with a smaller one still reads the
     * larger records it holds (FORMAT.md §3.4). */
    q->max_raw = HP_FRAME_MAX_RAW;
    /* Space comes back a whole segment at a time, so no segment may hold more
     * than a quarter of the disk budget; frames stay well below a segment. */
    q->seg_cap = q->o.segment_bytes;
    if (q->seg_cap > q->o.disk_bytes / 4) {
        q->seg_cap = q->o.disk_bytes / 4 > 4096 ? q->o.disk_bytes / 4 : 4096;
    }
    q->frame_target = q->seg_cap / 4 < HP_FRAME_TARGET ? q->seg_cap / 4 : HP_FRAME_TARGET;
    if (q->frame_target < 1024) {
        q->frame_target = 1024;
    }
    hp_deque_init(&q->mem, q->o.memory_bytes);
    q->spin_ok = online_cpus() > 1;
    q->dirfd = -1;
    q->lockfd = -1;
    q->active_fd = -1;
    q->ckpt_fd = -1;
    q->rd.fd = -1;
    /* Critical sections are short: spin a little before sleeping (glibc's
     * adaptive mutex), which keeps contended sends off the futex path. */
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
    pthread_mutex_init(&q->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    int rc = hp_cond_init(&q->not_empty);
    if (rc == 0) {
        rc = hp_cond_init(&q->not_full);
    }
    if (rc == 0) {
        rc = hp_cond_init(&q->written);
    }
    if (rc == 0) {
        rc = hp_cond_init(&q->cr_done);
    }
    if (rc < 0) {
        free(q);
        return rc;
    }
    char path[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        rc = -ENAMETOOLONG;
        goto fail;
    }
    rc = hp_fs_mkdir(path, 0700);
    if (rc < 0) {
        goto fail;
    }
    rc = hp_fs_open(path, O_RDONLY | O_DIRECTORY, 0);
    if (rc < 0) {
        goto fail;
    }
    q->dirfd = rc;
    rc = hp_fs_openat(q->dirfd, HP_LOCK_NAME, O_RDWR | O_CREAT, 0600);
    if (rc < 0) {
        goto fail;
    }
    q->lockfd = rc;
    /* flock conflicts between open file descriptions, so a second opener in
     * this process is refused as well as one in another process. */
    rc = hp_fs_trylock(q->lockfd, 1);
    if (rc < 0) {
        goto fail;
    }
    rc = queue_id_load(q);
    if (rc < 0) {
        goto fail;
    }
    uint64_t read_next;
    rc = hp_q_ckpt_open(q, &read_next);
    if (rc < 0) {
        goto fail;
    }
    q->redeliver_below = read_next;
    /* The checkpoint counts at its full size even while an old or missing one
     * waits to be replaced (checkpoint.c). */
    q->disk_bytes = HP_CKPT_FILE_SIZE + HP_QID_HEX + 1; /* + queue.id */
    rc = hp_q_recover(q);
    if (rc < 0) {
        goto fail;
    }
    rc = hp_enc_init(&q->enc[0], q->o.compression);
    for (uint32_t i = 1; i < HP_ENC_SLOTS; i++) {
        q->enc[i].level = -1; /* created by the first frame of slot i */
    }
    if (rc == 0) {
        rc = hp_dec_init(&q->rd.dec);
    }
    if (rc < 0) {
        goto fail;
    }
    q->last_sync_ns = hp_now_mono_ns();
    if (q->o.fsync == HOPPER_FSYNC_INTERVAL) {
        rc = -pthread_create(&q->syncer, NULL, hp_q_syncer_main, q);
        if (rc < 0) {
            goto fail;
        }
        q->has_syncer = 1;
    }
    *out = q;
    return 0;
fail:
    queue_free(q);
    return rc;
}

int
hopper_close(hopper_queue *q)
{
    if (q == NULL) {
        return 0;
    }
    hp_mutex_lock(&q->mu);
    q->closing = 1;
    q->shutdown = 1;
    pthread_cond_broadcast(&q->written);
    pthread_cond_broadcast(&q->not_empty);
    pthread_cond_broadcast(&q->not_full);
    hp_mutex_unlock(&q->mu);
    if (q->has_syncer) {
        pthread_join(q->syncer, NULL);
    }
    hp_mutex_lock(&q->mu);
    while (q->writer_active) {
        hp_cond_wait(&q->written, &q->mu);
    }
    int rc = q->failed ? HOPPER_EFAILED : 0;
    if (rc == 0 && q->pend.count > 0) {
        hp_q_run_writer(q); /* write-behind records (MEMORY mode) */
        rc = q->failed ? HOPPER_EFAILED : 0;
        if (rc == 0 && q->pend.count > 0) {
            atomic_fetch_add(&q->c_lost, q->pend.count);
            rc = HOPPER_EFULL;
        }
    }
    if (rc == 0 && q->o.durability == HOPPER_DURABILITY_MEMORY && q->mem.count > 0) {
        /* I/O under mu: the only such place (queue_int.h). The syncer is
         * joined and the writer role is free, and close is documented to
         * follow every other call, so no thread can wait for mu meanwhile. */
        rc = hp_q_save_memory(q);
    }
    uint64_t ack_next = q->ack_next;
    uint64_t read_next = hp_q_read_hwm(q);
    hp_mutex_unlock(&q->mu);
    /* Graceful close: everything written is made durable. */
    if (q->active_fd >= 0 && q->failed == 0) {
        int r = hp_fs_fdatasync(q->active_fd);
        if (r < 0 && rc == 0) {
            rc = r;
        }
        if (r == 0 && q->aidx.id == q->active_id) {
            hp_q_seal_index(q); /* the next open need not scan this segment */
        }
    }
    if (q->failed == 0 && (ack_next != q->ckpt_ack || read_next > q->redeliver_below)) {
        int r = hp_q_ckpt_write(q, ack_next, read_next);
        if (r < 0 && rc == 0) {
            rc = r;
        }
    }
    queue_free(q);
    return rc;
}

/* ---- stats -------------------------------------------------------------- */

/* The first version of hopper_stats ended with `failed`: callers built with
 * it pass this struct_size and get the fields it has. */
#define STATS_V1_SIZE offsetof(hopper_stats, missing_records)

int
hopper_stats_get(hopper_queue *q, hopper_stats *st_out)
{
    HP_ENSURE(q != NULL && st_out != NULL && st_out->struct_size >= STATS_V1_SIZE, -EINVAL);
    size_t sz = st_out->struct_size;
    hopper_stats full;
    hopper_stats *st = &full;
    memset(st, 0, sizeof(*st));
    hp_mutex_lock(&q->mu);
    st->mem_records = q->mem.count;
    st->mem_bytes = q->mem_bytes;
    for (size_t i = 0; i < q->segs.n; i++) {
        st->disk_records += q->segs.v[i].records;
        st->disk_raw_bytes += q->segs.v[i].raw;
    }
    st->disk_bytes = q->disk_bytes;
    st->segments = q->segs.n;
    /* Seqs known missing (gaps found at open) will never be delivered. */
    st->backlog_records = q->next_seq - q->ack_next - q->missing_left;
    uint64_t oldest = 0;
    if (q->mem.count > 0) {
        oldest = hp_deque_front(&q->mem)->ts_ms;
    }
    if (hp_q_runs_live(q) > 0) {
        uint64_t t = q->runs.v[q->runs_head].ts_ms;
        if (oldest == 0 || t < oldest) {
            oldest = t;
        }
    }
    st->next_seq = q->next_seq;
    st->failed = q->failed;
    st->sent = q->c_sent;
    st->received = atomic_load(&q->c_received);
    hp_mutex_unlock(&q->mu);
    if (oldest != 0 && st->backlog_records > 0) {
        uint64_t now = hp_now_wall_ms();
        st->oldest_age_ms = now > oldest ? now - oldest : 0;
    }

    st->acked = atomic_load(&q->c_acked);
    st->redelivered = atomic_load(&q->c_redelivered);
    st->full_rejections = atomic_load(&q->c_full);
    st->corrupt_frames = atomic_load(&q->c_corrupt_frames);
    st->corrupt_bytes = atomic_load(&q->c_corrupt_bytes);
    st->quarantined_bytes = atomic_load(&q->c_quarantined);
    st->lost_records = atomic_load(&q->c_lost);
    st->fsyncs = atomic_load(&q->c_fsyncs);
    st->fsync_ns_total = atomic_load(&q->c_fsync_ns);
    st->torn_bytes = atomic_load(&q->c_torn);
    st->missing_records = q->missing;
    st->checkpoint_clamped = q->ckpt_clamped;
    memcpy(st_out, st, sz < sizeof(*st) ? sz : sizeof(*st));
    st_out->struct_size = sz;
    return 0;
}
