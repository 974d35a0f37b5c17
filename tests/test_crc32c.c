/* SPDX-License-Identifier: MIT */
/* CRC-32C: check values, incremental == one-shot, hardware == software path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "crc32c.h"
#include "hp_test.h"

#include <string.h>

/* Non-static in crc32c.c, exposed for this test only. */
uint32_t hp_crc32c_sw_extend(uint32_t crc, const void *data, size_t len);

static void
test_check_value(void **state)
{
    (void)state;
    assert_int_equal(hp_crc32c_extend(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(hp_crc32c_sw_extend(0, "123456789", 9), 0xE3069283u);
    /* The empty input leaves the running value alone. */
    assert_int_equal(hp_crc32c_extend(0, "", 0), 0u);
    assert_int_equal(hp_crc32c_extend(0x12345678u, "", 0), 0x12345678u);
    assert_int_equal(hp_crc32c_extend(0, NULL, 0), 0u);
}

/* RFC 3720 (iSCSI) appendix B.4 test vectors. */
static void
test_rfc3720_vectors(void **state)
{
    (void)state;
    uint8_t b[48];
    memset(b, 0, 32);
    assert_int_equal(hp_crc32c_extend(0, b, 32), 0x8A9136AAu);
    assert_int_equal(hp_crc32c_sw_extend(0, b, 32), 0x8A9136AAu);
    memset(b, 0xff, 32);
    assert_int_equal(hp_crc32c_extend(0, b, 32), 0x62A8AB43u);
    assert_int_equal(hp_crc32c_sw_extend(0, b, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++) {
        b[i] = (uint8_t)i;
    }
    assert_int_equal(hp_crc32c_extend(0, b, 32), 0x46DD794Eu);
    assert_int_equal(hp_crc32c_sw_extend(0, b, 32), 0x46DD794Eu);
    for (int i = 0; i < 32; i++) {
        b[i] = (uint8_t)(31 - i);
    }
    assert_int_equal(hp_crc32c_extend(0, b, 32), 0x113FDB5Cu);
    assert_int_equal(hp_crc32c_sw_extend(0, b, 32), 0x113FDB5Cu);
    /* iSCSI SCSI Read (10) command PDU */
    static const uint8_t pdu[48] = {
        0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
        0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    assert_int_equal(hp_crc32c_extend(0, pdu, sizeof(pdu)), 0xD9963A56u);
    assert_int_equal(hp_crc32c_sw_extend(0, pdu, sizeof(pdu)), 0xD9963A56u);
}

/* Bitwise reference, independent of both library paths. */
static uint32_t
crc_ref(uint32_t crc, const uint8_t *p, size_t n)
{
    uint32_t c = ~crc;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        }
    }
    return ~c;
}

static void
fill_random(uint8_t *p, size_t n, uint64_t *rng)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)hp_test_rand(rng);
    }
}

static void
test_hw_equals_sw(void **state)
{
    (void)state;
    uint64_t rng = hp_test_seed("test_hw_equals_sw");
    uint8_t buf[300 + 8];
    for (size_t len = 0; len <= 300; len++) {
        for (int rep = 0; rep < 4; rep++) {
            /* Misaligned starts exercise the 8-byte loops' edges. */
            size_t shift = (size_t)(hp_test_rand(&rng) % 8);
            fill_random(buf, sizeof(buf), &rng);
            uint32_t seed = rep == 0 ? 0 : (uint32_t)hp_test_rand(&rng);
            uint32_t hw = hp_crc32c_extend(seed, buf + shift, len);
            uint32_t sw = hp_crc32c_sw_extend(seed, buf + shift, len);
            uint32_t ref = crc_ref(seed, buf + shift, len);
            if (hw != sw || sw != ref) {
                print_error("len %zu shift %zu seed %08x: hw %08x sw %08x ref %08x\n", len,
                            shift, seed, hw, sw, ref);
            }
            assert_int_equal(hw, ref);
            assert_int_equal(sw, ref);
        }
    }
}

static void
test_incremental(void **state)
{
    (void)state;
    uint64_t rng = hp_test_seed("test_incremental");
    uint8_t buf[300];
    for (size_t len = 0; len <= 300; len++) {
        fill_random(buf, len, &rng);
        uint32_t one = hp_crc32c_extend(0, buf, len);
        assert_int_equal(one, crc_ref(0, buf, len));
        /* Every two-way split. */
        for (size_t cut = 0; cut <= len; cut++) {
            uint32_t c = hp_crc32c_extend(0, buf, cut);
            c = hp_crc32c_extend(c, buf + cut, len - cut);
            assert_int_equal(c, one);
            uint32_t s = hp_crc32c_sw_extend(0, buf, cut);
            s = hp_crc32c_sw_extend(s, buf + cut, len - cut);
            assert_int_equal(s, one);
        }
        /* Random chunking, mixing the two paths. */
        size_t pos = 0;
        uint32_t c = 0;
        int which = 0;
        while (pos < len) {
            size_t step = 1 + (size_t)(hp_test_rand(&rng) % 17);
            if (step > len - pos) {
                step = len - pos;
            }
            c = which ? hp_crc32c_sw_extend(c, buf + pos, step)
                      : hp_crc32c_extend(c, buf + pos, step);
            which ^= 1;
            pos += step;
        }
        assert_int_equal(c, one);
    }
}

/* A single flipped bit always changes the CRC (CRCs detect all 1-bit errors). */
static void
test_detects_single_bit_flips(void **state)
{
    (void)state;
    uint64_t rng = hp_test_seed("test_detects_single_bit_flips");
    uint8_t buf[64];
    fill_random(buf, sizeof(buf), &rng);
    uint32_t good = hp_crc32c_extend(0, buf, sizeof(buf));
    for (size_t i = 0; i < sizeof(buf) * 8; i++) {
        buf[i / 8] ^= (uint8_t)(1u << (i % 8));
        assert_int_not_equal(hp_crc32c_extend(0, buf, sizeof(buf)), good);
        buf[i / 8] ^= (uint8_t)(1u << (i % 8));
    }
    assert_int_equal(hp_crc32c_extend(0, buf, sizeof(buf)), good);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_value),
        cmocka_unit_test(test_rfc3720_vectors),
        cmocka_unit_test(test_hw_equals_sw),
        cmocka_unit_test(test_incremental),
        cmocka_unit_test(test_detects_single_bit_flips),
    };
    return cmocka_run_group_tests_name("crc32c", tests, NULL, NULL);
}
