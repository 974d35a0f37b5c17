/* SPDX-License-Identifier: MIT */
/* hopperd logging (see log.h). The level is an atomic so SIGHUP can change
 * it from the signal thread while other threads log. Each line is formatted
 * into a stack buffer and written with one write(2): stdio buffering would
 * interleave threads and could lose lines on fatal(). */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int log_level = HD_LOG_INFO;
static atomic_int log_with_time = 0;

static const char *const level_names[] = {"error", "warning", "info", "debug"};

void
log_init(int level, int with_time)
{
    atomic_store(&log_level, level);
    atomic_store(&log_with_time, with_time);
}

void
log_setlevel(int level)
{
    atomic_store(&log_level, level);
}

int
log_getlevel(void)
{
    return atomic_load(&log_level);
}

static void
vlog(int level, const char *fmt, va_list ap, int errnum)
{
    if (level > atomic_load(&log_level)) {
        return;
    }
    char line[2048];
    size_t n = 0;
    if (atomic_load(&log_with_time)) {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n += strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
        n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ ", ts.tv_nsec / 1000000);
    }
    int w = snprintf(line + n, sizeof(line) - n, "%s: ", level_names[level]);
    if (w > 0) {
        n += (size_t)w;
    }
    if (n < sizeof(line)) {
        w = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        if (w > 0) {
            n += (size_t)w;
        }
    }
    if (errnum != 0 && n < sizeof(line)) {
        w = snprintf(line + n, sizeof(line) - n, ": %s", strerror(errnum));
        if (w > 0) {
            n += (size_t)w;
        }
    }
    if (n > sizeof(line) - 2) {
        n = sizeof(line) - 2;
    }
    line[n++] = '\n';
    /* Best effort: a logger that cannot write has nowhere to report it. */
    ssize_t rc = write(STDERR_FILENO, line, n);
    (void)rc;
}

#define LOG_BODY(level, errnum)                                                                    \
    do {                                                                                           \
        int saved_errno = errno;                                                                   \
        va_list ap;                                                                                \
        va_start(ap, fmt);                                                                         \
        vlog((level), fmt, ap, (errnum));                                                          \
        va_end(ap);                                                                                \
        errno = saved_errno;                                                                       \
    } while (0)

void
log_warn(const char *fmt, ...)
{
    int e = errno;
    LOG_BODY(HD_LOG_WARN, e);
}

void
log_warnx(const char *fmt, ...)
{
    LOG_BODY(HD_LOG_WARN, 0);
}

void
log_info(const char *fmt, ...)
{
    LOG_BODY(HD_LOG_INFO, 0);
}

void
log_debug(const char *fmt, ...)
{
    LOG_BODY(HD_LOG_DEBUG, 0);
}

void
log_errorx(const char *fmt, ...)
{
    LOG_BODY(HD_LOG_ERROR, 0);
}

void
fatal(const char *fmt, ...)
{
    int e = errno;
    LOG_BODY(HD_LOG_ERROR, e);
    exit(1);
}

void
fatalx(const char *fmt, ...)
{
    LOG_BODY(HD_LOG_ERROR, 0);
    exit(1);
}

int
log_limit_ok(struct log_limit *l, uint64_t now_ms, const char *who)
{
    if (now_ms - l->last_ms < 1000) {
        l->suppressed++;
        return 0;
    }
    if (l->suppressed > 0 && who != NULL) {
        log_warnx("%s: %llu similar messages suppressed", who, (unsigned long long)l->suppressed);
    }
    l->suppressed = 0;
    l->last_ms = now_ms;
    return 1;
}
