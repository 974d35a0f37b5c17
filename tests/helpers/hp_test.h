/* SPDX-License-Identifier: MIT */
/* Shared test helpers: temp directories, seeds, deadlines. Include after the
 * cmocka prerequisites (stdarg.h, stddef.h, stdint.h, setjmp.h). */
#ifndef HOPPER_TESTS_HELPERS_HP_TEST_H
#define HOPPER_TESTS_HELPERS_HP_TEST_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* mkdtemp under $TMPDIR (or /tmp); returns a malloc'd path or NULL. */
char *hp_test_tmpdir(const char *tag);
/* cmocka fixture state: a fresh temp directory per test. */
typedef struct hp_test_dir {
    char *dir;
    char qdir[1024]; /* dir + "/q": the conventional queue "q" in it */
} hp_test_dir;
/* cmocka setup/teardown: *state becomes an hp_test_dir with a new temp
 * directory, removed (with everything in it) by the teardown. */
int hp_test_dir_setup(void **state);
int hp_test_dir_teardown(void **state);
/* $HOPPER_TEST_QUICK set (and not "0"): scale randomized and long tests down. */
int hp_test_quick(void);
/* rm -rf path (no shell) and free it. */
void hp_test_rmtree(char *path);
/* Seed for randomized tests: $HOPPER_TEST_SEED if set, else time-based;
 * printed to stderr so a failure can be replayed. */
uint64_t hp_test_seed(const char *test_name);
/* xorshift64* */
uint64_t hp_test_rand(uint64_t *state);
/* A 64-bit mixer (splitmix64's finalizer): a well spread function of x. */
uint64_t hp_test_mix(uint64_t x);
/* Monotonic milliseconds. */
uint64_t hp_test_now_ms(void);
/* Deterministic, incompressible payload for `key`: the first 8 bytes are the
 * key (host order) when len >= 8, every other byte depends on key and len. */
void hp_test_payload(uint8_t *buf, size_t len, uint64_t key);
/* Is p[0..len) hp_test_payload(.., len, key) for the key in its first 8
 * bytes? 1 with *key, 0 otherwise (also when len < 8). */
int hp_test_payload_check(const void *p, size_t len, uint64_t *key);
/* Fork a child that runs child(ctx, wfd) and never returns (it must _exit;
 * it is _exit(9)ed if it returns); wfd is the write end of a pipe whose read
 * end the parent gets in *rfd. Returns the child's pid, or -1 (errno set). */
pid_t hp_test_fork_piped(void (*child)(void *ctx, int wfd), void *ctx, int *rfd);
/* Write `n` bytes to path (create/truncate). 0 or -errno. */
int hp_test_write_file(const char *path, const void *p, size_t n);
/* Read a whole file (malloc'd, caller frees). 0 or -errno. */
int hp_test_read_file(const char *path, uint8_t **out, size_t *n);
#endif
