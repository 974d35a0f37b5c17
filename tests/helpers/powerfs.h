/* SPDX-License-Identifier: MIT */
/* powerfs: a test-only model of the page cache under fsio, for simulated
 * power loss (in the spirit of SQLite's crash tests and ALICE/CrashMonkey).
 *
 * Design: record, then replay. While attached, the model records every call
 * of fsio that changed the file system (hp_fs_trace_hook: open/create,
 * write with offset and bytes, ftruncate, fsync/fdatasync, rename, unlink,
 * mkdir, directory fsync), the start of every fsync (hp_fault_hook, by
 * thread) and the test's own markers ("send returned 0", ...), all in one
 * ordered log. The library works on real files meanwhile; nothing is
 * intercepted or changed. A power cut "before log entry k" is then built
 * offline by replaying entries [0, k) into a model of what the disk holds:
 *   - each file (inode) has durable content and a list of pending writes and
 *     truncations; fsync/fdatasync of the file makes them durable;
 *   - the queue directory has a durable name table; create, rename and
 *     unlink change the current table and become durable only when the
 *     directory is fsynced; the queue directory itself exists durably only
 *     once its parent was fsynced after the mkdir.
 * A strict image holds the durable state only. A torn image also applies a
 * random part of what was pending, as a kernel may have written some of it
 * back: a prefix of the directory operations, and per file one of none, all,
 * a prefix of the writes (the next one cut at a byte), the next write as
 * zeros (size updated, data not), the next write's partial 4 KiB page as
 * garbage, or any subset of the 4 KiB pages (writeback out of order).
 * Bytes a write did not cover are never changed (powersafe overwrite, as
 * SQLite assumes): a torn page garbles only bytes that were being written.
 *
 * One model records at a time. Attach before hopper_open (it installs the
 * hooks, plain globals of fsio); detach at any time, even with the queue and
 * its threads running (it only stops the recording); free the model after
 * hopper_close (that removes the hooks). */
#ifndef HOPPER_TESTS_HELPERS_POWERFS_H
#define HOPPER_TESTS_HELPERS_POWERFS_H
#include <stddef.h>
#include <stdint.h>

/* Log entry kinds. */
enum {
    HP_PFS_OPEN = 1, /* fd = new fd, dirfd, name, flags */
    HP_PFS_WRITE,    /* fd, off, data/len */
    HP_PFS_TRUNC,    /* fd, off = new length */
    HP_PFS_FSYNC,    /* fd (fsync or fdatasync); seg = 1 when the file is named *.hseg */
    HP_PFS_FSYNC_DIR, /* fd */
    HP_PFS_RENAME,   /* dirfd, name -> name2 */
    HP_PFS_UNLINK,   /* dirfd, name */
    HP_PFS_MKDIR,    /* name = path */
    HP_PFS_FSYNC_BEGIN, /* an fsync is about to start in thread `tid` */
    HP_PFS_MARK,     /* the test's marker: mark, a, b */
};

typedef struct hp_pfs_ev {
    int kind;
    int tid;         /* the thread, numbered 1, 2, ... per model */
    uint64_t t_ns;   /* CLOCK_MONOTONIC when logged */
    int fd;
    int dirfd;
    int flags;
    char *name;
    char *name2;
    uint8_t *data;
    size_t len;
    uint64_t off;
    int mark;
    uint64_t a;
    uint64_t b;
    /* Filled by replay (hp_pfs_annotate): FSYNC of a file named *.hseg, and
     * for it the index of the FSYNC_BEGIN of the same thread. */
    int seg;
    size_t begin;
} hp_pfs_ev;

typedef struct hp_pfs hp_pfs;

/* A model of `parent`/`qname` (the queue directory; `parent` is taken as
 * durable). NULL on allocation failure. */
hp_pfs *hp_pfs_new(const char *parent, const char *qname);
/* Free the model; removes the hooks if it installed them (no queue may be
 * open then). */
void hp_pfs_free(hp_pfs *p);
/* Take what parent/qname holds now as the durable starting state (a queue
 * directory left by an earlier power cut). 0 or -errno. */
int hp_pfs_load(hp_pfs *p);
/* Start recording (installs both hooks; no queue may be open). `inner` is
 * consulted after the model's own fault hook while recording (for example to
 * inject ENOSPC); may be NULL. */
void hp_pfs_attach(hp_pfs *p, int (*inner)(const char *op));
/* Stop recording (the hooks stay, idle, until hp_pfs_free). */
void hp_pfs_detach(hp_pfs *p);
/* Append a marker; returns its log index. Thread-safe. */
size_t hp_pfs_mark(hp_pfs *p, int mark, uint64_t a, uint64_t b);
/* Entries logged so far. Thread-safe. */
size_t hp_pfs_count(hp_pfs *p);
/* Entry i (only once detached). */
const hp_pfs_ev *hp_pfs_at(const hp_pfs *p, size_t i);
/* Replay the whole log once to fill hp_pfs_ev.seg and .begin. */
void hp_pfs_annotate(hp_pfs *p);

/* One file of a crash image. */
typedef struct hp_pfs_file {
    char *name;
    uint8_t *data;
    size_t len;
} hp_pfs_file;

typedef struct hp_pfs_image {
    int has_qdir;      /* the queue directory survived */
    hp_pfs_file *files;
    size_t n;
    char how[512];     /* what was torn, for failure messages */
} hp_pfs_image;

/* hp_pfs_load from memory (a harness whose queue directory is not on disk):
 * the queue directory exists and holds these n files (copied). 0 or -ENOMEM. */
int hp_pfs_load_files(hp_pfs *p, const hp_pfs_file *files, size_t n);

/* Crash images in increasing cut order: a cursor replays the log once. */
typedef struct hp_pfs_cursor hp_pfs_cursor;
hp_pfs_cursor *hp_pfs_cursor_new(hp_pfs *p);
void hp_pfs_cursor_free(hp_pfs_cursor *c);
/* Advance to just before log entry `cut` (never backwards) and build the
 * image: strict when rng is NULL, torn (drawing from *rng) otherwise.
 * 0 or -ENOMEM/-EINVAL. */
int hp_pfs_image_at(hp_pfs_cursor *c, size_t cut, uint64_t *rng, hp_pfs_image *img);
/* Write an image as parent/qname (parent must exist; nothing is written when
 * the queue directory did not survive). 0 or -errno. */
int hp_pfs_image_write(const hp_pfs_image *img, const char *parent, const char *qname);
void hp_pfs_image_free(hp_pfs_image *img);

#endif
