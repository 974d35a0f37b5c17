/* SPDX-License-Identifier: MIT */
/* Helpers for the hopperd integration tests (see hd_e2e_util.h). */
#include "hd_e2e_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

uint64_t
e2e_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void
pause_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int
e2e_wait_until(int (*pred)(void *), void *arg, int timeout_ms)
{
    uint64_t deadline = e2e_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        if (pred(arg)) {
            return 0;
        }
        if (e2e_now_ms() >= deadline) {
            return -1;
        }
        pause_ms(5);
    }
}

int
e2e_file_contains(void *arg)
{
    const struct e2e_grep *g = arg;
    char *text = e2e_read_file(g->path, NULL);
    int seen = text != NULL && strstr(text, g->needle) != NULL;
    free(text);
    return seen;
}

int
e2e_file_has_lines(void *arg)
{
    struct e2e_lines_wait *w = arg;
    size_t len = 0;
    char *data = e2e_read_file(w->path, &len);
    w->have = 0;
    for (size_t i = 0; data != NULL && i < len; i++) {
        w->have += data[i] == '\n';
    }
    free(data);
    return w->have >= w->want;
}

char *
e2e_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof(path), "%s/hopperd-e2e-XXXXXX", base ? base : "/tmp");
    if (mkdtemp(path) == NULL) {
        return NULL;
    }
    return strdup(path);
}

static int
rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(p);
    return 0;
}

void
e2e_rmtree(const char *path)
{
    if (getenv("HOPPERD_E2E_KEEP") == NULL) {
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    }
}

int
e2e_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = 0;
    socklen_t len = sizeof(sin);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
        getsockname(fd, (struct sockaddr *)&sin, &len) < 0) {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    close(fd);
    return ntohs(sin.sin_port);
}

void
e2e_write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    if (fp != NULL) {
        fputs(text, fp);
        fclose(fp);
    }
}

char *
e2e_read_file(const char *path, size_t *lenp)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *p = malloc(cap);
    size_t n;
    while (p != NULL && (n = fread(p + len, 1, cap - len - 1, fp)) > 0) {
        len += n;
        if (cap - len < 2) {
            cap *= 2;
            p = realloc(p, cap);
        }
    }
    fclose(fp);
    if (p != NULL) {
        p[len] = '\0';
    }
    if (lenp != NULL) {
        *lenp = len;
    }
    return p;
}

void
e2e_dump_log(const char *path, size_t tail)
{
    char *log = e2e_read_file(path, NULL);
    if (log == NULL) {
        return;
    }
    size_t n = strlen(log);
    const char *from = tail > 0 && n > tail ? log + n - tail : log;
    fprintf(stderr, "---- hopperd log%s ----\n%s---- end ----\n", from != log ? " (tail)" : "",
            from);
    free(log);
}

void
e2e_cleanup(pid_t pid, char *dir)
{
    if (pid > 0) {
        e2e_stop(pid, SIGKILL, 5000);
    }
    e2e_rmtree(dir);
    free(dir);
}

pid_t
e2e_start(const char *conf, const char *logpath)
{
    return e2e_start_nofile(conf, logpath, 0);
}

pid_t
e2e_start_nofile(const char *conf, const char *logpath, int nofile)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (nofile > 0) {
            struct rlimit rl = {(rlim_t)nofile, (rlim_t)nofile};
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(HOPPERD_BIN, "hopperd", "-f", conf, (char *)NULL);
        _exit(127);
    }
    return pid;
}

int
e2e_run(const char *const *args, char *out, size_t outlen)
{
    int pfd[2];
    if (pipe(pfd) < 0) {
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pfd[1], 1);
        dup2(pfd[1], 2);
        close(pfd[0]);
        execv(HOPPERD_BIN, (char *const *)args);
        _exit(127);
    }
    close(pfd[1]);
    size_t len = 0;
    ssize_t r;
    while ((r = read(pfd[0], out + len, outlen - len - 1)) > 0) {
        len += (size_t)r;
    }
    out[len] = '\0';
    close(pfd[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int
e2e_connect(int port)
{
    return e2e_connect_from(NULL, port);
}

int
e2e_connect_from(const char *from, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    if (fd >= 0 && from != NULL) {
        if (inet_pton(AF_INET, from, &sin.sin_addr) != 1 ||
            bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
            close(fd);
            return -1;
        }
    }
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)port);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    return fd;
}

static int
port_accepts(void *arg)
{
    int fd = e2e_connect(*(const int *)arg);
    if (fd < 0) {
        return 0;
    }
    close(fd);
    return 1;
}

int
e2e_wait_port(int port, int timeout_ms)
{
    return e2e_wait_until(port_accepts, &port, timeout_ms);
}

struct reap {
    pid_t pid;
    int status;
};

static int
reaped(void *arg)
{
    struct reap *r = arg;
    return waitpid(r->pid, &r->status, WNOHANG) == r->pid;
}

int
e2e_wait_exit(pid_t pid, int timeout_ms)
{
    struct reap r = {pid, 0};
    if (e2e_wait_until(reaped, &r, timeout_ms) < 0) {
        return -1;
    }
    return WIFEXITED(r.status) ? WEXITSTATUS(r.status) : 128 + WTERMSIG(r.status);
}

int
e2e_stop(pid_t pid, int sig, int timeout_ms)
{
    kill(pid, sig);
    int rc = e2e_wait_exit(pid, timeout_ms);
    if (rc < 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    return rc;
}

int
e2e_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
        if (w <= 0) {
            if (w < 0 && errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int
e2e_peer_closed(int fd)
{
    char b[256];
    for (;;) {
        ssize_t r = recv(fd, b, sizeof(b), MSG_DONTWAIT);
        if (r > 0) {
            continue;
        }
        return r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    }
}

int
e2e_send(int port, const void *data, size_t len)
{
    int fd = e2e_connect(port);
    if (fd < 0) {
        return -1;
    }
    int rc = e2e_write_all(fd, data, len);
    close(fd);
    return rc;
}

char *
e2e_http(int port, const char *req, int timeout_ms, size_t *lenp)
{
    uint64_t deadline = e2e_now_ms() + (uint64_t)timeout_ms;
    int fd = e2e_connect(port);
    if (fd < 0) {
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    int ok = buf != NULL && e2e_write_all(fd, req, strlen(req)) == 0;
    while (ok) {
        uint64_t now = e2e_now_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (now >= deadline || poll(&p, 1, (int)(deadline - now)) <= 0) {
            ok = 0;
            break;
        }
        ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
        if (r == 0) {
            break;
        }
        if (r < 0) {
            ok = errno == EINTR;
            continue;
        }
        len += (size_t)r;
        if (cap - len < 2) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            ok = nb != NULL;
            buf = ok ? nb : buf;
        }
    }
    close(fd);
    if (!ok) {
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    if (lenp != NULL) {
        *lenp = len;
    }
    return buf;
}

double
e2e_metric_in(const char *text, const char *prefix)
{
    size_t pl = strlen(prefix);
    for (const char *line = text; line != NULL && *line != '\0';) {
        const char *nl = strchr(line, '\n');
        if (strncmp(line, prefix, pl) == 0 && line[pl] == ' ') {
            return strtod(line + pl + 1, NULL);
        }
        line = nl != NULL ? nl + 1 : NULL;
    }
    return -1;
}

double
e2e_metric(int port, const char *prefix)
{
    char *text = e2e_http(port, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n", 30000, NULL);
    if (text == NULL) {
        return -1;
    }
    double v = e2e_metric_in(text, prefix);
    free(text);
    return v;
}

static void *
downstream_main(void *arg)
{
    struct e2e_downstream *ds = arg;
    while (!atomic_load(&ds->stop)) {
        struct pollfd p = {.fd = ds->lfd, .events = POLLIN};
        if (poll(&p, 1, 20) <= 0) {
            continue;
        }
        int fd = accept(ds->lfd, NULL, NULL);
        if (fd < 0) {
            continue;
        }
        pthread_mutex_lock(&ds->mu);
        ds->connections++;
        pthread_mutex_unlock(&ds->mu);
        while (!atomic_load(&ds->stop)) {
            struct pollfd c = {.fd = fd, .events = POLLIN};
            if (poll(&c, 1, 20) <= 0) {
                continue;
            }
            char buf[65536];
            ssize_t r = recv(fd, buf, sizeof(buf), 0);
            if (r <= 0) {
                break;
            }
            pthread_mutex_lock(&ds->mu);
            if (ds->len + (size_t)r + 1 > ds->cap) {
                ds->cap = (ds->cap + (size_t)r + 1) * 2;
                ds->data = realloc(ds->data, ds->cap);
            }
            memcpy(ds->data + ds->len, buf, (size_t)r);
            ds->len += (size_t)r;
            ds->data[ds->len] = '\0';
            pthread_mutex_unlock(&ds->mu);
        }
        close(fd);
    }
    return NULL;
}

int
e2e_downstream_start(struct e2e_downstream *ds, int port)
{
    ds->port = port;
    atomic_store(&ds->stop, 0);
    ds->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ds->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)port);
    if (bind(ds->lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(ds->lfd, 16) < 0) {
        close(ds->lfd);
        return -1;
    }
    return pthread_create(&ds->thread, NULL, downstream_main, ds) == 0 ? 0 : -1;
}

void
e2e_downstream_stop(struct e2e_downstream *ds)
{
    atomic_store(&ds->stop, 1);
    pthread_join(ds->thread, NULL);
    close(ds->lfd);
}

size_t
e2e_downstream_lines(struct e2e_downstream *ds)
{
    size_t n = 0;
    pthread_mutex_lock(&ds->mu);
    for (size_t i = 0; i < ds->len; i++) {
        n += ds->data[i] == '\n';
    }
    pthread_mutex_unlock(&ds->mu);
    return n;
}

long
e2e_check_sequence(const char *data, size_t len, long n)
{
    long next = 0, dups = 0;
    const char *p = data;
    const char *end = data + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL) {
            break;
        }
        long v = -1;
        if (sscanf(p, "rec-%ld", &v) != 1) {
            fprintf(stderr, "unexpected line '%.*s'\n", (int)(nl - p), p);
            return -1;
        }
        if (v == next) {
            next++;
        } else if (v < next) {
            dups++;
        } else {
            fprintf(stderr, "gap or reorder: got rec-%ld, expected rec-%ld\n", v, next);
            return -1;
        }
        p = nl + 1;
    }
    if (next != n) {
        fprintf(stderr, "only %ld of %ld records arrived\n", next, n);
        return -1;
    }
    return dups;
}
