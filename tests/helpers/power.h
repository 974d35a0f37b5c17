/* SPDX-License-Identifier: MIT */
/* The simulated power-loss test (issue 10): a workload on a real queue is
 * recorded through the page-cache model (powerfs.h), then the power is cut
 * at many points of the record; each crash image is reopened with the real
 * library and checked against the README's durability table, row by row.
 * Shared by tests/test_power.c (CI) and tests/soak.c (hopper-dev soak).
 *
 * Everything about a scenario (its row of the table, options, workload,
 * crash points and torn pages) is drawn from one 64-bit seed, so a failure
 * replays with HOPPER_POWER_SEED=<seed> (and HOPPER_POWER_CUT=<entry> for
 * one crash point). Where the library itself goes by the clock (threads, the
 * fsync interval, the checkpoint interval, the ENOSPC back-off) a replay
 * draws the same choices but may record a slightly different log; the
 * pinned seeds of test_power fail every time without their fix. */
#ifndef HOPPER_TESTS_HELPERS_POWER_H
#define HOPPER_TESTS_HELPERS_POWER_H
#include <stddef.h>
#include <stdint.h>

/* Rows of the durability table (README "Guarantees"). */
enum {
    HP_ROW_DISK_ALWAYS = 0,
    HP_ROW_DISK_INTERVAL,
    HP_ROW_DISK_NEVER,
    HP_ROW_MEMORY_NEVER,
    HP_ROW_MEMORY_ALWAYS,
    HP_ROW_MEMORY_INTERVAL,
    HP_ROW_COUNT
};

const char *hp_power_row_name(int row);
/* A scenario seed for `row` drawn from *rng (the row is seed % HP_ROW_COUNT). */
uint64_t hp_power_seed_for(int row, uint64_t *rng);

typedef struct hp_power_totals {
    uint64_t scenarios;
    uint64_t cuts;          /* crash images reopened and checked */
    uint64_t cuts_gen2;     /* of which: a second cut during/after recovery */
    uint64_t torn_files;    /* files given torn unsynced content */
    uint64_t records;       /* records checked: required ones and deliveries */
    uint64_t delivered;
    uint64_t lost;          /* required by the table, not delivered */
    uint64_t duplicated;    /* delivered twice in one open */
    uint64_t reordered;     /* seq or per-producer order broken */
    uint64_t corrupt;       /* wrong bytes, or a record never sent */
    uint64_t resurrected;   /* durably acknowledged, or refused with EFULL, and back */
    uint64_t other;         /* open failed, damage not counted, sync not durable */
    uint64_t late_syncs;    /* disk+interval: no fsync began within T + slack of a record */
    uint64_t failed_scenarios;
    uint64_t worst_window_ms; /* interval rows: oldest lost record, ms before the cut */
    uint64_t worst_window_t;  /* ... and its scenario's interval T (ms) */
    /* Interval rows: the longest from a record's acceptance to the start of
     * the fsync that covered it, relative to T (per mille), with its ms, T
     * and the scheduling delay (oversleep) seen in that scenario. */
    uint64_t worst_lag_permille;
    uint64_t worst_lag_ms;
    uint64_t worst_lag_t;
    uint64_t worst_lag_oversleep_ms;
} hp_power_totals;

/* Run one scenario in a fresh directory under `workdir`. Returns 0 when every
 * crash point passed, 1 when a check failed (the first failure, with the seed
 * and crash point to replay it, is in err), < 0 on a harness error.
 * only_cut: check only the crash point before this log entry (SIZE_MAX: all). */
int hp_power_scenario(uint64_t seed, const char *workdir, size_t only_cut,
                      hp_power_totals *tot, char *err, size_t errcap);

/* Where the scenarios run: $HOPPER_POWER_DIR, else /dev/shm when writable
 * (fsyncs are modelled, so the real disk need not pay them), else $TMPDIR
 * or /tmp. A fresh directory; malloc'd; NULL on failure. */
char *hp_power_workdir(void);

#endif
