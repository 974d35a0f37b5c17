/* SPDX-License-Identifier: MIT */
/* hopperctl verify, dump and salvage: offline commands on a queue
 * directory (state_dir/<queue>) that no process has open, through
 * hopper_inspect() only: read-only, no file of the queue is changed.
 * Exit status: 0 no damage, 1 damage found (and skipped), 2 error.
 *
 *   verify DIR                      check every frame, report damage
 *   dump [--all] DIR                print records, consume nothing
 *   salvage [--all] [--format F] DIR OUT
 *                                   copy readable records into a new queue
 *                                   or append them to a file, as a file
 *                                   sink writes them (hd_encode_record)
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <hopper.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl.h"
#include "framer.h"
#include "netutil.h"
#include "wire.h"

#define EXIT_DAMAGE 1
#define EXIT_ERROR 2

/* Split a queue directory path into its parent and its name (the last
 * component, trailing slashes ignored). Returns 0, or -1 if there is no
 * usable name. */
static int
split_queue_dir(const char *path, char *parent, size_t plen, char *name, size_t nlen)
{
    char tmp[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(tmp)) {
        return -1;
    }
    memcpy(tmp, path, n + 1);
    while (n > 1 && tmp[n - 1] == '/') {
        tmp[--n] = '\0';
    }
    char *slash = strrchr(tmp, '/');
    const char *base = slash != NULL ? slash + 1 : tmp;
    if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0 ||
        (size_t)snprintf(name, nlen, "%s", base) >= nlen) {
        return -1;
    }
    const char *dir = ".";
    if (slash == tmp) {
        dir = "/";
    } else if (slash != NULL) {
        *slash = '\0';
        dir = tmp;
    }
    return (size_t)snprintf(parent, plen, "%s", dir) >= plen ? -1 : 0;
}

/* Does DIR/checkpoint exist (to tell a missing checkpoint from a damaged
 * one: hopper_inspect() reports both as checkpoint_ok == 0)? */
static int
checkpoint_exists(const char *dir)
{
    char p[PATH_MAX];
    struct stat st;
    snprintf(p, sizeof(p), "%s/checkpoint", dir);
    return stat(p, &st) == 0;
}

/* Damage is: unreadable segments, corrupt frames, a torn tail, records
 * missing (sequence numbers after the ack position that no segment holds),
 * a checkpoint file that exists but does not validate, or one whose read
 * position is beyond the data. */
static int
report_damaged(const hopper_inspect_report *rep, const char *dir)
{
    return rep->unreadable_segments > 0 || rep->corrupt_frames > 0 || rep->torn_bytes > 0 ||
           rep->missing_records > 0 || rep->checkpoint_clamped > 0 ||
           (!rep->checkpoint_ok && checkpoint_exists(dir));
}

/* Run hopper_inspect() on the queue directory `dir`, printing a clear
 * message on error. Returns 0 or the error code. */
static int
inspect_dir(const char *cmd, const char *dir, unsigned flags, hopper_inspect_fn fn, void *ctx,
            hopper_inspect_report *rep)
{
    char parent[PATH_MAX], name[256];
    memset(rep, 0, sizeof(*rep));
    rep->struct_size = sizeof(*rep);
    if (split_queue_dir(dir, parent, sizeof(parent), name, sizeof(name)) < 0) {
        fprintf(stderr, "hopperctl: %s: %s: not a queue directory path\n", cmd, dir);
        return -EINVAL;
    }
    int rc = hopper_inspect(parent, name, flags, fn, ctx, rep);
    if (rc == HOPPER_ELOCKED) {
        fprintf(stderr,
                "hopperctl: %s: %s: the queue is open by another process (is hopperd "
                "running?); stop it, or copy the directory and inspect the copy\n",
                cmd, dir);
    } else if (rc == -ENOENT) {
        fprintf(stderr, "hopperctl: %s: %s: no such queue directory\n", cmd, dir);
    } else if (rc < 0 && rc != -EPIPE) {
        fprintf(stderr, "hopperctl: %s: %s: %s\n", cmd, dir, hopper_strerror(rc));
    }
    return rc;
}

static void
print_report(FILE *fp, const hopper_inspect_report *rep, const char *dir)
{
    fprintf(fp, "segments            %llu (%llu bytes)\n", (unsigned long long)rep->segments,
            (unsigned long long)rep->segment_bytes);
    fprintf(fp, "unreadable segments %llu\n", (unsigned long long)rep->unreadable_segments);
    fprintf(fp, "frames              %llu\n", (unsigned long long)rep->frames);
    fprintf(fp, "records             %llu\n", (unsigned long long)rep->records);
    fprintf(fp, "corrupt frames      %llu (%llu bytes)\n", (unsigned long long)rep->corrupt_frames,
            (unsigned long long)rep->corrupt_bytes);
    fprintf(fp, "torn bytes          %llu\n", (unsigned long long)rep->torn_bytes);
    fprintf(fp, "missing records     %llu", (unsigned long long)rep->missing_records);
    if (rep->missing_records > 0) {
        /* Name the gap: sequence numbers no segment holds. */
        fprintf(fp, " (seqs %llu..%llu", (unsigned long long)rep->missing_first,
                (unsigned long long)rep->missing_first_end - 1);
        if (rep->missing_ranges > 1) {
            fprintf(fp, ", the first of %llu gaps", (unsigned long long)rep->missing_ranges);
        }
        fputc(')', fp);
    }
    fputc('\n', fp);
    fprintf(fp, "ack position        %llu\n", (unsigned long long)rep->ack_next);
    fprintf(fp, "checkpoint          %s",
            rep->checkpoint_ok        ? "ok"
            : checkpoint_exists(dir) ? "damaged (every record counts as unacknowledged)"
                                     : "missing (every record counts as unacknowledged)");
    if (rep->checkpoint_clamped > 0) {
        fprintf(fp, ", read position %llu records beyond the data",
                (unsigned long long)rep->checkpoint_clamped);
    }
    fputc('\n', fp);
}

int
ctl_verify(int argc, char **argv)
{
    if (argc - optind != 1) {
        ctl_usage();
    }
    const char *dir = argv[optind];
    hopper_inspect_report rep;
    if (inspect_dir("verify", dir, 0, NULL, NULL, &rep) < 0) {
        return EXIT_ERROR;
    }
    printf("queue               %s\n", dir);
    print_report(stdout, &rep, dir);
    int damaged = report_damaged(&rep, dir);
    printf("result              %s\n", damaged ? "DAMAGED" : "OK");
    return damaged ? EXIT_DAMAGE : 0;
}

/* Print a payload with \\, \n, \t and \xNN escapes so that one record is
 * one line of printable ASCII. */
static void
put_escaped(FILE *fp, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c == '\\') {
            fputs("\\\\", fp);
        } else if (c == '\n') {
            fputs("\\n", fp);
        } else if (c == '\t') {
            fputs("\\t", fp);
        } else if (c < 0x20 || c >= 0x7f) {
            fprintf(fp, "\\x%02x", c);
        } else {
            fputc(c, fp);
        }
    }
}

static int
dump_one(void *ctx, const hopper_record *rec)
{
    (void)ctx;
    printf("%llu\t", (unsigned long long)rec->seq);
    put_escaped(stdout, rec->data, rec->len);
    putchar('\n');
    return ferror(stdout) ? -EPIPE : 0;
}

/* Options shared by dump and salvage. */
static int
offline_opts(int argc, char **argv, int *all, int *format)
{
    static const struct option longopts[] = {
        {"all", no_argument, NULL, 'A'},
        {"format", required_argument, NULL, 'F'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (ch == 'A') {
            *all = 1;
        } else if (ch == 'F' && format != NULL && strcmp(optarg, "lines") == 0) {
            *format = HD_FMT_LINES;
        } else if (ch == 'F' && format != NULL && strcmp(optarg, "octet-counted") == 0) {
            *format = HD_FMT_OCTET;
        } else {
            ctl_usage();
        }
    }
    return 0;
}

int
ctl_dump(int argc, char **argv)
{
    int all = 0;
    offline_opts(argc, argv, &all, NULL);
    if (argc - optind != 1) {
        ctl_usage();
    }
    const char *dir = argv[optind];
    hopper_inspect_report rep;
    int rc = inspect_dir("dump", dir, all ? HOPPER_INSPECT_ACKED : 0, dump_one, NULL, &rep);
    if (fflush(stdout) != 0 || rc == -EPIPE) {
        fprintf(stderr, "hopperctl: dump: writing stdout: %s\n", strerror(errno));
        return EXIT_ERROR;
    }
    if (rc < 0) {
        return EXIT_ERROR;
    }
    int damaged = report_damaged(&rep, dir);
    fprintf(stderr, "hopperctl: dump: %llu records printed%s\n", (unsigned long long)rep.visited,
            damaged ? "; the queue is damaged (see hopperctl verify)" : "");
    return damaged ? EXIT_DAMAGE : 0;
}

/* salvage: records are copied in batches of up to SALV_BATCH records or
 * SALV_BATCH_BYTES bytes (hopper_send_batch into a queue, write(2) into a
 * file). */
#define SALV_BATCH 1024
#define SALV_BATCH_BYTES (4u << 20)

struct salvage {
    hopper_queue *q; /* queue mode, else NULL */
    int fd;          /* file mode, else -1 */
    int format;      /* file mode: HD_FMT_LINES or HD_FMT_OCTET */
    uint8_t *buf;    /* copies of the batch's payloads (queue) or encoded bytes (file) */
    size_t len, cap;
    size_t off[SALV_BATCH]; /* queue mode: payload offsets in buf */
    size_t lens[SALV_BATCH];
    size_t n;
    uint64_t copied;
    uint64_t first_seq, last_seq;
    int err; /* first error, for the message */
};

static int
salvage_flush(struct salvage *sv)
{
    if (sv->n == 0) {
        return 0;
    }
    if (sv->q != NULL) {
        hopper_iovec iov[SALV_BATCH];
        for (size_t i = 0; i < sv->n; i++) {
            iov[i].data = sv->buf + sv->off[i];
            iov[i].len = sv->lens[i];
        }
        int rc = hopper_send_batch(sv->q, iov, sv->n, -1);
        if (rc < 0) {
            sv->err = rc;
            return -ECANCELED;
        }
    } else {
        int rc = hd_write_all(sv->fd, sv->buf, sv->len, 0, 0, NULL, NULL);
        if (rc < 0) {
            sv->err = rc;
            return -ECANCELED;
        }
    }
    sv->copied += sv->n;
    sv->n = 0;
    sv->len = 0;
    return 0;
}

static int
salvage_one(void *ctx, const hopper_record *rec)
{
    struct salvage *sv = ctx;
    size_t need = rec->len + 24; /* room for an octet-counted header or '\n' */
    if (sv->n == SALV_BATCH || (sv->n > 0 && sv->len + need > SALV_BATCH_BYTES)) {
        int rc = salvage_flush(sv);
        if (rc < 0) {
            return rc;
        }
    }
    if (sv->len + need > sv->cap) {
        size_t ncap = sv->len + need > 2 * sv->cap ? sv->len + need : 2 * sv->cap;
        uint8_t *nb = realloc(sv->buf, ncap);
        if (nb == NULL) {
            sv->err = -ENOMEM;
            return -ECANCELED;
        }
        sv->buf = nb;
        sv->cap = ncap;
    }
    if (sv->q != NULL) {
        if (rec->len > 0) {
            memcpy(sv->buf + sv->len, rec->data, rec->len);
        }
        sv->off[sv->n] = sv->len;
        sv->lens[sv->n] = rec->len;
        sv->len += rec->len;
    } else {
        sv->len += hd_encode_record(sv->format, rec->data, rec->len, sv->buf + sv->len,
                                    sv->cap - sv->len);
    }
    if (sv->copied == 0 && sv->n == 0) {
        sv->first_seq = rec->seq;
    }
    sv->last_seq = rec->seq;
    sv->n++;
    return 0;
}

static int
ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

int
ctl_salvage(int argc, char **argv)
{
    int all = 0;
    struct salvage sv;
    memset(&sv, 0, sizeof(sv));
    sv.fd = -1;
    sv.format = HD_FMT_LINES;
    offline_opts(argc, argv, &all, &sv.format);
    if (argc - optind != 2) {
        ctl_usage();
    }
    const char *dir = argv[optind];
    const char *out = argv[optind + 1];
    struct stat st;
    int exists = stat(out, &st) == 0;
    int to_file = ends_with(out, ".log") || (exists && S_ISREG(st.st_mode));
    char parent[PATH_MAX], name[256];
    if (to_file) {
        sv.fd = open(out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
        if (sv.fd < 0) {
            fprintf(stderr, "hopperctl: salvage: %s: %s\n", out, strerror(errno));
            return EXIT_ERROR;
        }
    } else {
        if (exists) {
            fprintf(stderr,
                    "hopperctl: salvage: %s exists; OUT must be a new queue directory, or a "
                    "file (an existing regular file or a name ending in .log)\n",
                    out);
            return EXIT_ERROR;
        }
        if (split_queue_dir(out, parent, sizeof(parent), name, sizeof(name)) < 0) {
            fprintf(stderr, "hopperctl: salvage: %s: not a queue directory path\n", out);
            return EXIT_ERROR;
        }
        hopper_opts o;
        hopper_opts_init(&o);
        /* Everything goes to disk; budgets only bound admission, so make
         * them large enough for any source queue. */
        o.durability = HOPPER_DURABILITY_DISK;
        o.fsync = HOPPER_FSYNC_NEVER; /* hopper_close() fsyncs */
        o.disk_bytes = UINT64_C(1) << 50;
        o.max_record_bytes = 256u << 20;
        int rc = hopper_open(parent, name, &o, &sv.q);
        if (rc < 0) {
            fprintf(stderr, "hopperctl: salvage: open %s: %s\n", out, hopper_strerror(rc));
            return EXIT_ERROR;
        }
    }
    hopper_inspect_report rep;
    int rc = inspect_dir("salvage", dir, all ? HOPPER_INSPECT_ACKED : 0, salvage_one, &sv, &rep);
    if (rc == 0) {
        rc = salvage_flush(&sv) < 0 ? sv.err : 0;
    } else if (rc == -ECANCELED && sv.err != 0) {
        rc = sv.err;
    }
    int status = 0;
    if (rc < 0) {
        if (sv.err != 0) {
            fprintf(stderr, "hopperctl: salvage: writing %s: %s\n", out, hopper_strerror(sv.err));
        }
        status = EXIT_ERROR;
    }
    if (sv.q != NULL) {
        int crc = hopper_close(sv.q);
        if (crc < 0) {
            fprintf(stderr, "hopperctl: salvage: close %s: %s\n", out, hopper_strerror(crc));
            status = EXIT_ERROR;
        }
    } else {
        if (fdatasync(sv.fd) < 0 || close(sv.fd) < 0) {
            fprintf(stderr, "hopperctl: salvage: %s: %s\n", out, strerror(errno));
            status = EXIT_ERROR;
        }
    }
    free(sv.buf);
    if (status != 0) {
        return status;
    }
    int damaged = report_damaged(&rep, dir);
    printf("copied %llu records", (unsigned long long)sv.copied);
    if (sv.copied > 0) {
        printf(" (seq %llu..%llu)", (unsigned long long)sv.first_seq,
               (unsigned long long)sv.last_seq);
    }
    printf(" into %s %s\n", to_file ? "file" : "queue", out);
    printf("skipped: %llu corrupt frames (%llu bytes), %llu unreadable segments, %llu torn "
           "bytes; %llu records missing\n",
           (unsigned long long)rep.corrupt_frames, (unsigned long long)rep.corrupt_bytes,
           (unsigned long long)rep.unreadable_segments, (unsigned long long)rep.torn_bytes,
           (unsigned long long)rep.missing_records);
    return damaged ? EXIT_DAMAGE : 0;
}

