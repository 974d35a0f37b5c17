/* SPDX-License-Identifier: MIT */
/* The chunked in-memory record deque: FIFO order and contents across
 * chunks (small records, records that fill a chunk, records larger than a
 * chunk), the read cursor, truncation of unread entries, and the retired
 * chunks, whose records stay readable until they are released; all checked
 * against a model of the sequence numbers it must hold; with the small
 * chunks of a small budget and the huge ones of a large budget; and the
 * spare chunks, reused up to the budget's worth and trimmed when idle. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "deque.h"
#include "hp_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Data bytes of the standard chunk of the deque under test. */
static size_t g_cap = HP_CHUNK_SMALL - sizeof(hp_chunk);

/* Record `seq`'s length: mostly small, some near a chunk's size, a few
 * larger than a chunk. */
static uint32_t
len_of(uint64_t seq)
{
    switch (seq % 97u) {
    case 13:
        return (uint32_t)(g_cap - 24u);
    case 57:
        return (uint32_t)(g_cap + 1000u);
    default:
        return (uint32_t)(seq % 300u);
    }
}

static void
fill(uint8_t *b, uint64_t seq, uint32_t len)
{
    for (uint32_t i = 0; i < len; i++) {
        b[i] = (uint8_t)(seq * 31u + i);
    }
}

static void
check_entry(const hp_entry *e, uint64_t seq)
{
    assert_int_equal(e->seq, seq);
    assert_int_equal(e->ts_ms, seq + 1000u);
    uint32_t len = len_of(seq);
    assert_int_equal(e->len, len);
    uint8_t *b = malloc(len + 1u);
    assert_non_null(b);
    fill(b, seq, len);
    assert_memory_equal(hp_entry_data(e), b, len);
    free(b);
}

static void
push(hp_deque *d, uint64_t seq)
{
    uint32_t len = len_of(seq);
    uint8_t *b = malloc(len + 1u);
    assert_non_null(b);
    fill(b, seq, len);
    assert_int_equal(hp_deque_push(d, seq, seq + 1000u, b, len), 0);
    free(b);
}

/* Read up to n entries at the read cursor, as the consumer stages them;
 * returns how many. */
static size_t
read_some(hp_deque *d, uint64_t first, size_t n)
{
    hp_dpos p = d->rd;
    size_t k = 0;
    while (k < n && d->nread + k < d->count) {
        hp_entry *e = hp_dpos_entry(&p);
        check_entry(e, first + k);
        hp_dpos_next(&p, e);
        k++;
    }
    hp_deque_read_advance(d, k, p);
    return k;
}

/* Every entry from the front holds front + i. */
static void
check_all(hp_deque *d, uint64_t front)
{
    hp_dpos p = hp_deque_begin(d);
    for (size_t i = 0; i < d->count; i++) {
        hp_entry *e = hp_dpos_entry(&p);
        check_entry(e, front + i);
        hp_dpos_next(&p, e);
    }
}

/* A seeded mix of pushes, reads, pops (acknowledgements), truncations of
 * the unread tail and releases of retired chunks, against a model: the
 * deque holds [front, next), of which [front, read) were read. The entry
 * last popped stays readable until the next release. */
static void
random_ops(uint64_t budget, int rounds)
{
    uint64_t seed = hp_test_seed("test_random_ops");
    hp_deque d;
    hp_deque_init(&d, budget);
    g_cap = d.chunk_cap;
    uint64_t front = 0;
    uint64_t read = 0;
    uint64_t next = 0;
    const hp_entry *popped = NULL;
    uint64_t popped_seq = 0;
    for (int round = 0; round < rounds; round++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        unsigned r = (unsigned)(seed >> 33) % 100u;
        int growing = (round / 5000) % 2 == 0;
        if (r < (growing ? 55u : 25u)) {
            push(&d, next++);
        } else if (r < 75u) {
            read += read_some(&d, read, 1u + (seed >> 20) % 300u);
        } else if (r < 95u) {
            size_t k = 1u + (seed >> 24) % 64u;
            while (k-- > 0 && front < read) {
                popped = hp_deque_front(&d);
                popped_seq = front;
                hp_deque_pop_front(&d);
                front++;
            }
        } else if (r < 98u) {
            /* Truncate the unread tail from a random unread entry. */
            size_t unread = (size_t)(next - read);
            size_t keep = unread ? (size_t)((seed >> 16) % (unread + 1u)) : 0;
            hp_dpos p = d.rd;
            for (size_t i = 0; i < keep; i++) {
                hp_dpos at = p;
                hp_entry *e = hp_dpos_entry(&at);
                p = at;
                hp_dpos_next(&p, e);
            }
            uint64_t want = 0;
            for (uint64_t s = read + keep; s < next; s++) {
                want += len_of(s);
            }
            assert_int_equal(hp_deque_truncate(&d, p, (size_t)(read - front) + keep), want);
            next = read + keep;
        } else {
            if (popped != NULL) {
                check_entry(popped, popped_seq); /* not recycled before the release */
            }
            hp_deque_release_retired(&d);
            popped = NULL;
        }
        assert_int_equal(d.count, next - front);
        assert_int_equal(d.nread, read - front);
        assert_true(d.nspare <= d.spare_max);
    }
    check_all(&d, front);
    hp_deque_free(&d);
}

static void
test_random_ops(void **state)
{
    (void)state;
    random_ops(8u << 20, 60000);
}

/* The same with huge chunks (a budget of HP_DEQUE_HUGE_MIN or more). */
static void
test_random_ops_huge(void **state)
{
    (void)state;
    random_ops(HP_DEQUE_HUGE_MIN, 10000);
    g_cap = HP_CHUNK_SMALL - sizeof(hp_chunk);
}

/* Truncating back to the end mark taken before pushes (a failed placement)
 * restores the deque, also when the mark is from an empty deque that never
 * had a chunk. */
static void
test_truncate_to_mark(void **state)
{
    (void)state;
    hp_deque d = {0};
    hp_dpos mark = hp_deque_end(&d);
    assert_null(mark.c);
    for (uint64_t s = 0; s < 500; s++) {
        push(&d, s);
    }
    uint64_t want = 0;
    for (uint64_t s = 0; s < 500; s++) {
        want += len_of(s);
    }
    assert_int_equal(hp_deque_truncate(&d, mark, 0), want);
    assert_int_equal(d.count, 0);
    for (uint64_t s = 0; s < 300; s++) {
        push(&d, s);
    }
    assert_int_equal(read_some(&d, 0, 100), 100);
    mark = hp_deque_end(&d);
    for (uint64_t s = 300; s < 600; s++) {
        push(&d, s);
    }
    (void)hp_deque_truncate(&d, mark, 300);
    assert_int_equal(d.count, 300);
    for (uint64_t s = 300; s < 400; s++) {
        push(&d, s);
    }
    assert_int_equal(read_some(&d, 100, 1000), 300);
    check_all(&d, 0);
    hp_deque_free(&d);
}

/* Read and pop every entry, then release the retired chunks. */
static void
read_pop_all(hp_deque *d)
{
    for (size_t n = d->count; n > 0; n--) {
        hp_dpos p = d->rd;
        hp_entry *e = hp_dpos_entry(&p);
        hp_dpos_next(&p, e);
        d->rd = p;
        d->nread++;
        hp_deque_pop_front(d);
    }
    hp_deque_release_retired(d);
}

/* Spares: a deque emptied after holding 32 chunks keeps them (up to its
 * budget's worth) and refills from exactly those chunks, so a producer that
 * runs the budget ahead writes into memory it has written before; trimming
 * (the queue idle) keeps spare_idle. Fixed-size records, so that every
 * chunk is a standard one. */
static void
test_spares_reused_then_trimmed(void **state)
{
    (void)state;
    hp_deque d;
    hp_deque_init(&d, 8u << 20); /* 64 KiB chunks: 128 may be kept, 4 when idle */
    assert_int_equal(d.spare_max, (8u << 20) / HP_CHUNK_SMALL);
    assert_int_equal(d.spare_idle, 4);
    enum { NCH = 32 };
    uint8_t rec[1000];
    memset(rec, 7, sizeof(rec));
    hp_chunk *seen[NCH + 1];
    size_t nseen = 0;
    uint64_t seq = 0;
    while (nseen < NCH) {
        assert_int_equal(hp_deque_push(&d, seq++, 0, rec, sizeof(rec)), 0);
        if (nseen == 0 || seen[nseen - 1] != d.last) {
            seen[nseen++] = d.last;
        }
    }
    read_pop_all(&d);
    /* every chunk but the last (still the deque's) went to the spares */
    assert_int_equal(d.nspare, NCH - 1);
    size_t reused = 0;
    hp_chunk *prev = d.last;
    while (d.nspare > 0) {
        assert_int_equal(hp_deque_push(&d, seq++, 0, rec, sizeof(rec)), 0);
        if (d.last != prev) {
            prev = d.last;
            int found = 0;
            for (size_t i = 0; i < nseen; i++) {
                found |= seen[i] == d.last;
            }
            assert_true(found);
            reused++;
        }
    }
    assert_int_equal(reused, NCH - 1);
    read_pop_all(&d);
    assert_true(d.nspare > d.spare_idle);
    hp_deque_trim(&d);
    assert_int_equal(d.nspare, d.spare_idle);
    hp_deque_free(&d);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_ops),
        cmocka_unit_test(test_random_ops_huge),
        cmocka_unit_test(test_truncate_to_mark),
        cmocka_unit_test(test_spares_reused_then_trimmed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
