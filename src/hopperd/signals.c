/* SPDX-License-Identifier: MIT */
/* Signal handling without async handlers: every thread has the signals
 * blocked; one thread loops on sigwait() and writes a request byte into a
 * pipe that main reads in normal context. main blocks the signals as its
 * very first step: a signal that arrives while the configuration is still
 * being read (systemctl reload right after start) stays pending and is
 * taken by the sigwait thread once it runs, instead of killing the process
 * with the default action. A second SIGTERM/SIGINT while a
 * shutdown is under way exits at once: data already handed to the queue in
 * disk mode is on disk by construction, and the operator asked twice. */
#include "signals.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static sigset_t hd_sigset;
static int req_pipe[2] = {-1, -1};
static pthread_t sig_thread;

int
hd_signals_block(void)
{
    sigemptyset(&hd_sigset);
    sigaddset(&hd_sigset, SIGTERM);
    sigaddset(&hd_sigset, SIGINT);
    sigaddset(&hd_sigset, SIGHUP);
    sigaddset(&hd_sigset, SIGUSR1);
    int rc = pthread_sigmask(SIG_BLOCK, &hd_sigset, NULL);
    if (rc != 0) {
        return -rc;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    if (sigaction(SIGPIPE, &sa, NULL) < 0) {
        return -errno;
    }
    return 0;
}

static void
post(char req)
{
    ssize_t w;
    do {
        w = write(req_pipe[1], &req, 1);
    } while (w < 0 && errno == EINTR);
}

static void *
signal_main(void *arg)
{
    (void)arg;
    int shutting_down = 0;
    for (;;) {
        int sig = 0;
        if (sigwait(&hd_sigset, &sig) != 0) {
            continue;
        }
        switch (sig) {
        case SIGTERM:
        case SIGINT:
            if (shutting_down) {
                log_warnx("signals: second %s during shutdown, exiting now",
                          sig == SIGTERM ? "SIGTERM" : "SIGINT");
                _exit(1);
            }
            shutting_down = 1;
            log_info("signals: %s, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            post(HD_REQ_SHUTDOWN);
            break;
        case SIGHUP:
            log_info("signals: SIGHUP, reloading");
            post(HD_REQ_RELOAD);
            break;
        default:
            log_debug("signals: ignoring signal %d", sig);
            break;
        }
    }
    return NULL;
}

int
hd_signals_start(void)
{
    if (pipe(req_pipe) < 0) {
        return -errno;
    }
    fcntl(req_pipe[0], F_SETFD, FD_CLOEXEC);
    fcntl(req_pipe[1], F_SETFD, FD_CLOEXEC);
    int rc = pthread_create(&sig_thread, NULL, signal_main, NULL);
    if (rc != 0) {
        return -rc;
    }
    pthread_detach(sig_thread);
    return 0;
}

int
hd_signals_next_request(void)
{
    for (;;) {
        char c;
        ssize_t r = read(req_pipe[0], &c, 1);
        if (r == 1) {
            return c;
        }
        if (r < 0 && errno == EINTR) {
            continue;
        }
        return HD_REQ_SHUTDOWN;
    }
}
