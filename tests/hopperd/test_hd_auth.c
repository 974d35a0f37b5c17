/* SPDX-License-Identifier: MIT */
/* hopperd authorization (auth.h): which peers a source admits, which
 * queues and operations its clients may use, and reading a unix peer's
 * credentials from the kernel. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"
#include "log.h"

/* Sources s0 (queue a, defaults), s1 (queue a, queues = b, allow_subscribe
 * = on), s2 (unix, allowed_uids = 10, 20), s3 (unix, allowed_gids = 30), s4
 * (unix, both). */
static const char conf[] = "[queue a]\n[queue b]\n[queue c]\n"
                           "[sink c]\ntype = file\npath = /tmp/c\nqueue = c\n"
                           "[source s0]\ntype = tcp\nlisten = 127.0.0.1:1\nformat = native\n"
                           "queue = a\n"
                           "[source s1]\ntype = tcp\nlisten = 127.0.0.1:2\nformat = native\n"
                           "queue = a\nqueues = b\nallow_subscribe = on\n"
                           "[source s2]\ntype = unix\npath = /tmp/s2\nqueue = a\n"
                           "allowed_uids = 10, 20\n"
                           "[source s3]\ntype = unix\npath = /tmp/s3\nqueue = a\nallowed_gids = 30\n"
                           "[source s4]\ntype = unix\npath = /tmp/s4\nqueue = b\n"
                           "allowed_uids = 10\nallowed_gids = 30\n";

static int
setup(void **state)
{
    struct hd_config *cfg = NULL;
    char err[HD_ERR_LEN];
    if (hd_config_load_buffer("auth.conf", conf, strlen(conf), &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    *state = cfg;
    return 0;
}

static int
teardown(void **state)
{
    hd_config_free(*state);
    return 0;
}

/* One peer against one source: hd_auth_peer's answer and reason. */
struct peer_case {
    int source;         /* index into the config's sources */
    int kind;           /* enum hd_peer_kind */
    int has_cred;
    uint32_t uid, gid;
    uint32_t groups[2]; /* supplementary groups, 0 = none */
    int truncated;
    int want;
    const char *why; /* the reason, or a part of it, when refused */
};

static void
test_peer(void **state)
{
    const struct hd_config *cfg = *state;
    static const struct peer_case cases[] = {
        /* No list: every peer (tcp peers carry no identity). */
        {0, HD_PEER_TCP, 0, 0, 0, {0, 0}, 0, 1, NULL},
        {0, HD_PEER_UNIX, 1, 99, 99, {0, 0}, 0, 1, NULL},
        /* allowed_uids = 10, 20. */
        {2, HD_PEER_UNIX, 1, 20, 99, {0, 0}, 0, 1, NULL},
        {2, HD_PEER_UNIX, 1, 11, 10, {0, 0}, 0, 0, "uid not in allowed_uids"},
        /* allowed_gids = 30: the primary gid or any supplementary group. */
        {3, HD_PEER_UNIX, 1, 10, 30, {0, 0}, 0, 1, NULL},
        {3, HD_PEER_UNIX, 1, 10, 31, {0, 0}, 0, 0,
         "neither its gid nor its groups are in allowed_gids"},
        {3, HD_PEER_UNIX, 1, 10, 31, {29, 30}, 0, 1, NULL},
        /* More groups than were read: refused, and said why. */
        {3, HD_PEER_UNIX, 1, 10, 31, {0, 0}, 1, 0, "more than 256 groups"},
        /* Both lists: either admits. */
        {4, HD_PEER_UNIX, 1, 10, 1, {0, 0}, 0, 1, NULL},
        {4, HD_PEER_UNIX, 1, 1, 30, {0, 0}, 0, 1, NULL},
        {4, HD_PEER_UNIX, 1, 1, 1, {0, 0}, 0, 0,
         "uid not in allowed_uids, gid and groups not in allowed_gids"},
        /* Credentials that could not be read: refused. */
        {4, HD_PEER_UNIX, 0, 10, 30, {0, 0}, 0, 0, "its credentials could not be read"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct peer_case *c = &cases[i];
        struct hd_peer p;
        memset(&p, 0, sizeof(p));
        p.kind = c->kind;
        p.has_cred = c->has_cred;
        p.uid = c->uid;
        p.gid = c->gid;
        for (size_t g = 0; g < 2 && c->groups[g] != 0; g++) {
            p.groups[p.ngroups++] = c->groups[g];
        }
        p.groups_truncated = c->truncated;
        char why[256] = "";
        int got = hd_auth_peer(&cfg->sources[c->source], &p, why, sizeof(why));
        if (got != c->want || (c->why != NULL && strstr(why, c->why) == NULL)) {
            fail_msg("case %zu: got %d '%s', wanted %d '%s'", i, got, why, c->want,
                     c->why != NULL ? c->why : "");
        }
    }
}

static void
test_queue_ops(void **state)
{
    const struct hd_config *cfg = *state;
    const struct hd_source_conf *s0 = &cfg->sources[0], *s1 = &cfg->sources[1];
    int a = hd_config_queue_index(cfg, "a"), b = hd_config_queue_index(cfg, "b");
    int c = hd_config_queue_index(cfg, "c");
    const char *why = NULL;
    /* Defaults: send to the source's queue only, no subscribe. */
    assert_int_equal(hd_auth_queue(s0, a, HD_AUTH_SEND, &why), 1);
    assert_int_equal(hd_auth_queue(s0, b, HD_AUTH_SEND, &why), 0);
    assert_non_null(strstr(why, "not one of this source's"));
    assert_int_equal(hd_auth_queue(s0, a, HD_AUTH_SUBSCRIBE, &why), 0);
    assert_non_null(strstr(why, "allow_subscribe = off"));
    /* queues = b, allow_subscribe = on: a and b, both ways; c neither. */
    assert_int_equal(hd_auth_queue(s1, a, HD_AUTH_SEND, &why), 1);
    assert_int_equal(hd_auth_queue(s1, b, HD_AUTH_SEND, &why), 1);
    assert_int_equal(hd_auth_queue(s1, a, HD_AUTH_SUBSCRIBE, &why), 1);
    assert_int_equal(hd_auth_queue(s1, b, HD_AUTH_SUBSCRIBE, &why), 1);
    assert_int_equal(hd_auth_queue(s1, c, HD_AUTH_SEND, &why), 0);
    assert_int_equal(hd_auth_queue(s1, c, HD_AUTH_SUBSCRIBE, &why), 0);
}

/* The kernel's view of a unix peer: our own ids over a socketpair. */
static void
test_peer_read(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct hd_peer p;
    assert_int_equal(hd_peer_read(sv[0], HD_PEER_UNIX, 1, &p), 0);
    assert_int_equal(p.has_cred, 1);
    assert_int_equal(p.uid, geteuid());
    assert_int_equal(p.gid, getegid());
    assert_int_equal(p.pid, getpid());
    gid_t mine[HD_PEER_GROUPS];
    int n = getgroups(HD_PEER_GROUPS, mine);
    assert_true(n >= 0);
    assert_int_equal(p.groups_truncated, 0);
    assert_int_equal(p.ngroups, (size_t)n);
    for (int i = 0; i < n; i++) {
        int seen = 0;
        for (size_t k = 0; k < p.ngroups; k++) {
            seen |= p.groups[k] == (uint32_t)mine[i];
        }
        assert_true(seen);
    }
    char text[96];
    hd_peer_describe(&p, text, sizeof(text));
    char want[96];
    snprintf(want, sizeof(want), "uid %u gid %u pid %d", (unsigned)geteuid(), (unsigned)getegid(),
             (int)getpid());
    assert_string_equal(text, want);
    /* A tcp source reads nothing and describes the peer by kind. */
    assert_int_equal(hd_peer_read(sv[0], HD_PEER_TCP, 1, &p), 0);
    assert_int_equal(p.has_cred, 0);
    hd_peer_describe(&p, text, sizeof(text));
    assert_string_equal(text, "a tcp peer");
    close(sv[0]);
    close(sv[1]);
}

/* tls_allowed_peers: any of the certificate's names, ASCII case ignored,
 * no wildcards, no prefixes. */
static void
test_tls_names(void **state)
{
    (void)state;
    char why[200];
    const char *one[] = {"client-ok"};
    const char *two[] = {"Client-B", "ok.client.test"};
    const char *star[] = {"*.example"};
    assert_int_equal(hd_auth_tls_names("", one, 1, why, sizeof(why)), 1);
    assert_int_equal(hd_auth_tls_names("client-ok", one, 1, why, sizeof(why)), 1);
    assert_int_equal(hd_auth_tls_names("a,CLIENT-OK", one, 1, why, sizeof(why)), 1);
    assert_int_equal(hd_auth_tls_names("client", one, 1, why, sizeof(why)), 0);
    assert_string_equal(why, "certificate name client-ok is not in tls_allowed_peers");
    assert_int_equal(hd_auth_tls_names("client-ok-2,x", one, 1, why, sizeof(why)), 0);
    assert_int_equal(hd_auth_tls_names("x,ok.client.test", two, 2, why, sizeof(why)), 1);
    assert_int_equal(hd_auth_tls_names("x", two, 2, why, sizeof(why)), 0);
    assert_string_equal(why, "certificate names Client-B, ... are not in tls_allowed_peers");
    assert_int_equal(hd_auth_tls_names("a.example", star, 1, why, sizeof(why)), 0);
    assert_int_equal(hd_auth_tls_names("*.example", star, 1, why, sizeof(why)), 1);
    assert_int_equal(hd_auth_tls_names("a", NULL, 0, why, sizeof(why)), 0);
    assert_non_null(strstr(why, "no CN or DNS name"));
}

int
main(void)
{
    log_init(HD_LOG_ERROR, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_peer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_ops, setup, teardown),
        cmocka_unit_test(test_peer_read),
        cmocka_unit_test(test_tls_names),
    };
    return cmocka_run_group_tests_name("hopperd_auth", tests, NULL, NULL);
}
