/* SPDX-License-Identifier: MIT */
/* Ingress framers (lines, octet-counted): records, partial input, limits,
 * over-long records, malformed frames, and random input never misbehaving;
 * and their inverse, the record encoder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framer.h"

/* Run the framer over `in` fed in chunks of `chunk` bytes (as a connection
 * buffer would be), then EOF; write "rec|rec|..." with O for an oversize
 * and B for malformed into out. */
static void
run(int format, size_t max, const char *in, size_t inlen, size_t chunk, char *out, size_t outlen)
{
    struct hd_framer f;
    hd_framer_init(&f, format, max);
    uint8_t *buf = malloc(hd_framer_buffer_size(&f) + 1);
    size_t cap = hd_framer_buffer_size(&f);
    size_t len = 0, fed = 0;
    out[0] = '\0';
    int bad = 0;
    while (!bad) {
        size_t take = inlen - fed < chunk ? inlen - fed : chunk;
        if (take > cap - len) {
            take = cap - len;
        }
        memcpy(buf + len, in + fed, take);
        len += take;
        fed += take;
        size_t off = 0;
        for (;;) {
            size_t consumed;
            const uint8_t *rec;
            size_t reclen;
            int rc = hd_framer_next(&f, buf + off, len - off, &consumed, &rec, &reclen);
            assert_true(consumed <= len - off);
            if (rc == HD_FRAME_NEED_MORE) {
                assert_int_equal(consumed, 0);
                break;
            }
            if (rc == HD_FRAME_BAD) {
                strncat(out, "B|", outlen - strlen(out) - 1);
                bad = 1;
                break;
            }
            assert_true(consumed > 0);
            if (rc == HD_FRAME_RECORD) {
                assert_true(reclen <= max);
                size_t o = strlen(out);
                snprintf(out + o, outlen - o, "%.*s|", (int)reclen, (const char *)rec);
            } else if (rc == HD_FRAME_OVERSIZE) {
                strncat(out, "O|", outlen - strlen(out) - 1);
            }
            off += consumed;
        }
        memmove(buf, buf + off, len - off);
        len -= off;
        if (fed == inlen && !bad) {
            const uint8_t *rec;
            size_t reclen;
            int rc = hd_framer_eof(&f, buf, len, &rec, &reclen);
            if (rc == HD_FRAME_RECORD) {
                size_t o = strlen(out);
                snprintf(out + o, outlen - o, "E:%.*s|", (int)reclen, (const char *)rec);
            } else if (rc == HD_FRAME_BAD) {
                strncat(out, "EB|", outlen - strlen(out) - 1);
            } else if (rc == HD_FRAME_OVERSIZE) {
                strncat(out, "EO|", outlen - strlen(out) - 1);
            }
            break;
        }
    }
    free(buf);
}

static void
check(int format, size_t max, const char *in, const char *want)
{
    static const size_t chunks[] = {1, 2, 3, 7, 4096};
    for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
        char out[4096];
        run(format, max, in, strlen(in), chunks[i], out, sizeof(out));
        if (strcmp(out, want) != 0) {
            fail_msg("format %d max %zu chunk %zu input '%s': got '%s' want '%s'", format, max,
                     chunks[i], in, out, want);
        }
    }
}

static void
test_lines(void **state)
{
    (void)state;
    check(HD_FMT_LINES, 16, "a\nbb\n", "a|bb|");
    check(HD_FMT_LINES, 16, "x\r\n", "x\r|");
    check(HD_FMT_LINES, 16, "\n\n", "||");
    check(HD_FMT_LINES, 16, "tail", "E:tail|");
    check(HD_FMT_LINES, 16, "a\ntail", "a|E:tail|");
    check(HD_FMT_LINES, 16, "", "");
}

static void
test_lines_limits(void **state)
{
    (void)state;
    /* exactly max is a record, max + 1 is dropped, the next line survives */
    check(HD_FMT_LINES, 4, "abcd\nok\n", "abcd|ok|");
    check(HD_FMT_LINES, 4, "abcde\nok\n", "O|ok|");
    check(HD_FMT_LINES, 4, "abcdefghijklmnopqrstuvwxyz\nok\n", "O|ok|");
    check(HD_FMT_LINES, 4, "a\nabcdefghij\nb\nabcdefghij", "a|O|b|O|");
    check(HD_FMT_LINES, 4, "abcdefghij", "O|");
    check(HD_FMT_LINES, 1, "\n1\n22\n", "|1|O|");
}

static void
test_octet(void **state)
{
    (void)state;
    check(HD_FMT_OCTET, 16, "5 hello3 abc", "hello|abc|");
    check(HD_FMT_OCTET, 16, "1 \n", "\n|");
    check(HD_FMT_OCTET, 16, "10 0123456789", "0123456789|");
    check(HD_FMT_OCTET, 16, "5 hel", "EB|");
    check(HD_FMT_OCTET, 16, "5", "EB|");
    check(HD_FMT_OCTET, 16, "", "");
}

static void
test_octet_bad(void **state)
{
    (void)state;
    check(HD_FMT_OCTET, 16, "0 ", "B|");
    check(HD_FMT_OCTET, 16, "05 hello", "B|");
    check(HD_FMT_OCTET, 16, "x", "B|");
    check(HD_FMT_OCTET, 16, "5x", "B|");
    check(HD_FMT_OCTET, 16, "-1 a", "B|");
    check(HD_FMT_OCTET, 16, " 5 hello", "B|");
    check(HD_FMT_OCTET, 16, "2 ok12345678901 x", "ok|B|");
    check(HD_FMT_OCTET, 16, "3 abc\n3 def", "abc|B|");
}

static void
test_octet_oversize(void **state)
{
    (void)state;
    check(HD_FMT_OCTET, 4, "4 abcd5 hello2 ok", "abcd|O|ok|");
    check(HD_FMT_OCTET, 4, "30 abcdefghijabcdefghijabcdefghij1 z", "O|z|");
    check(HD_FMT_OCTET, 4, "9999999999 abc", "O|");
    /* 4294967295 + more digits: still bounded to 10 digits */
    check(HD_FMT_OCTET, 4, "99999999999 a", "B|");
}

static void
test_buffer_size(void **state)
{
    (void)state;
    struct hd_framer f;
    hd_framer_init(&f, HD_FMT_LINES, 100);
    assert_int_equal(hd_framer_buffer_size(&f), 101);
    hd_framer_init(&f, HD_FMT_OCTET, 100);
    assert_int_equal(hd_framer_buffer_size(&f), 111);
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

/* Random bytes biased towards digits, spaces and newlines: the framer never
 * reads out of bounds (run under ASan), always makes progress, and never
 * returns a record longer than max. */
static void
test_random(void **state)
{
    (void)state;
    uint64_t seed = 0x1234abcdu;
    static const char alphabet[] = "0123456789 \n\rabc\xff";
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = (size_t)(xorshift(&seed) % 200);
        char *in = malloc(n + 1);
        for (size_t i = 0; i < n; i++) {
            in[i] = alphabet[xorshift(&seed) % (sizeof(alphabet) - 1)];
        }
        in[n] = '\0';
        char out[8192];
        size_t max = 1 + (size_t)(xorshift(&seed) % 20);
        size_t chunk = 1 + (size_t)(xorshift(&seed) % 16);
        run(iter % 2 ? HD_FMT_OCTET : HD_FMT_LINES, max, in, n, chunk, out, sizeof(out));
        free(in);
    }
}

/* The inverse of the framer: sink and salvage encoding. */
static void
test_encode(void **state)
{
    (void)state;
    uint8_t out[64];
    assert_int_equal(hd_encode_record(HD_FMT_LINES, "abc", 3, out, sizeof(out)), 4);
    assert_memory_equal(out, "abc\n", 4);
    assert_int_equal(hd_encode_record(HD_FMT_LINES, NULL, 0, out, sizeof(out)), 1);
    assert_int_equal(out[0], '\n');
    assert_int_equal(hd_encode_record(HD_FMT_OCTET, "hello", 5, out, sizeof(out)), 7);
    assert_memory_equal(out, "5 hello", 7);
    assert_int_equal(hd_encode_record(HD_FMT_OCTET, "", 0, out, sizeof(out)), 2);
    assert_int_equal(hd_encode_record(HD_FMT_LINES, "abc", 3, out, 3), 0);
    assert_int_equal(hd_encode_record(HD_FMT_OCTET, "abc", 3, out, 4), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines),          cmocka_unit_test(test_lines_limits),
        cmocka_unit_test(test_octet),          cmocka_unit_test(test_octet_bad),
        cmocka_unit_test(test_octet_oversize), cmocka_unit_test(test_buffer_size),
        cmocka_unit_test(test_random),         cmocka_unit_test(test_encode),
    };
    return cmocka_run_group_tests_name("hopperd_framer", tests, NULL, NULL);
}
