/* SPDX-License-Identifier: MIT */
/* pthread wrappers that abort on misuse (a programming error, STYLE §6 rule 6)
 * and condvars on CLOCK_MONOTONIC. */
#ifndef HOPPER_SRC_LIB_SYNC_H
#define HOPPER_SRC_LIB_SYNC_H
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <errno.h>
#include <time.h>

static inline void
hp_mutex_lock(pthread_mutex_t *m)
{
    if (pthread_mutex_lock(m) != 0) {
        abort();
    }
}

static inline void
hp_mutex_unlock(pthread_mutex_t *m)
{
    if (pthread_mutex_unlock(m) != 0) {
        abort();
    }
}

static inline int
hp_cond_init(pthread_cond_t *c)
{
    pthread_condattr_t a;
    if (pthread_condattr_init(&a) != 0) {
        return -ENOMEM;
    }
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
    return rc == 0 ? 0 : -rc;
}

static inline void
hp_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
{
    if (pthread_cond_wait(c, m) != 0) {
        abort();
    }
}

/* Wait until the absolute monotonic deadline (ns). Returns 0 when woken,
 * -ETIMEDOUT when the deadline passed. deadline UINT64_MAX = forever. */
static inline int
hp_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m, uint64_t deadline_ns)
{
    if (deadline_ns == UINT64_MAX) {
        hp_cond_wait(c, m);
        return 0;
    }
    struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000u),
                          .tv_nsec = (long)(deadline_ns % 1000000000u)};
    int rc = pthread_cond_timedwait(c, m, &ts);
    if (rc == ETIMEDOUT) {
        return -ETIMEDOUT;
    }
    if (rc != 0) {
        abort();
    }
    return 0;
}

#endif
