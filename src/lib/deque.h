/* SPDX-License-Identifier: MIT */
/* In-memory record deque: a growable ring of owned records. No I/O and no
 * locks: the queue's mutex guards it. */
#ifndef HOPPER_SRC_LIB_DEQUE_H
#define HOPPER_SRC_LIB_DEQUE_H
#include "internal.h"

#include <stddef.h>
#include <stdint.h>

#define HP_ENTRY_INLINE 16u
/* Bytes charged against the memory budget per record on top of its payload:
 * its ring entry and the allocator's overhead, so that the budget bounds the
 * memory records really take, small ones included. */
#define HP_ENTRY_COST 48u

typedef struct hp_entry {
    uint64_t seq;
    uint64_t ts_ms;
    uint32_t len;
    union {
        uint8_t *ptr;                  /* owned, when len > HP_ENTRY_INLINE */
        uint8_t inl[HP_ENTRY_INLINE]; /* small records live in the entry */
    } u;
} hp_entry;

/* The payload of an entry. */
static inline const uint8_t *
hp_entry_data(const hp_entry *e)
{
    return e->len > HP_ENTRY_INLINE ? e->u.ptr : e->u.inl;
}

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
static inline hp_entry *
hp_deque_at(hp_deque *d, size_t i)
{
    return &d->ring[(d->head + i) & (d->cap - 1)];
}
/* Drop the front / back entry (count > 0) and free its data. */
void hp_deque_pop_front(hp_deque *d);
void hp_deque_pop_back(hp_deque *d);
void hp_deque_free(hp_deque *d);

#endif
