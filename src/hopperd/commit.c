/* SPDX-License-Identifier: MIT */
/* Group commit (see commit.h). */
#include "commit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "daemon.h"
#include "log.h"
#include "loop_ctx.h"
#include "proto.h"

int
hd_commit_init(struct hd_loop *lp)
{
    size_t n = lp->d->nqueues ? lp->d->nqueues : 1;
    lp->commit_touched = calloc(n, sizeof(*lp->commit_touched));
    lp->commit_rc = calloc(n, sizeof(*lp->commit_rc));
    return lp->commit_touched == NULL || lp->commit_rc == NULL ? -ENOMEM : 0;
}

void
hd_commit_free(struct hd_loop *lp)
{
    free(lp->commit_touched);
    free(lp->commit_rc);
    lp->commit_touched = NULL;
    lp->commit_rc = NULL;
}

int
hd_commit_pending(const struct hd_loop *lp)
{
    if (lp->ncommit_touched > 0) {
        return 1;
    }
    for (const struct hd_conn *c = lp->commit_conns.head; c != NULL;
         c = c->links[HD_LINK_COMMIT].next) {
        if (c->ndefer > 0) {
            return 1;
        }
    }
    return 0;
}

static void
join_list(struct hd_loop *lp, struct hd_conn *c)
{
    if (!c->on_commit) {
        HD_LIST_APPEND(&lp->commit_conns, c, HD_LINK_COMMIT);
        c->on_commit = 1;
    }
}

void
hd_commit_note(struct hd_loop *lp, struct hd_queue_rt *qr, uint64_t bytes)
{
    if (!qr->group_commit) {
        return;
    }
    size_t i = (size_t)(qr - lp->d->queues);
    if (!lp->commit_touched[i]) {
        lp->commit_touched[i] = 1;
        lp->ncommit_touched++;
    }
    lp->commit_bytes += bytes;
    if (lp->commit_bytes >= HD_COMMIT_MAX_BYTES) {
        hd_commit_now(lp);
    }
}

void
hd_commit_hold(struct hd_loop *lp, struct hd_conn *c, struct hd_queue_rt *qr, uint64_t id,
               size_t at)
{
    if (!qr->group_commit || at == c->out.size) {
        return;
    }
    if (c->ndefer == c->defer_cap) {
        size_t ncap = c->defer_cap ? c->defer_cap * 2 : 8;
        struct hd_defer *nd = realloc(c->defer, ncap * sizeof(*nd));
        if (nd == NULL) {
            /* No room to remember the reply: commit now, so that it may
             * go out as it is (its records are durable then). */
            hd_commit_now(lp);
            return;
        }
        c->defer = nd;
        c->defer_cap = ncap;
    }
    if (c->ndefer == 0) {
        c->held_from = at;
    }
    c->defer[c->ndefer++] = (struct hd_defer){
        .off = at, .len = c->out.size - at, .id = id, .queue = (uint32_t)(qr - lp->d->queues)};
    join_list(lp, c);
}

/* The held replies of c are final now: where its queue's commit failed
 * (rcs[queue] < 0), an error reply replaces the `ok`. Rebuilds the output
 * from the first held reply on; out of memory, the held replies are cut
 * and the connection closes (the client learns nothing, as after a crash:
 * the records' outcome is unknown to it). */
static void
release(struct hd_conn *c, const int *rcs)
{
    size_t nfail = 0;
    for (size_t i = 0; i < c->ndefer; i++) {
        nfail += rcs[c->defer[i].queue] < 0;
    }
    if (nfail > 0) {
        msgpack_sbuffer nb;
        msgpack_sbuffer_init(&nb);
        size_t pos = 0;
        int rc = 0;
        for (size_t i = 0; i < c->ndefer && rc == 0; i++) {
            const struct hd_defer *e = &c->defer[i];
            int qrc = rcs[e->queue];
            rc = msgpack_sbuffer_write(&nb, c->out.data + pos, e->off - pos);
            if (rc == 0 && qrc < 0) {
                rc = hd_proto_put_error(&nb, e->id, HD_CODE_FAILED, hopper_strerror(qrc));
                atomic_fetch_add(&c->src->native_rejections[HD_CODE_FAILED], 1);
            } else if (rc == 0) {
                rc = msgpack_sbuffer_write(&nb, c->out.data + e->off, e->len);
            }
            pos = e->off + e->len;
        }
        if (rc == 0) {
            rc = msgpack_sbuffer_write(&nb, c->out.data + pos, c->out.size - pos);
        }
        if (rc == 0) {
            msgpack_sbuffer_destroy(&c->out);
            c->out = nb; /* bytes before held_from are kept: outoff stays valid */
        } else {
            msgpack_sbuffer_destroy(&nb);
            c->out.size = c->held_from;
            c->closing = 1;
        }
    }
    c->ndefer = 0;
}

void
hd_commit_now(struct hd_loop *lp)
{
    struct hd_daemon *d = lp->d;
    for (size_t i = 0; i < d->nqueues; i++) {
        lp->commit_rc[i] = 0;
        if (!lp->commit_touched[i]) {
            continue;
        }
        lp->commit_touched[i] = 0;
        int rc = hopper_commit(d->queues[i].q);
        lp->commit_rc[i] = rc;
        if (rc < 0 && hd_loop_warn_ok(lp)) {
            log_warnx("listener: queue %s: commit: %s (the batches waiting for it are answered "
                      "FAILED)",
                      d->queues[i].conf->s.name, hopper_strerror(rc));
        }
    }
    lp->ncommit_touched = 0;
    lp->commit_bytes = 0;
    for (struct hd_conn *c = lp->commit_conns.head; c != NULL; c = c->links[HD_LINK_COMMIT].next) {
        release(c, lp->commit_rc);
    }
}

struct hd_conn *
hd_commit_pop(struct hd_loop *lp)
{
    for (struct hd_conn *c = lp->commit_conns.head; c != NULL; c = c->links[HD_LINK_COMMIT].next) {
        if (c->ndefer == 0) {
            HD_LIST_REMOVE(&lp->commit_conns, c, HD_LINK_COMMIT);
            c->on_commit = 0;
            return c;
        }
    }
    return NULL;
}
