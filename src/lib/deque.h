/* SPDX-License-Identifier: MIT */
/* In-memory record deque: a growable ring of owned records. No I/O and no
 * locks: the queue's mutex guards it. */
#ifndef HOPPER_SRC_LIB_DEQUE_H
#define HOPPER_SRC_LIB_DEQUE_H
#include "internal.h"

#include <stddef.h>
#include <stdint.h>

typedef struct hp_entry {
    uint64_t seq;
    uint64_t ts_ms;
    uint8_t *data; /* owned; NULL when len == 0 */
    uint32_t len;
} hp_entry;

typedef struct hp_deque {
    hp_entry *ring;
    size_t cap; /* power of two or 0 */
    size_t head;
    size_t count;
} hp_deque;

/* Append a copy of data[0..len). 0 or -ENOMEM (nothing changed). */
HP_MUST_USE int hp_deque_push(hp_deque *d, uint64_t seq, uint64_t ts_ms, const void *data,
                              uint32_t len);
/* Entry i from the front (i < count). */
hp_entry *hp_deque_at(hp_deque *d, size_t i);
/* Drop the front / back entry (count > 0) and free its data. */
void hp_deque_pop_front(hp_deque *d);
void hp_deque_pop_back(hp_deque *d);
void hp_deque_free(hp_deque *d);

#endif
