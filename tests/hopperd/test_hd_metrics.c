/* SPDX-License-Identifier: MIT */
/* hopperd metrics rendering over a hand-built daemon (no threads, no
 * sockets, no queue opened): every native rejection code is rendered under
 * its own name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "daemon.h"
#include "metrics.h"
#include "proto.h"

/* A native source with a different non-zero count in every code slot: each
 * code's sample carries its name and its own count, and no name is missing
 * (a NULL name renders as "(null)" or crashes). */
static void
test_native_rejection_codes(void **state)
{
    (void)state;
    struct hd_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    struct hd_queue_conf qc;
    memset(&qc, 0, sizeof(qc));
    snprintf(qc.s.name, sizeof(qc.s.name), "q");
    struct hd_source_conf sc;
    memset(&sc, 0, sizeof(sc));
    snprintf(sc.s.name, sizeof(sc.s.name), "nat");
    sc.format = HD_FMT_NATIVE;
    cfg.queues = &qc;
    cfg.nqueues = 1;
    cfg.sources = &sc;
    cfg.nsources = 1;

    struct hd_queue_rt qr;
    memset(&qr, 0, sizeof(qr));
    qr.conf = &qc;
    struct hd_source_rt src;
    memset(&src, 0, sizeof(src));
    src.conf = &sc;
    src.queue = &qr;
    for (int c = 0; c < HD_CODE_NCODES; c++) {
        atomic_store(&src.native_rejections[c], (uint64_t)(100 + c));
    }
    struct hd_daemon d;
    memset(&d, 0, sizeof(d));
    d.cfg = &cfg;
    d.queues = &qr;
    d.nqueues = 1;
    d.sources = &src;
    d.nsources = 1;

    char *out = NULL;
    size_t len = 0;
    assert_int_equal(hd_metrics_render(&d, &out, &len), 0);
    assert_non_null(out);
    assert_int_equal(strlen(out), len);
    for (int c = 1; c < HD_CODE_NCODES; c++) {
        char want[256];
        snprintf(want, sizeof(want),
                 "hopperd_source_native_rejections_total{source=\"nat\",code=\"%s\"} %d\n",
                 hd_code_names[c], 100 + c);
        if (strstr(out, want) == NULL) {
            fail_msg("missing '%s' in:\n%s", want, out);
        }
    }
    assert_null(strstr(out, "(null)"));
    free(out);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_native_rejection_codes),
    };
    return cmocka_run_group_tests_name("hopperd_metrics", tests, NULL, NULL);
}
