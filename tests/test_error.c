/* SPDX-License-Identifier: MIT */
/* Error names and strings (error.c): every code of HOPPER_ERRNO_MAP renders
 * to its own name and message, the errno values the library returns have
 * their names (every errno value of the system does), success and unknown
 * codes have fixed renderings, every string is static (no strerror buffer),
 * and neither hopper_strerror nor hopper_err_name ever returns NULL, whatever
 * the int. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "hopper.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
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

/* Every -errno a library path can return (file-system calls, memory,
 * waits) has its own name, and renders as the system's message. */
static void
test_errno_codes(void **state)
{
    (void)state;
    static const struct {
        int val;
        const char *name;
    } known[] = {
        {-ENOENT, "ENOENT"},   {-EACCES, "EACCES"},   {-EPERM, "EPERM"},
        {-EEXIST, "EEXIST"},   {-ENOTDIR, "ENOTDIR"}, {-EISDIR, "EISDIR"},
        {-ESPIPE, "ESPIPE"},   {-ELOOP, "ELOOP"},     {-ENAMETOOLONG, "ENAMETOOLONG"},
        {-EMFILE, "EMFILE"},   {-ENFILE, "ENFILE"},   {-ENOSPC, "ENOSPC"},
        {-EDQUOT, "EDQUOT"},   {-EIO, "EIO"},         {-EROFS, "EROFS"},
        {-EFBIG, "EFBIG"},     {-ENOMEM, "ENOMEM"},   {-EINVAL, "EINVAL"},
        {-EAGAIN, "EAGAIN"},   {-ETIMEDOUT, "ETIMEDOUT"}, {-EBUSY, "EBUSY"},
        {-EINTR, "EINTR"},     {-EBADF, "EBADF"},     {-EXDEV, "EXDEV"},
        {-ENODEV, "ENODEV"},   {-ENXIO, "ENXIO"},     {-EOVERFLOW, "EOVERFLOW"},
        {-ENOBUFS, "ENOBUFS"}, {-EPIPE, "EPIPE"},     {-ESTALE, "ESTALE"},
        {-ENOTEMPTY, "ENOTEMPTY"}, {-EMLINK, "EMLINK"}, {-ETXTBSY, "ETXTBSY"},
        {-ENOTSUP, "EOPNOTSUPP"}, {-ECANCELED, "ECANCELED"}, {-EDEADLK, "EDEADLK"},
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        assert_string_equal(hopper_err_name(known[i].val), known[i].name);
        /* -errno renders as the system's message for errno (C locale). */
        assert_string_equal(hopper_strerror(known[i].val), strerror(-known[i].val));
    }
}

/* Every errno value the system knows has a name and its message. */
static void
test_every_system_errno_named(void **state)
{
    (void)state;
    int named = 0;
    for (int v = 1; v < 4096; v++) {
        char sys[256];
        snprintf(sys, sizeof(sys), "%s", strerror(v));
        int is_lib = 0;
        for (size_t i = 0; i < NCODES; i++) {
            is_lib |= k_codes[i].val == -v;
        }
        if (is_lib) {
            continue; /* the library's own codes, checked above */
        }
        if (strncmp(sys, "Unknown error", 13) == 0) {
            assert_string_equal(hopper_err_name(-v), "EUNKNOWN");
            assert_string_equal(hopper_strerror(-v), "unknown error");
            continue;
        }
        if (strcmp(hopper_err_name(-v), "EUNKNOWN") == 0) {
            fail_msg("errno %d (%s) has no name", v, sys);
        }
        assert_true(hopper_err_name(-v)[0] == 'E');
        assert_string_equal(hopper_strerror(-v), sys);
        named++;
    }
    assert_true(named >= 80);
}

static void *
strerror_in_thread(void *arg)
{
    (void)arg;
    return (void *)(uintptr_t)hopper_strerror(-1500);
}

/* hopper.h: "the string is static". No per-thread buffer, nothing a later
 * strerror() (in this thread or another) overwrites. */
static void
test_strerror_is_static(void **state)
{
    (void)state;
    static const int codes[] = {-1500, -EPIPE, -ESPIPE, HOPPER_EFULL, 7, INT_MIN};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        const char *a = hopper_strerror(codes[i]);
        char copy[256];
        snprintf(copy, sizeof(copy), "%s", a);
        (void)strerror(1600); /* would reuse glibc's buffer for unknown values */
        (void)strerror(EIO);
        assert_ptr_equal(hopper_strerror(codes[i]), a);
        assert_string_equal(a, copy);
    }
    assert_string_equal(hopper_strerror(-1500), "unknown error");
    pthread_t t;
    void *other = NULL;
    assert_int_equal(pthread_create(&t, NULL, strerror_in_thread, NULL), 0);
    assert_int_equal(pthread_join(t, &other), 0);
    assert_ptr_equal(other, hopper_strerror(-1500));
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
    /* Beside the map's values, inside the errno range but no errno of the
     * system: no name, and the fixed rendering (never a formatted buffer). */
    static const int near[] = {-1000, -1010, -1999};
    for (size_t i = 0; i < sizeof(near) / sizeof(near[0]); i++) {
        assert_string_equal(hopper_err_name(near[i]), "EUNKNOWN");
        assert_string_equal(hopper_strerror(near[i]), "unknown error");
    }
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
        cmocka_unit_test(test_every_system_errno_named),
        cmocka_unit_test(test_strerror_is_static),
        cmocka_unit_test(test_unknown_codes),
        cmocka_unit_test(test_never_null),
    };
    return cmocka_run_group_tests_name("error", tests, NULL, NULL);
}
