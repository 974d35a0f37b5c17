/* SPDX-License-Identifier: MIT */
/* hopperd configuration: INI sections read with libinih, then checked by
 * one table of directives (config.c). The structs below are plain data;
 * nothing here talks to the library or the network, so the loader can be
 * unit-tested and fuzzed on its own. */
#ifndef HOPPER_SRC_HOPPERD_CONFIG_H
#define HOPPER_SRC_HOPPERD_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "netutil.h" /* HD_ADDR_MAX, HD_ERR_LEN, hd_parse_addr() */
#include "wire.h"    /* enum hd_format */

#define HD_NAME_MAX 128  /* queue/source/sink names, as hopper_open() allows */
#define HD_PATH_MAX 1024 /* file paths */
#define HD_MAX_KEYS 64   /* directives per section kind (bits of hd_section.set_mask) */
#define HD_LIST_TEXT 200 /* a list's value as written (a line holds at most 197 characters) */
#define HD_MAX_IDS 32    /* entries of allowed_uids, of allowed_gids, of tls_allowed_peers */
#define HD_MAX_SOURCE_QUEUES 64 /* queues one source may use: `queue` and `queues` */

enum hd_when_full {
    HD_FULL_BLOCK = 0,
    HD_FULL_REJECT = 1,
    HD_FULL_DROP_NEWEST = 2,
    HD_FULL_DROP_OLDEST = 3,
};
enum hd_source_type { HD_SRC_TCP = 0, HD_SRC_UNIX = 1 };
enum hd_sink_type { HD_SINK_TCP = 0, HD_SINK_FILE = 1, HD_SINK_JETSTREAM = 2 };
enum hd_durability { HD_DUR_MEMORY = 0, HD_DUR_DISK = 1 };
/* fsync policy: never, always, or every interval_ms (as hopper_fsync). */
enum hd_fsync_mode { HD_FSYNC_NEVER = 0, HD_FSYNC_INTERVAL = 1, HD_FSYNC_ALWAYS = 2 };

struct hd_fsync {
    int mode;             /* enum hd_fsync_mode */
    uint64_t interval_ms; /* HD_FSYNC_INTERVAL only */
};

/* Common head of every section: where it was and which keys it set. */
struct hd_section {
    char name[HD_NAME_MAX + 1];
    int line;
    uint64_t set_mask;         /* bit i: directive i of this kind was given */
    int key_line[HD_MAX_KEYS]; /* line of directive i, when set */
};

struct hd_queue_conf {
    struct hd_section s;
    uint64_t memory_bytes;
    uint64_t disk_bytes;
    uint64_t segment_bytes;
    uint64_t max_record_bytes;
    uint64_t compression;
    uint64_t checkpoint_ms;
    int durability; /* enum hd_durability */
    struct hd_fsync fsync;
    int when_full; /* enum hd_when_full */
};

/* User or group ids, resolved from numbers or names when the file is
 * loaded. n == 0: the directive was not given (no restriction). */
struct hd_idlist {
    uint64_t n;
    uint32_t id[HD_MAX_IDS];
};

/* TLS of a source or a sink (tls.h has the policy; docs/SECURITY.md).
 * Paths are "" when not given. */
struct hd_tls_conf {
    int enabled;                     /* tls = on */
    char cert[HD_PATH_MAX];          /* PEM chain */
    char key[HD_PATH_MAX];           /* PEM private key, mode 0600 or stricter */
    char ca[HD_PATH_MAX];            /* source: verifies clients; sink: the server ("" = system) */
    int verify_client;               /* source: enum hd_tls_verify, after defaults are resolved */
    char allowed_peers[HD_LIST_TEXT]; /* source: "a,b": CNs or DNS names; "" = any verified */
    char server_name[HD_ADDR_MAX];   /* sink: SNI and name check; "" = the host of connect */
    char ciphers[HD_LIST_TEXT];      /* TLS 1.2 cipher list; "" = OpenSSL's default */
    char ciphersuites[HD_LIST_TEXT]; /* TLS 1.3 suites; "" = OpenSSL's default */
};

struct hd_source_conf {
    struct hd_section s;
    int type; /* enum hd_source_type */
    char listen[HD_ADDR_MAX];
    char path[HD_PATH_MAX];
    uint64_t mode; /* unix socket permissions */
    int format;    /* enum hd_format */
    char queue[HD_NAME_MAX + 1];
    uint64_t max_connections;
    /* Authorization (auth.h, docs/SECURITY.md). */
    int allow_subscribe;           /* native: 1 = clients may subscribe */
    char queues[HD_LIST_TEXT];     /* native: more queues clients may name, "a,b"; "" = none */
    struct hd_idlist allowed_uids; /* unix: peers admitted by uid ... */
    struct hd_idlist allowed_gids; /* ... or by gid or supplementary group */
    int queue_index;               /* resolved after parsing */
    /* Resolved after parsing: the queues clients may send to and (with
     * allow_subscribe) subscribe to, queue_index first, then `queues`. */
    int may_use[HD_MAX_SOURCE_QUEUES];
    size_t nmay_use;
    uint64_t max_conns_per_peer;   /* per address (tcp) or uid (unix); 0 = no cap */
    uint64_t handshake_timeout_ms; /* for the first byte; 0 = none */
    uint64_t idle_timeout_ms;      /* between whole frames or lines; 0 = none */
    struct hd_tls_conf tls;
};

struct hd_sink_conf {
    struct hd_section s;
    int type; /* enum hd_sink_type */
    char connect[HD_ADDR_MAX];
    char path[HD_PATH_MAX];
    int format; /* enum hd_format */
    char queue[HD_NAME_MAX + 1];
    struct hd_fsync fsync; /* file sink */
    uint64_t connect_timeout_ms;
    uint64_t reconnect_min_ms;
    uint64_t reconnect_max_ms;
    uint64_t batch_bytes;
    int queue_index;
    /* type = jetstream (sink_jetstream.c) */
    char servers[HD_LIST_TEXT];          /* "nats://h:p,nats://h:p" */
    char subject[HD_NAME_MAX + 1];
    char stream[HD_NAME_MAX + 1];
    int create_stream;                   /* 1 = create it when missing */
    uint64_t replicas;                   /* create_stream */
    uint64_t max_bytes;                  /* create_stream; 0 = unlimited */
    uint64_t duplicate_window_ms;        /* create_stream */
    uint64_t max_inflight;               /* publishes awaiting their ack */
    uint64_t ack_timeout_ms;
    char creds[HD_PATH_MAX];             /* "" = none */
    char user[HD_NAME_MAX + 1];
    char password[HD_NAME_MAX + 1];
    char token[HD_NAME_MAX + 1];
    struct hd_tls_conf tls; /* type = tcp */
};

struct hd_config {
    char file[HD_PATH_MAX]; /* name used in error messages */
    struct hd_section main; /* [hopperd] */
    char state_dir[HD_PATH_MAX];
    int log_level;                    /* enum hd_log_level */
    char metrics_listen[HD_ADDR_MAX]; /* "" = no metrics endpoint */
    uint64_t shutdown_timeout_ms;
    struct hd_queue_conf *queues;
    size_t nqueues;
    struct hd_source_conf *sources;
    size_t nsources;
    struct hd_sink_conf *sinks;
    size_t nsinks;
};

/* Load and validate a config file. On failure *out is NULL, -1 is returned
 * and `err` holds "FILE:LINE: message" (LINE omitted when it does not apply),
 * optionally followed by a newline and the offending line. */
int hd_config_load_file(const char *path, struct hd_config **out, char *err, size_t errlen);
/* Same, from memory; `name` stands for the file name in messages. */
int hd_config_load_buffer(const char *name, const char *buf, size_t len, struct hd_config **out,
                          char *err, size_t errlen);
/* Accepts NULL. */
void hd_config_free(struct hd_config *cfg);

/* Count the differences between two configs that SIGHUP cannot apply
 * (directives not marked reloadable, sections added or removed) and
 * describe the first in `what`. */
int hd_config_diff(const struct hd_config *running, const struct hd_config *next, char *what,
                   size_t len);

/* The line of `key` in section `sec` of kind `section_kind` ("hopperd",
 * "queue", "source", "sink"), or the section's own line when the key was
 * left at its default (0: no such line, e.g. no [hopperd] section). */
int hd_config_key_line(const struct hd_section *sec, const char *section_kind, const char *key);
/* Index of the queue called `name`, or -1. */
int hd_config_queue_index(const struct hd_config *cfg, const char *name);
/* Is queue number queue_index among those clients of source s may use
 * (its `queue` and its `queues`)? */
int hd_source_may_use(const struct hd_source_conf *s, int queue_index);

/* Unit parsers, exposed for tests. Return 0 or -1 with a reason in err. */
int hd_parse_size(const char *s, uint64_t *out, char *err, size_t errlen);
int hd_parse_duration(const char *s, uint64_t *out_ms, char *err, size_t errlen);
/* [A-Za-z0-9_.-]{1,128}, not "." or "..". */
int hd_name_is_valid(const char *name);

const char *hd_format_name(int format);
const char *hd_when_full_name(int when_full);

#endif
