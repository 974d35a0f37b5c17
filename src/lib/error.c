/* SPDX-License-Identifier: MIT */
/* Error strings (one X-macro list in hopper.h), version and clock helpers. */
#include "internal.h"

#include <stdio.h>
#include <time.h>

const char *
hopper_strerror(int err)
{
    if (err == 0) {
        return "success";
    }
    switch (err) {
#define HP_XX_(name, val, msg)                                                                 \
    case HOPPER_##name:                                                                        \
        return msg;
        HOPPER_ERRNO_MAP(HP_XX_)
#undef HP_XX_
    default:
        break;
    }
    if (err < 0 && err > -4096) {
        return strerror(-err);
    }
    return "unknown error";
}

const char *
hopper_err_name(int err)
{
    switch (err) {
    case 0:
        return "OK";
#define HP_XX_(name, val, msg)                                                                 \
    case HOPPER_##name:                                                                        \
        return #name;
        HOPPER_ERRNO_MAP(HP_XX_)
#undef HP_XX_
    case -EAGAIN:
        return "EAGAIN";
    case -ETIMEDOUT:
        return "ETIMEDOUT";
    case -ENOMEM:
        return "ENOMEM";
    case -EINVAL:
        return "EINVAL";
    case -ENOSPC:
        return "ENOSPC";
    case -EIO:
        return "EIO";
    case -EMFILE:
        return "EMFILE";
    case -ENOENT:
        return "ENOENT";
    case -EACCES:
        return "EACCES";
    default:
        return "EUNKNOWN";
    }
}

unsigned
hopper_version(void)
{
    return (HOPPER_VERSION_MAJOR << 16) | (HOPPER_VERSION_MINOR << 8) | HOPPER_VERSION_PATCH;
}

const char *
hopper_version_string(void)
{
    return HOPPER_VERSION_STRING;
}

uint64_t
hp_now_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t
hp_now_wall_ms(void)
{
    /* Record timestamps need milliseconds, not precision: the coarse clock
     * costs a few ns instead of a full vDSO clock read. */
    struct timespec ts;
#ifdef CLOCK_REALTIME_COARSE
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
#else
    clock_gettime(CLOCK_REALTIME, &ts);
#endif
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
