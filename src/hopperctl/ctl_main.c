/* SPDX-License-Identifier: MIT */
/* hopperctl: operator tool for hopperd.
 *
 *   hopperctl stats [-m HOST:PORT]              metrics as a readable table
 *   hopperctl send  [-a HOST:PORT | -u PATH] [-q QUEUE] [-b N] [-w] [TLS]
 *                                               stdin lines -> native records
 *   hopperctl recv  [-a HOST:PORT | -u PATH] [-q QUEUE] [-n COUNT] [-W WINDOW] [TLS]
 *                                               native subscription -> stdout lines
 *   TLS: [--tls] [--tls-ca FILE] [--tls-cert FILE --tls-key FILE]
 *        [--tls-server-name NAME]               (any of them turns TLS on)
 *
 * `send` speaks the native protocol (docs/PROTOCOL.md): it sends batches of
 * N lines and waits for each reply, so when it exits 0 every line was
 * accepted by hopperd under the queue's durability. `recv` subscribes to a
 * queue that has no sink, prints each record as a line and acknowledges
 * what it printed (after fflush), so records are consumed at least once.
 *
 *   hopperctl verify DIR                        check every frame, report damage
 *   hopperctl dump [--all] DIR                  print records, consume nothing
 *   hopperctl salvage [--all] [--format F] DIR OUT
 *                                               copy readable records elsewhere
 *
 * The offline commands work on a queue directory (state_dir/<queue>) that no
 * process has open, through hopper_inspect() only: read-only, no file is
 * changed. Exit status: 0 no damage, 1 damage found (and skipped), 2 error.
 *
 * This file: main, usage and ctl_connect(); the commands are in ctl_*.c
 * (see ctl.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl.h"
#include "netutil.h"

void
ctl_usage(void)
{
    fprintf(stderr, "usage: hopperctl stats [-m HOST:PORT]\n"
                    "       hopperctl send [-a HOST:PORT | -u PATH] [-q QUEUE] [-b N] [-w] "
                    "[--tls] [--tls-ca FILE] [--tls-cert FILE --tls-key FILE] "
                    "[--tls-server-name NAME]\n"
                    "       hopperctl recv [-a HOST:PORT | -u PATH] [-q QUEUE] [-n COUNT] "
                    "[-W WINDOW] [--tls] [--tls-ca FILE] [--tls-cert FILE --tls-key FILE] "
                    "[--tls-server-name NAME]\n"
                    "       hopperctl verify DIR\n"
                    "       hopperctl dump [--all] DIR\n"
                    "       hopperctl salvage [--all] [--format lines|octet-counted] DIR OUT\n");
    exit(2);
}

int
ctl_connect(const char *addr, const char *upath)
{
    char err[HD_ERR_LEN];
    if (upath != NULL) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sun;
        memset(&sun, 0, sizeof(sun));
        sun.sun_family = AF_UNIX;
        if (fd < 0 || strlen(upath) >= sizeof(sun.sun_path)) {
            fprintf(stderr, "hopperctl: %s: bad socket path\n", upath);
            return -1;
        }
        memcpy(sun.sun_path, upath, strlen(upath) + 1);
        if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
            fprintf(stderr, "hopperctl: connect %s: %s\n", upath, strerror(errno));
            close(fd);
            return -1;
        }
        return fd;
    }
    int fd = hd_net_connect(addr, 5000, NULL, NULL, err, sizeof(err));
    if (fd < 0) {
        fprintf(stderr, "hopperctl: %s\n", err);
        return -1;
    }
    /* The helper returns a non-blocking socket; this tool blocks. */
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    return fd;
}

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} commands[] = {
    {"send", ctl_send},     {"stats", ctl_stats}, {"recv", ctl_recv},
    {"verify", ctl_verify}, {"dump", ctl_dump},   {"salvage", ctl_salvage},
};

int
main(int argc, char **argv)
{
    if (argc < 2) {
        ctl_usage();
    }
    const char *cmd = argv[1];
    optind = 2;
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(cmd, commands[i].name) == 0) {
            return commands[i].run(argc, argv);
        }
    }
    if (strcmp(cmd, "-h") != 0 && strcmp(cmd, "help") != 0) {
        fprintf(stderr, "hopperctl: unknown command '%s'\n", cmd);
    }
    ctl_usage();
}
