/* SPDX-License-Identifier: MIT */
#include "hp_test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

char *
hp_test_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char buf[PATH_MAX];
    snprintf(buf, sizeof(buf), "%s/hopper-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    if (mkdtemp(buf) == NULL) {
        return NULL;
    }
    return strdup(buf);
}

static void
rmtree_at(const char *path)
{
    DIR *d = opendir(path);
    if (d != NULL) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
                continue;
            }
            char sub[PATH_MAX];
            snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
            struct stat sb;
            if (lstat(sub, &sb) == 0 && S_ISDIR(sb.st_mode)) {
                rmtree_at(sub);
            } else {
                unlink(sub);
            }
        }
        closedir(d);
    }
    rmdir(path);
}

int
hp_test_dir_setup(void **state)
{
    hp_test_dir *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return -1;
    }
    s->dir = hp_test_tmpdir("test");
    if (s->dir == NULL) {
        free(s);
        return -1;
    }
    snprintf(s->qdir, sizeof(s->qdir), "%s/q", s->dir);
    *state = s;
    return 0;
}

int
hp_test_dir_teardown(void **state)
{
    hp_test_dir *s = *state;
    hp_test_rmtree(s->dir);
    free(s);
    return 0;
}

int
hp_test_quick(void)
{
    const char *e = getenv("HOPPER_TEST_QUICK");
    return e != NULL && *e != '\0' && strcmp(e, "0") != 0;
}

void
hp_test_rmtree(char *path)
{
    if (path != NULL) {
        rmtree_at(path);
        free(path);
    }
}

uint64_t
hp_test_seed(const char *test_name)
{
    const char *env = getenv("HOPPER_TEST_SEED");
    uint64_t seed;
    if (env != NULL && *env) {
        seed = strtoull(env, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = ((uint64_t)ts.tv_sec * 1000000007u) ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid();
    }
    if (seed == 0) {
        seed = 1;
    }
    fprintf(stderr, "[seed] %s: HOPPER_TEST_SEED=%" PRIu64 "\n", test_name, seed);
    return seed;
}

uint64_t
hp_test_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

uint64_t
hp_test_mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

uint64_t
hp_test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void
hp_test_payload(uint8_t *buf, size_t len, uint64_t key)
{
    uint64_t st = (key ^ ((uint64_t)len << 40)) * 0x9E3779B97F4A7C15ull + 0x2545F491ull;
    if (st == 0) {
        st = 1;
    }
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(hp_test_rand(&st) >> 56);
    }
    if (len >= 8) {
        memcpy(buf, &key, 8);
    }
}

int
hp_test_payload_check(const void *p, size_t len, uint64_t *key)
{
    if (len < 8) {
        return 0;
    }
    memcpy(key, p, 8);
    uint8_t *exp = malloc(len);
    if (exp == NULL) {
        return 0;
    }
    hp_test_payload(exp, len, *key);
    int ok = memcmp(exp, p, len) == 0;
    free(exp);
    return ok;
}

pid_t
hp_test_fork_piped(void (*child)(void *ctx, int wfd), void *ctx, int *rfd)
{
    int p[2];
    if (pipe(p) < 0) {
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(p[0]);
        close(p[1]);
        errno = e;
        return -1;
    }
    if (pid == 0) {
        close(p[0]);
        child(ctx, p[1]);
        _exit(9);
    }
    close(p[1]);
    *rfd = p[0];
    return pid;
}

int
hp_test_write_file(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        return -errno;
    }
    const uint8_t *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        c += w;
        n -= (size_t)w;
    }
    close(fd);
    return 0;
}

int
hp_test_read_file(const char *path, uint8_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        return -errno;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    uint8_t *b = malloc((size_t)sb.st_size + 1);
    if (b == NULL) {
        close(fd);
        return -ENOMEM;
    }
    size_t got = 0;
    while (got < (size_t)sb.st_size) {
        ssize_t r = read(fd, b + got, (size_t)sb.st_size - got);
        if (r <= 0) {
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    *out = b;
    *n = got;
    return 0;
}
