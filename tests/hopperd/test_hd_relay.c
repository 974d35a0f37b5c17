/* SPDX-License-Identifier: MIT */
/* hopperd relay pieces: the sink state machine's transition table and
 * backoff with jitter (sink record encoding: test_hd_framer.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "daemon.h"
#include "relay.h"

static void
test_transitions(void **state)
{
    (void)state;
    /* The legal lifecycle. */
    assert_true(hd_sink_transition_allowed(HD_SINK_IDLE, HD_SINK_CONNECTING));
    assert_true(hd_sink_transition_allowed(HD_SINK_CONNECTING, HD_SINK_ESTABLISHED));
    assert_true(hd_sink_transition_allowed(HD_SINK_CONNECTING, HD_SINK_BACKOFF));
    assert_true(hd_sink_transition_allowed(HD_SINK_ESTABLISHED, HD_SINK_CLOSING));
    assert_true(hd_sink_transition_allowed(HD_SINK_ESTABLISHED, HD_SINK_DRAINING));
    assert_true(hd_sink_transition_allowed(HD_SINK_DRAINING, HD_SINK_ESTABLISHED));
    assert_true(hd_sink_transition_allowed(HD_SINK_CLOSING, HD_SINK_BACKOFF));
    assert_true(hd_sink_transition_allowed(HD_SINK_BACKOFF, HD_SINK_CONNECTING));
    assert_true(hd_sink_transition_allowed(HD_SINK_CLOSING, HD_SINK_STOPPED));
    /* Writing needs ESTABLISHED, reached only through CONNECTING. */
    for (int s = 0; s < HD_SINK_NSTATES; s++) {
        if (s != HD_SINK_CONNECTING && s != HD_SINK_DRAINING) {
            assert_false(hd_sink_transition_allowed(s, HD_SINK_ESTABLISHED));
        }
        /* STOPPED is terminal; nothing stays in place. */
        assert_false(hd_sink_transition_allowed(HD_SINK_STOPPED, s));
        assert_false(hd_sink_transition_allowed(s, s));
    }
    /* An established sink must close before it stops or backs off. */
    assert_false(hd_sink_transition_allowed(HD_SINK_ESTABLISHED, HD_SINK_STOPPED));
    assert_false(hd_sink_transition_allowed(HD_SINK_ESTABLISHED, HD_SINK_BACKOFF));
    assert_false(hd_sink_transition_allowed(-1, 0));
    assert_false(hd_sink_transition_allowed(0, HD_SINK_NSTATES));
}

static void
test_backoff(void **state)
{
    (void)state;
    uint64_t rng = 42;
    for (unsigned attempt = 0; attempt < 70; attempt++) {
        uint64_t base = 100;
        for (unsigned i = 0; i < attempt && base < 30000; i++) {
            base *= 2;
        }
        if (base > 30000) {
            base = 30000;
        }
        for (int k = 0; k < 50; k++) {
            uint64_t d = hd_backoff_delay(100, 30000, attempt, &rng);
            assert_true(d >= base / 2);
            assert_true(d <= base);
        }
    }
    /* Jitter: not always the same value. */
    uint64_t first = hd_backoff_delay(1000, 1000, 0, &rng);
    int differs = 0;
    for (int k = 0; k < 20; k++) {
        differs |= hd_backoff_delay(1000, 1000, 0, &rng) != first;
    }
    assert_true(differs);
    assert_true(hd_backoff_delay(1, 1, 5, &rng) <= 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transitions),
        cmocka_unit_test(test_backoff),
    };
    return cmocka_run_group_tests_name("hopperd_relay", tests, NULL, NULL);
}
