/* SPDX-License-Identifier: MIT */
/* bench_recover: reopen a queue holding a large unacknowledged backlog.
 *
 *   bench_recover [MIB=1024] [KIND=log|random] [MEMORY_MIB=8] [END=clean|kill] [COMPRESSION=1]
 *
 * A child process builds a backlog of MIB MiB of 1 KiB records (memory
 * budget 64 KiB, so it lands in segment files) and then either closes the
 * queue (END=clean) or kills itself with SIGKILL without closing (END=kill).
 * Then, for a warm page cache and for a cold one (every queue file fsynced
 * and evicted with posix_fadvise(DONTNEED)), a fresh process opens the queue
 * with a MEMORY_MIB budget and measures hopper_open time, time to the first
 * hopper_recv record (from before open), and its peak RSS (VmHWM), which the
 * target bounds by the memory budget plus 16 MiB. */
#include "bench_common.h"

#include <signal.h>
#include <sys/wait.h>

static void
build(const char *dir, uint64_t mib, const char *kind, int level, int kill_at_end)
{
    hopper_opts o;
    hopper_opts_init(&o);
    o.memory_bytes = 64u << 10;
    o.disk_bytes = (mib << 20) + (mib << 17) + (256u << 20);
    o.compression = level;
    o.fsync = HOPPER_FSYNC_NEVER;
    hopper_queue *q;
    BN_CHECK(hopper_open(dir, "q", &o, &q));
    size_t pool_recs = 8192;
    uint8_t *pool = bn_make_pool(kind, pool_recs, 1024, 7);
    uint64_t n = (mib << 20) / 1024;
    hopper_iovec v[64];
    for (uint64_t i = 0; i < n; i += 64) {
        size_t k = 0;
        for (; k < 64 && i + k < n; k++) {
            v[k].data = pool + ((i + k) % pool_recs) * 1024;
            v[k].len = 1024;
        }
        BN_CHECK(hopper_send_batch(q, v, k, -1));
    }
    if (kill_at_end) {
        /* Let the last write-behind frames reach the files, then die. */
        hopper_stats st = {.struct_size = sizeof(st)};
        BN_CHECK(hopper_stats_get(q, &st));
        fflush(stdout);
        kill(getpid(), SIGKILL);
    }
    BN_CHECK(hopper_close(q));
    free(pool);
}

static void
evict(const char *dir)
{
    char qd[8192];
    snprintf(qd, sizeof(qd), "%s/q", dir);
    DIR *d = opendir(qd);
    if (d == NULL) {
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char f[16384];
        snprintf(f, sizeof(f), "%s/%s", qd, de->d_name);
        int fd = open(f, O_RDONLY);
        if (fd >= 0) {
            (void)fdatasync(fd);
            (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            close(fd);
        }
    }
    closedir(d);
}

/* The measuring process: `bench_recover --open DIR MEMORY_MIB NAME`. */
static int
open_main(const char *dir, uint64_t mem_mib, const char *name)
{
    hopper_opts o;
    hopper_opts_init(&o);
    o.memory_bytes = mem_mib << 20;
    o.disk_bytes = 64ull << 30;
    o.fsync = HOPPER_FSYNC_NEVER;
    long rss0 = bn_status_kib("VmHWM");
    uint64_t t0 = bn_now_ns();
    hopper_queue *q;
    BN_CHECK(hopper_open(dir, "q", &o, &q));
    uint64_t t1 = bn_now_ns();
    hopper_record rec;
    BN_CHECK(hopper_recv(q, &rec, 10000));
    uint64_t t2 = bn_now_ns();
    hopper_stats st = {.struct_size = sizeof(st)};
    BN_CHECK(hopper_stats_get(q, &st));
    long hwm = bn_status_kib("VmHWM");
    printf("%s.open %.1f ms\n", name, bn_secs(t1 - t0) * 1e3);
    printf("%s.first_record %.1f ms\n", name, bn_secs(t2 - t0) * 1e3);
    printf("%s.peak_rss %.1f MiB\n", name, (double)hwm / 1024.0);
    printf("%s.rss_before_open %.1f MiB\n", name, (double)rss0 / 1024.0);
    printf("%s.rss_limit %.1f MiB\n", name, (double)mem_mib + 16.0);
    printf("%s.backlog_records %" PRIu64 " records\n", name, st.backlog_records);
    printf("%s.disk_bytes %" PRIu64 " B\n", name, st.disk_bytes);
    printf("%s.segments %" PRIu64 " files\n", name, st.segments);
    fflush(stdout);
    /* Do not time close: it is not part of recovery. */
    BN_CHECK(hopper_close(q));
    return 0;
}

static void
run_child(char *const args[])
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        execv("/proc/self/exe", args);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_recover: open child failed (status %d)\n", status);
        exit(1);
    }
}

int
main(int argc, char **argv)
{
    if (argc >= 5 && strcmp(argv[1], "--open") == 0) {
        return open_main(argv[2], strtoull(argv[3], NULL, 10), argv[4]);
    }
    uint64_t mib = strtoull(bn_arg(argc, argv, 1, "1024"), NULL, 10);
    const char *kind = bn_arg(argc, argv, 2, "log");
    uint64_t mem_mib = strtoull(bn_arg(argc, argv, 3, "8"), NULL, 10);
    const char *end = bn_arg(argc, argv, 4, "clean");
    int level = atoi(bn_arg(argc, argv, 5, "1"));
    if (mib == 0 || (strcmp(end, "clean") != 0 && strcmp(end, "kill") != 0)) {
        fprintf(stderr, "usage: %s [MIB] [log|random] [MEMORY_MIB] [clean|kill] [LEVEL]\n",
                argv[0]);
        return 2;
    }
    char dir[4096];
    bn_spool(dir, sizeof(dir), "recover");
    char name[160];
    snprintf(name, sizeof(name), "recover.%s.%s.%" PRIu64 "MiB", kind, end, mib);
    hopper_opts o;
    hopper_opts_init(&o);
    o.memory_bytes = mem_mib << 20; /* as the measuring process opens it */
    o.disk_bytes = 64ull << 30;
    o.fsync = HOPPER_FSYNC_NEVER;
    o.compression = level;
    bn_print_context(name, dir, &o);
    printf("%s.build_memory_budget %u B\n", name, 64u << 10);

    uint64_t t0 = bn_now_ns();
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        build(dir, mib, kind, level, strcmp(end, "kill") == 0);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    int killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    if (!(strcmp(end, "kill") == 0 ? killed : WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        fprintf(stderr, "bench_recover: build child failed (status %d)\n", status);
        return 1;
    }
    printf("%s.build %.1f s\n", name, bn_secs(bn_now_ns() - t0));

    char mem[32];
    snprintf(mem, sizeof(mem), "%" PRIu64, mem_mib);
    char wname[200];
    char cname[200];
    snprintf(wname, sizeof(wname), "%s.warm", name);
    snprintf(cname, sizeof(cname), "%s.cold", name);
    char opt[] = "--open";
    char *wargs[] = {argv[0], opt, dir, mem, wname, NULL};
    run_child(wargs);
    evict(dir);
    char *cargs[] = {argv[0], opt, dir, mem, cname, NULL};
    run_child(cargs);
    bn_rmtree(dir, "q");
    return 0;
}
