/* SPDX-License-Identifier: MIT */
#include "crashkit.h"

#include "hp_test.h"
#include "payload.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

void
hp_ck_put(int fd, const uint64_t *m, size_t n)
{
    ssize_t w = write(fd, m, n * sizeof(*m));
    if (w != (ssize_t)(n * sizeof(*m))) {
        _exit(5);
    }
}

int
hp_ck_run(hp_ck_child_fn fn, void *arg, uint64_t kill_after, int timeout_ms,
          hp_ck_absorb_fn absorb, void *ctx, char *err, size_t errcap)
{
    int p[2];
    if (pipe(p) != 0) {
        snprintf(err, errcap, "pipe: %s", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errcap, "fork: %s", strerror(errno));
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        close(p[0]);
        fn(arg, p[1]);
        _exit(9);
    }
    close(p[1]);
    int killed = 0;
    int rc = 0;
    uint64_t accepted = 0;
    uint64_t deadline = hp_test_now_ms() + (uint64_t)timeout_ms;
    uint8_t acc[8];
    size_t have = 0;
    for (;;) {
        if (!killed && (accepted >= kill_after || rc < 0)) {
            kill(pid, SIGKILL);
            killed = 1;
        }
        if (!killed && hp_test_now_ms() > deadline) {
            kill(pid, SIGKILL);
            killed = 1;
            if (rc == 0) {
                snprintf(err, errcap, "child made no progress: %" PRIu64 " accepted", accepted);
                rc = -1;
            }
        }
        struct pollfd pf = {.fd = p[0], .events = POLLIN};
        int pr = poll(&pf, 1, 1000);
        if (pr < 0 && errno == EINTR) {
            continue;
        }
        if (pr <= 0) {
            continue;
        }
        ssize_t r = read(p[0], acc + have, sizeof(acc) - have);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break; /* child gone and every report read */
        }
        have += (size_t)r;
        if (have == sizeof(acc)) {
            uint64_t m;
            memcpy(&m, acc, 8);
            have = 0;
            if (HP_CK_TYPE(m) == HP_CK_ACCEPTED) {
                accepted++;
            }
            if (rc == 0 && absorb(ctx, m) < 0) {
                snprintf(err, errcap, "bad report 0x%" PRIx64 " from the child", m);
                rc = -1;
            }
        }
    }
    close(p[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (rc == 0 && !(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
        snprintf(err, errcap, "child ended by itself (status 0x%x, exit %d) after %" PRIu64
                              " records",
                 status, WIFEXITED(status) ? WEXITSTATUS(status) : -1, accepted);
        rc = -1;
    }
    if (rc == 0 && have != 0) {
        snprintf(err, errcap, "a torn report from the child");
        rc = -1;
    }
    return rc;
}

int
hp_ck_drain(const char *dir, const char *name, const hopper_opts *o,
            size_t (*len_of)(uint64_t), int ack, hp_ck_rec **out, size_t *n,
            hopper_stats *st, char *err, size_t errcap)
{
    *out = NULL;
    *n = 0;
    hopper_queue *q = NULL;
    int rc = hopper_open(dir, name, o, &q);
    if (rc != 0) {
        snprintf(err, errcap, "reopen after kill: %s", hopper_err_name(rc));
        return -1;
    }
    size_t cap = 1024;
    size_t k = 0;
    hp_ck_rec *v = malloc(cap * sizeof(*v));
    int bad = v == NULL;
    if (bad) {
        snprintf(err, errcap, "out of memory");
    }
    while (!bad) {
        hopper_record r;
        rc = hopper_recv(q, &r, 0);
        if (rc == -EAGAIN) {
            break;
        }
        if (rc != 0) {
            snprintf(err, errcap, "recv after reopen: %s", hopper_err_name(rc));
            bad = 1;
            break;
        }
        uint64_t num = 0;
        if (!hp_test_record_check(r.data, r.len, len_of, &num)) {
            snprintf(err, errcap,
                     "record #%zu (seq %" PRIu64 ") after reopen has bad content (len %zu)", k,
                     r.seq, r.len);
            bad = 1;
            break;
        }
        if (k > 0 && r.seq <= v[k - 1].seq) {
            snprintf(err, errcap, "seq %" PRIu64 " after seq %" PRIu64, r.seq, v[k - 1].seq);
            bad = 1;
            break;
        }
        if (k == cap) {
            cap *= 2;
            hp_ck_rec *nv = realloc(v, cap * sizeof(*v));
            if (nv == NULL) {
                snprintf(err, errcap, "out of memory");
                bad = 1;
                break;
            }
            v = nv;
        }
        v[k++] = (hp_ck_rec){.n = num, .seq = r.seq};
    }
    st->struct_size = sizeof(*st);
    (void)hopper_stats_get(q, st);
    if (!bad && ack && k > 0) {
        rc = hopper_ack(q, v[k - 1].seq);
        if (rc != 0) {
            snprintf(err, errcap, "ack after reopen: %s", hopper_err_name(rc));
            bad = 1;
        }
    }
    rc = hopper_close(q);
    if (!bad && rc != 0) {
        snprintf(err, errcap, "close after reopen: %s", hopper_err_name(rc));
        bad = 1;
    }
    if (bad) {
        free(v);
        return -1;
    }
    *out = v;
    *n = k;
    return 0;
}
