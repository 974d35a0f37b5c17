/* SPDX-License-Identifier: MIT */
/* Helpers shared by the fuzz harnesses (STYLE §13): the failure macro, the
 * input cap, and the one temporary directory per process that file-based
 * targets create once and empty at every iteration. Header-only so that each
 * harness stays one translation unit plus the replay driver. */
#ifndef HOPPER_FUZZ_FUZZ_COMMON_H
#define HOPPER_FUZZ_FUZZ_COMMON_H

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* Inputs larger than this are ignored (returned early) by every harness. */
#define FZ_MAX_INPUT (64u * 1024u)

/* A property violation: say where and why, then abort() so that AFL++ (and
 * the replay driver, through SIGABRT) records a crash. */
#define FZ_CHECK(cond, ...)                                                                    \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "%s:%d: property violated: %s: ", __FILE__, __LINE__, #cond);      \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

/* out = a/b; aborts when it does not fit (no silent truncation). */
static inline void
fz_join(char *out, size_t outsz, const char *a, const char *b)
{
    int n = snprintf(out, outsz, "%s/%s", a, b);
    if (n < 0 || (size_t)n >= outsz) {
        fprintf(stderr, "fuzz: path too long: %s/%s\n", a, b);
        abort();
    }
}

/* Remove everything below `path`; remove `path` itself too when `self`. */
static inline void
fz_rmtree(const char *path, int self)
{
    DIR *d = opendir(path);
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
                continue;
            }
            char sub[PATH_MAX];
            fz_join(sub, sizeof(sub), path, de->d_name);
            /* d_type spares an lstat per file (tmpfs and ext4 fill it). */
            struct stat sb;
            int is_dir = de->d_type == DT_UNKNOWN
                             ? lstat(sub, &sb) == 0 && S_ISDIR(sb.st_mode)
                             : de->d_type == DT_DIR;
            if (is_dir) {
                fz_rmtree(sub, 1);
            } else {
                (void)unlink(sub);
            }
        }
        closedir(d);
    }
    if (self) {
        (void)rmdir(path);
    }
}

static char fz_base_dir[PATH_MAX];

static inline void
fz_tmpdir_cleanup(void)
{
    if (fz_base_dir[0] != '\0') {
        fz_rmtree(fz_base_dir, 1);
        fz_base_dir[0] = '\0';
    }
}

/* The per-process scratch directory, created on the first call:
 * /dev/shm/hopper-fuzz-<tag>-<pid> (tmpfs: fsync is cheap), or under /tmp
 * when /dev/shm is missing. Directories left by earlier processes of the
 * same tag that are no longer alive (AFL++ kills its targets) are removed.
 * No environment variable is consulted (determinism). Aborts on failure: a
 * harness without its directory cannot test anything. */
static inline const char *
fz_tmpdir(const char *tag)
{
    if (fz_base_dir[0] != '\0') {
        return fz_base_dir;
    }
    struct stat sb;
    const char *root = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) ? "/dev/shm" : "/tmp";
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "hopper-fuzz-%s-", tag);
    DIR *d = opendir(root);
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strncmp(de->d_name, prefix, strlen(prefix)) != 0) {
                continue;
            }
            char *end = NULL;
            long pid = strtol(de->d_name + strlen(prefix), &end, 10);
            if (end == NULL || *end != '\0' || pid <= 0) {
                continue;
            }
            if (kill((pid_t)pid, 0) < 0 && errno == ESRCH) {
                char stale[PATH_MAX];
                fz_join(stale, sizeof(stale), root, de->d_name);
                fz_rmtree(stale, 1);
            }
        }
        closedir(d);
    }
    snprintf(fz_base_dir, sizeof(fz_base_dir), "%s/%s%ld", root, prefix, (long)getpid());
    fz_rmtree(fz_base_dir, 1);
    if (mkdir(fz_base_dir, 0700) < 0) {
        fprintf(stderr, "fuzz: cannot create %s: %s\n", fz_base_dir, strerror(errno));
        abort();
    }
    atexit(fz_tmpdir_cleanup);
    return fz_base_dir;
}

/* Write n bytes to dir/name (created or truncated). Aborts on failure. */
static inline void
fz_write_file(const char *dir, const char *name, const uint8_t *p, size_t n)
{
    char path[PATH_MAX];
    fz_join(path, sizeof(path), dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        fprintf(stderr, "fuzz: cannot create %s: %s\n", path, strerror(errno));
        abort();
    }
    if (n > 0 && fwrite(p, 1, n, f) != n) {
        fprintf(stderr, "fuzz: cannot write %s\n", path);
        abort();
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "fuzz: cannot close %s\n", path);
        abort();
    }
}

/* Create dir/name (0700) if missing and empty it. Aborts on failure. */
static inline void
fz_fresh_subdir(const char *dir, const char *name, char *out, size_t outsz)
{
    fz_join(out, outsz, dir, name);
    if (mkdir(out, 0700) < 0 && errno != EEXIST) {
        fprintf(stderr, "fuzz: cannot create %s: %s\n", out, strerror(errno));
        abort();
    }
    fz_rmtree(out, 0);
}

#endif /* HOPPER_FUZZ_FUZZ_COMMON_H */
