/* SPDX-License-Identifier: MIT */
#include "payload.h"

#include "hp_test.h"

#include <stdlib.h>
#include <string.h>

size_t
hp_test_payload_len(uint64_t n)
{
    return 8 + (size_t)(hp_test_mix(n ^ 0xabcdef) % 1000u);
}

size_t
hp_test_payload_len_mixed(uint64_t n)
{
    uint64_t m = hp_test_mix(n ^ 0x5eed);
    if (m % 32 == 0) {
        return 8 + (size_t)((m >> 8) % (20u * 1024u));
    }
    return hp_test_payload_len(n);
}

void
hp_test_payload_fill(uint64_t n, uint8_t *buf, size_t len)
{
    memcpy(buf, &n, 8);
    uint64_t st = hp_test_mix(n + 77) | 1;
    for (size_t i = 8; i < len; i++) {
        /* Half-compressible: runs of a byte every other 16 bytes. */
        buf[i] = (i / 16) % 2 ? (uint8_t)n : (uint8_t)(hp_test_rand(&st) >> 56);
    }
}

int
hp_test_record_check(const void *data, size_t len, size_t (*len_of)(uint64_t), uint64_t *n_out)
{
    if (len < 8) {
        return 0;
    }
    uint64_t n;
    memcpy(&n, data, 8);
    *n_out = n;
    if (len != len_of(n)) {
        return 0;
    }
    uint8_t stackbuf[1100];
    uint8_t *buf = len <= sizeof(stackbuf) ? stackbuf : malloc(len);
    if (buf == NULL) {
        return 0;
    }
    hp_test_payload_fill(n, buf, len);
    int ok = memcmp(buf, data, len) == 0;
    if (buf != stackbuf) {
        free(buf);
    }
    return ok;
}
