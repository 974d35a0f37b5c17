/* SPDX-License-Identifier: MIT */
/* Error names and strings (error.c): every code of HOPPER_ERRNO_MAP renders
 * to its own name and message, the errno values the library returns have
 * their names, success and unknown codes have fixed renderings, and neither
 * hopper_strerror nor hopper_err_name ever returns NULL, whatever the int. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "hopper.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

typedef struct code {
    int val;
    const char *name;
    const char *msg;
} code;

static const code k_codes[] = {
#define XX(name, val, msg) {HOPPER_##name, #name, msg},
    HOPPER_ERRNO_MAP(XX)
#undef XX
};
#define NCODES (sizeof(k_codes) / sizeof(k_codes[0]))

static void
test_every_code_has_its_name_and_message(void **state)
{
    (void)state;
    assert_true(NCODES >= 8);
    for (size_t i = 0; i < NCODES; i++) {
        const char *name = hopper_err_name(k_codes[i].val);
        const char *msg = hopper_strerror(k_codes[i].val);
        assert_non_null(name);
        assert_non_null(msg);
        assert_string_equal(name, k_codes[i].name);
        assert_string_equal(msg, k_codes[i].msg);
        assert_true(strlen(msg) > 0);
    }
}

static void
test_codes_are_distinct_and_below_errno(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCODES; i++) {
        /* The reserved range stays clear of -errno (-1 .. -4095). */
        assert_true(k_codes[i].val <= -1000);
        for (size_t j = i + 1; j < NCODES; j++) {
            assert_int_not_equal(k_codes[i].val, k_codes[j].val);
            assert_string_not_equal(k_codes[i].name, k_codes[j].name);
        }
    }
}

static void
test_success(void **state)
{
    (void)state;
    assert_string_equal(hopper_err_name(0), "OK");
    assert_string_equal(hopper_strerror(0), "success");
}

static void
test_errno_codes(void **state)
{
    (void)state;
    static const struct {
        int val;
        const char *name;
    } known[] = {
        {-EAGAIN, "EAGAIN"}, {-ETIMEDOUT, "ETIMEDOUT"}, {-ENOMEM, "ENOMEM"},
        {-EINVAL, "EINVAL"}, {-ENOSPC, "ENOSPC"},       {-EIO, "EIO"},
        {-EMFILE, "EMFILE"}, {-ENOENT, "ENOENT"},       {-EACCES, "EACCES"},
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        assert_string_equal(hopper_err_name(known[i].val), known[i].name);
        /* -errno renders as the system's message for errno. */
        assert_string_equal(hopper_strerror(known[i].val), strerror(-known[i].val));
    }
}

static void
test_unknown_codes(void **state)
{
    (void)state;
    /* Outside both the errno range and the map. */
    static const int unknown[] = {1, 42, 4096, -4096, -5000, INT_MAX, INT_MIN};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        assert_string_equal(hopper_err_name(unknown[i]), "EUNKNOWN");
        assert_string_equal(hopper_strerror(unknown[i]), "unknown error");
    }
    /* Beside the map's values, inside the errno range: no name, and the
     * system's rendering of the number. glibc formats that into a buffer the
     * next strerror() call in the thread frees, so it is copied first. */
    static const int near[] = {-1000, -1009, -1999};
    for (size_t i = 0; i < sizeof(near) / sizeof(near[0]); i++) {
        assert_string_equal(hopper_err_name(near[i]), "EUNKNOWN");
        char got[128];
        snprintf(got, sizeof(got), "%s", hopper_strerror(near[i]));
        assert_string_equal(got, strerror(-near[i]));
    }
    /* A -errno without a symbolic name of its own still renders. */
    assert_string_equal(hopper_err_name(-EPIPE), "EUNKNOWN");
    assert_string_equal(hopper_strerror(-EPIPE), strerror(EPIPE));
}

static void
test_never_null(void **state)
{
    (void)state;
    for (int v = -5000; v <= 5000; v++) {
        const char *name = hopper_err_name(v);
        const char *msg = hopper_strerror(v);
        assert_non_null(name);
        assert_non_null(msg);
        assert_true(name[0] != '\0');
        assert_true(msg[0] != '\0');
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_has_its_name_and_message),
        cmocka_unit_test(test_codes_are_distinct_and_below_errno),
        cmocka_unit_test(test_success),
        cmocka_unit_test(test_errno_codes),
        cmocka_unit_test(test_unknown_codes),
        cmocka_unit_test(test_never_null),
    };
    return cmocka_run_group_tests_name("error", tests, NULL, NULL);
}
