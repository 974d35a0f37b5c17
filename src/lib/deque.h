/* SPDX-License-Identifier: MIT */
/* In-memory record deque: records packed one after another in a chain of
 * chunks, appended at the back, acknowledged (popped) at the front, and read
 * in between through a read cursor. No I/O and no locks: the queue's mutex
 * guards it.
 *
 * Why chunks (issue 14): a ring of entries with one malloc per record larger
 * than 16 bytes cost the producers a malloc and the consumer a free (often
 * of another thread's memory) per record, and a growing ring moved and
 * faulted in 40 bytes per record. Packed records take 24 bytes plus the
 * payload rounded to 8, chunks are recycled through a small pool, and a
 * record never moves, so the consumer hands out pointers into the chunks
 * instead of copying (see retired below).
 *
 * Chunk size (hp_deque_init). Producers that run ahead of the consumer write
 * into fresh memory, and on the VMs measured a page fault costs more than
 * copying the page: with a budget of at least HP_DEQUE_HUGE_MIN, chunks are
 * 2 MiB, aligned and advised as transparent huge pages (one fault per 2 MiB
 * instead of 512); smaller budgets keep 64 KiB chunks from malloc, so a
 * small queue does not hold 2 MiB.
 *
 * Layout: chunk list first -> ... -> last. The front entry is at
 * (first, front_off); new entries go to the end of `last` or to a new chunk.
 * A position (c, off) with off == c->end means the start of c->next. Every
 * chunk but `last` holds at least one entry.
 *
 * Retired chunks. A chunk whose entries were all popped leaves the list but
 * is not reused at once: the consumer may still hold a pointer into it (the
 * record returned by the last hopper_recv(), which hopper_recv_ack() or
 * hopper_ack() may pop). hp_deque_release_retired() recycles them; the queue
 * calls it when such pointers are dead (the next hopper_recv() that takes
 * the lock, close).
 *
 * Spares. A chunk no pointer refers to any more is kept for reuse while
 * fewer than the memory budget's worth are kept, so chunks are allocated
 * only up to the high-water mark of the records in memory, and the deque
 * never holds more than its budget in chunks (plus the partly used ones
 * HP_ENTRY_COST accounts for). A producer that runs the whole budget ahead
 * of the consumer and waits for it (one fast producer of 1 KiB records)
 * then writes into chunks it has written before instead of into fresh
 * memory, whose page faults and zeroing were a fifth of its time and
 * freeing them another tenth (munmap, TLB shootdowns). hp_deque_trim()
 * gives back all but a few when the queue has gone idle. */
#ifndef HOPPER_SRC_LIB_DEQUE_H
#define HOPPER_SRC_LIB_DEQUE_H
#include "internal.h"

#include <stddef.h>
#include <stdint.h>

/* Bytes charged against the memory budget per record on top of its payload:
 * its header and padding (at most 31 bytes) and a share of the partly used
 * chunks, so that the budget bounds the memory records really take, small
 * ones included. */
#define HP_ENTRY_COST 48u
/* Bytes of a standard chunk, header included (hp_deque_init picks one); a
 * larger record gets a chunk of its own. */
#define HP_CHUNK_SMALL (64u * 1024u)
#define HP_CHUNK_HUGE (2u * 1024u * 1024u)
/* Memory budgets from this size on get huge chunks. */
#define HP_DEQUE_HUGE_MIN (64ull << 20)

typedef struct hp_chunk {
    struct hp_chunk *next;
    size_t cap; /* bytes of data[] */
    size_t end; /* bytes used */
    _Alignas(8) uint8_t data[];
} hp_chunk;

/* A record in a chunk; its payload follows, then padding to 8 bytes. */
typedef struct hp_entry {
    uint64_t seq;
    uint64_t ts_ms;
    uint32_t len;
    uint32_t reserved;
} hp_entry;

typedef struct hp_dpos {
    hp_chunk *c;
    size_t off;
} hp_dpos;

typedef struct hp_deque {
    hp_chunk *first;
    size_t front_off;
    hp_chunk *last;
    hp_dpos rd;          /* entry number `nread` (or the end) */
    size_t count;        /* entries */
    size_t nread;        /* entries before rd: delivered, not yet popped */
    hp_chunk *spare;     /* standard chunks to reuse, linked by next */
    size_t nspare;
    size_t spare_max;    /* hp_deque_init: at most the budget's worth; 0 keeps none */
    size_t spare_idle;   /* hp_deque_trim keeps this many */
    size_t chunk_cap;    /* data bytes of a standard chunk; hp_deque_init */
    int huge;            /* standard chunks are 2 MiB huge-page allocations */
    hp_chunk *retired;   /* popped chunks, see above */
} hp_deque;

/* Free the spares beyond spare_idle (the queue is idle: receiver.c). */
void hp_deque_trim(hp_deque *d);

/* The payload of an entry. */
static inline const uint8_t *
hp_entry_data(const hp_entry *e)
{
    return (const uint8_t *)(e + 1);
}

/* Bytes an entry with `len` payload bytes takes in its chunk. */
static inline size_t
hp_entry_size(size_t len)
{
    return sizeof(hp_entry) + ((len + 7u) & ~(size_t)7u);
}

/* The entry at p, moving p past the end of a chunk first; there must be
 * one. */
static inline hp_entry *
hp_dpos_entry(hp_dpos *p)
{
    while (p->off == p->c->end) {
        p->c = p->c->next;
        p->off = 0;
    }
    return (hp_entry *)(void *)(p->c->data + p->off);
}

/* p, at entry e, moves to the next position. */
static inline void
hp_dpos_next(hp_dpos *p, const hp_entry *e)
{
    p->off += hp_entry_size(e->len);
}

/* Position of the front entry (count > 0 for it to hold one). */
static inline hp_dpos
hp_deque_begin(const hp_deque *d)
{
    return (hp_dpos){.c = d->first, .off = d->front_off};
}

/* Position past the last entry: where the next push goes or a later
 * chunk starts. {NULL, 0} while the deque never held a chunk. */
static inline hp_dpos
hp_deque_end(const hp_deque *d)
{
    return (hp_dpos){.c = d->last, .off = d->last != NULL ? d->last->end : 0};
}

/* The front entry (count > 0). */
static inline hp_entry *
hp_deque_front(const hp_deque *d)
{
    hp_dpos p = hp_deque_begin(d);
    return hp_dpos_entry(&p);
}

/* Choose the chunk size and the spare pool for a memory budget (a
 * zero-filled deque without it gets 64 KiB chunks and keeps no spare). */
void hp_deque_init(hp_deque *d, uint64_t memory_bytes);
/* Append a copy of data[0..len). 0 or -ENOMEM (nothing changed). */
HP_MUST_USE int hp_deque_push(hp_deque *d, uint64_t seq, uint64_t ts_ms, const void *data,
                              uint32_t len);
/* Drop the front entry, which was read (nread > 0). */
void hp_deque_pop_front(hp_deque *d);
/* The read cursor moved past n more entries and is now at `to`. */
static inline void
hp_deque_read_advance(hp_deque *d, size_t n, hp_dpos to)
{
    d->nread += n;
    d->rd = to;
}
/* Drop every entry from `at` (the position of entry number `kept`, or
 * hp_deque_end()) to the back; none of them was read (kept >= nread).
 * Returns the payload bytes dropped. */
uint64_t hp_deque_truncate(hp_deque *d, hp_dpos at, size_t kept);
/* Recycle the retired chunks (no pointer into them is in use any more). */
void hp_deque_release_retired(hp_deque *d);
void hp_deque_free(hp_deque *d);

#endif
