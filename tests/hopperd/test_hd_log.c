/* SPDX-License-Identifier: MIT */
/* hopperd logging (log.c): what reaches stderr, one line per call, levels,
 * errno kept and appended, the per-thread warning limiter, fatal's exit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"

/* stderr goes into a pipe for the duration of one test. */
struct capture {
    int saved_fd;
    int rd;
    char text[8192];
    size_t len;
};

static int
cap_setup(void **state)
{
    struct capture *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
    c->saved_fd = dup(STDERR_FILENO);
    assert_true(c->saved_fd >= 0);
    assert_true(dup2(p[1], STDERR_FILENO) >= 0);
    close(p[1]);
    c->rd = p[0];
    log_init(HD_LOG_INFO, 0);
    *state = c;
    return 0;
}

static const char *cap_read(struct capture *c);

static int
cap_teardown(void **state)
{
    struct capture *c = *state;
    /* What no check read (a failed assertion's message) goes to the real
     * stderr, so a failure still explains itself. */
    size_t seen = c->len;
    cap_read(c);
    dup2(c->saved_fd, STDERR_FILENO);
    if (c->len > seen) {
        fwrite(c->text + seen, 1, c->len - seen, stderr);
    }
    close(c->saved_fd);
    close(c->rd);
    free(c);
    return 0;
}

/* Everything written so far (the pipe is non-blocking; log lines are
 * written synchronously, so all of them are in it already). */
static const char *
cap_read(struct capture *c)
{
    for (;;) {
        ssize_t n = read(c->rd, c->text + c->len, sizeof(c->text) - 1 - c->len);
        if (n <= 0) {
            break;
        }
        c->len += (size_t)n;
    }
    c->text[c->len] = '\0';
    return c->text;
}

static size_t
count_lines(const char *s)
{
    size_t n = 0;
    for (; *s != '\0'; s++) {
        n += *s == '\n';
    }
    return n;
}

static void
test_levels_and_prefixes(void **state)
{
    struct capture *c = *state;
    log_info("relay: %s up", "q1");
    log_debug("hidden %d", 1);
    log_errorx("queue: %d", 7);
    const char *out = cap_read(c);
    assert_string_equal(out, "info: relay: q1 up\nerror: queue: 7\n");

    log_setlevel(HD_LOG_DEBUG);
    assert_int_equal(log_getlevel(), HD_LOG_DEBUG);
    log_debug("shown %d", 2);
    assert_non_null(strstr(cap_read(c), "debug: shown 2\n"));

    log_setlevel(HD_LOG_ERROR);
    log_warnx("dropped");
    log_info("dropped");
    assert_null(strstr(cap_read(c), "dropped"));
}

static void
test_warn_appends_strerror_and_keeps_errno(void **state)
{
    struct capture *c = *state;
    errno = ENOENT;
    log_warn("open %s", "/x");
    assert_int_equal(errno, ENOENT);
    errno = EACCES;
    log_warnx("plain");
    assert_int_equal(errno, EACCES);
    char want[256];
    snprintf(want, sizeof(want), "warning: open /x: %s\nwarning: plain\n", strerror(ENOENT));
    assert_string_equal(cap_read(c), want);
}

/* A message longer than the line buffer is cut, still as one whole line. */
static void
test_long_line_is_one_line(void **state)
{
    struct capture *c = *state;
    char big[5000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    log_info("%s", big);
    const char *out = cap_read(c);
    assert_int_equal(count_lines(out), 1);
    assert_true(c->len <= 2048);
    assert_int_equal(out[c->len - 1], '\n');
    assert_memory_equal(out, "info: aaaa", 10);
}

static void
test_limit_one_a_second(void **state)
{
    struct capture *c = *state;
    struct log_limit l = {0};
    assert_int_equal(log_limit_ok(&l, 5000, "src"), 1);
    assert_int_equal(log_limit_ok(&l, 5001, "src"), 0);
    assert_int_equal(log_limit_ok(&l, 5999, "src"), 0);
    assert_int_equal(l.suppressed, 2);
    assert_string_equal(cap_read(c), "");
    /* A second later the next one passes and reports what was held back. */
    assert_int_equal(log_limit_ok(&l, 6000, "src"), 1);
    assert_int_equal(l.suppressed, 0);
    assert_string_equal(cap_read(c), "warning: src: 2 similar messages suppressed\n");
    /* Without a name nothing is printed, but the count still resets. */
    assert_int_equal(log_limit_ok(&l, 6001, NULL), 0);
    assert_int_equal(log_limit_ok(&l, 7001, NULL), 1);
    assert_int_equal(l.suppressed, 0);
    assert_string_equal(cap_read(c), "warning: src: 2 similar messages suppressed\n");
}

static void
test_fatal_exits_1(void **state)
{
    struct capture *c = *state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        errno = EIO;
        fatal("spool %s", "gone");
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
    char want[256];
    snprintf(want, sizeof(want), "error: spool gone: %s\n", strerror(EIO));
    assert_string_equal(cap_read(c), want);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_levels_and_prefixes, cap_setup, cap_teardown),
        cmocka_unit_test_setup_teardown(test_warn_appends_strerror_and_keeps_errno, cap_setup,
                                        cap_teardown),
        cmocka_unit_test_setup_teardown(test_long_line_is_one_line, cap_setup, cap_teardown),
        cmocka_unit_test_setup_teardown(test_limit_one_a_second, cap_setup, cap_teardown),
        cmocka_unit_test_setup_teardown(test_fatal_exits_1, cap_setup, cap_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
