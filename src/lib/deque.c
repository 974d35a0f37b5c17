/* SPDX-License-Identifier: MIT */
/* The chunked record deque (layout and the retired chunks: deque.h). */
#include "deque.h"

#include <assert.h>
#include <stdlib.h>
#include <sys/mman.h>

/* Data bytes of a standard chunk (a zero-filled deque: small chunks). */
static size_t
chunk_cap(const hp_deque *d)
{
    return d->chunk_cap != 0 ? d->chunk_cap : HP_CHUNK_SMALL - sizeof(hp_chunk);
}

void
hp_deque_init(hp_deque *d, uint64_t memory_bytes)
{
    memset(d, 0, sizeof(*d));
    d->huge = memory_bytes >= HP_DEQUE_HUGE_MIN;
    size_t bytes = d->huge ? HP_CHUNK_HUGE : HP_CHUNK_SMALL;
    d->chunk_cap = bytes - sizeof(hp_chunk);
    /* Spares while busy: up to the budget's worth (deque.h). */
    uint64_t all = memory_bytes / bytes;
    d->spare_max = all < 1 ? 1 : all > SIZE_MAX / 2 ? SIZE_MAX / 2 : (size_t)all;
    /* Spares while idle: enough that a consumer keeping up cycles through
     * the same few (warm) chunks, and that a producer running a few
     * milliseconds ahead does not fault in fresh ones: a thirty-second of
     * the budget, at most 32 MiB and 16 chunks, at least one. */
    uint64_t keep = memory_bytes / 32u < (32u << 20) ? memory_bytes / 32u : (32u << 20);
    uint64_t n = keep / bytes;
    d->spare_idle = n < 1 ? 1 : n > 16 ? 16 : (size_t)n;
}

void
hp_deque_trim(hp_deque *d)
{
    while (d->nspare > d->spare_idle) {
        hp_chunk *c = d->spare;
        d->spare = c->next;
        d->nspare--;
        free(c);
    }
}

/* The front chunk leaves the list for the retired ones; the read cursor, if
 * it pointed at its end, moves to the start of the next chunk. */
static void
retire_first(hp_deque *d)
{
    hp_chunk *old = d->first;
    d->first = old->next;
    d->front_off = 0;
    if (d->rd.c == old) {
        d->rd = (hp_dpos){.c = d->first, .off = 0};
    }
    old->next = d->retired;
    d->retired = old;
}

/* A chunk with at least `need` bytes: a spare one when it is standard. */
static hp_chunk *
chunk_get(hp_deque *d, size_t need)
{
    size_t std = chunk_cap(d);
    if (need <= std && d->spare != NULL) {
        hp_chunk *c = d->spare;
        d->spare = c->next;
        d->nspare--;
        c->next = NULL;
        c->end = 0;
        return c;
    }
    size_t cap = need <= std ? std : need;
    hp_chunk *c = NULL;
    if (cap == std && d->huge) {
        void *m = NULL;
        if (posix_memalign(&m, HP_CHUNK_HUGE, HP_CHUNK_HUGE) != 0) {
            return NULL;
        }
#ifdef MADV_HUGEPAGE
        (void)madvise(m, HP_CHUNK_HUGE, MADV_HUGEPAGE); /* advice: may be refused */
#endif
        c = m;
    } else {
        c = malloc(sizeof(*c) + cap);
    }
    if (c == NULL) {
        return NULL;
    }
    c->next = NULL;
    c->cap = cap;
    c->end = 0;
    return c;
}

/* A chunk no pointer refers to any more: kept as a spare or freed. */
static void
chunk_put(hp_deque *d, hp_chunk *c)
{
    if (c->cap == chunk_cap(d) && d->nspare < d->spare_max) {
        c->next = d->spare;
        d->spare = c;
        d->nspare++;
        return;
    }
    free(c);
}

int
hp_deque_push(hp_deque *d, uint64_t seq, uint64_t ts_ms, const void *data, uint32_t len)
{
    size_t need = hp_entry_size(len);
    hp_chunk *c = d->last;
    if (c == NULL || c->cap - c->end < need) {
        hp_chunk *n = chunk_get(d, need);
        if (n == NULL) {
            return -ENOMEM;
        }
        if (c == NULL) {
            d->first = n;
            d->front_off = 0;
            d->rd = (hp_dpos){.c = n, .off = 0};
        } else {
            c->next = n;
        }
        d->last = n;
        c = n;
    }
    hp_entry *e = (hp_entry *)(void *)(c->data + c->end);
    e->seq = seq;
    e->ts_ms = ts_ms;
    e->len = len;
    e->reserved = 0;
    if (len > 0) {
        memcpy(e + 1, data, len);
    }
    c->end += need;
    d->count++;
    return 0;
}

void
hp_deque_pop_front(hp_deque *d)
{
    assert(d->count > 0 && d->nread > 0);
    if (d->front_off == d->first->end) {
        /* The front chunk was used up while it was the last one: the front
         * entry is at the start of the next (every chunk but the last holds
         * an entry, so that one does). */
        retire_first(d);
    }
    hp_entry *e = (hp_entry *)(void *)(d->first->data + d->front_off);
    d->front_off += hp_entry_size(e->len);
    d->count--;
    d->nread--;
    if (d->front_off == d->first->end && d->first != d->last) {
        retire_first(d);
    }
}

uint64_t
hp_deque_truncate(hp_deque *d, hp_dpos at, size_t kept)
{
    assert(kept >= d->nread && kept <= d->count);
    uint64_t bytes = 0;
    if (kept == d->count) {
        return 0;
    }
    if (at.c == NULL) {
        at = (hp_dpos){.c = d->first, .off = 0}; /* no chunk held anything then */
    }
    hp_dpos p = at;
    for (size_t i = kept; i < d->count; i++) {
        hp_entry *e = hp_dpos_entry(&p);
        bytes += e->len;
        hp_dpos_next(&p, e);
    }
    /* Nothing read lies past `at`: its later chunks are nobody's. */
    hp_chunk *c = at.c->next;
    while (c != NULL) {
        hp_chunk *n = c->next;
        chunk_put(d, c);
        c = n;
    }
    at.c->next = NULL;
    at.c->end = at.off;
    d->last = at.c;
    d->count = kept;
    if (d->nread == kept) {
        d->rd = at;
    }
    return bytes;
}

void
hp_deque_release_retired(hp_deque *d)
{
    while (d->retired != NULL) {
        hp_chunk *c = d->retired;
        d->retired = c->next;
        chunk_put(d, c);
    }
}

void
hp_deque_free(hp_deque *d)
{
    d->spare_max = 0;
    hp_deque_release_retired(d);
    for (hp_chunk *c = d->first; c != NULL;) {
        hp_chunk *n = c->next;
        free(c);
        c = n;
    }
    for (hp_chunk *c = d->spare; c != NULL;) {
        hp_chunk *n = c->next;
        free(c);
        c = n;
    }
    memset(d, 0, sizeof(*d));
}
