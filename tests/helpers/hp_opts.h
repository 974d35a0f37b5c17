/* SPDX-License-Identifier: MIT */
/* Queue options shared by the tests that look at the files. */
#ifndef HOPPER_TESTS_HELPERS_HP_OPTS_H
#define HOPPER_TESTS_HELPERS_HP_OPTS_H
#include "hopper.h"

/* DISK durability, the given fsync mode (enum hopper_fsync), no compression
 * (the bytes on disk are the payloads), 4 KiB segments (a few records each). */
static inline void
hp_test_opts_disk(hopper_opts *o, int fsync)
{
    hopper_opts_init(o);
    o->durability = HOPPER_DURABILITY_DISK;
    o->fsync = fsync;
    o->compression = 0;
    o->segment_bytes = 4096;
}

#endif
