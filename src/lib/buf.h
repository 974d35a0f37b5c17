/* SPDX-License-Identifier: MIT */
/* hp_buf: an owned, growable byte buffer. No I/O, no locks. */
#ifndef HOPPER_SRC_LIB_BUF_H
#define HOPPER_SRC_LIB_BUF_H
#include "internal.h"

#include <stddef.h>
#include <stdint.h>

typedef struct hp_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} hp_buf;

/* Make room for `extra` more bytes past len. 0 or -ENOMEM. */
HP_MUST_USE int hp_buf_reserve(hp_buf *b, size_t extra);
/* Append bytes. 0 or -ENOMEM. */
HP_MUST_USE int hp_buf_append(hp_buf *b, const void *p, size_t n);
/* Set the length to n; bytes past the old length read as zeros.
 * 0 or -ENOMEM (the buffer unchanged). */
HP_MUST_USE int hp_buf_resize(hp_buf *b, size_t n);
/* Copy p[0..n) to offset off. When off + n is past len the buffer grows
 * to it, with zeros in any gap between len and off, as a write extends a
 * file; even with n = 0. 0 or -ENOMEM (the buffer unchanged). */
HP_MUST_USE int hp_buf_put_at(hp_buf *b, size_t off, const void *p, size_t n);
/* Release the memory; the buffer is empty and reusable afterwards. */
void hp_buf_free(hp_buf *b);
/* Forget the content, keep the memory (unless it is large: then shrink). */
void hp_buf_reset(hp_buf *b);

#endif
