/* SPDX-License-Identifier: MIT */
/* Native sources (docs/PROTOCOL.md): one request frame -> its reply,
 * queued in the connection's output. `send` goes through ingest (the
 * queue's when_full), `subscribe` and `ack` through subscribe.c. Listener
 * thread only. */
#ifndef HOPPER_SRC_HOPPERD_NATIVE_H
#define HOPPER_SRC_HOPPERD_NATIVE_H

#include <stddef.h>
#include <stdint.h>

struct hd_conn;
struct hd_loop;
struct hd_source_rt;

/* Largest native frame a source accepts (announced in its hello). */
size_t hd_native_max_frame(const struct hd_source_rt *src);
/* A new native connection: queue the hello. 0, or -1 (out of memory). */
int hd_native_hello(struct hd_conn *c);
/* One request frame p[0..n). Returns 0 when answered, 1 when it must wait
 * for queue space (block policy; nothing was accepted), -1 when the frame
 * is malformed (the error reply is queued and c->closing set, so the
 * connection closes after flushing it). */
int hd_native_request(struct hd_loop *lp, struct hd_conn *c, const uint8_t *p, size_t n);
/* Queue an error reply with `code` (enum hd_code) and count it; if even
 * that fails (out of memory) the connection is set closing. */
void hd_native_reject(struct hd_conn *c, uint64_t id, int code, const char *msg);

#endif
