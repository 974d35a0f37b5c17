/* SPDX-License-Identifier: MIT */
/* hopperd runtime state shared by the listener, relay, metrics and main.
 *
 * Threads: main (startup, reload, shutdown), the signal thread, one
 * listener thread (epoll over every source), one relay thread per sink and
 * one metrics thread. Everything below is immutable after startup except:
 *   - fields marked [atomic]: statistics and states, C11 atomics;
 *   - fields marked [mu]: the sink's reloadable settings, under sink->mu;
 *   - fields marked [tls_mu]: a source's TLS context, under source->tls_mu.
 * Lock order: a thread holds at most one of these mutexes and calls nothing
 * while holding it but SSL_new() / SSL_CTX_up_ref() (copy out, unlock, then
 * use).
 */
#ifndef HOPPER_SRC_HOPPERD_DAEMON_H
#define HOPPER_SRC_HOPPERD_DAEMON_H

#include <hopper.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "config.h"
#include "proto.h" /* enum hd_code: native rejections are counted per code */
#include "tls.h"   /* SSL_CTX, enum hd_tls_fail: TLS failures are counted per reason */

/* Why a record was dropped. Every drop is counted under exactly one cause. */
enum hd_drop_cause {
    HD_DROP_FULL = 0,     /* queue full, when_full = reject | drop_newest */
    HD_DROP_OLDEST,       /* queue full, when_full = drop_oldest: the consumer discarded the
                           * oldest records to make room (ingest.c) */
    HD_DROP_OVERSIZE,     /* longer than max_record_bytes */
    HD_DROP_QUEUE_FAILED, /* hopper_send failed otherwise (EFAILED, ENOMEM, ...) */
    HD_DROP_SHUTDOWN,     /* still blocked or partial when shutdown_timeout expired */
    HD_DROP_REJECTED,     /* a native downstream refused the batch as TOO_BIG */
    HD_DROP_NCAUSES
};
extern const char *const hd_drop_cause_names[HD_DROP_NCAUSES];

/* Why the listener closed a connection that had been quiet too long
 * (idle_timeout, handshake_timeout: connlimit.h). */
enum hd_timeout { HD_TIMEOUT_HANDSHAKE = 0, HD_TIMEOUT_IDLE, HD_TIMEOUT_NKINDS };
extern const char *const hd_timeout_names[HD_TIMEOUT_NKINDS];

struct hd_queue_rt {
    const struct hd_queue_conf *conf;
    hopper_queue *q;
    atomic_uint_fast64_t ingress_records;        /* [atomic] accepted by hopper_send */
    atomic_uint_fast64_t ingress_bytes;          /* [atomic] */
    atomic_uint_fast64_t drops[HD_DROP_NCAUSES]; /* [atomic] records */
    atomic_uint_fast64_t drop_bytes[HD_DROP_NCAUSES]; /* [atomic] payload bytes, where known */
    /* when_full = drop_oldest with a sink (ingest.c): a source that found
     * the queue full stores the payload bytes it waits to send here and
     * writes drop_wake_fd; the sink's relay thread (the queue's consumer)
     * takes the request (exchanging it with 0), discards the oldest records
     * and writes d->wake_fd so the listener retries at once. The listener
     * stores 0 when a send succeeds, so a request nobody needs any more is
     * dropped. */
    atomic_uint_fast64_t drop_need; /* [atomic] */
    int drop_wake_fd;               /* eventfd, or -1 when no sink consumes the queue */
    int has_sink;                   /* a sink consumes the queue (immutable) */
    /* durability = disk, fsync = always: opened with HOPPER_FSYNC_COMMIT, and
     * the listener commits once per epoll round for every connection
     * (commit.h) instead of an fdatasync per batch (immutable). */
    int group_commit;
    atomic_uint_fast64_t sub_delivered;          /* [atomic] records sent to native subscribers */
    atomic_uint_fast64_t sub_acked;              /* [atomic] records they acknowledged */
    atomic_int subscribed; /* [atomic] 1 while a native subscriber is attached */
};

/* Records a queue's consumer (a relay thread, or the listener thread for
 * its subscribers) received and has not acknowledged: the oldest records
 * of the queue. drop_oldest discards them first (ingest.c). */
struct hd_held {
    uint64_t n;        /* records; 0 = none */
    uint64_t bytes;    /* their payload bytes */
    uint64_t last_seq; /* sequence number of the last one */
};

struct hd_source_rt {
    const struct hd_source_conf *conf;
    struct hd_queue_rt *queue;
    int fd;                              /* listening socket, -1 when closed */
    atomic_uint_fast64_t conns_active;   /* [atomic] */
    atomic_uint_fast64_t conns_total;    /* [atomic] accepted */
    atomic_uint_fast64_t conns_rejected; /* [atomic] refused: no slot could be freed */
    atomic_uint_fast64_t conns_forbidden; /* [atomic] peers refused by allowed_uids/gids */
    atomic_uint_fast64_t conns_evicted;  /* [atomic] closed to free a slot for a new one */
    atomic_uint_fast64_t conn_timeouts[HD_TIMEOUT_NKINDS]; /* [atomic] by enum hd_timeout */
    atomic_uint_fast64_t bad_frames;     /* [atomic] connections closed for malformed input */
    atomic_uint_fast64_t native_rejections[HD_CODE_NCODES]; /* [atomic] by enum hd_code */
    /* tls = on: new connections take this context (SIGHUP replaces it; a
     * connection keeps the one it was made with). NULL when tls = off. */
    pthread_mutex_t tls_mu;
    SSL_CTX *tls_ctx;                       /* [tls_mu] */
    atomic_uint_fast64_t tls_handshakes;    /* [atomic] completed TLS handshakes */
    atomic_uint_fast64_t tls_failures[HD_TLS_FAIL_NKINDS]; /* [atomic] by enum hd_tls_fail */
};

/* Sink connection lifecycle; transitions are checked in relay.c only. */
enum hd_sink_state {
    HD_SINK_IDLE = 0,
    HD_SINK_CONNECTING,
    HD_SINK_ESTABLISHED,
    HD_SINK_DRAINING,
    HD_SINK_CLOSING,
    HD_SINK_BACKOFF,
    HD_SINK_STOPPED,
    HD_SINK_NSTATES
};
extern const char *const hd_sink_state_names[HD_SINK_NSTATES];

/* Why a JetStream publish failed; every failure is counted under one. */
enum hd_pub_cause {
    HD_PUB_TIMEOUT = 0,   /* no publish ack within ack_timeout */
    HD_PUB_NO_RESPONDERS, /* no stream listens on the subject (or no leader yet) */
    HD_PUB_STREAM_FULL,   /* the stream refused to store (max_bytes, discard = new) */
    HD_PUB_AUTH,          /* authentication or authorization refused */
    HD_PUB_CONNECT,       /* no server reachable, connection lost */
    HD_PUB_OTHER,
    HD_PUB_NCAUSES
};
extern const char *const hd_pub_cause_names[HD_PUB_NCAUSES];

/* Publish-ack latency histogram: upper bounds in ms, plus +Inf. */
#define HD_PUB_NBUCKETS 12
extern const uint64_t hd_pub_bucket_ms[HD_PUB_NBUCKETS];

/* JetStream sink statistics (sink_jetstream.c writes, metrics.c reads). */
struct hd_publish_stats {
    atomic_uint_fast64_t inflight;   /* [atomic] gauge: records published, not yet acked */
    atomic_uint_fast64_t acks;       /* [atomic] positive publish acks */
    atomic_uint_fast64_t duplicates; /* [atomic] acks saying "duplicate" (counted as delivered) */
    atomic_uint_fast64_t errors[HD_PUB_NCAUSES]; /* [atomic] */
    atomic_uint_fast64_t lat_count;  /* [atomic] acks timed */
    atomic_uint_fast64_t lat_sum_us; /* [atomic] */
    atomic_uint_fast64_t lat_bucket[HD_PUB_NBUCKETS + 1]; /* [atomic] non-cumulative; last +Inf */
};

struct hd_daemon;
struct hd_loop;

struct hd_sink_rt {
    const struct hd_sink_conf *conf;
    struct hd_queue_rt *queue;
    struct hd_daemon *d;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    char connect[HD_ADDR_MAX];   /* [mu] reloadable */
    uint64_t connect_timeout_ms; /* [mu] reloadable */
    uint64_t reconnect_min_ms;   /* [mu] reloadable */
    uint64_t reconnect_max_ms;   /* [mu] reloadable */
    unsigned generation;         /* [mu] bumped when the address changes or a reopen is asked */
    /* [mu] jetstream sinks: a copy of conf whose servers, creds, user,
     * password and token SIGHUP replaces (reloadable); NULL for others */
    struct hd_sink_conf *live;
    SSL_CTX *tls_ctx;            /* [mu] reloadable; tls = on: the next connection's context */
    atomic_int state;            /* [atomic] enum hd_sink_state */
    atomic_uint_fast64_t egress_records;   /* [atomic] written and acknowledged */
    atomic_uint_fast64_t egress_bytes;     /* [atomic] payload bytes of those */
    atomic_uint_fast64_t connects;         /* [atomic] successful connects/opens */
    atomic_uint_fast64_t connect_failures; /* [atomic] */
    atomic_uint_fast64_t write_errors;     /* [atomic] */
    atomic_uint_fast64_t keepalives;       /* [atomic] native keep-alives answered */
    atomic_uint_fast64_t quiet_closes;     /* [atomic] downstream closed a quiet connection */
    struct hd_publish_stats pub;           /* type = jetstream only */
};

/* Relay run modes, set by main. */
enum hd_run_mode { HD_RUN = 0, HD_DRAIN = 1, HD_STOP = 2 };

struct hd_daemon {
    struct hd_config *cfg; /* the config hopperd started with; never replaced */
    struct hd_queue_rt *queues;
    size_t nqueues;
    struct hd_source_rt *sources;
    size_t nsources;
    struct hd_sink_rt *sinks;
    size_t nsinks;
    atomic_int listener_stop;   /* [atomic] set by main, then wake_fd written */
    int wake_fd;                /* eventfd waking the listener loop */
    struct hd_loop *loop;       /* the listener thread's state (loop_ctx.h), from
                                 * hd_loop_start() to hd_loop_stop() */
    atomic_int relay_mode;      /* [atomic] enum hd_run_mode */
    uint64_t drain_deadline_ms; /* monotonic; written before relay_mode = HD_DRAIN */
    atomic_int metrics_stop;    /* [atomic] */
    int metrics_fd;             /* listening socket or -1 */
    atomic_uint_fast64_t metrics_timeouts;  /* [atomic] metrics clients out of time */
    atomic_uint_fast64_t metrics_evictions; /* [atomic] metrics clients closed for a slot */
    uint64_t start_ms;          /* monotonic start time */
};

#endif
