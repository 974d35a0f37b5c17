/* SPDX-License-Identifier: MIT */
/* The daemon's clock: monotonic milliseconds, for deadlines and intervals.
 * A leaf: it includes nothing of hopperd. */
#ifndef HOPPER_SRC_HOPPERD_CLOCK_H
#define HOPPER_SRC_HOPPERD_CLOCK_H

#include <stdint.h>

/* CLOCK_MONOTONIC in milliseconds. Any thread. */
uint64_t hd_now_ms(void);

#endif
