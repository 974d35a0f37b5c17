/* SPDX-License-Identifier: MIT */
#ifndef HOPPER_SRC_LIB_CRC32C_H
#define HOPPER_SRC_LIB_CRC32C_H
#include <stddef.h>
#include <stdint.h>

/* CRC-32C (Castagnoli, reflected 0x82F63B78), init/xorout 0xFFFFFFFF.
 * hp_crc32c_extend(0, ...) starts a new checksum; pass the previous result to
 * continue it over more bytes. crc32c("123456789") == 0xE3069283. */
uint32_t hp_crc32c_extend(uint32_t crc, const void *data, size_t len);
/* The table-driven path alone, whatever the CPU (tests compare the two). */
uint32_t hp_crc32c_sw_extend(uint32_t crc, const void *data, size_t len);

#endif
