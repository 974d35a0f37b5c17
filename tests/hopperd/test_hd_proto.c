/* SPDX-License-Identifier: MIT */
/* native protocol codec: round trips through msgpack-c's packer, every
 * truncation and random mutation of valid frames (never crashes, never
 * reads out of bounds under ASan), adversarial container counts, nesting,
 * and the native framer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "framer.h"
#include "proto.h"

static const uint8_t *
payload(const msgpack_sbuffer *sb, size_t at, size_t *len)
{
    uint32_t n;
    assert_int_equal(hd_proto_frame_len((const uint8_t *)sb->data + at, sb->size - at, &n), 0);
    assert_true(at + HD_PROTO_HDR + n <= sb->size);
    *len = n;
    return (const uint8_t *)sb->data + at + HD_PROTO_HDR;
}

static void
test_roundtrip(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    struct hd_slice recs[3] = {
        {(const uint8_t *)"one", 3}, {(const uint8_t *)"", 0}, {(const uint8_t *)"th\0ree", 6}};
    assert_int_equal(hd_proto_put_send(&sb, 42, "events", recs, 3), 0);
    size_t a1 = sb.size;
    assert_int_equal(hd_proto_put_ok(&sb, 42, 3, 1), 0);
    size_t a2 = sb.size;
    assert_int_equal(hd_proto_put_error(&sb, 7, HD_CODE_FULL, "queue full"), 0);
    size_t a3 = sb.size;
    assert_int_equal(hd_proto_put_hello(&sb, 1 << 20, 65536, "q", 300000), 0);
    size_t a4 = sb.size;
    assert_int_equal(hd_proto_put_send(&sb, 1, NULL, recs, 0), 0);

    struct hd_msg m;
    const char *why;
    size_t n;
    const uint8_t *p = payload(&sb, 0, &n);
    assert_int_equal(hd_proto_parse(p, n, &m, &why), 0);
    assert_int_equal(m.op, HD_OP_SEND);
    assert_int_equal(m.id, 42);
    assert_int_equal(m.queue.n, 6);
    assert_memory_equal(m.queue.p, "events", 6);
    assert_int_equal(m.nrecords, 3);
    size_t cur;
    struct hd_slice r;
    hd_proto_records_begin(&m, &cur);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(hd_proto_next_record(p, n, &cur, &r), 0);
        assert_int_equal(r.n, recs[i].n);
        assert_memory_equal(r.p, recs[i].p, r.n);
    }
    assert_int_equal(hd_proto_next_record(p, n, &cur, &r), -1);

    p = payload(&sb, a1, &n);
    assert_int_equal(hd_proto_parse(p, n, &m, &why), 0);
    assert_int_equal(m.op, HD_OP_OK);
    assert_int_equal(m.id, 42);
    assert_int_equal(m.count, 3);
    assert_int_equal(m.dropped, 1);

    p = payload(&sb, a2, &n);
    assert_int_equal(hd_proto_parse(p, n, &m, &why), 0);
    assert_int_equal(m.op, HD_OP_ERROR);
    assert_int_equal(m.id, 7);
    assert_int_equal(m.code, HD_CODE_FULL);
    assert_int_equal(m.message.n, 10);

    p = payload(&sb, a3, &n);
    assert_int_equal(hd_proto_parse(p, n, &m, &why), 0);
    assert_int_equal(m.op, HD_OP_HELLO);
    assert_int_equal(m.version, HD_PROTO_VERSION);
    assert_int_equal(m.max_frame, 1 << 20);
    assert_int_equal(m.max_record, 65536);
    assert_int_equal(m.idle_timeout, 300000);

    p = payload(&sb, a4, &n);
    assert_int_equal(hd_proto_parse(p, n, &m, &why), 0);
    assert_int_equal(m.op, HD_OP_SEND);
    assert_int_equal(m.nrecords, 0);
    assert_int_equal(m.queue.n, 0);
    msgpack_sbuffer_destroy(&sb);
}

/* Keys unknown to us are skipped, ints in signed encodings are accepted,
 * str records are accepted like bin. */
static void
test_foreign_encodings(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    msgpack_pack_str_with_body(&pk, "extra", 5);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_nil(&pk);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_double(&pk, 1.5);
    msgpack_pack_int64(&pk, -5);
    msgpack_pack_true(&pk);
    msgpack_pack_ext_with_body(&pk, "abc", 3, 1);
    msgpack_pack_str_with_body(&pk, "records", 7);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_str_with_body(&pk, "hi", 2);
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_int32(&pk, 70000);
    msgpack_pack_str_with_body(&pk, "op", 2);
    msgpack_pack_str_with_body(&pk, "send", 4);
    msgpack_pack_str_with_body(&pk, "queue", 5);
    msgpack_pack_nil(&pk);
    struct hd_msg m;
    const char *why;
    assert_int_equal(hd_proto_parse((const uint8_t *)sb.data, sb.size, &m, &why), 0);
    assert_int_equal(m.op, HD_OP_SEND);
    assert_int_equal(m.id, 70000);
    assert_int_equal(m.nrecords, 1);
    assert_int_equal(m.queue.n, 0);
    msgpack_sbuffer_destroy(&sb);
}

static void
expect_bad(const uint8_t *p, size_t n)
{
    struct hd_msg m;
    const char *why = NULL;
    assert_int_equal(hd_proto_parse(p, n, &m, &why), -1);
    assert_non_null(why);
}

#define BAD(lit) expect_bad((const uint8_t *)(lit), sizeof(lit) - 1)

static void
test_malformed(void **state)
{
    (void)state;
    /* not a map */
    BAD("\x93\x01\x02\x03");
    /* empty input */
    BAD("");
    /* map32 claiming 4 billion pairs in 5 bytes */
    BAD("\xdf\xff\xff\xff\xff");
    /* records: array32 with a huge count */
    static const uint8_t huge[] = {0x83, 0xa2, 'o', 'p',  0xa4, 's',  'e',  'n', 'd',
                                   0xa2, 'i',  'd', 0x01, 0xa7, 'r',  'e',  'c', 'o',
                                   'r',  'd',  's', 0xdd, 0xff, 0xff, 0xff, 0xff};
    expect_bad(huge, sizeof(huge));
    /* a non-string key */
    BAD("\x81\x01\x02");
    /* unknown op */
    BAD("\x81\xa2op\xa3zap");
    /* missing op */
    BAD("\x81\xa2id\x01");
    /* send without records */
    BAD("\x82\xa2op\xa4send\xa2id\x01");
    /* trailing bytes */
    BAD("\x81\xa2op\xa2ok\x00");
    /* negative id */
    BAD("\x82\xa2op\xa2ok\xa2id\xff");
    /* the never-used byte 0xc1 */
    BAD("\x81\xa2op\xc1");
    /* str8 length past the end */
    BAD("\x81\xa2op\xd9\xff"
        "ab");
    /* deep nesting under an unknown key */
    uint8_t deep[64];
    size_t k = 0;
    deep[k++] = 0x82;
    deep[k++] = 0xa1;
    deep[k++] = 'x';
    while (k < sizeof(deep) - 8) {
        deep[k++] = 0x91; /* fixarray of 1 */
    }
    deep[k++] = 0x00;
    deep[k++] = 0xa2;
    deep[k++] = 'o';
    deep[k++] = 'p';
    deep[k++] = 0xa2;
    deep[k++] = 'o';
    deep[k++] = 'k';
    expect_bad(deep, k);
}

/* A key the protocol defines may appear once: `op` twice (even with the
 * same value), `id` twice or `records` twice is BAD_FRAME rather than
 * "the last one wins" (issue 11, fault 8). Unknown keys are skipped, so
 * repeating one of them is harmless and stays accepted. */
static void
test_duplicate_keys(void **state)
{
    (void)state;
    struct hd_msg m;
    const char *why = NULL;
    /* op twice: a send that turns into an ok */
    static const uint8_t op_twice[] = "\x84\xa2op\xa4send\xa2id\x01\xa7records\x90\xa2op\xa2ok";
    assert_int_equal(hd_proto_parse(op_twice, sizeof(op_twice) - 1, &m, &why), -1);
    assert_non_null(why);
    assert_non_null(strstr(why, "duplicate"));
    /* op twice with the same value */
    BAD("\x84\xa2op\xa4send\xa2op\xa4send\xa2id\x01\xa7records\x90");
    /* id twice */
    BAD("\x84\xa2op\xa4send\xa2id\x01\xa2id\x02\xa7records\x90");
    /* records twice: the first array would be hidden from the record walk */
    BAD("\x84\xa2op\xa4send\xa2id\x01\xa7records\x91\xa1x\xa7records\x90");
    /* queue, seq, window, code twice */
    BAD("\x84\xa2op\xa4send\xa2id\x01\xa5queue\xa1" "a\xa5queue\xa1" "b");
    BAD("\x83\xa2op\xa3" "ack\xa3seq\x01\xa3seq\x02");
    BAD("\x84\xa2op\xa9subscribe\xa2id\x01\xa6window\x01\xa6window\x02");
    BAD("\x84\xa2op\xa5" "error\xa2id\x01\xa4" "code\xa4" "FULL\xa4" "code\xa6" "FAILED");
    /* an unknown key twice is skipped both times */
    static const uint8_t unk_twice[] = "\x85\xa2op\xa4send\xa2id\x01\xa7records\x90"
                                       "\xa1x\x01\xa1x\x02";
    assert_int_equal(hd_proto_parse(unk_twice, sizeof(unk_twice) - 1, &m, &why), 0);
    assert_int_equal(m.op, HD_OP_SEND);
}

static uint64_t
xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * UINT64_C(2685821657736338717);
}

/* Every prefix of a valid frame is rejected; random byte flips never
 * crash and never yield a record outside the buffer. */
static void
test_truncation_and_mutation(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    struct hd_slice recs[4] = {{(const uint8_t *)"alpha", 5},
                               {(const uint8_t *)"b", 1},
                               {(const uint8_t *)"", 0},
                               {(const uint8_t *)"delta-delta", 11}};
    assert_int_equal(hd_proto_put_send(&sb, 123456789, "q", recs, 4), 0);
    size_t n;
    const uint8_t *p = payload(&sb, 0, &n);
    struct hd_msg m;
    const char *why;
    for (size_t cut = 0; cut < n; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, p, cut);
        assert_int_equal(hd_proto_parse(copy, cut, &m, &why), -1);
        free(copy);
    }
    uint64_t seed = 99;
    for (int iter = 0; iter < 20000; iter++) {
        uint8_t *copy = malloc(n);
        memcpy(copy, p, n);
        int flips = 1 + (int)(xorshift(&seed) % 4);
        for (int f = 0; f < flips; f++) {
            copy[xorshift(&seed) % n] = (uint8_t)xorshift(&seed);
        }
        if (hd_proto_parse(copy, n, &m, &why) == 0 && m.op == HD_OP_SEND) {
            size_t cur;
            struct hd_slice r;
            uint64_t got = 0;
            hd_proto_records_begin(&m, &cur);
            while (got < m.nrecords && hd_proto_next_record(copy, n, &cur, &r) == 0) {
                assert_true(r.p >= copy && r.p + r.n <= copy + n);
                got++;
            }
            assert_int_equal(got, m.nrecords);
        }
        free(copy);
    }
    msgpack_sbuffer_destroy(&sb);
}

static void
test_subscription_messages(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    struct hd_slice recs[2] = {{(const uint8_t *)"r1", 2}, {(const uint8_t *)"r22", 3}};
    assert_int_equal(hd_proto_put_subscribe(&sb, 5, "q", 77), 0);
    size_t a1 = sb.size;
    assert_int_equal(hd_proto_put_records(&sb, 10, 11, recs, 2), 0);
    size_t a2 = sb.size;
    assert_int_equal(hd_proto_put_ack(&sb, 11), 0);
    size_t n;
    struct hd_msg m;
    const char *why;
    const uint8_t *p = payload(&sb, 0, &n);
    assert_int_equal(hd_proto_parse(p, n, &m, &why), 0);
    assert_int_equal(m.op, HD_OP_SUBSCRIBE);
    assert_int_equal(m.id, 5);
    assert_int_equal(m.window, 77);
    assert_memory_equal(m.queue.p, "q", 1);
    p = payload(&sb, a1, &n);
    assert_int_equal(hd_proto_parse(p, n, &m, &why), 0);
    assert_int_equal(m.op, HD_OP_RECORDS);
    assert_int_equal(m.first, 10);
    assert_int_equal(m.last, 11);
    assert_int_equal(m.nrecords, 2);
    p = payload(&sb, a2, &n);
    assert_int_equal(hd_proto_parse(p, n, &m, &why), 0);
    assert_int_equal(m.op, HD_OP_ACK);
    assert_int_equal(m.seq, 11);
    assert_int_equal(m.has_seq, 1);
    /* ack without seq, subscribe without id */
    BAD("\x81\xa2op\xa3"
        "ack");
    BAD("\x81\xa2op\xa9subscribe");
    msgpack_sbuffer_destroy(&sb);
}

static void
test_native_framer(void **state)
{
    (void)state;
    struct hd_framer f;
    hd_framer_init(&f, HD_FMT_NATIVE, 8);
    assert_int_equal(hd_framer_buffer_size(&f), 12);
    size_t consumed, len;
    const uint8_t *rec;
    assert_int_equal(hd_framer_next(&f, (const uint8_t *)"\0\0", 2, &consumed, &rec, &len),
                     HD_FRAME_NEED_MORE);
    assert_int_equal(hd_framer_next(&f, (const uint8_t *)"\0\0\0\3ab", 6, &consumed, &rec, &len),
                     HD_FRAME_NEED_MORE);
    assert_int_equal(hd_framer_next(&f, (const uint8_t *)"\0\0\0\3abcX", 8, &consumed, &rec, &len),
                     HD_FRAME_RECORD);
    assert_int_equal(consumed, 7);
    assert_int_equal(len, 3);
    assert_memory_equal(rec, "abc", 3);
    assert_int_equal(hd_framer_next(&f, (const uint8_t *)"\0\0\0\0", 4, &consumed, &rec, &len),
                     HD_FRAME_BAD);
    assert_int_equal(hd_framer_next(&f, (const uint8_t *)"\0\0\0\11", 4, &consumed, &rec, &len),
                     HD_FRAME_BAD);
    assert_int_equal(hd_framer_next(&f, (const uint8_t *)"\xff\0\0\1", 4, &consumed, &rec, &len),
                     HD_FRAME_BAD);
    assert_int_equal(hd_framer_eof(&f, (const uint8_t *)"\0\0", 2, &rec, &len), HD_FRAME_BAD);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_foreign_encodings),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_truncation_and_mutation),
        cmocka_unit_test(test_subscription_messages),
        cmocka_unit_test(test_native_framer),
    };
    return cmocka_run_group_tests_name("hopperd_proto", tests, NULL, NULL);
}
