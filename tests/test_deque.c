/* SPDX-License-Identifier: MIT */
/* The in-memory record deque: FIFO order and contents through growth,
 * wrap-around and shrinking (the shrink compacts a wrapped ring in place),
 * checked against a model of the sequence numbers it must hold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "deque.h"
#include "hp_test.h"

#include <stdio.h>
#include <string.h>

/* Record `seq` is seq % 40 bytes (inline and owned sizes) of a pattern. */
static void
fill(uint8_t *b, uint64_t seq, uint32_t len)
{
    for (uint32_t i = 0; i < len; i++) {
        b[i] = (uint8_t)(seq * 31u + i);
    }
}

static void
push(hp_deque *d, uint64_t seq)
{
    uint8_t b[64];
    uint32_t len = (uint32_t)(seq % 40u);
    fill(b, seq, len);
    assert_int_equal(hp_deque_push(d, seq, seq + 1000u, b, len), 0);
}

/* The front is `seq` with the right payload; then it is popped. */
static void
pop_check(hp_deque *d, uint64_t seq)
{
    assert_true(d->count > 0);
    hp_entry *e = hp_deque_at(d, 0);
    assert_int_equal(e->seq, seq);
    assert_int_equal(e->ts_ms, seq + 1000u);
    uint8_t b[64];
    uint32_t len = (uint32_t)(seq % 40u);
    fill(b, seq, len);
    assert_int_equal(e->len, len);
    assert_memory_equal(hp_entry_data(e), b, len);
    hp_deque_pop_front(d);
}

/* Every index i < count holds head + i: the whole ring is checked. */
static void
check_all(hp_deque *d, uint64_t first)
{
    for (size_t i = 0; i < d->count; i++) {
        assert_int_equal(hp_deque_at(d, i)->seq, first + i);
    }
}

/* Grow while wrapped, then drain far enough to shrink several times, with
 * the live range wrapped at each shrink. */
static void
test_wrap_grow_shrink(void **state)
{
    (void)state;
    hp_deque d = {0};
    uint64_t next = 0;
    uint64_t front = 0;
    /* Wrap a small ring: push 48, pop 40, push until it grows twice. */
    for (int i = 0; i < 48; i++) {
        push(&d, next++);
    }
    for (int i = 0; i < 40; i++) {
        pop_check(&d, front++);
    }
    while (d.cap < 8192) {
        push(&d, next++);
    }
    check_all(&d, front);
    /* Leave just more than a sixteenth (no shrink yet), move the head near
     * the end so the live range wraps, then drain: the first shrink happens
     * with the range wrapped. */
    size_t cap = d.cap;
    while (d.count > cap / 16 + 8) {
        pop_check(&d, front++);
    }
    assert_int_equal(d.cap, cap);
    while (d.head < cap - 100) {
        pop_check(&d, front++);
        push(&d, next++);
    }
    assert_true(d.head + d.count > d.cap); /* wrapped */
    size_t shrinks = 0;
    while (d.count > 0) {
        size_t before = d.cap;
        int wrapped = d.head + d.count > d.cap;
        pop_check(&d, front++);
        if (d.cap < before) {
            assert_true(shrinks > 0 || wrapped);
            shrinks++;
            assert_true(d.cap >= 4 * d.count || d.cap == 64);
            check_all(&d, front);
        }
    }
    assert_true(shrinks >= 1);
    assert_int_equal(front, next);
    hp_deque_free(&d);
}

/* A seeded mix of pushes, pops and pop_backs against a model. */
static void
test_random_ops(void **state)
{
    (void)state;
    uint64_t seed = hp_test_seed("test_random_ops");
    hp_deque d = {0};
    uint64_t front = 0;
    uint64_t next = 0;
    for (int round = 0; round < 200000; round++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        unsigned r = (unsigned)(seed >> 33) % 100u;
        /* Phases: grow for a while, then drain, so the ring both grows and
         * shrinks many times. */
        int growing = (round / 20000) % 2 == 0;
        if (r < (growing ? 70u : 30u)) {
            push(&d, next++);
        } else if (r < 97u && d.count > 0) {
            pop_check(&d, front++);
        } else if (d.count > 0) {
            hp_deque_pop_back(&d);
            next--;
        }
        assert_int_equal(d.count, next - front);
    }
    check_all(&d, front);
    hp_deque_free(&d);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wrap_grow_shrink),
        cmocka_unit_test(test_random_ops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
