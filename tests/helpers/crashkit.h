/* SPDX-License-Identifier: MIT */
/* The kill -9 harness shared by test_crash.c and the soak: a forked child
 * works on a queue and reports through a pipe (one u64 per message, type in
 * the top byte, written whole: a kill never tears one); the parent SIGKILLs
 * it once enough records were reported accepted, collects every report,
 * then reopens the queue and drains it. Only the forked PID is killed, and
 * always waited for. */
#ifndef HOPPER_TESTS_HELPERS_CRASHKIT_H
#define HOPPER_TESTS_HELPERS_CRASHKIT_H
#include "hopper.h"

#include <stddef.h>
#include <stdint.h>

/* Message types. */
#define HP_CK_ACCEPTED 1ull   /* record n accepted (send returned 0) */
#define HP_CK_ACK_INTENT 2ull /* about to acknowledge up to record n */
#define HP_CK_ACK_SYNCED 3ull /* hopper_sync() returned 0 after acknowledging up to n */
#define HP_CK_MEM 4ull        /* stats.mem_records after the last send */
#define HP_CK_DISK 5ull       /* stats.disk_records after the last send */
#define HP_CK_TYPE(m) ((m) >> 56)
#define HP_CK_VAL(m) ((m) & ((1ull << 56) - 1))
#define HP_CK_MSG(t, v) (((uint64_t)(t) << 56) | (uint64_t)(v))

/* Write n messages to the pipe in one write (n * 8 <= PIPE_BUF, so it is
 * atomic, even with several threads); _exit(5) when that fails. */
void hp_ck_put(int fd, const uint64_t *m, size_t n);

/* The child's work: never returns (the parent kills it). */
typedef void (*hp_ck_child_fn)(void *arg, int wfd);
/* Every report the child wrote, in order; < 0 stops the collection with an
 * error (the child is still killed and waited for). */
typedef int (*hp_ck_absorb_fn)(void *ctx, uint64_t msg);

/* Fork a child running fn(arg, wfd), SIGKILL it once `kill_after`
 * HP_CK_ACCEPTED messages arrived (or after timeout_ms without that many),
 * pass every message to absorb. Returns 0, or -1 with a reason in err (the
 * child made no progress, ended by itself, or absorb failed). */
int hp_ck_run(hp_ck_child_fn fn, void *arg, uint64_t kill_after, int timeout_ms,
              hp_ck_absorb_fn absorb, void *ctx, char *err, size_t errcap);

/* One delivered record: its number (from the payload) and seq. */
typedef struct hp_ck_rec {
    uint64_t n;
    uint64_t seq;
} hp_ck_rec;

/* Reopen dir/name with `o`, receive everything (recv with timeout 0 until
 * -EAGAIN), checking each payload byte for byte (len_of: the length
 * function it was built with) and that seqs strictly increase; fill *st,
 * then acknowledge everything when `ack`, and close. *out (malloc'd) gets the
 * records in delivery order. Returns 0, or -1 with the reason in err (open,
 * recv, close failed, a bad record, a seq out of order). */
int hp_ck_drain(const char *dir, const char *name, const hopper_opts *o,
                size_t (*len_of)(uint64_t), int ack, hp_ck_rec **out, size_t *n,
                hopper_stats *st, char *err, size_t errcap);

#endif
