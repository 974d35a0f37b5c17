/* SPDX-License-Identifier: MIT */
/* The only module that calls open/write/pread/fsync/rename/unlink. Every
 * function returns 0 (or a byte count) or -errno, retries EINTR and short
 * transfers, and consults the fault hook so tests can fail any call site. */
#ifndef HOPPER_SRC_LIB_FSIO_H
#define HOPPER_SRC_LIB_FSIO_H
#include "internal.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Fault injection (tests only). When set, each operation first calls the hook
 * with its name ("open", "write", "pwrite", "pread", "fsync", "rename",
 * "unlink", "ftruncate", "mkdir", "fsync_dir", "alloc"); a negative return is
 * used as that operation's result (the operation is not attempted). */
typedef int (*hp_fault_fn)(const char *op);
extern hp_fault_fn hp_fault_hook;

static inline int
hp_fault(const char *op)
{
    return hp_fault_hook ? hp_fault_hook(op) : 0;
}

HP_MUST_USE int hp_fs_open(const char *path, int flags, int mode);
HP_MUST_USE int hp_fs_openat(int dirfd, const char *name, int flags, int mode);
HP_MUST_USE int hp_fs_write_all(int fd, const void *p, size_t n);
/* Reads up to n bytes at off; returns the number read (short only at EOF). */
HP_MUST_USE ssize_t hp_fs_pread_full(int fd, void *p, size_t n, uint64_t off);
HP_MUST_USE int hp_fs_fdatasync(int fd);
HP_MUST_USE int hp_fs_fsync(int fd);
HP_MUST_USE int hp_fs_renameat(int dirfd, const char *from, const char *to);
HP_MUST_USE int hp_fs_unlinkat(int dirfd, const char *name);
HP_MUST_USE int hp_fs_ftruncate(int fd, uint64_t len);
/* Write `n` bytes to dirfd/name atomically: O_EXCL temp, write, fsync,
 * rename over name, fsync the directory (FORMAT.md §4). */
HP_MUST_USE int hp_fs_atomic_write(int dirfd, const char *name, const void *p, size_t n);
void hp_fs_close(int fd);

#endif
