/* SPDX-License-Identifier: MIT */
/* Self-checking test records: a record's number n (its first 8 bytes,
 * native order) determines its length and every byte, so a reader can tell a
 * record it was given from a damaged or invented one. Shared by the kill -9
 * tests (test_crash.c), the power-loss test (power.c) and the soak. */
#ifndef HOPPER_TESTS_HELPERS_PAYLOAD_H
#define HOPPER_TESTS_HELPERS_PAYLOAD_H
#include <stddef.h>
#include <stdint.h>

/* Length of record n: 8..1007 bytes. */
size_t hp_test_payload_len(uint64_t n);
/* Length of record n with some large ones: mostly 8..1007 bytes, one in 32
 * up to 20 KiB (several pages, a frame of its own now and then). */
size_t hp_test_payload_len_mixed(uint64_t n);
/* Fill buf[0..len) with record n (len >= 8): the number, then half
 * compressible bytes derived from it. */
void hp_test_payload_fill(uint64_t n, uint8_t *buf, size_t len);
/* 1 when data[0..len) is exactly record n for the length function given
 * (*n_out set from the first 8 bytes whenever len >= 8); 0 otherwise. */
int hp_test_record_check(const void *data, size_t len, size_t (*len_of)(uint64_t),
                          uint64_t *n_out);

#endif
