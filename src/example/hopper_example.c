/* SPDX-License-Identifier: MIT */
/* hopper_example DIR: shows the queue spilling to disk and recovering.
 * Sends records with a tiny memory budget (most spill), closes, reopens,
 * and drains them in order, printing the stats at each step. */
#include "hopper.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
show(const char *when, hopper_queue *q)
{
    hopper_stats st = {.struct_size = sizeof(st)};
    if (hopper_stats_get(q, &st) == 0) {
        printf("%-10s mem %" PRIu64 " rec/%" PRIu64 " B, disk %" PRIu64 " rec/%" PRIu64
               " B raw in %" PRIu64 " B (%" PRIu64 " segments), backlog %" PRIu64 "\n",
               when, st.mem_records, st.mem_bytes, st.disk_records, st.disk_raw_bytes,
               st.disk_bytes, st.segments, st.backlog_records);
    }
}

int
main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ".";
    int n = argc > 2 ? atoi(argv[2]) : 100000;
    hopper_opts o;
    hopper_opts_init(&o);
    o.memory_bytes = 64 * 1024;
    o.segment_bytes = 1 << 20;
    hopper_queue *q;
    int rc = hopper_open(dir, "example", &o, &q);
    if (rc < 0) {
        fprintf(stderr, "hopper_open %s/example: %s\n", dir, hopper_strerror(rc));
        return 1;
    }
    show("reopened", q);
    char line[128];
    for (int i = 0; i < n; i++) {
        int len = snprintf(line, sizeof(line), "record %08d: the quick brown fox jumps", i);
        rc = hopper_send(q, line, (size_t)len, 1000);
        if (rc < 0) {
            fprintf(stderr, "hopper_send: %s\n", hopper_strerror(rc));
            break;
        }
    }
    show("sent", q);
    rc = hopper_close(q);
    if (rc < 0) {
        fprintf(stderr, "hopper_close: %s\n", hopper_strerror(rc));
        return 1;
    }
    rc = hopper_open(dir, "example", &o, &q);
    if (rc < 0) {
        fprintf(stderr, "hopper_open: %s\n", hopper_strerror(rc));
        return 1;
    }
    show("recovered", q);
    uint64_t got = 0;
    uint64_t last = 0;
    hopper_record r;
    while ((rc = hopper_recv_ack(q, &r, 0)) == 0) {
        if (got > 0 && r.seq != last + 1) {
            fprintf(stderr, "order broken: %" PRIu64 " after %" PRIu64 "\n", r.seq, last);
            return 1;
        }
        last = r.seq;
        got++;
    }
    printf("drained %" PRIu64 " records in order (last seq %" PRIu64 ")\n", got, last);
    show("drained", q);
    return hopper_close(q) < 0;
}
