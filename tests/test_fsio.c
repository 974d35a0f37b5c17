/* SPDX-License-Identifier: MIT */
/* fsio.c against the real kernel: write_all survives short writes and EINTR
 * (a pipe whose writer is interrupted by signals while the reader drains it
 * in small pieces) and reports the error that ends a partial transfer
 * (RLIMIT_FSIZE, in a child); pread_full stops short only at EOF; fsync_dir
 * works on a directory and reports errors; atomic_write replaces content
 * whole and leaves no temp file, also after a failure; the lock helper,
 * mkdir (and its parent fsync), discard, size, exists, the directory walk,
 * the fault hook and the trace hook behave as fsio.h says. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fsio.h"
#include "hp_test.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *
tdir(void **state)
{
    return ((hp_test_dir *)*state)->dir;
}

static void
path_in(char *out, size_t cap, void **state, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", tdir(state), name);
    assert_true(n > 0 && (size_t)n < cap);
}

static void
fill(uint8_t *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1u;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        p[i] = (uint8_t)(x >> 24);
    }
}

static int
open_dir(void **state)
{
    int dfd = hp_fs_open(tdir(state), O_RDONLY | O_DIRECTORY, 0);
    assert_true(dfd >= 0);
    return dfd;
}

static void
create_empty(int dirfd, const char *name)
{
    int fd = hp_fs_openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    hp_fs_close(fd);
}

static uint64_t
size_of(int dirfd, const char *name)
{
    int fd = hp_fs_openat(dirfd, name, O_RDONLY, 0);
    assert_true(fd >= 0);
    uint64_t size = UINT64_MAX;
    assert_int_equal(hp_fs_size(fd, &size), 0);
    hp_fs_close(fd);
    return size;
}

/* ---- fault hook -------------------------------------------------------- */

static const char *g_fail_op;
static int g_fail_rc;
static int g_seen;

static int
fail_hook(const char *op)
{
    if (g_fail_op != NULL && strcmp(op, g_fail_op) == 0) {
        g_seen++;
        return g_fail_rc;
    }
    return 0;
}

static void
arm(const char *op, int rc)
{
    g_fail_op = op;
    g_fail_rc = rc;
    g_seen = 0;
    hp_fault_hook = fail_hook;
}

static int
teardown(void **state)
{
    hp_fault_hook = NULL;
    hp_fs_trace_hook = NULL;
    return hp_test_dir_teardown(state);
}

/* ---- write_all --------------------------------------------------------- */

#define PIPE_TOTAL (2u << 20)

static _Atomic long g_signals;

static void
on_signal(int sig)
{
    (void)sig;
    atomic_fetch_add(&g_signals, 1);
}

typedef struct pipe_writer {
    int fd;
    const uint8_t *p;
    size_t n;
    int rc;
    _Atomic int done;
} pipe_writer;

static void *
writer_main(void *arg)
{
    pipe_writer *w = arg;
    w->rc = hp_fs_write_all(w->fd, w->p, w->n);
    atomic_store(&w->done, 1);
    close(w->fd); /* EOF for the reader: a short count cannot hang the test */
    return NULL;
}

/* The writer blocks on a small pipe; every small read by this thread is
 * followed by a signal (installed without SA_RESTART), so write() returns
 * early with part of the data written, or fails with EINTR when none was. */
static void
test_write_all_short_writes_pipe(void **state)
{
    (void)state;
    uint8_t *src = malloc(PIPE_TOTAL);
    uint8_t *dst = malloc(PIPE_TOTAL);
    assert_non_null(src);
    assert_non_null(dst);
    fill(src, PIPE_TOTAL, 7);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
#ifdef F_SETPIPE_SZ
    (void)fcntl(fds[1], F_SETPIPE_SZ, 4096);
#endif
    struct sigaction sa;
    struct sigaction old;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: interrupted writes return early */
    assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);
    atomic_store(&g_signals, 0);

    pipe_writer w = {.fd = fds[1], .p = src, .n = PIPE_TOTAL, .rc = 1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, writer_main, &w), 0);
    size_t got = 0;
    while (got < PIPE_TOTAL) {
        size_t want = PIPE_TOTAL - got < 1000 ? PIPE_TOTAL - got : 1000;
        ssize_t r = read(fds[0], dst + got, want);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        assert_true(r > 0); /* EOF before all the data: bytes were lost */
        got += (size_t)r;
        if (!atomic_load(&w.done)) {
            pthread_kill(th, SIGUSR1);
        }
    }
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(sigaction(SIGUSR1, &old, NULL), 0);
    assert_int_equal(w.rc, 0);
    assert_true(atomic_load(&g_signals) > 0);
    assert_memory_equal(dst, src, PIPE_TOTAL);
    /* Nothing more than the data. */
    uint8_t extra;
    assert_int_equal(read(fds[0], &extra, 1), 0);
    close(fds[0]);
    free(src);
    free(dst);
}

static void
test_write_all_broken_pipe(void **state)
{
    (void)state;
    struct sigaction sa;
    struct sigaction old;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    assert_int_equal(sigaction(SIGPIPE, &sa, &old), 0);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    close(fds[0]);
    assert_int_equal(hp_fs_write_all(fds[1], "abc", 3), -EPIPE);
    close(fds[1]);
    assert_int_equal(sigaction(SIGPIPE, &old, NULL), 0);
}

/* In a child (the limit is per process): the first write stops short at the
 * file-size limit, the loop writes again and reports that write's EFBIG. */
static void
test_write_all_partial_then_error(void **state)
{
    char path[PATH_MAX];
    path_in(path, sizeof(path), state, "limited");
    uint8_t data[16000];
    fill(data, sizeof(data), 3);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {.rlim_cur = 10000, .rlim_max = 10000};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0) {
            _exit(10);
        }
        int fd = hp_fs_open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
        if (fd < 0) {
            _exit(11);
        }
        int rc = hp_fs_write_all(fd, data, sizeof(data));
        _exit(rc == -EFBIG ? 0 : 12);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    uint8_t *back = NULL;
    size_t n = 0;
    assert_int_equal(hp_test_read_file(path, &back, &n), 0);
    assert_int_equal(n, 10000);
    assert_memory_equal(back, data, 10000);
    free(back);
}

static void
test_write_all_zero_and_fault(void **state)
{
    char path[PATH_MAX];
    path_in(path, sizeof(path), state, "f");
    int fd = hp_fs_open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    assert_int_equal(hp_fs_write_all(fd, NULL, 0), 0);
    arm("write", -ENOSPC);
    assert_int_equal(hp_fs_write_all(fd, "abc", 3), -ENOSPC);
    assert_int_equal(g_seen, 1);
    hp_fault_hook = NULL;
    assert_int_equal(hp_fs_write_all(fd, "abc", 3), 0);
    hp_fs_close(fd);
    int dfd = open_dir(state);
    assert_int_equal(size_of(dfd, "f"), 3); /* the failed write wrote nothing */
    hp_fs_close(dfd);
    assert_int_equal(hp_fs_write_all(-1, "x", 1), -EBADF);
}

/* ---- pread_full -------------------------------------------------------- */

static void
test_pread_full_eof(void **state)
{
    char path[PATH_MAX];
    path_in(path, sizeof(path), state, "r");
    uint8_t data[100];
    fill(data, sizeof(data), 5);
    assert_int_equal(hp_test_write_file(path, data, sizeof(data)), 0);
    int fd = hp_fs_open(path, O_RDONLY, 0);
    assert_true(fd >= 0);
    uint8_t buf[200];
    memset(buf, 0xEE, sizeof(buf));
    assert_int_equal(hp_fs_pread_full(fd, buf, sizeof(buf), 0), 100);
    assert_memory_equal(buf, data, 100);
    assert_int_equal(buf[100], 0xEE); /* nothing past EOF written */
    assert_int_equal(hp_fs_pread_full(fd, buf, 10, 40), 10);
    assert_memory_equal(buf, data + 40, 10);
    assert_int_equal(hp_fs_pread_full(fd, buf, 10, 95), 5);
    assert_memory_equal(buf, data + 95, 5);
    assert_int_equal(hp_fs_pread_full(fd, buf, 10, 100), 0);
    assert_int_equal(hp_fs_pread_full(fd, buf, 10, 1u << 30), 0);
    assert_int_equal(hp_fs_pread_full(fd, buf, 0, 0), 0);
    arm("pread", -EIO);
    assert_int_equal(hp_fs_pread_full(fd, buf, 10, 0), -EIO);
    hp_fault_hook = NULL;
    hp_fs_close(fd);

    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(hp_fs_pread_full(fds[0], buf, 1, 0), -ESPIPE);
    close(fds[0]);
    close(fds[1]);
}

/* ---- directories ------------------------------------------------------- */

static void
test_fsync_dir(void **state)
{
    int dfd = open_dir(state);
    assert_int_equal(hp_fs_fsync_dir(dfd), 0);
    arm("fsync_dir", -EIO);
    assert_int_equal(hp_fs_fsync_dir(dfd), -EIO);
    assert_int_equal(g_seen, 1);
    hp_fault_hook = NULL;
    hp_fs_close(dfd);
    assert_int_equal(hp_fs_fsync_dir(-1), -EBADF);
    /* A missing directory cannot be opened to be synced. */
    char path[PATH_MAX];
    path_in(path, sizeof(path), state, "missing");
    assert_int_equal(hp_fs_open(path, O_RDONLY | O_DIRECTORY, 0), -ENOENT);
}

static void
test_mkdir(void **state)
{
    char path[PATH_MAX];
    path_in(path, sizeof(path), state, "sub");
    assert_int_equal(hp_fs_mkdir(path, 0700), 0);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(sb.st_mode & 0777, 0700);
    assert_int_equal(hp_fs_mkdir(path, 0700), 0); /* exists: success */
    path_in(path, sizeof(path), state, "no/such");
    assert_int_equal(hp_fs_mkdir(path, 0700), -ENOENT);
    path_in(path, sizeof(path), state, "other");
    arm("mkdir", -EACCES);
    assert_int_equal(hp_fs_mkdir(path, 0700), -EACCES);
    hp_fault_hook = NULL;
    assert_int_equal(stat(path, &sb), -1); /* not attempted */
}

typedef struct names {
    char seen[8][16];
    int n;
    const char *stop_at;
} names;

static int
collect(void *ctx, const char *name)
{
    names *c = ctx;
    if (c->stop_at != NULL && strcmp(name, c->stop_at) == 0) {
        return -42;
    }
    assert_true(c->n < 8);
    snprintf(c->seen[c->n++], sizeof(c->seen[0]), "%s", name);
    return 0;
}

static int
has(const names *c, const char *name)
{
    for (int i = 0; i < c->n; i++) {
        if (strcmp(c->seen[i], name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Each walk uses a fresh directory descriptor: the walk reads through a dup,
 * which shares the directory offset with the caller's descriptor. */
static int
walk_fresh(void **state, names *c)
{
    int dfd = open_dir(state);
    int rc = hp_fs_dir_each(dfd, collect, c);
    hp_fs_close(dfd);
    return rc;
}

static void
test_dir_each(void **state)
{
    names c = {0};
    assert_int_equal(walk_fresh(state, &c), 0);
    assert_int_equal(c.n, 0); /* "." and ".." are not reported */
    int dfd = open_dir(state);
    static const char *files[] = {"a", "b", "c"};
    for (size_t i = 0; i < 3; i++) {
        create_empty(dfd, files[i]);
    }
    /* The caller's descriptor stays open and usable after a walk. */
    assert_int_equal(hp_fs_dir_each(dfd, collect, &c), 0);
    assert_int_equal(hp_fs_exists(dfd, "a"), 0);
    assert_int_equal(hp_fs_fsync_dir(dfd), 0);
    hp_fs_close(dfd);
    assert_int_equal(c.n, 3);
    assert_true(has(&c, "a") && has(&c, "b") && has(&c, "c"));
    /* A negative return stops the walk and is returned. */
    names s = {.stop_at = "b"};
    assert_int_equal(walk_fresh(state, &s), -42);
    assert_false(has(&s, "b"));
    assert_true(s.n < 3);
    assert_int_equal(hp_fs_dir_each(-1, collect, &c), -EBADF);
}

/* The walk reads through a dup of the caller's descriptor, which shares its
 * read position: a second walk on the same descriptor sees every entry
 * again (recovery and inspect may list a directory more than once). */
static void
test_dir_each_twice_same_fd(void **state)
{
    int dfd = open_dir(state);
    static const char *files[] = {"a", "b", "c"};
    for (size_t i = 0; i < 3; i++) {
        create_empty(dfd, files[i]);
    }
    for (int round = 0; round < 3; round++) {
        names c = {0};
        assert_int_equal(hp_fs_dir_each(dfd, collect, &c), 0);
        assert_int_equal(c.n, 3);
        assert_true(has(&c, "a") && has(&c, "b") && has(&c, "c"));
    }
    /* Also after a walk stopped half way. */
    names s = {.stop_at = "b"};
    assert_int_equal(hp_fs_dir_each(dfd, collect, &s), -42);
    names c = {0};
    assert_int_equal(hp_fs_dir_each(dfd, collect, &c), 0);
    assert_int_equal(c.n, 3);
    hp_fs_close(dfd);
}

/* ---- open_regular -------------------------------------------------------- */

/* Only a regular file is opened; a FIFO (which would block a reader, or make
 * pread fail with ESPIPE), a directory (EISDIR), a symlink (even to a regular
 * file) and a socket are reported as "not a regular file" (1) without
 * blocking; a missing name is -ENOENT. */
static void
test_open_regular(void **state)
{
    int dfd = open_dir(state);
    create_empty(dfd, "file");
    char path[PATH_MAX];
    path_in(path, sizeof(path), state, "fifo");
    assert_int_equal(mkfifo(path, 0600), 0);
    path_in(path, sizeof(path), state, "dir");
    assert_int_equal(mkdir(path, 0700), 0);
    path_in(path, sizeof(path), state, "link");
    assert_int_equal(symlink("file", path), 0);
    path_in(path, sizeof(path), state, "dangling");
    assert_int_equal(symlink("nowhere", path), 0);
    alarm(20); /* a blocking open fails the test instead of hanging it */
    static const int modes[] = {O_RDONLY, O_RDWR};
    for (size_t m = 0; m < 2; m++) {
        int fd = -7;
        assert_int_equal(hp_fs_open_regular(dfd, "file", modes[m], &fd), 0);
        assert_true(fd >= 0);
        uint64_t size = 1;
        assert_int_equal(hp_fs_size(fd, &size), 0);
        assert_int_equal(size, 0);
        hp_fs_close(fd);
        static const char *other[] = {"fifo", "dir", "link", "dangling"};
        for (size_t i = 0; i < 4; i++) {
            fd = -7;
            assert_int_equal(hp_fs_open_regular(dfd, other[i], modes[m], &fd), 1);
            assert_int_equal(fd, -1);
        }
        fd = -7;
        assert_int_equal(hp_fs_open_regular(dfd, "missing", modes[m], &fd), -ENOENT);
        assert_int_equal(fd, -1);
    }
    alarm(0);
    /* Left as they were. */
    struct stat sb;
    path_in(path, sizeof(path), state, "fifo");
    assert_int_equal(lstat(path, &sb), 0);
    assert_true(S_ISFIFO(sb.st_mode));
    path_in(path, sizeof(path), state, "link");
    assert_int_equal(lstat(path, &sb), 0);
    assert_true(S_ISLNK(sb.st_mode));
    hp_fs_close(dfd);
}

/* ---- atomic_write ------------------------------------------------------ */

static void
test_atomic_write(void **state)
{
    int dfd = open_dir(state);
    char path[PATH_MAX];
    path_in(path, sizeof(path), state, "ck");
    assert_int_equal(hp_fs_atomic_write(dfd, "ck", "first", 5), 0);
    uint8_t *back = NULL;
    size_t n = 0;
    assert_int_equal(hp_test_read_file(path, &back, &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(back, "first", 5);
    free(back);
    /* Replaced whole, never appended to. */
    assert_int_equal(hp_fs_atomic_write(dfd, "ck", "2nd", 3), 0);
    assert_int_equal(hp_test_read_file(path, &back, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(back, "2nd", 3);
    free(back);
    /* A stale temp file from a crash is replaced, and none is left. */
    char tmp[PATH_MAX];
    path_in(tmp, sizeof(tmp), state, "ck.tmp");
    assert_int_equal(hp_test_write_file(tmp, "junk", 4), 0);
    assert_int_equal(hp_fs_atomic_write(dfd, "ck", "third", 5), 0);
    assert_int_equal(hp_fs_exists(dfd, "ck.tmp"), -ENOENT);
    assert_int_equal(size_of(dfd, "ck"), 5);
    /* A failed rename leaves the old content and no temp file. */
    arm("rename", -EIO);
    assert_int_equal(hp_fs_atomic_write(dfd, "ck", "fourth!", 7), -EIO);
    hp_fault_hook = NULL;
    assert_int_equal(hp_fs_exists(dfd, "ck.tmp"), -ENOENT);
    assert_int_equal(hp_test_read_file(path, &back, &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(back, "third", 5);
    free(back);
    /* A name whose temp name does not fit is refused before any I/O. */
    char longname[300];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(hp_fs_atomic_write(dfd, longname, "x", 1), -ENAMETOOLONG);
    hp_fs_close(dfd);
}

/* ---- lock, discard, size, exists and friends --------------------------- */

static void
test_trylock(void **state)
{
    int dfd = open_dir(state);
    int a = hp_fs_openat(dfd, "LOCK", O_RDWR | O_CREAT, 0600);
    int b = hp_fs_openat(dfd, "LOCK", O_RDWR, 0);
    assert_true(a >= 0 && b >= 0);
    /* Two open file descriptions conflict, even in one process. */
    assert_int_equal(hp_fs_trylock(a, 1), 0);
    assert_int_equal(hp_fs_trylock(b, 1), HOPPER_ELOCKED);
    assert_int_equal(hp_fs_trylock(b, 0), HOPPER_ELOCKED);
    hp_fs_close(a); /* releases the lock */
    assert_int_equal(hp_fs_trylock(b, 1), 0);
    hp_fs_close(b);
    /* Shared locks coexist and keep an exclusive one out. */
    a = hp_fs_openat(dfd, "LOCK", O_RDONLY, 0);
    b = hp_fs_openat(dfd, "LOCK", O_RDONLY, 0);
    int c = hp_fs_openat(dfd, "LOCK", O_RDWR, 0);
    assert_true(a >= 0 && b >= 0 && c >= 0);
    assert_int_equal(hp_fs_trylock(a, 0), 0);
    assert_int_equal(hp_fs_trylock(b, 0), 0);
    assert_int_equal(hp_fs_trylock(c, 1), HOPPER_ELOCKED);
    hp_fs_close(a);
    hp_fs_close(b);
    hp_fs_close(c);
    assert_int_equal(hp_fs_trylock(-1, 1), -EBADF);
    hp_fs_close(dfd);
}

static void
test_discard_and_unlink(void **state)
{
    int dfd = open_dir(state);
    create_empty(dfd, "gone");
    assert_int_equal(hp_fs_exists(dfd, "gone"), 0);
    /* The hook is not consulted by discard (best-effort cleanup). */
    arm("unlink", -EIO);
    errno = 1234;
    hp_fs_discard(dfd, "gone");
    assert_int_equal(errno, 1234);
    assert_int_equal(g_seen, 0);
    assert_int_equal(hp_fs_exists(dfd, "gone"), -ENOENT);
    errno = 4321;
    hp_fs_discard(dfd, "gone"); /* missing: ignored, errno kept */
    assert_int_equal(errno, 4321);
    /* unlinkat reports errors and is hooked. */
    assert_int_equal(hp_fs_unlinkat(dfd, "gone"), -EIO);
    assert_int_equal(g_seen, 1);
    hp_fault_hook = NULL;
    assert_int_equal(hp_fs_unlinkat(dfd, "gone"), -ENOENT);
    hp_fs_close(dfd);
}

static void
test_size_truncate_open(void **state)
{
    int dfd = open_dir(state);
    int fd = hp_fs_openat(dfd, "s", O_RDWR | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    uint64_t size = 1;
    assert_int_equal(hp_fs_size(fd, &size), 0);
    assert_int_equal(size, 0);
    uint8_t data[100];
    fill(data, sizeof(data), 9);
    assert_int_equal(hp_fs_write_all(fd, data, sizeof(data)), 0);
    assert_int_equal(hp_fs_fsync(fd), 0);
    assert_int_equal(hp_fs_fdatasync(fd), 0);
    assert_int_equal(hp_fs_size(fd, &size), 0);
    assert_int_equal(size, 100);
    assert_int_equal(hp_fs_ftruncate(fd, 10), 0);
    assert_int_equal(hp_fs_size(fd, &size), 0);
    assert_int_equal(size, 10);
    uint8_t back[100];
    assert_int_equal(hp_fs_pread_full(fd, back, sizeof(back), 0), 10);
    assert_memory_equal(back, data, 10);
    hp_fs_close(fd);
    /* The descriptor is close-on-exec. */
    fd = hp_fs_openat(dfd, "s", O_RDONLY, 0);
    assert_true(fd >= 0);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    hp_fs_close(fd);
    assert_int_equal(hp_fs_openat(dfd, "s", O_WRONLY | O_CREAT | O_EXCL, 0600), -EEXIST);
    assert_int_equal(hp_fs_openat(dfd, "none", O_RDONLY, 0), -ENOENT);
    arm("open", -EMFILE);
    assert_int_equal(hp_fs_openat(dfd, "s", O_RDONLY, 0), -EMFILE);
    hp_fault_hook = NULL;
    assert_int_equal(hp_fs_size(-1, &size), -EBADF);
    assert_int_equal(hp_fs_exists(dfd, "none"), -ENOENT);
    assert_int_equal(hp_fs_renameat(dfd, "s", "t"), 0);
    assert_int_equal(hp_fs_exists(dfd, "s"), -ENOENT);
    assert_int_equal(hp_fs_exists(dfd, "t"), 0);
    assert_int_equal(hp_fs_renameat(dfd, "s", "t"), -ENOENT);
    /* close accepts -1 and keeps errno. */
    errno = 77;
    hp_fs_close(-1);
    assert_int_equal(errno, 77);
    hp_fs_close(dfd);
}

/* The trace hook (the power-loss test's seam): every successful change is
 * reported once, after the fact, with what the model needs; failed calls and
 * no-ops are not. */
typedef struct tev {
    char op[16];
    char name[64];
    char name2[64];
    uint64_t off;
    size_t len;
} tev;

static tev g_tev[32];
static size_t g_ntev;

static void
trace_hook(const hp_fs_event *e)
{
    assert_true(g_ntev < 32);
    tev *t = &g_tev[g_ntev++];
    memset(t, 0, sizeof(*t));
    snprintf(t->op, sizeof(t->op), "%s", e->op);
    const char *slash = e->name ? strrchr(e->name, '/') : NULL;
    snprintf(t->name, sizeof(t->name), "%s", slash ? slash + 1 : e->name ? e->name : "");
    snprintf(t->name2, sizeof(t->name2), "%s", e->name2 ? e->name2 : "");
    t->off = e->off;
    t->len = e->len;
}

static void
expect_ev(size_t i, const char *op, const char *name, uint64_t off, size_t len)
{
    assert_true(i < g_ntev);
    assert_string_equal(g_tev[i].op, op);
    assert_string_equal(g_tev[i].name, name);
    assert_int_equal(g_tev[i].off, off);
    assert_int_equal(g_tev[i].len, len);
}

static void
test_trace_hook(void **state)
{
    char path[PATH_MAX];
    path_in(path, sizeof(path), state, "q");
    g_ntev = 0;
    hp_fs_trace_hook = trace_hook;
    /* mkdir, then the parent's fsync; an existing directory: nothing. */
    assert_int_equal(hp_fs_mkdir(path, 0700), 0);
    assert_int_equal(hp_fs_mkdir(path, 0700), 0);
    assert_int_equal(g_ntev, 3);
    expect_ev(0, "mkdir", "q", 0, 0);
    expect_ev(1, "open", strrchr(tdir(state), '/') + 1, 0, 0);
    expect_ev(2, "fsync_dir", "", 0, 0);
    g_ntev = 0;
    int dfd = hp_fs_open(path, O_RDONLY | O_DIRECTORY, 0);
    assert_true(dfd >= 0);
    int fd = hp_fs_openat(dfd, "f", O_WRONLY | O_CREAT | O_APPEND, 0600);
    assert_true(fd >= 0);
    assert_int_equal(hp_fs_write_all(fd, "0123456789", 10), 0);
    assert_int_equal(hp_fs_write_all(fd, "abcde", 5), 0);
    assert_int_equal(hp_fs_ftruncate(fd, 3), 0);
    assert_int_equal(hp_fs_write_all(fd, "xy", 2), 0); /* O_APPEND: at the end, 3 */
    assert_int_equal(hp_fs_fdatasync(fd), 0);
    hp_fs_close(fd);
    assert_int_equal(hp_fs_renameat(dfd, "f", "g"), 0);
    hp_fs_discard(dfd, "none"); /* nothing removed: no event */
    arm("unlink", -EIO);
    assert_int_equal(hp_fs_unlinkat(dfd, "g"), -EIO); /* failed: no event */
    hp_fault_hook = NULL;
    assert_int_equal(hp_fs_unlinkat(dfd, "g"), 0);
    assert_int_equal(hp_fs_fsync_dir(dfd), 0);
    assert_int_equal(g_ntev, 10);
    expect_ev(0, "open", "q", 0, 0);
    expect_ev(1, "open", "f", 0, 0);
    assert_true(g_tev[1].len == 0);
    expect_ev(2, "write", "", 0, 10);
    expect_ev(3, "write", "", 10, 5);
    expect_ev(4, "ftruncate", "", 3, 0);
    expect_ev(5, "write", "", 3, 2);
    expect_ev(6, "fsync", "", 0, 0);
    expect_ev(7, "rename", "f", 0, 0);
    assert_string_equal(g_tev[7].name2, "g");
    expect_ev(8, "unlink", "g", 0, 0);
    expect_ev(9, "fsync_dir", "", 0, 0);
    hp_fs_close(dfd);
    /* mkdir whose parent fsync fails: removed again, so a retry redoes it. */
    path_in(path, sizeof(path), state, "r");
    arm("fsync_dir", -EIO);
    assert_int_equal(hp_fs_mkdir(path, 0700), -EIO);
    hp_fault_hook = NULL;
    struct stat sb;
    assert_int_equal(stat(path, &sb), -1);
    hp_fs_trace_hook = NULL;
}

int
main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, hp_test_dir_setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_write_all_short_writes_pipe),
        T(test_write_all_broken_pipe),
        T(test_write_all_partial_then_error),
        T(test_write_all_zero_and_fault),
        T(test_pread_full_eof),
        T(test_fsync_dir),
        T(test_mkdir),
        T(test_dir_each),
        T(test_dir_each_twice_same_fd),
        T(test_open_regular),
        T(test_atomic_write),
        T(test_trylock),
        T(test_discard_and_unlink),
        T(test_size_truncate_open),
        T(test_trace_hook),
    };
#undef T
    return cmocka_run_group_tests_name("fsio", tests, NULL, NULL);
}
