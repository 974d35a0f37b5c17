/* SPDX-License-Identifier: MIT */
/* Growable byte buffer; capacity doubles, overflow is checked. */
#include "buf.h"

#include <stdlib.h>

int
hp_buf_reserve(hp_buf *b, size_t extra)
{
    if (extra <= b->cap - b->len) {
        return 0;
    }
    if (extra > SIZE_MAX / 2 - b->len) {
        return -ENOMEM;
    }
    size_t want = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < want) {
        cap *= 2;
    }
    uint8_t *p = realloc(b->data, cap);
    if (p == NULL) {
        return -ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int
hp_buf_append(hp_buf *b, const void *p, size_t n)
{
    HP_GUARD(hp_buf_reserve(b, n));
    if (n > 0) {
        memcpy(b->data + b->len, p, n);
    }
    b->len += n;
    return 0;
}

int
hp_buf_resize(hp_buf *b, size_t n)
{
    if (n > b->len) {
        HP_GUARD(hp_buf_reserve(b, n - b->len));
        memset(b->data + b->len, 0, n - b->len);
    }
    b->len = n;
    return 0;
}

int
hp_buf_put_at(hp_buf *b, size_t off, const void *p, size_t n)
{
    if (off > SIZE_MAX - n) {
        return -ENOMEM;
    }
    if (off + n > b->len) {
        /* Zero only the gap before off: the copy covers the rest. */
        HP_GUARD(hp_buf_reserve(b, off + n - b->len));
        if (off > b->len) {
            memset(b->data + b->len, 0, off - b->len);
        }
        b->len = off + n;
    }
    if (n > 0) {
        memcpy(b->data + off, p, n);
    }
    return 0;
}

void
hp_buf_free(hp_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void
hp_buf_reset(hp_buf *b)
{
    /* Keep up to 4 MiB around for reuse; a single huge record should not pin
     * its buffer forever. */
    if (b->cap > (4u << 20)) {
        hp_buf_free(b);
        return;
    }
    b->len = 0;
}
