/* SPDX-License-Identifier: MIT */
/* File I/O with EINTR and short-transfer handling, plus the fault hook and
 * the trace hook (both for tests).
 * Every file-system call of the library is made here (see fsio.h). */
#include "fsio.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

hp_fault_fn hp_fault_hook;
hp_fs_trace_fn hp_fs_trace_hook;

/* Report a call that changed the file system (fsio.h); only when traced. */
static void
trace(const char *op, int fd, int dirfd, const char *name, const char *name2, int flags,
      const void *data, size_t len, uint64_t off)
{
    hp_fs_trace_fn fn = hp_fs_trace_hook;
    if (fn != NULL) {
        hp_fs_event ev = {.op = op, .fd = fd, .dirfd = dirfd, .name = name, .name2 = name2,
                          .flags = flags, .data = data, .len = len, .off = off};
        fn(&ev);
    }
}

int
hp_fs_open(const char *path, int flags, int mode)
{
    HP_GUARD(hp_fault("open"));
    int fd;
    do {
        fd = open(path, flags | O_CLOEXEC, mode);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        return -errno;
    }
    trace("open", fd, AT_FDCWD, path, NULL, flags, NULL, 0, 0);
    return fd;
}

int
hp_fs_openat(int dirfd, const char *name, int flags, int mode)
{
    HP_GUARD(hp_fault("open"));
    int fd;
    do {
        fd = openat(dirfd, name, flags | O_CLOEXEC, mode);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        return -errno;
    }
    trace("open", fd, dirfd, name, NULL, flags, NULL, 0, 0);
    return fd;
}

int
hp_fs_open_regular(int dirfd, const char *name, int flags, int *fd_out)
{
    *fd_out = -1;
    HP_GUARD(hp_fault("open"));
    /* Look before opening: opening a FIFO blocks (or makes pread fail with
     * ESPIPE), and opening a device may act on it. */
    struct stat sb;
    if (fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
        return -errno;
    }
    if (!S_ISREG(sb.st_mode)) {
        return 1;
    }
    int fd;
    do {
        fd = openat(dirfd, name, flags | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        /* Replaced since the look: by a symlink (ELOOP with O_NOFOLLOW), a
         * directory (EISDIR) or a FIFO or socket without a peer (ENXIO). */
        return errno == ELOOP || errno == EISDIR || errno == ENXIO ? 1 : -errno;
    }
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        int rc = S_ISREG(sb.st_mode) ? -errno : 1;
        close(fd);
        return rc;
    }
    trace("open", fd, dirfd, name, NULL, flags, NULL, 0, 0);
    *fd_out = fd;
    return 0;
}

/* write(2) (at < 0) or pwrite(2) at offset `at` of all n bytes, retrying
 * EINTR and short writes. */
static int
write_loop(int fd, const void *p, size_t n, int64_t at)
{
    const uint8_t *c = p;
    const size_t total = n;
    const int64_t start = at;
    while (n > 0) {
        ssize_t w = at < 0 ? write(fd, c, n) : pwrite(fd, c, n, (off_t)at);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (w == 0) {
            return -EIO;
        }
        c += w;
        n -= (size_t)w;
        if (at >= 0) {
            at += w;
        }
    }
    if (hp_fs_trace_hook != NULL) {
        /* pwrite: at `start`; write: at the file position, now past them. */
        uint64_t off = (uint64_t)start;
        if (start < 0) {
            off_t end = lseek(fd, 0, SEEK_CUR);
            off = end < 0 ? UINT64_MAX : (uint64_t)end - total;
        }
        trace("write", fd, -1, NULL, NULL, 0, p, total, off);
    }
    return 0;
}

int
hp_fs_write_all(int fd, const void *p, size_t n)
{
    HP_GUARD(hp_fault("write"));
    return write_loop(fd, p, n, -1);
}

int
hp_fs_pwrite_all(int fd, const void *p, size_t n, uint64_t off)
{
    HP_GUARD(hp_fault("write"));
    HP_ENSURE(off <= (uint64_t)INT64_MAX, -EINVAL);
    return write_loop(fd, p, n, (int64_t)off);
}

ssize_t
hp_fs_pread_full(int fd, void *p, size_t n, uint64_t off)
{
    HP_GUARD(hp_fault("pread"));
    uint8_t *c = p;
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, c + got, n - got, (off_t)(off + got));
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (r == 0) {
            break;
        }
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int
hp_fs_fdatasync(int fd)
{
    HP_GUARD(hp_fault("fsync"));
    if (fdatasync(fd) < 0) {
        return -errno;
    }
    trace("fsync", fd, -1, NULL, NULL, 0, NULL, 0, 0);
    return 0;
}

int
hp_fs_fsync(int fd)
{
    HP_GUARD(hp_fault("fsync"));
    if (fsync(fd) < 0) {
        return -errno;
    }
    trace("fsync", fd, -1, NULL, NULL, 0, NULL, 0, 0);
    return 0;
}

int
hp_fs_renameat(int dirfd, const char *from, const char *to)
{
    HP_GUARD(hp_fault("rename"));
    if (renameat(dirfd, from, dirfd, to) < 0) {
        return -errno;
    }
    trace("rename", -1, dirfd, from, to, 0, NULL, 0, 0);
    return 0;
}

int
hp_fs_unlinkat(int dirfd, const char *name)
{
    HP_GUARD(hp_fault("unlink"));
    if (unlinkat(dirfd, name, 0) < 0) {
        return -errno;
    }
    trace("unlink", -1, dirfd, name, NULL, 0, NULL, 0, 0);
    return 0;
}

int
hp_fs_ftruncate(int fd, uint64_t len)
{
    HP_GUARD(hp_fault("ftruncate"));
    int rc;
    do {
        rc = ftruncate(fd, (off_t)len);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        return -errno;
    }
    trace("ftruncate", fd, -1, NULL, NULL, 0, NULL, 0, len);
    return 0;
}

int
hp_fs_mkdir(const char *path, int mode)
{
    HP_GUARD(hp_fault("mkdir"));
    if (mkdir(path, (mode_t)mode) < 0) {
        return errno == EEXIST ? 0 : -errno;
    }
    trace("mkdir", -1, AT_FDCWD, path, NULL, 0, NULL, 0, 0);
    /* mkdir -> fsync(parent): until then a power cut may take the new
     * directory, and everything later made durable inside it, away. */
    char parent[PATH_MAX];
    const char *slash = strrchr(path, '/');
    size_t n = slash == NULL ? 0 : slash == path ? 1 : (size_t)(slash - path);
    HP_ENSURE(n < sizeof(parent), -ENAMETOOLONG);
    memcpy(parent, slash == NULL ? "." : path, slash == NULL ? 1 : n);
    parent[slash == NULL ? 1 : n] = '\0';
    int dfd = hp_fs_open(parent, O_RDONLY | O_DIRECTORY, 0);
    int rc = dfd < 0 ? dfd : hp_fs_fsync_dir(dfd);
    hp_fs_close(dfd);
    if (rc < 0) {
        /* Not known to be durable: remove it, so that a retry creates it and
         * fsyncs again (an existing directory is taken as it is). */
        int saved = errno;
        (void)rmdir(path);
        errno = saved;
    }
    return rc;
}

int
hp_fs_fsync_dir(int dirfd)
{
    HP_GUARD(hp_fault("fsync_dir"));
    if (fsync(dirfd) < 0) {
        return -errno;
    }
    trace("fsync_dir", dirfd, -1, NULL, NULL, 0, NULL, 0, 0);
    return 0;
}

void
hp_fs_discard(int dirfd, const char *name)
{
    int saved = errno;
    if (unlinkat(dirfd, name, 0) == 0) {
        trace("unlink", -1, dirfd, name, NULL, 0, NULL, 0, 0);
    }
    errno = saved;
}

int
hp_fs_trylock(int fd, int exclusive)
{
    if (flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) < 0) {
        return errno == EWOULDBLOCK ? HOPPER_ELOCKED : -errno;
    }
    return 0;
}

int
hp_fs_size(int fd, uint64_t *size)
{
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        return -errno;
    }
    *size = (uint64_t)sb.st_size;
    return 0;
}

int
hp_fs_size_at(int dirfd, const char *name, uint64_t *size)
{
    struct stat sb;
    if (fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
        return -errno;
    }
    *size = (uint64_t)sb.st_size;
    return 0;
}

int
hp_fs_exists(int dirfd, const char *name)
{
    return faccessat(dirfd, name, F_OK, 0) < 0 ? -errno : 0;
}

int
hp_fs_dir_each(int dirfd, int (*fn)(void *ctx, const char *name), void *ctx)
{
    /* fdopendir takes the descriptor over: give it a copy. */
    int dfd = dup(dirfd);
    if (dfd < 0) {
        return -errno;
    }
    DIR *d = fdopendir(dfd);
    if (d == NULL) {
        int rc = -errno;
        close(dfd);
        return rc;
    }
    /* The dup shares the caller's read position, which an earlier walk left
     * at the end: start from the first entry. */
    rewinddir(d);
    int rc = 0;
    struct dirent *de;
    while (rc >= 0 && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            rc = fn(ctx, de->d_name);
        }
    }
    closedir(d);
    return rc < 0 ? rc : 0;
}

void
hp_fs_close(int fd)
{
    if (fd >= 0) {
        int saved = errno;
        close(fd);
        errno = saved;
    }
}

int
hp_fs_atomic_write(int dirfd, const char *name, const void *p, size_t n)
{
    char tmp[256];
    int len = snprintf(tmp, sizeof(tmp), "%s.tmp", name);
    HP_ENSURE(len > 0 && (size_t)len < sizeof(tmp), -ENAMETOOLONG);
    /* A stale temp file from a crash is ours to replace. */
    hp_fs_discard(dirfd, tmp);
    int fd = hp_fs_openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        return fd;
    }
    /* write -> fsync -> rename -> fsync(dir): after a crash either the old or
     * the new content is under `name`, never a torn mix. */
    int rc = hp_fs_write_all(fd, p, n);
    if (rc == 0) {
        rc = hp_fs_fsync(fd);
    }
    hp_fs_close(fd);
    if (rc == 0) {
        rc = hp_fs_renameat(dirfd, tmp, name);
    }
    if (rc < 0) {
        hp_fs_discard(dirfd, tmp);
        return rc;
    }
    return hp_fs_fsync_dir(dirfd);
}
