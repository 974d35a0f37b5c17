/* SPDX-License-Identifier: MIT */
/* memfs: an in-memory file system under the library's real fsio.c, for the
 * harnesses whose cost is system calls (fuzz_queue_ops: ~1,500 per input on
 * tmpfs, most of its time; issue 15 asks for "a tmpfs or in-memory
 * directory").
 *
 * memfs.c compiles src/lib/fsio.c unchanged with its system calls (open,
 * openat, write, pwrite, pread, lseek, fsync, fdatasync, renameat, unlinkat,
 * ftruncate, mkdir, rmdir, flock, fstat, fstatat, faccessat, dup, close and
 * fdopendir/readdir) redirected to the memfs_* functions below; a harness
 * links memfs.c before hopper_internal, so the archive's fsio.o is never
 * pulled in and every other module of the library is the one the tests use.
 * The fault hook, the trace hook (tests/helpers/powerfs.c) and fsio's own
 * logic (the regular-file check, the atomic write order) run as they do on
 * disk.
 *
 * The model keeps what the library relies on: one tree of directories and
 * regular files under "/", names per directory, inodes that outlive their
 * last name while open, O_CREAT/O_EXCL/O_TRUNC/O_APPEND/O_DIRECTORY, rename
 * over an existing name, descriptors numbered lowest-free from 3 with dup
 * sharing the open file description (its offset and flock), flock conflicts
 * between open file descriptions, st_mode/st_size, and a directory listing.
 * It has no symlinks, FIFOs, devices, permissions, quotas or durability: a
 * power cut is powerfs's business (it records fsio's calls and builds the
 * image, which the harness writes back with memfs_restore). Errors are
 * returned as libc does (-1 and errno). One process-wide instance, guarded
 * by one mutex (the harness runs no queue thread, but the library may).
 *
 * Not for production: the paths are plain strings ("/a/b"), resolved
 * component by component; ".", ".." and "//" are not understood. */
#ifndef HOPPER_FUZZ_MEMFS_H
#define HOPPER_FUZZ_MEMFS_H

#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/* The libc calls fsio.c makes, over memfs. */
int memfs_open(const char *path, int flags, ...);
int memfs_openat(int dirfd, const char *name, int flags, ...);
ssize_t memfs_write(int fd, const void *p, size_t n);
ssize_t memfs_pwrite(int fd, const void *p, size_t n, off_t off);
ssize_t memfs_pread(int fd, void *p, size_t n, off_t off);
off_t memfs_lseek(int fd, off_t off, int whence);
int memfs_fsync(int fd);
int memfs_fdatasync(int fd);
int memfs_renameat(int olddirfd, const char *from, int newdirfd, const char *to);
int memfs_unlinkat(int dirfd, const char *name, int flags);
int memfs_ftruncate(int fd, off_t len);
int memfs_mkdir(const char *path, mode_t mode);
int memfs_rmdir(const char *path);
int memfs_flock(int fd, int op);
int memfs_fstat(int fd, struct stat *sb);
int memfs_fstatat(int dirfd, const char *name, struct stat *sb, int flags);
int memfs_faccessat(int dirfd, const char *name, int mode, int flags);
int memfs_dup(int fd);
int memfs_close(int fd);
DIR *memfs_fdopendir(int fd);
void memfs_rewinddir(DIR *d);
struct dirent *memfs_readdir(DIR *d);
int memfs_closedir(DIR *d);

/* For the harness. */

/* Remove everything (every descriptor is closed first); returns how many
 * descriptors were still open (a leak, when the harness closed its queue). */
int memfs_reset(void);
/* Descriptors open now. */
int memfs_open_fds(void);

/* One regular file of a directory (powerfs's hp_pfs_file has this layout). */
typedef struct memfs_file {
    char *name;
    uint8_t *data;
    size_t len;
} memfs_file;

/* *files = a copy of the regular files directly in `dir` (malloc'd names and
 * data; free with memfs_files_free), *n their count, in the order a listing
 * gives them (newest name first, as tmpfs). 0, -ENOENT when `dir` is not a
 * directory, -ENOMEM. */
int memfs_snapshot(const char *dir, memfs_file **files, size_t *n);
void memfs_files_free(memfs_file *files, size_t n);
/* Make `dir` hold exactly these regular files, listed as if written in this
 * order into an emptied directory (creating it when missing; others are
 * unlinked; a file with the same bytes keeps its inode). 0 or -errno. */
int memfs_restore(const char *dir, const memfs_file *files, size_t n);

#endif /* HOPPER_FUZZ_MEMFS_H */
