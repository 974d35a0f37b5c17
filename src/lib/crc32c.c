/* SPDX-License-Identifier: MIT */
/* CRC-32C: SSE4.2 crc32 instruction when the CPU has it (chosen once at first
 * use), otherwise a slice-by-8 table computed at first use. Both give the same
 * result; test_crc32c checks them against each other and the check value. */
#include "crc32c.h"

#include <pthread.h>
#include <string.h>

#define POLY 0x82F63B78u

static uint32_t table[8][256];
static int use_hw;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HP_HAVE_SSE42_PATH 1
__attribute__((target("sse4.2"))) static uint32_t
crc_hw(uint32_t c, const uint8_t *p, size_t n)
{
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = __builtin_ia32_crc32di(c64, v);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n > 0) {
        c = __builtin_ia32_crc32qi(c, *p++);
        n--;
    }
    return c;
}
#endif

static void
init_tables(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        }
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++) {
            table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
        }
    }
#ifdef HP_HAVE_SSE42_PATH
    __builtin_cpu_init();
    use_hw = __builtin_cpu_supports("sse4.2");
#endif
}

static uint32_t
crc_sw(uint32_t c, const uint8_t *p, size_t n)
{
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        c = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^ table[5][(lo >> 16) & 0xff] ^
            table[4][lo >> 24] ^ table[3][p[4]] ^ table[2][p[5]] ^ table[1][p[6]] ^
            table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n > 0) {
        c = (c >> 8) ^ table[0][(c ^ *p++) & 0xff];
        n--;
    }
    return c;
}

uint32_t
hp_crc32c_sw_extend(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&init_once, init_tables);
    return ~crc_sw(~crc, data, len);
}

uint32_t
hp_crc32c_extend(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&init_once, init_tables);
#ifdef HP_HAVE_SSE42_PATH
    if (use_hw) {
        return ~crc_hw(~crc, data, len);
    }
#endif
    return ~crc_sw(~crc, data, len);
}
