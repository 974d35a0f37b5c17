/* SPDX-License-Identifier: MIT */
/* Private macros and helpers shared by every libhopper module. */
#ifndef HOPPER_SRC_LIB_INTERNAL_H
#define HOPPER_SRC_LIB_INTERNAL_H

#include "hopper.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#define HP_MUST_USE __attribute__((warn_unused_result))

#ifdef HOPPER_DEBUG_ERRORS
#include <stdio.h>
#define HP_TRACE(rc, what)                                                                     \
    fprintf(stderr, "%s:%d: %s -> %s\n", __FILE__, __LINE__, (what), hopper_err_name(rc))
#else
#define HP_TRACE(rc, what) ((void)0)
#endif

/* Only in functions that hold no lock and own nothing to release (STYLE §6). */
#define HP_GUARD(expr)                                                                         \
    do {                                                                                       \
        int hp_rc_ = (expr);                                                                   \
        if (hp_rc_ < 0) {                                                                      \
            HP_TRACE(hp_rc_, #expr);                                                           \
            return hp_rc_;                                                                     \
        }                                                                                      \
    } while (0)
#define HP_ENSURE(cond, err)                                                                   \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            HP_TRACE((err), #cond);                                                            \
            return (err);                                                                      \
        }                                                                                      \
    } while (0)

static inline void
hp_put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void
hp_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline void
hp_put_u64(uint8_t *p, uint64_t v)
{
    hp_put_u32(p, (uint32_t)v);
    hp_put_u32(p + 4, (uint32_t)(v >> 32));
}

static inline uint16_t
hp_get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t
hp_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static inline uint64_t
hp_get_u64(const uint8_t *p)
{
    return (uint64_t)hp_get_u32(p) | ((uint64_t)hp_get_u32(p + 4) << 32);
}

/* Monotonic and wall clocks in ms / ns (sync-free helpers, in error.c). */
uint64_t hp_now_mono_ns(void);
uint64_t hp_now_wall_ms(void);

#endif /* HOPPER_SRC_LIB_INTERNAL_H */
