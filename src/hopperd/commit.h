/* SPDX-License-Identifier: MIT */
/* Group commit across connections, for queues with durability = disk and
 * fsync = always (qr->group_commit; opened with HOPPER_FSYNC_COMMIT).
 * Listener thread only.
 *
 * The listener sends every batch it reads in one epoll round without an
 * fdatasync (hopper_send_batch() returns once the records are written),
 * holds those batches' `ok` replies in their connections' output (after the
 * first held reply, every reply of that connection waits, so replies keep
 * their order), and at the end of the round commits each queue sent to with
 * one hopper_commit(), then writes the held replies: the `ok`s if the commit
 * succeeded, else an error reply (FAILED, the queue's sticky error) in place
 * of each. Records of lines and octet-counted sources into such a queue are
 * durable at the same commit (there is no reply to hold).
 *
 *   read + send (write) ... read + send (write)  -> hopper_commit (fdatasync)
 *   -> replies written
 *
 * So one fdatasync covers every connection's batches of the round. A round
 * is bounded (EVENTS_MAX events x READS_PER_EVENT reads of at most one
 * buffer each, loop.c), and a round that sends more than
 * HD_COMMIT_MAX_BYTES commits in the middle as well (the replies it
 * releases go out at the end of the round), so a slow fdatasync does not
 * let what one fdatasync covers grow without bound. Held replies count
 * against HD_CONN_OUT_LIMIT, so a connection stops reading while it holds
 * that much. */
#ifndef HOPPER_SRC_HOPPERD_COMMIT_H
#define HOPPER_SRC_HOPPERD_COMMIT_H

#include <stddef.h>
#include <stdint.h>

struct hd_conn;
struct hd_loop;
struct hd_queue_rt;

/* Payload bytes sent to group-commit queues after which a round commits
 * before it ends. */
#define HD_COMMIT_MAX_BYTES (16u << 20)

/* lp->commit_touched, one flag per queue. 0 or -ENOMEM. */
int hd_commit_init(struct hd_loop *lp);
void hd_commit_free(struct hd_loop *lp);
/* `bytes` of payload were sent to qr: if it group-commits, the next commit
 * covers it (and past HD_COMMIT_MAX_BYTES since the last, commit now). */
void hd_commit_note(struct hd_loop *lp, struct hd_queue_rt *qr, uint64_t bytes);
/* The `ok` reply c->out[at ..) just queued answers request `id`, a send
 * to qr: if qr group-commits, hold it until the next commit. */
void hd_commit_hold(struct hd_loop *lp, struct hd_conn *c, struct hd_queue_rt *qr, uint64_t id,
                    size_t at);
/* Commit every queue sent to since the last commit, then release the held
 * replies (an error reply replaces each `ok` whose queue's commit failed).
 * The connections released stay on lp->commit_conns for hd_commit_pop():
 * nothing is written to a socket and no connection is closed here. */
void hd_commit_now(struct hd_loop *lp);
/* After hd_commit_now(): the next connection whose replies were released,
 * taken off the list (the caller flushes it), or NULL. */
struct hd_conn *hd_commit_pop(struct hd_loop *lp);
/* Is a commit owed (a queue sent to, or replies held, since the last)? */
int hd_commit_pending(const struct hd_loop *lp);

#endif
