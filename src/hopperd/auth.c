/* SPDX-License-Identifier: MIT */
/* Authorization of source clients (see auth.h). */
#include "auth.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "config.h"

int
hd_peer_read(int fd, int kind, int want_groups, struct hd_peer *p)
{
    memset(p, 0, sizeof(*p));
    p->kind = kind;
    if (kind != HD_PEER_UNIX) {
        return 0;
    }
    /* The kernel records these at connect(2); the peer cannot forge them.
     * In a user namespace that does not map the peer's ids (systemd's
     * PrivateUsers=yes) they read as the overflow id 65534. */
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
        return -errno;
    }
    p->has_cred = 1;
    p->uid = (uint32_t)cred.uid;
    p->gid = (uint32_t)cred.gid;
    p->pid = (int32_t)cred.pid;
    if (!want_groups) {
        return 0;
    }
    gid_t groups[HD_PEER_GROUPS];
    len = sizeof(groups);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0) {
        if (errno != ERANGE) {
            return -errno;
        }
        p->groups_truncated = 1;
        return 0;
    }
    p->ngroups = len / sizeof(gid_t);
    for (size_t i = 0; i < p->ngroups; i++) {
        p->groups[i] = (uint32_t)groups[i];
    }
    return 0;
}

void
hd_peer_describe(const struct hd_peer *p, char *out, size_t outlen)
{
    if (p->kind == HD_PEER_UNIX && p->has_cred) {
        snprintf(out, outlen, "uid %u gid %u pid %d", (unsigned)p->uid, (unsigned)p->gid,
                 (int)p->pid);
    } else {
        snprintf(out, outlen, "a %s peer", p->kind == HD_PEER_UNIX ? "unix" : "tcp");
    }
}

static int
listed(const struct hd_idlist *l, uint32_t id)
{
    for (uint64_t i = 0; i < l->n; i++) {
        if (l->id[i] == id) {
            return 1;
        }
    }
    return 0;
}

int
hd_auth_peer(const struct hd_source_conf *sc, const struct hd_peer *p, char *why, size_t len)
{
    const struct hd_idlist *uids = &sc->allowed_uids;
    const struct hd_idlist *gids = &sc->allowed_gids;
    if (p->kind != HD_PEER_UNIX || (uids->n == 0 && gids->n == 0)) {
        return 1; /* no identity to check, or no list to check it against */
    }
    if (!p->has_cred) {
        snprintf(why, len, "its credentials could not be read");
        return 0;
    }
    if (listed(uids, p->uid) || listed(gids, p->gid)) {
        return 1;
    }
    for (size_t i = 0; i < p->ngroups; i++) {
        if (listed(gids, p->groups[i])) {
            return 1;
        }
    }
    snprintf(why, len, "%s%s",
             gids->n == 0   ? "uid not in allowed_uids"
             : uids->n == 0 ? "neither its gid nor its groups are in allowed_gids"
                            : "uid not in allowed_uids, gid and groups not in allowed_gids",
             p->groups_truncated ? " (it is in more than 256 groups; they were not read)" : "");
    return 0;
}

int
hd_auth_tls_names(const char *allowed, const char *const *names, size_t n, char *why, size_t len)
{
    if (allowed[0] == '\0') {
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(names[i]);
        for (const char *p = allowed; *p != '\0';) {
            size_t il = strcspn(p, ",");
            if (il == nl && strncasecmp(p, names[i], nl) == 0) {
                return 1;
            }
            p += il + (p[il] == ',');
        }
    }
    if (n == 0) {
        snprintf(why, len, "its certificate has no CN or DNS name; not in tls_allowed_peers");
        return 0;
    }
    /* Name what was offered, shortened: the log line is for an operator. */
    snprintf(why, len, "certificate %s%.64s%s not in tls_allowed_peers",
             n == 1 ? "name " : "names ", names[0], n > 1 ? ", ... are" : " is");
    return 0;
}

int
hd_auth_queue(const struct hd_source_conf *sc, int queue_index, int op, const char **why)
{
    if (op == HD_AUTH_SUBSCRIBE && !sc->allow_subscribe) {
        *why = "subscribe is not allowed on this source (allow_subscribe = off)";
        return 0;
    }
    if (!hd_source_may_use(sc, queue_index)) {
        *why = "the queue is not one of this source's (queue, queues)";
        return 0;
    }
    return 1;
}
