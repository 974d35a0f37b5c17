/* SPDX-License-Identifier: MIT */
/* Helpers for the hopperd integration tests: temp dirs, free ports, running
 * the real binary, a downstream TCP server thread, metrics scraping. Every
 * wait polls a condition against a deadline through e2e_wait_until();
 * nothing sleeps to synchronise. Only PIDs these helpers started are ever
 * signalled. */
#ifndef HOPPER_TESTS_HOPPERD_HD_E2E_UTIL_H
#define HOPPER_TESTS_HOPPERD_HD_E2E_UTIL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

uint64_t e2e_now_ms(void);
/* Poll pred(arg) every few milliseconds until it returns non-zero (0) or
 * timeout_ms passed without that (-1); pred is asked at least once, so a
 * timeout of 0 is a plain check. The one bounded wait of the tests. */
int e2e_wait_until(int (*pred)(void *), void *arg, int timeout_ms);
/* Does the file at path contain `needle`? (a pred for e2e_wait_until:
 * arg is a struct e2e_grep) */
struct e2e_grep {
    const char *path;
    const char *needle;
};
int e2e_file_contains(void *arg);
/* Does the file at path hold at least `want` lines? (a pred: arg is a
 * struct e2e_lines_wait; `have` is the count last seen) */
struct e2e_lines_wait {
    const char *path;
    long want, have;
};
int e2e_file_has_lines(void *arg);
char *e2e_tmpdir(void);
void e2e_rmtree(const char *path);
/* A TCP port on 127.0.0.1 that was free a moment ago. */
int e2e_free_port(void);
void e2e_write_file(const char *path, const char *text);
/* Read a whole file (malloc'd, NUL-terminated; NULL if missing). */
char *e2e_read_file(const char *path, size_t *len);

/* Print hopperd's log (stdout+stderr) at path to stderr for a failing
 * test: its last `tail` bytes, or all of it when tail is 0. */
void e2e_dump_log(const char *path, size_t tail);
/* A test's teardown: SIGKILL pid when it is > 0 (and reap it), remove
 * dir (kept when HOPPERD_E2E_KEEP is set) and free it. */
void e2e_cleanup(pid_t pid, char *dir);

/* Start hopperd -f conf with stdout+stderr appended to logpath. */
pid_t e2e_start(const char *conf, const char *logpath);
/* Same, with RLIMIT_NOFILE set to nofile in the child (0: unchanged). */
pid_t e2e_start_nofile(const char *conf, const char *logpath, int nofile);
/* Run hopperd with args, wait, capture stdout+stderr into out; exit code. */
int e2e_run(const char *const *args, char *out, size_t outlen);
/* Wait until 127.0.0.1:port accepts connections. 0 or -1 on timeout. */
int e2e_wait_port(int port, int timeout_ms);
/* Wait up to timeout_ms for pid (a child) to exit, without signalling it:
 * its exit status (or 128+sig), or -1 if it still runs. */
int e2e_wait_exit(pid_t pid, int timeout_ms);
/* Send a signal and wait for exit; returns the exit status (or 128+sig),
 * -1 on timeout (then the process is SIGKILLed and reaped). */
int e2e_stop(pid_t pid, int sig, int timeout_ms);
/* Connect to 127.0.0.1:port and write everything (blocking). 0 or -1. */
int e2e_send(int port, const void *data, size_t len);
/* Has the peer closed the connection fd (FIN or reset)? Reads and
 * discards whatever else is there, without blocking. */
int e2e_peer_closed(int fd);
/* write() everything to fd (blocking). 0 or -1. */
int e2e_write_all(int fd, const void *data, size_t len);
/* Connect to 127.0.0.1:port (blocking, CLOEXEC). The fd, or -1. */
int e2e_connect(int port);
/* The same from source address `from` (e.g. "127.0.0.2": all of 127/8 is
 * loopback on Linux), so that hopperd sees another peer. */
int e2e_connect_from(const char *from, int port);
/* Send `req` to 127.0.0.1:port and read until the server closes, within
 * timeout_ms in all: the malloc'd, NUL-terminated reply (its length in
 * *len when len is not NULL), or NULL on a failure or timeout. */
char *e2e_http(int port, const char *req, int timeout_ms, size_t *len);
/* GET /metrics and return the value of the sample whose line starts with
 * `prefix` (e.g. "hopperd_ingress_records_total{queue=\"q\"}"), or -1
 * (also when no answer came within 30 s). */
double e2e_metric(int port, const char *prefix);
/* The same, over an exposition already fetched. */
double e2e_metric_in(const char *text, const char *prefix);

/* Downstream: accepts one connection at a time and appends what it reads. */
struct e2e_downstream {
    int port;
    int lfd;
    pthread_t thread;
    pthread_mutex_t mu;
    char *data;      /* [mu] */
    size_t len, cap; /* [mu] */
    int connections; /* [mu] */
    atomic_int stop; /* set by e2e_downstream_stop */
};
int e2e_downstream_start(struct e2e_downstream *ds, int port);
void e2e_downstream_stop(struct e2e_downstream *ds);
/* Count '\n' in what was received. */
size_t e2e_downstream_lines(struct e2e_downstream *ds);

/* Check "rec-%08d\n" lines: every index 0..n-1 present, first occurrences in
 * order; returns duplicates count, or -1 (and prints why) on loss/reorder. */
long e2e_check_sequence(const char *data, size_t len, long n);

#endif
