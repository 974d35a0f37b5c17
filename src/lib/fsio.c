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
hp_fs_write_all(int fd, const void *p, size_t n)
{
    HP_GUARD(hp_fault("write"));
    const uint8_t *c = p;
    const size_t total = n;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
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
    }
    if (hp_fs_trace_hook != NULL) {
        /* The bytes went to the file position, which is now past them. */
        off_t end = lseek(fd, 0, SEEK_CUR);
        uint64_t off = end < 0 ? UINT64_MAX : (uint64_t)end - total;
        trace("write", fd, -1, NULL, NULL, 0, p, total, off);
    }
    return 0;
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
