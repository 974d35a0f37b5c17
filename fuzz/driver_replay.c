/* SPDX-License-Identifier: MIT */
/* Replay driver (zstd regression_driver.c style): a plain main() that feeds
 * every file named on the command line, and every regular file found
 * (recursively, in name order) under every directory named, to
 * LLVMFuzzerTestOneInput once. Linked with each harness into
 * fuzz_<target>_replay; ctest runs it over fuzz/corpus/<target>/ (label
 * fuzz-regression), and it is the triage tool for a crash found by AFL++:
 *
 *   fuzz_<target>_replay path/to/crash-or-dir ...
 *
 * A path with a wildcard (`*`, `?`, `[`) is a glob(3) pattern expanded at
 * run time, so ctest picks up files added after cmake ran (a pattern that
 * matches nothing is not an error). A property violation aborts (the harness
 * prints why). Exit status: 0 when every input ran, 1 when a path could not
 * be read, 2 on bad usage. Each input gets a buffer of exactly its size, so
 * ASan builds catch overreads. */
#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned long replayed;
static int failures;

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void replay_path(const char *path);

static void
replay_file(const char *path, off_t size)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        failures = 1;
        return;
    }
    size_t n = (size_t)size;
    /* Never malloc(0): keep a valid pointer, but hand the harness size 0. */
    uint8_t *buf = malloc(n > 0 ? n : 1);
    if (buf == NULL) {
        fprintf(stderr, "replay: %s: out of memory\n", path);
        fclose(f);
        failures = 1;
        return;
    }
    size_t got = n > 0 ? fread(buf, 1, n, f) : 0;
    fclose(f);
    if (got != n) {
        fprintf(stderr, "replay: %s: short read\n", path);
        free(buf);
        failures = 1;
        return;
    }
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, n);
    (void)LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    replayed++;
}

static void
replay_dir(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        failures = 1;
        return;
    }
    char **names = NULL;
    size_t n = 0;
    size_t cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') {
            continue; /* ".", "..", and hidden files such as AFL++'s .state */
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nv = realloc(names, cap * sizeof(*nv));
            if (nv == NULL) {
                break;
            }
            names = nv;
        }
        names[n] = strdup(de->d_name);
        if (names[n] != NULL) {
            n++;
        }
    }
    closedir(d);
    if (n > 1) {
        qsort(names, n, sizeof(*names), cmp_str);
    }
    for (size_t i = 0; i < n; i++) {
        char sub[PATH_MAX];
        int k = snprintf(sub, sizeof(sub), "%s/%s", path, names[i]);
        if (k > 0 && (size_t)k < sizeof(sub)) {
            replay_path(sub);
        }
        free(names[i]);
    }
    free(names);
}

static void
replay_path(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) < 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        failures = 1;
        return;
    }
    if (S_ISDIR(sb.st_mode)) {
        replay_dir(path);
    } else if (S_ISREG(sb.st_mode)) {
        replay_file(path, sb.st_size);
    }
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR|PATTERN...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        if (strpbrk(argv[i], "*?[") == NULL) {
            replay_path(argv[i]);
            continue;
        }
        glob_t g;
        int rc = glob(argv[i], 0, NULL, &g);
        if (rc == 0) {
            for (size_t k = 0; k < g.gl_pathc; k++) {
                replay_path(g.gl_pathv[k]);
            }
        } else if (rc != GLOB_NOMATCH) {
            fprintf(stderr, "replay: %s: glob failed\n", argv[i]);
            failures = 1;
        }
        globfree(&g);
    }
    fprintf(stderr, "replay: %lu inputs replayed%s\n", replayed,
            failures ? ", some paths could not be read" : "");
    return failures ? 1 : 0;
}
