/* SPDX-License-Identifier: MIT */
/* The only module that makes file-system calls (open, write, pread, fsync,
 * rename, unlink, ftruncate, mkdir, flock, fstat, readdir). Every function
 * returns 0 (or a byte count) or -errno and retries EINTR and short transfers.
 * The calls on the persistence path consult the fault hook so tests can fail
 * any call site; the few that do not say so (best-effort cleanup, locking,
 * sizing and listing were never hooked, and tests count the hooked calls). */
#ifndef HOPPER_SRC_LIB_FSIO_H
#define HOPPER_SRC_LIB_FSIO_H
#include "internal.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Fault injection (tests only). When set, each hooked operation first calls
 * the hook with its name ("open", "write", "pread", "fsync" (also for
 * fdatasync), "rename", "unlink", "ftruncate", "mkdir", "fsync_dir"; queue.c
 * adds "alloc" for the queue's allocation); a negative return is used as that
 * operation's result (the operation is not attempted). */
typedef int (*hp_fault_fn)(const char *op);
extern hp_fault_fn hp_fault_hook;

static inline int
hp_fault(const char *op)
{
    return hp_fault_hook ? hp_fault_hook(op) : 0;
}

/* Operation trace (tests only: the power-loss test's page-cache model,
 * tests/helpers/powerfs.c). When set, every call of this file that changed the
 * file system reports it once it succeeded, from the calling thread:
 *   "open"       fd = the new descriptor, dirfd/name as passed (dirfd is
 *                AT_FDCWD for hp_fs_open), flags as passed
 *   "write"      fd, data/len = every byte written, off = file offset of the
 *                first one
 *   "ftruncate"  fd, off = the new length
 *   "fsync"      fd (fsync and fdatasync alike)
 *   "fsync_dir"  fd = the directory
 *   "rename"     dirfd, name -> name2
 *   "unlink"     dirfd, name (hp_fs_unlinkat, and hp_fs_discard when it
 *                removed something)
 *   "mkdir"      name = the path, only when the directory was created
 * Failed calls are not reported; a set hook changes nothing else. It is
 * independent of hp_fault_hook (which sees the call before, by name only). */
typedef struct hp_fs_event {
    const char *op;
    int fd;
    int dirfd;
    const char *name;
    const char *name2;
    int flags;
    const void *data;
    size_t len;
    uint64_t off;
} hp_fs_event;
typedef void (*hp_fs_trace_fn)(const hp_fs_event *ev);
extern hp_fs_trace_fn hp_fs_trace_hook;

HP_MUST_USE int hp_fs_open(const char *path, int flags, int mode);
HP_MUST_USE int hp_fs_openat(int dirfd, const char *name, int flags, int mode);
/* Open dirfd/name (flags: O_RDONLY or O_RDWR) only if it is a regular file,
 * never following a symlink and never blocking: 0 with *fd_out, 1 when the
 * name is something else (FIFO, directory, symlink, socket, device: nothing
 * is opened, *fd_out is -1), or -errno (-ENOENT: no such name). The fd is
 * O_CLOEXEC|O_NONBLOCK (no effect on a regular file). Hooked as "open".
 * Every file of the queue that is read is opened this way: a name of ours
 * held by something else is not the queue's (FORMAT.md §1). */
HP_MUST_USE int hp_fs_open_regular(int dirfd, const char *name, int flags, int *fd_out);
HP_MUST_USE int hp_fs_write_all(int fd, const void *p, size_t n);
/* Write all n bytes at offset off (overwriting in place; hooked as "write"). */
HP_MUST_USE int hp_fs_pwrite_all(int fd, const void *p, size_t n, uint64_t off);
/* Reads up to n bytes at off; returns the number read (short only at EOF). */
HP_MUST_USE ssize_t hp_fs_pread_full(int fd, void *p, size_t n, uint64_t off);
HP_MUST_USE int hp_fs_fdatasync(int fd);
HP_MUST_USE int hp_fs_fsync(int fd);
HP_MUST_USE int hp_fs_renameat(int dirfd, const char *from, const char *to);
HP_MUST_USE int hp_fs_unlinkat(int dirfd, const char *name);
HP_MUST_USE int hp_fs_ftruncate(int fd, uint64_t len);
/* mkdir(path, mode), then fsync of the parent directory so that the new
 * directory survives a power cut (the parent is opened and fsynced, hooked as
 * "open" and "fsync_dir"; when that fails the new directory is removed again
 * and the error returned). An existing directory is success, untouched.
 * Hooked as "mkdir". */
HP_MUST_USE int hp_fs_mkdir(const char *path, int mode);
/* fsync a directory, making the renames, creations and unlinks in it
 * durable (FORMAT.md §2, §4). Hooked as "fsync_dir". */
HP_MUST_USE int hp_fs_fsync_dir(int dirfd);
/* Remove dirfd/name if it is there, ignoring every error and preserving errno;
 * not hooked. Only for leftovers whose removal is an optimisation: stale temp
 * files, index files that the next open would ignore or rebuild. */
void hp_fs_discard(int dirfd, const char *name);
/* Non-blocking flock(2) on fd, exclusive or shared. Returns 0, HOPPER_ELOCKED
 * when a conflicting lock is held (by any open file description, in this
 * process or another), or -errno. Not hooked. */
HP_MUST_USE int hp_fs_trylock(int fd, int exclusive);
/* *size = the size of the open file fd. 0 or -errno. Not hooked. */
HP_MUST_USE int hp_fs_size(int fd, uint64_t *size);
/* *size = the size of dirfd/name (not following a symlink). 0 or -errno.
 * Not hooked. */
HP_MUST_USE int hp_fs_size_at(int dirfd, const char *name, uint64_t *size);
/* 0 when dirfd/name exists, -errno (-ENOENT: it does not) otherwise. Not hooked. */
HP_MUST_USE int hp_fs_exists(int dirfd, const char *name);
/* Call fn for every entry name of the directory (but "." and ".."); a
 * negative return stops the walk and is returned. 0 or -errno. Not hooked. */
HP_MUST_USE int hp_fs_dir_each(int dirfd, int (*fn)(void *ctx, const char *name), void *ctx);
/* Write `n` bytes to dirfd/name atomically: O_EXCL temp, write, fsync,
 * rename over name, fsync the directory (FORMAT.md §4). */
HP_MUST_USE int hp_fs_atomic_write(int dirfd, const char *name, const void *p, size_t n);
void hp_fs_close(int fd);

#endif
