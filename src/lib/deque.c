/* SPDX-License-Identifier: MIT */
/* Ring of hp_entry; capacity doubles when full. Invariant: count <= cap and
 * cap is 0 or a power of two, so index arithmetic is a mask. */
#include "deque.h"

#include <stdlib.h>

/* Double the ring with realloc: a large ring is moved by the kernel's page
 * remapping instead of being copied, and only the new half is fresh memory.
 * The wrapped part [0, head) then moves to [cap, cap + head). */
static int
grow(hp_deque *d)
{
    size_t ncap = d->cap ? d->cap * 2 : 64;
    hp_entry *n = realloc(d->ring, ncap * sizeof(*n));
    if (n == NULL) {
        return -ENOMEM;
    }
    if (d->head + d->count > d->cap) {
        memcpy(n + d->cap, n, (d->head + d->count - d->cap) * sizeof(*n));
    }
    d->ring = n;
    d->cap = ncap;
    return 0;
}

int
hp_deque_push(hp_deque *d, uint64_t seq, uint64_t ts_ms, const void *data, uint32_t len)
{
    if (d->count == d->cap) {
        HP_GUARD(grow(d));
    }
    hp_entry *e = &d->ring[(d->head + d->count) & (d->cap - 1)];
    if (len > HP_ENTRY_INLINE) {
        uint8_t *copy = malloc(len);
        if (copy == NULL) {
            return -ENOMEM;
        }
        memcpy(copy, data, len);
        e->u.ptr = copy;
    } else if (len > 0) {
        memcpy(e->u.inl, data, len);
    }
    e->seq = seq;
    e->ts_ms = ts_ms;
    e->len = len;
    d->count++;
    return 0;
}

/* Shrink the ring once it is fifteen sixteenths empty, so a burst does not
 * pin its ring forever, to four times what it holds. The live entries are
 * moved to the front in place and the ring is cut with realloc: the pages
 * kept are not copied or touched again, and a drain copies about a
 * twelfth of the entries it had, instead of half with a halving ring. Best
 * effort: if realloc fails the ring stays as large. */
static void
shrink(hp_deque *d)
{
    size_t ncap = 64;
    while (ncap < d->count * 4) {
        ncap *= 2;
    }
    if (d->head + d->count > d->cap) {
        /* Wrapped: [head, cap) then [0, t). The ring is nearly empty, so
         * head > cap - count >= count and the moves do not overlap. */
        size_t first = d->cap - d->head;
        size_t t = d->count - first;
        memmove(d->ring + first, d->ring, t * sizeof(*d->ring));
        memmove(d->ring, d->ring + d->head, first * sizeof(*d->ring));
    } else {
        memmove(d->ring, d->ring + d->head, d->count * sizeof(*d->ring));
    }
    d->head = 0;
    hp_entry *n = realloc(d->ring, ncap * sizeof(*n));
    if (n != NULL) {
        d->ring = n;
        d->cap = ncap;
    }
}

void
hp_deque_pop_front(hp_deque *d)
{
    hp_entry *e = hp_deque_at(d, 0);
    if (e->len > HP_ENTRY_INLINE) {
        free(e->u.ptr);
    }
    d->head = (d->head + 1) & (d->cap - 1);
    d->count--;
    if (d->cap > 256 && d->count < d->cap / 16) {
        shrink(d);
    }
}

void
hp_deque_pop_back(hp_deque *d)
{
    hp_entry *e = hp_deque_at(d, d->count - 1);
    if (e->len > HP_ENTRY_INLINE) {
        free(e->u.ptr);
    }
    d->count--;
}

void
hp_deque_free(hp_deque *d)
{
    while (d->count > 0) {
        hp_deque_pop_front(d);
    }
    free(d->ring);
    memset(d, 0, sizeof(*d));
}
