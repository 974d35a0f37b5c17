/* SPDX-License-Identifier: MIT */
/* The `native` protocol codec (see proto.h and docs/PROTOCOL.md).
 *
 * The reader supports the msgpack types the protocol uses (map, array,
 * str, bin, unsigned and non-negative ints, nil, bool) and skips values of
 * any other type under unknown keys, so peers may add keys. Every length
 * is checked against the bytes left before use; container counts are never
 * used to allocate; nesting of skipped values is limited to MAX_DEPTH.
 */
#include "proto.h"

#include <assert.h>
#include <string.h>

#define MAX_DEPTH 16

const char *const hd_code_names[HD_CODE_NCODES] = {
    [HD_CODE_NONE] = "",
    [HD_CODE_FULL] = "FULL",
    [HD_CODE_TOO_BIG] = "TOO_BIG",
    [HD_CODE_BAD_FRAME] = "BAD_FRAME",
    [HD_CODE_NO_SUCH_QUEUE] = "NO_SUCH_QUEUE",
    [HD_CODE_FAILED] = "FAILED",
    [HD_CODE_BUSY] = "BUSY",
    [HD_CODE_FORBIDDEN] = "FORBIDDEN",
};

const char *
hd_code_name(int code)
{
    return code > HD_CODE_NONE && code < HD_CODE_NCODES ? hd_code_names[code] : "?";
}

struct rd {
    const uint8_t *p;
    size_t n, off;
};

static int
rd_bytes(struct rd *r, size_t k, const uint8_t **out)
{
    if (r->n - r->off < k) {
        return -1;
    }
    *out = r->p + r->off;
    r->off += k;
    return 0;
}

static int
rd_be(struct rd *r, size_t k, uint64_t *v)
{
    const uint8_t *b;
    if (rd_bytes(r, k, &b) < 0) {
        return -1;
    }
    uint64_t x = 0;
    for (size_t i = 0; i < k; i++) {
        x = (x << 8) | b[i];
    }
    *v = x;
    return 0;
}

enum mtype { M_NIL, M_BOOL, M_UINT, M_NINT, M_FLOAT, M_STR, M_BIN, M_ARRAY, M_MAP, M_EXT };

/* Read one value's header. For str/bin/ext, *len is the payload size and
 * the payload is skipped (its start in *data); for array/map, *len is the
 * element (pair) count; for ints, *len holds the value. */
static int
rd_head(struct rd *r, int *type, uint64_t *len, const uint8_t **data)
{
    const uint8_t *b;
    if (rd_bytes(r, 1, &b) < 0) {
        return -1;
    }
    uint8_t t = b[0];
    uint64_t v = 0;
    *data = NULL;
    if (t <= 0x7f) {
        *type = M_UINT;
        *len = t;
        return 0;
    }
    if (t >= 0xe0) {
        *type = M_NINT;
        *len = 0;
        return 0;
    }
    if ((t & 0xf0) == 0x80) {
        *type = M_MAP;
        *len = t & 0x0f;
        return 0;
    }
    if ((t & 0xf0) == 0x90) {
        *type = M_ARRAY;
        *len = t & 0x0f;
        return 0;
    }
    if ((t & 0xe0) == 0xa0) {
        *type = M_STR;
        *len = t & 0x1f;
        return rd_bytes(r, (size_t)*len, data);
    }
    switch (t) {
    case 0xc0:
        *type = M_NIL;
        return 0;
    case 0xc2:
    case 0xc3:
        *type = M_BOOL;
        *len = t == 0xc3;
        return 0;
    case 0xc4:
    case 0xc5:
    case 0xc6:
        *type = M_BIN;
        if (rd_be(r, (size_t)1 << (t - 0xc4), &v) < 0) {
            return -1;
        }
        *len = v;
        return rd_bytes(r, (size_t)v, data);
    case 0xd9:
    case 0xda:
    case 0xdb:
        *type = M_STR;
        if (rd_be(r, (size_t)1 << (t - 0xd9), &v) < 0) {
            return -1;
        }
        *len = v;
        return rd_bytes(r, (size_t)v, data);
    case 0xc7:
    case 0xc8:
    case 0xc9:
        *type = M_EXT;
        if (rd_be(r, (size_t)1 << (t - 0xc7), &v) < 0) {
            return -1;
        }
        *len = v;
        return rd_bytes(r, (size_t)v + 1, data);
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        *type = M_EXT;
        *len = (uint64_t)1 << (t - 0xd4);
        return rd_bytes(r, (size_t)*len + 1, data);
    case 0xca:
        *type = M_FLOAT;
        return rd_bytes(r, 4, data);
    case 0xcb:
        *type = M_FLOAT;
        return rd_bytes(r, 8, data);
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
        *type = M_UINT;
        return rd_be(r, (size_t)1 << (t - 0xcc), len);
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
        /* Signed encodings: accept non-negative values as unsigned. */
        size_t k = (size_t)1 << (t - 0xd0);
        if (rd_be(r, k, &v) < 0) {
            return -1;
        }
        if (v >> (8 * k - 1)) {
            *type = M_NINT;
            *len = 0;
        } else {
            *type = M_UINT;
            *len = v;
        }
        return 0;
    }
    case 0xdc:
    case 0xdd:
        *type = M_ARRAY;
        return rd_be(r, t == 0xdc ? 2 : 4, len);
    case 0xde:
    case 0xdf:
        *type = M_MAP;
        return rd_be(r, t == 0xde ? 2 : 4, len);
    default:
        return -1; /* 0xc1: never used */
    }
}

static int
rd_skip(struct rd *r, int depth)
{
    int type;
    uint64_t len;
    const uint8_t *data;
    if (depth > MAX_DEPTH || rd_head(r, &type, &len, &data) < 0) {
        return -1;
    }
    if (type == M_ARRAY || type == M_MAP) {
        uint64_t items = type == M_MAP ? len * 2 : len;
        /* Each element takes at least one byte: a count beyond the bytes
         * left is malformed, and checking first bounds the loop. */
        if (len > r->n - r->off || items > r->n - r->off) {
            return -1;
        }
        for (uint64_t i = 0; i < items; i++) {
            if (rd_skip(r, depth + 1) < 0) {
                return -1;
            }
        }
    }
    return 0;
}

static int
rd_uint(struct rd *r, uint64_t *v)
{
    int type;
    const uint8_t *data;
    return rd_head(r, &type, v, &data) == 0 && type == M_UINT ? 0 : -1;
}

static int
rd_str(struct rd *r, struct hd_slice *s, int allow_bin)
{
    int type;
    uint64_t len;
    const uint8_t *data;
    if (rd_head(r, &type, &len, &data) < 0) {
        return -1;
    }
    if (type == M_NIL) {
        s->p = NULL;
        s->n = 0;
        return 0;
    }
    if (type != M_STR && !(allow_bin && type == M_BIN)) {
        return -1;
    }
    s->p = data;
    s->n = (size_t)len;
    return 0;
}

static int
key_is(const struct hd_slice *k, const char *name)
{
    size_t n = strlen(name);
    return k->n == n && memcmp(k->p, name, n) == 0;
}

/* The keys the protocol defines (docs/PROTOCOL.md §3); any other key is
 * skipped. */
enum key {
    KEY_OP,
    KEY_ID,
    KEY_QUEUE,
    KEY_RECORDS,
    KEY_COUNT,
    KEY_DROPPED,
    KEY_CODE,
    KEY_MESSAGE,
    KEY_V,
    KEY_MAX_FRAME,
    KEY_MAX_RECORD,
    KEY_WINDOW,
    KEY_FIRST,
    KEY_LAST,
    KEY_SEQ,
    KEY_IDLE_TIMEOUT,
    KEY_NKEYS
};
static const char *const key_names[KEY_NKEYS] = {
    [KEY_OP] = "op",
    [KEY_ID] = "id",
    [KEY_QUEUE] = "queue",
    [KEY_RECORDS] = "records",
    [KEY_COUNT] = "count",
    [KEY_DROPPED] = "dropped",
    [KEY_CODE] = "code",
    [KEY_MESSAGE] = "message",
    [KEY_V] = "v",
    [KEY_MAX_FRAME] = "max_frame",
    [KEY_MAX_RECORD] = "max_record",
    [KEY_WINDOW] = "window",
    [KEY_FIRST] = "first",
    [KEY_LAST] = "last",
    [KEY_SEQ] = "seq",
    [KEY_IDLE_TIMEOUT] = "idle_timeout",
};

/* enum key of k, or -1 for a key the protocol does not define. */
static int
known_key(const struct hd_slice *k)
{
    for (int i = 0; i < KEY_NKEYS; i++) {
        if (key_is(k, key_names[i])) {
            return i;
        }
    }
    return -1;
}

/* Where the unsigned value of key k goes (keys without their own case in
 * hd_proto_parse). */
static uint64_t *
uint_field(struct hd_msg *m, int k)
{
    switch (k) {
    case KEY_COUNT:
        return &m->count;
    case KEY_DROPPED:
        return &m->dropped;
    case KEY_V:
        return &m->version;
    case KEY_MAX_FRAME:
        return &m->max_frame;
    case KEY_MAX_RECORD:
        return &m->max_record;
    case KEY_WINDOW:
        return &m->window;
    case KEY_FIRST:
        return &m->first;
    case KEY_IDLE_TIMEOUT:
        return &m->idle_timeout;
    default:
        assert(k == KEY_LAST);
        return &m->last;
    }
}

int
hd_proto_frame_len(const uint8_t *p, size_t n, uint32_t *len)
{
    if (n < HD_PROTO_HDR) {
        return -1;
    }
    *len = hd_wire_get_len(p);
    return 0;
}

int
hd_proto_parse(const uint8_t *p, size_t n, struct hd_msg *m, const char **why)
{
    memset(m, 0, sizeof(*m));
    struct rd r = {p, n, 0};
    int type;
    uint64_t pairs;
    const uint8_t *data;
    *why = "not a msgpack map";
    if (rd_head(&r, &type, &pairs, &data) < 0 || type != M_MAP || pairs > n) {
        return -1;
    }
    int have_records = 0;
    uint32_t seen = 0; /* bit k: key_names[k] was read */
    for (uint64_t i = 0; i < pairs; i++) {
        struct hd_slice key;
        *why = "map keys must be strings";
        if (rd_str(&r, &key, 0) < 0 || key.p == NULL) {
            return -1;
        }
        int k = known_key(&key);
        if (k < 0) {
            if (rd_skip(&r, 0) < 0) {
                *why = "bad value";
                return -1;
            }
            continue;
        }
        /* "The last one wins" would let a frame say two things at once
         * (an `op` that is a send to one reader and an ok to another), so
         * a key the protocol defines may appear once. */
        if (seen & (UINT32_C(1) << k)) {
            *why = "duplicate key";
            return -1;
        }
        seen |= UINT32_C(1) << k;
        *why = "bad value";
        switch (k) {
        case KEY_OP: {
            struct hd_slice op;
            if (rd_str(&r, &op, 0) < 0) {
                return -1;
            }
            m->op = key_is(&op, "send")        ? HD_OP_SEND
                    : key_is(&op, "ok")        ? HD_OP_OK
                    : key_is(&op, "error")     ? HD_OP_ERROR
                    : key_is(&op, "hello")     ? HD_OP_HELLO
                    : key_is(&op, "subscribe") ? HD_OP_SUBSCRIBE
                    : key_is(&op, "records")   ? HD_OP_RECORDS
                    : key_is(&op, "ack")       ? HD_OP_ACK
                                               : HD_OP_UNKNOWN;
            break;
        }
        case KEY_ID:
            if (rd_uint(&r, &m->id) < 0) {
                *why = "id must be an unsigned integer";
                return -1;
            }
            m->has_id = 1;
            break;
        case KEY_QUEUE:
            if (rd_str(&r, &m->queue, 0) < 0) {
                *why = "queue must be a string";
                return -1;
            }
            break;
        case KEY_RECORDS: {
            uint64_t count;
            if (rd_head(&r, &type, &count, &data) < 0 || type != M_ARRAY || count > r.n - r.off) {
                *why = "records must be an array";
                return -1;
            }
            m->records_off = r.off;
            for (uint64_t j = 0; j < count; j++) {
                struct hd_slice rec;
                if (rd_str(&r, &rec, 1) < 0 || rec.p == NULL) {
                    *why = "records must be bin or str values";
                    return -1;
                }
            }
            m->nrecords = count;
            have_records = 1;
            break;
        }
        case KEY_CODE: {
            struct hd_slice code;
            if (rd_str(&r, &code, 0) < 0) {
                return -1;
            }
            for (int c = 1; c < HD_CODE_NCODES; c++) {
                if (key_is(&code, hd_code_names[c])) {
                    m->code = c;
                }
            }
            break;
        }
        case KEY_MESSAGE:
            if (rd_str(&r, &m->message, 0) < 0) {
                return -1;
            }
            break;
        case KEY_SEQ:
            if (rd_uint(&r, &m->seq) < 0) {
                return -1;
            }
            m->has_seq = 1;
            break;
        default:
            if (rd_uint(&r, uint_field(m, k)) < 0) {
                return -1;
            }
            break;
        }
    }
    if (r.off != n) {
        *why = "trailing bytes after the map";
        return -1;
    }
    if (m->op == HD_OP_UNKNOWN) {
        *why = "missing or unknown op";
        return -1;
    }
    if (m->op == HD_OP_SEND && (!have_records || !m->has_id)) {
        *why = "send needs id and records";
        return -1;
    }
    if ((m->op == HD_OP_SUBSCRIBE && !m->has_id) || (m->op == HD_OP_ACK && !m->has_seq) ||
        (m->op == HD_OP_RECORDS && !have_records)) {
        *why = "subscribe needs id, ack needs seq, records needs records";
        return -1;
    }
    *why = NULL;
    return 0;
}

void
hd_proto_records_begin(const struct hd_msg *m, size_t *cursor)
{
    *cursor = m->records_off;
}

int
hd_proto_next_record(const uint8_t *p, size_t n, size_t *cursor, struct hd_slice *rec)
{
    struct rd r = {p, n, *cursor};
    if (r.off >= n || rd_str(&r, rec, 1) < 0 || rec->p == NULL) {
        return -1;
    }
    *cursor = r.off;
    return 0;
}

/* ---- encoders ---- */

static size_t
frame_begin(msgpack_sbuffer *sb)
{
    static const char zero[HD_PROTO_HDR] = {0};
    size_t at = sb->size;
    msgpack_sbuffer_write(sb, zero, HD_PROTO_HDR);
    return at;
}

static int
frame_end(msgpack_sbuffer *sb, size_t at, int rc)
{
    if (rc != 0 || sb->size < at + HD_PROTO_HDR) {
        return -1;
    }
    size_t len = sb->size - at - HD_PROTO_HDR;
    if (len > UINT32_MAX) {
        return -1;
    }
    hd_wire_put_len((uint8_t *)sb->data + at, (uint32_t)len);
    return 0;
}

static int
put_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    return msgpack_pack_str(pk, n) | msgpack_pack_str_body(pk, s, n);
}

int
hd_proto_put_hello(msgpack_sbuffer *sb, uint64_t max_frame, uint64_t max_record, const char *queue,
                   uint64_t idle_timeout_ms)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    size_t at = frame_begin(sb);
    int rc = msgpack_pack_map(&pk, 6);
    rc |= put_str(&pk, "op") | put_str(&pk, "hello");
    rc |= put_str(&pk, "v") | msgpack_pack_uint64(&pk, HD_PROTO_VERSION);
    rc |= put_str(&pk, "max_frame") | msgpack_pack_uint64(&pk, max_frame);
    rc |= put_str(&pk, "max_record") | msgpack_pack_uint64(&pk, max_record);
    rc |= put_str(&pk, "queue") | put_str(&pk, queue);
    rc |= put_str(&pk, "idle_timeout") | msgpack_pack_uint64(&pk, idle_timeout_ms);
    return frame_end(sb, at, rc);
}

int
hd_proto_put_send(msgpack_sbuffer *sb, uint64_t id, const char *queue, const struct hd_slice *recs,
                  size_t n)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    size_t at = frame_begin(sb);
    int rc = msgpack_pack_map(&pk, queue != NULL ? 4 : 3);
    rc |= put_str(&pk, "op") | put_str(&pk, "send");
    rc |= put_str(&pk, "id") | msgpack_pack_uint64(&pk, id);
    if (queue != NULL) {
        rc |= put_str(&pk, "queue") | put_str(&pk, queue);
    }
    rc |= put_str(&pk, "records") | msgpack_pack_array(&pk, n);
    for (size_t i = 0; i < n; i++) {
        rc |= msgpack_pack_bin(&pk, recs[i].n) | msgpack_pack_bin_body(&pk, recs[i].p, recs[i].n);
    }
    return frame_end(sb, at, rc);
}

int
hd_proto_put_ok(msgpack_sbuffer *sb, uint64_t id, uint64_t count, uint64_t dropped)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    size_t at = frame_begin(sb);
    int rc = msgpack_pack_map(&pk, 4);
    rc |= put_str(&pk, "op") | put_str(&pk, "ok");
    rc |= put_str(&pk, "id") | msgpack_pack_uint64(&pk, id);
    rc |= put_str(&pk, "count") | msgpack_pack_uint64(&pk, count);
    rc |= put_str(&pk, "dropped") | msgpack_pack_uint64(&pk, dropped);
    return frame_end(sb, at, rc);
}

int
hd_proto_put_error(msgpack_sbuffer *sb, uint64_t id, int code, const char *message)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    size_t at = frame_begin(sb);
    int rc = msgpack_pack_map(&pk, 4);
    rc |= put_str(&pk, "op") | put_str(&pk, "error");
    rc |= put_str(&pk, "id") | msgpack_pack_uint64(&pk, id);
    rc |= put_str(&pk, "code") |
          put_str(&pk, code > 0 && code < HD_CODE_NCODES ? hd_code_names[code] : "FAILED");
    rc |= put_str(&pk, "message") | put_str(&pk, message);
    return frame_end(sb, at, rc);
}

int
hd_proto_put_subscribe(msgpack_sbuffer *sb, uint64_t id, const char *queue, uint64_t window)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    size_t at = frame_begin(sb);
    int rc = msgpack_pack_map(&pk, queue != NULL ? 4 : 3);
    rc |= put_str(&pk, "op") | put_str(&pk, "subscribe");
    rc |= put_str(&pk, "id") | msgpack_pack_uint64(&pk, id);
    rc |= put_str(&pk, "window") | msgpack_pack_uint64(&pk, window);
    if (queue != NULL) {
        rc |= put_str(&pk, "queue") | put_str(&pk, queue);
    }
    return frame_end(sb, at, rc);
}

int
hd_proto_put_records(msgpack_sbuffer *sb, uint64_t first, uint64_t last,
                     const struct hd_slice *recs, size_t n)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    size_t at = frame_begin(sb);
    int rc = msgpack_pack_map(&pk, 4);
    rc |= put_str(&pk, "op") | put_str(&pk, "records");
    rc |= put_str(&pk, "first") | msgpack_pack_uint64(&pk, first);
    rc |= put_str(&pk, "last") | msgpack_pack_uint64(&pk, last);
    rc |= put_str(&pk, "records") | msgpack_pack_array(&pk, n);
    for (size_t i = 0; i < n; i++) {
        rc |= msgpack_pack_bin(&pk, recs[i].n) | msgpack_pack_bin_body(&pk, recs[i].p, recs[i].n);
    }
    return frame_end(sb, at, rc);
}

int
hd_proto_put_ack(msgpack_sbuffer *sb, uint64_t seq)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    size_t at = frame_begin(sb);
    int rc = msgpack_pack_map(&pk, 2);
    rc |= put_str(&pk, "op") | put_str(&pk, "ack");
    rc |= put_str(&pk, "seq") | msgpack_pack_uint64(&pk, seq);
    return frame_end(sb, at, rc);
}
