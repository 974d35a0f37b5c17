/* SPDX-License-Identifier: MIT */
/* hp_buf (buf.c) and the little-endian helpers of internal.h: growth keeps
 * the content, reserve guarantees room without changing len, a size that
 * would overflow is refused with the buffer untouched, resize and put_at
 * extend with zeros as truncate and pwrite extend a file, reset keeps small
 * buffers and frees large ones, and every hp_put_uN / hp_get_uN pair
 * round-trips with the byte order FORMAT.md fixes (little-endian). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "buf.h"
#include "internal.h"

#include <string.h>

static void
test_append_grows_and_keeps_content(void **state)
{
    (void)state;
    hp_buf b = {0};
    uint8_t chunk[97];
    size_t total = 0;
    for (int round = 0; round < 200; round++) {
        for (size_t i = 0; i < sizeof(chunk); i++) {
            chunk[i] = (uint8_t)(round * 7 + i);
        }
        assert_int_equal(hp_buf_append(&b, chunk, sizeof(chunk)), 0);
        total += sizeof(chunk);
        assert_int_equal(b.len, total);
        assert_true(b.cap >= b.len);
    }
    for (int round = 0; round < 200; round++) {
        for (size_t i = 0; i < sizeof(chunk); i++) {
            assert_int_equal(b.data[(size_t)round * sizeof(chunk) + i], (uint8_t)(round * 7 + i));
        }
    }
    hp_buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
}

static void
test_append_empty(void **state)
{
    (void)state;
    hp_buf b = {0};
    /* Zero bytes from NULL is a valid append and changes nothing visible. */
    assert_int_equal(hp_buf_append(&b, NULL, 0), 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(hp_buf_append(&b, "ab", 2), 0);
    assert_int_equal(hp_buf_append(&b, NULL, 0), 0);
    assert_int_equal(b.len, 2);
    assert_memory_equal(b.data, "ab", 2);
    hp_buf_free(&b);
}

static void
test_reserve(void **state)
{
    (void)state;
    hp_buf b = {0};
    assert_int_equal(hp_buf_reserve(&b, 1000), 0);
    assert_int_equal(b.len, 0);
    assert_true(b.cap >= 1000);
    assert_non_null(b.data);
    /* Room that is already there: no reallocation. */
    uint8_t *before = b.data;
    size_t cap = b.cap;
    assert_int_equal(hp_buf_append(&b, "x", 1), 0);
    assert_int_equal(hp_buf_reserve(&b, cap - 1), 0);
    assert_ptr_equal(b.data, before);
    assert_int_equal(b.cap, cap);
    /* One more than fits: grows, keeps the content. */
    assert_int_equal(hp_buf_reserve(&b, cap), 0);
    assert_true(b.cap >= cap + 1);
    assert_int_equal(b.len, 1);
    assert_int_equal(b.data[0], 'x');
    hp_buf_free(&b);
}

static void
test_overflow_refused(void **state)
{
    (void)state;
    hp_buf b = {0};
    assert_int_equal(hp_buf_reserve(&b, SIZE_MAX), -ENOMEM);
    assert_int_equal(hp_buf_reserve(&b, SIZE_MAX / 2 + 1), -ENOMEM);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
    assert_int_equal(hp_buf_append(&b, "abc", 3), 0);
    uint8_t *data = b.data;
    size_t cap = b.cap;
    /* len + extra past SIZE_MAX / 2: refused, the buffer untouched. */
    assert_int_equal(hp_buf_reserve(&b, SIZE_MAX / 2 - 2), -ENOMEM);
    assert_int_equal(hp_buf_reserve(&b, SIZE_MAX - 1), -ENOMEM);
    assert_int_equal(hp_buf_append(&b, "x", SIZE_MAX), -ENOMEM);
    assert_ptr_equal(b.data, data);
    assert_int_equal(b.cap, cap);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "abc", 3);
    hp_buf_free(&b);
}

static void
test_resize_zero_fills_and_shrinks(void **state)
{
    (void)state;
    hp_buf b = {0};
    assert_int_equal(hp_buf_append(&b, "abc", 3), 0);
    /* Growth: the old bytes stay, the new ones are zero, even where the
     * memory held something before (shrink, scribble, grow again). */
    assert_int_equal(hp_buf_resize(&b, 10), 0);
    assert_int_equal(b.len, 10);
    assert_memory_equal(b.data, "abc\0\0\0\0\0\0\0", 10);
    memset(b.data + 3, 'z', 7);
    assert_int_equal(hp_buf_resize(&b, 2), 0);
    assert_int_equal(b.len, 2);
    assert_memory_equal(b.data, "ab", 2);
    assert_int_equal(hp_buf_resize(&b, 6), 0);
    assert_memory_equal(b.data, "ab\0\0\0\0", 6);
    /* Too large: refused, the buffer untouched. */
    assert_int_equal(hp_buf_resize(&b, SIZE_MAX), -ENOMEM);
    assert_int_equal(b.len, 6);
    hp_buf_free(&b);
}

static void
test_put_at_extends_like_pwrite(void **state)
{
    (void)state;
    hp_buf b = {0};
    /* Past the end: the gap reads as zeros. */
    assert_int_equal(hp_buf_put_at(&b, 4, "xy", 2), 0);
    assert_int_equal(b.len, 6);
    assert_memory_equal(b.data, "\0\0\0\0xy", 6);
    /* Inside: overwrites, the length stays. */
    assert_int_equal(hp_buf_put_at(&b, 1, "AB", 2), 0);
    assert_int_equal(b.len, 6);
    assert_memory_equal(b.data, "\0AB\0xy", 6);
    /* Straddling the end: grows by the part past it. */
    assert_int_equal(hp_buf_put_at(&b, 5, "123", 3), 0);
    assert_int_equal(b.len, 8);
    assert_memory_equal(b.data, "\0AB\0x123", 8);
    /* Nothing to copy at an offset past the end: still grows to it. */
    assert_int_equal(hp_buf_put_at(&b, 10, NULL, 0), 0);
    assert_int_equal(b.len, 10);
    /* An end past SIZE_MAX: refused, the buffer untouched. */
    assert_int_equal(hp_buf_put_at(&b, SIZE_MAX - 1, "abc", 3), -ENOMEM);
    assert_int_equal(b.len, 10);
    hp_buf_free(&b);
}

static void
test_reset_keeps_small_frees_large(void **state)
{
    (void)state;
    hp_buf b = {0};
    assert_int_equal(hp_buf_append(&b, "hello", 5), 0);
    uint8_t *data = b.data;
    hp_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_ptr_equal(b.data, data); /* kept for reuse */
    assert_true(b.cap >= 5);
    /* Exactly 4 MiB is still kept; beyond it the memory goes. */
    assert_int_equal(hp_buf_reserve(&b, 4u << 20), 0);
    assert_int_equal(b.cap, 4u << 20);
    hp_buf_reset(&b);
    assert_non_null(b.data);
    assert_int_equal(b.cap, 4u << 20);
    assert_int_equal(hp_buf_reserve(&b, (4u << 20) + 1), 0);
    assert_true(b.cap > (4u << 20));
    b.len = 10;
    hp_buf_reset(&b);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
    assert_int_equal(b.len, 0);
    /* Reusable afterwards. */
    assert_int_equal(hp_buf_append(&b, "z", 1), 0);
    assert_int_equal(b.data[0], 'z');
    hp_buf_free(&b);
    hp_buf_free(&b); /* twice is harmless */
}

static void
test_le_byte_order(void **state)
{
    (void)state;
    uint8_t p[8];
    hp_put_u16(p, 0x0102u);
    assert_int_equal(p[0], 0x02);
    assert_int_equal(p[1], 0x01);
    hp_put_u32(p, 0x01020304u);
    static const uint8_t le32[4] = {0x04, 0x03, 0x02, 0x01};
    assert_memory_equal(p, le32, 4);
    hp_put_u64(p, 0x0102030405060708ull);
    static const uint8_t le64[8] = {0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01};
    assert_memory_equal(p, le64, 8);
    assert_int_equal(hp_get_u16(le32), 0x0304u);
    assert_int_equal(hp_get_u32(le32), 0x01020304u);
    assert_int_equal(hp_get_u64(le64), 0x0102030405060708ull);
}

static void
test_le_round_trips(void **state)
{
    (void)state;
    static const uint64_t vals[] = {0,
                                    1,
                                    0x7f,
                                    0x80,
                                    0xff,
                                    0x100,
                                    0x7fff,
                                    0x8000,
                                    0xffff,
                                    0x10000,
                                    0x7fffffffu,
                                    0x80000000u,
                                    0xffffffffu,
                                    0x100000000ull,
                                    0x8000000000000000ull,
                                    0xfedcba9876543210ull,
                                    UINT64_MAX};
    /* Unaligned on purpose: the helpers work byte by byte. */
    uint8_t buf[16];
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        uint64_t v = vals[i];
        memset(buf, 0xAA, sizeof(buf));
        hp_put_u64(buf + 3, v);
        assert_int_equal(hp_get_u64(buf + 3), v);
        assert_int_equal(buf[2], 0xAA); /* nothing written outside */
        assert_int_equal(buf[11], 0xAA);
        hp_put_u32(buf + 1, (uint32_t)v);
        assert_int_equal(hp_get_u32(buf + 1), (uint32_t)v);
        hp_put_u16(buf + 5, (uint16_t)v);
        assert_int_equal(hp_get_u16(buf + 5), (uint16_t)v);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_grows_and_keeps_content),
        cmocka_unit_test(test_append_empty),
        cmocka_unit_test(test_reserve),
        cmocka_unit_test(test_overflow_refused),
        cmocka_unit_test(test_resize_zero_fills_and_shrinks),
        cmocka_unit_test(test_put_at_extends_like_pwrite),
        cmocka_unit_test(test_reset_keeps_small_frees_large),
        cmocka_unit_test(test_le_byte_order),
        cmocka_unit_test(test_le_round_trips),
    };
    return cmocka_run_group_tests_name("buf", tests, NULL, NULL);
}
