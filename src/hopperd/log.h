/* SPDX-License-Identifier: MIT */
/* hopperd logging: the OpenSMTPD log API (log_warn appends strerror(errno),
 * the x variants do not, fatal* exit 1). Every call preserves errno. Lines
 * go to stderr (journald under systemd) as one write(2) each, so lines from
 * several threads never interleave. */
#ifndef HOPPER_SRC_HOPPERD_LOG_H
#define HOPPER_SRC_HOPPERD_LOG_H

#include <stdint.h>

enum hd_log_level {
    HD_LOG_ERROR = 0,
    HD_LOG_WARN = 1,
    HD_LOG_INFO = 2,
    HD_LOG_DEBUG = 3,
};

#define HD_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Set the level (enum hd_log_level) and whether timestamps are printed
 * (off under systemd, which stamps lines itself). Any thread. */
void log_init(int level, int with_time);
void log_setlevel(int level);
int log_getlevel(void);

void log_warn(const char *fmt, ...) HD_PRINTF(1, 2);
void log_warnx(const char *fmt, ...) HD_PRINTF(1, 2);
void log_info(const char *fmt, ...) HD_PRINTF(1, 2);
void log_debug(const char *fmt, ...) HD_PRINTF(1, 2);
/* Errors that the daemon survives but an operator must see (level error). */
void log_errorx(const char *fmt, ...) HD_PRINTF(1, 2);
_Noreturn void fatal(const char *fmt, ...) HD_PRINTF(1, 2);
_Noreturn void fatalx(const char *fmt, ...) HD_PRINTF(1, 2);

/* Rate limit for the warnings of one thread (the listener thread, a relay
 * thread): at most one a second, so a misbehaving peer cannot flood the
 * log. Zero-initialise; owned by its thread. */
struct log_limit {
    uint64_t last_ms;    /* when the last warning was let through */
    uint64_t suppressed; /* warnings held back since */
};
/* 1 if a warning may be logged at now_ms (monotonic), else 0 (counted).
 * When `who` is not NULL, the first warning let through after some were
 * held back is preceded by "WHO: N similar messages suppressed". */
int log_limit_ok(struct log_limit *l, uint64_t now_ms, const char *who);

#endif
