/* SPDX-License-Identifier: MIT */
/* The page-cache model of powerfs.h: recording through the fsio hooks, and
 * the replay that builds crash images. */
#include "powerfs.h"

#include "buf.h"
#include "fsio.h"
#include "hp_test.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u

/* Threads are numbered per model, 1, 2, ... (a fsync's start and end are
 * paired by thread): a long-running process (the soak) records thousands of
 * threads over many models. */
#define MAX_TIDS 1024

struct hp_pfs {
    uint64_t serial;       /* unique per model in this process */
    _Atomic int next_tid;  /* threads numbered so far */
    char qpath[PATH_MAX];
    char parent[PATH_MAX];
    pthread_mutex_t mu;
    hp_pfs_ev *ev; /* [mu] */
    size_t n;      /* [mu] */
    size_t cap;    /* [mu] */
    /* The durable starting state (hp_pfs_load). */
    int base_qdir;
    struct base_file {
        char *name;
        uint8_t *data;
        size_t len;
    } *base;
    size_t nbase;
    size_t cbase;
};

/* out = a + "/" + b; -ENAMETOOLONG when it does not fit. */
static int
join(char *out, size_t cap, const char *a, const char *b)
{
    int n = snprintf(out, cap, "%s/%s", a, b);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* Room for one more element in the array `ptr` (n used of cap); rc = 0 or
 * -ENOMEM (the array unchanged). */
#define GROW(ptr, n, cap, rc)                                                                 \
    do {                                                                                       \
        (rc) = 0;                                                                              \
        if ((n) == (cap)) {                                                                    \
            size_t nc_ = (cap) ? (cap) * 2 : 32;                                               \
            void *nv_ = realloc((ptr), nc_ * sizeof(*(ptr)));                                  \
            if (nv_ == NULL) {                                                                 \
                (rc) = -ENOMEM;                                                                \
                break;                                                                         \
            }                                                                                  \
            (ptr) = nv_;                                                                       \
            (cap) = nc_;                                                                       \
        }                                                                                      \
    } while (0)

/* ---- recording ----------------------------------------------------------- */

/* The model recording now, NULL when none: read by the hooks in any thread,
 * so it is atomic. The hooks themselves (plain globals of fsio) are
 * installed by attach, before hopper_open, and removed by hp_pfs_free, after
 * hopper_close: never while a queue's threads may read them. */
static _Atomic(hp_pfs *) g_pfs;
static int (*g_inner)(const char *op); /* set by attach, before any queue thread */
static _Atomic uint64_t g_serial;
static _Thread_local uint64_t t_serial; /* the model t_tid belongs to */
static _Thread_local int t_tid;

/* This thread's number in model p (by serial, not address: a freed model's
 * memory may hold the next one). */
static int
my_tid(hp_pfs *p)
{
    if (t_serial != p->serial) {
        t_serial = p->serial;
        t_tid = atomic_fetch_add(&p->next_tid, 1) + 1;
        if (t_tid >= MAX_TIDS) {
            abort(); /* more threads than the replay can pair fsyncs for */
        }
    }
    return t_tid;
}

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Append a copy of *e (names and bytes duplicated); the index. Aborts on
 * allocation failure: a test model that loses entries would lie. */
static size_t
push(hp_pfs *p, const hp_pfs_ev *e)
{
    hp_pfs_ev c = *e;
    c.tid = my_tid(p);
    c.name = e->name ? strdup(e->name) : NULL;
    c.name2 = e->name2 ? strdup(e->name2) : NULL;
    c.data = NULL;
    if (e->len > 0 && e->data != NULL) {
        c.data = malloc(e->len);
        if (c.data == NULL) {
            abort();
        }
        memcpy(c.data, e->data, e->len);
    }
    if ((e->name && !c.name) || (e->name2 && !c.name2)) {
        abort();
    }
    pthread_mutex_lock(&p->mu);
    c.t_ns = now_ns();
    int grc;
    GROW(p->ev, p->n, p->cap, grc);
    if (grc < 0) {
        abort();
    }
    size_t i = p->n++;
    p->ev[i] = c;
    pthread_mutex_unlock(&p->mu);
    return i;
}

static void
on_trace(const hp_fs_event *e)
{
    hp_pfs *p = atomic_load(&g_pfs);
    if (p == NULL) {
        return;
    }
    static const struct {
        const char *op;
        int kind;
    } map[] = {{"open", HP_PFS_OPEN},      {"write", HP_PFS_WRITE},
               {"ftruncate", HP_PFS_TRUNC}, {"fsync", HP_PFS_FSYNC},
               {"fsync_dir", HP_PFS_FSYNC_DIR}, {"rename", HP_PFS_RENAME},
               {"unlink", HP_PFS_UNLINK},  {"mkdir", HP_PFS_MKDIR}};
    hp_pfs_ev ev = {0};
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (strcmp(e->op, map[i].op) == 0) {
            ev.kind = map[i].kind;
        }
    }
    if (ev.kind == 0) {
        abort(); /* fsio reports an operation the model does not know */
    }
    ev.fd = e->fd;
    ev.dirfd = e->dirfd;
    ev.flags = e->flags;
    ev.name = (char *)e->name;
    ev.name2 = (char *)e->name2;
    ev.data = (uint8_t *)e->data;
    ev.len = ev.kind == HP_PFS_WRITE ? e->len : 0;
    ev.off = e->off;
    push(p, &ev);
}

static int
on_fault(const char *op)
{
    hp_pfs *p = atomic_load(&g_pfs);
    if (p == NULL) {
        return 0;
    }
    if (strcmp(op, "fsync") == 0) {
        hp_pfs_ev ev = {.kind = HP_PFS_FSYNC_BEGIN};
        push(p, &ev);
    }
    return g_inner ? g_inner(op) : 0;
}

hp_pfs *
hp_pfs_new(const char *parent, const char *qname)
{
    hp_pfs *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return NULL;
    }
    if (strlen(parent) >= sizeof(p->parent) ||
        join(p->qpath, sizeof(p->qpath), parent, qname) < 0) {
        free(p);
        return NULL;
    }
    memcpy(p->parent, parent, strlen(parent) + 1);
    p->serial = atomic_fetch_add(&g_serial, 1) + 1;
    pthread_mutex_init(&p->mu, NULL);
    return p;
}

void
hp_pfs_free(hp_pfs *p)
{
    if (p == NULL) {
        return;
    }
    if (atomic_load(&g_pfs) == p) {
        atomic_store(&g_pfs, NULL);
    }
    if (hp_fs_trace_hook == on_trace) {
        hp_fs_trace_hook = NULL;
        hp_fault_hook = NULL;
    }
    for (size_t i = 0; i < p->n; i++) {
        free(p->ev[i].name);
        free(p->ev[i].name2);
        free(p->ev[i].data);
    }
    free(p->ev);
    for (size_t i = 0; i < p->nbase; i++) {
        free(p->base[i].name);
        free(p->base[i].data);
    }
    free(p->base);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int
hp_pfs_load(hp_pfs *p)
{
    DIR *d = opendir(p->qpath);
    if (d == NULL) {
        return errno == ENOENT ? 0 : -errno;
    }
    p->base_qdir = 1;
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        char path[PATH_MAX];
        rc = join(path, sizeof(path), p->qpath, de->d_name);
        if (rc < 0) {
            break;
        }
        uint8_t *data;
        size_t len;
        rc = hp_test_read_file(path, &data, &len);
        if (rc < 0) {
            break;
        }
        char *name = strdup(de->d_name);
        if (name != NULL) {
            GROW(p->base, p->nbase, p->cbase, rc);
        }
        if (name == NULL || rc < 0) {
            free(name);
            free(data);
            rc = -ENOMEM;
            break;
        }
        p->base[p->nbase++] = (struct base_file){.name = name, .data = data, .len = len};
    }
    closedir(d);
    return rc;
}

int
hp_pfs_load_files(hp_pfs *p, const hp_pfs_file *files, size_t n)
{
    p->base_qdir = 1;
    for (size_t i = 0; i < n; i++) {
        int rc;
        GROW(p->base, p->nbase, p->cbase, rc);
        char *name = rc == 0 ? strdup(files[i].name) : NULL;
        uint8_t *data = name != NULL ? malloc(files[i].len ? files[i].len : 1) : NULL;
        if (data == NULL) {
            free(name);
            return -ENOMEM;
        }
        if (files[i].len > 0) {
            memcpy(data, files[i].data, files[i].len);
        }
        p->base[p->nbase++] = (struct base_file){.name = name, .data = data, .len = files[i].len};
    }
    return 0;
}

void
hp_pfs_attach(hp_pfs *p, int (*inner)(const char *op))
{
    g_inner = inner;
    hp_fs_trace_hook = on_trace;
    hp_fault_hook = on_fault;
    atomic_store(&g_pfs, p);
}

void
hp_pfs_detach(hp_pfs *p)
{
    (void)p;
    atomic_store(&g_pfs, NULL);
}

size_t
hp_pfs_mark(hp_pfs *p, int mark, uint64_t a, uint64_t b)
{
    hp_pfs_ev ev = {.kind = HP_PFS_MARK, .mark = mark, .a = a, .b = b};
    return push(p, &ev);
}

size_t
hp_pfs_count(hp_pfs *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->n;
    pthread_mutex_unlock(&p->mu);
    return n;
}

const hp_pfs_ev *
hp_pfs_at(const hp_pfs *p, size_t i)
{
    return i < p->n ? &p->ev[i] : NULL;
}

/* ---- replay -------------------------------------------------------------- */

typedef struct inode {
    hp_buf dur;     /* durable content */
    size_t *pend;  /* log indices of pending WRITE/TRUNC */
    size_t np;
    size_t pcap;
} inode;

typedef struct dent {
    char *name; /* borrowed from the log (or the base) */
    int ino;
} dent;

typedef struct dtab {
    dent *v;
    size_t n;
    size_t cap;
} dtab;

enum { DOP_CREATE = 1, DOP_RENAME, DOP_UNLINK };

typedef struct dop {
    int kind;
    const char *name;
    const char *name2;
    int ino;
} dop;

/* fd targets besides inode numbers (>= 0). */
#define FD_NONE (-1)
#define FD_QDIR (-2)
#define FD_PARENT (-3)

struct hp_pfs_cursor {
    hp_pfs *p;
    size_t at; /* entries replayed */
    inode *ino;
    size_t nino;
    size_t cino;
    dtab cur;
    dtab dur;
    dop *dops; /* directory operations since the last directory fsync */
    size_t ndops;
    size_t cdops;
    int qdir_cur;
    int qdir_dur;
    int *fdmap;
    size_t nfd;
    size_t last_begin[MAX_TIDS]; /* per tid: index of its last FSYNC_BEGIN */
};

static int
dtab_find(const dtab *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->v[i].name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static int
dtab_set(dtab *t, char *name, int ino)
{
    int i = dtab_find(t, name);
    if (i >= 0) {
        t->v[i].ino = ino;
        return 0;
    }
    int rc;
    GROW(t->v, t->n, t->cap, rc);
    if (rc < 0) {
        return rc;
    }
    t->v[t->n++] = (dent){.name = name, .ino = ino};
    return 0;
}

static void
dtab_del(dtab *t, const char *name)
{
    int i = dtab_find(t, name);
    if (i >= 0) {
        t->v[i] = t->v[--t->n];
    }
}

static int
dtab_copy(dtab *to, const dtab *from)
{
    to->n = 0;
    for (size_t i = 0; i < from->n; i++) {
        int rc = dtab_set(to, from->v[i].name, from->v[i].ino);
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

static int
new_inode(hp_pfs_cursor *c)
{
    int rc;
    GROW(c->ino, c->nino, c->cino, rc);
    if (rc < 0) {
        return rc;
    }
    memset(&c->ino[c->nino], 0, sizeof(inode));
    return (int)c->nino++;
}

static int
push_dop(hp_pfs_cursor *c, int kind, const char *name, const char *name2, int ino)
{
    int rc;
    GROW(c->dops, c->ndops, c->cdops, rc);
    if (rc < 0) {
        return rc;
    }
    c->dops[c->ndops++] = (dop){.kind = kind, .name = name, .name2 = name2, .ino = ino};
    return 0;
}

static int
fdmap_set(hp_pfs_cursor *c, int fd, int target)
{
    if (fd < 0) {
        return 0;
    }
    if ((size_t)fd >= c->nfd) {
        size_t nn = c->nfd ? c->nfd : 64;
        while (nn <= (size_t)fd) {
            nn *= 2;
        }
        int *nv = realloc(c->fdmap, nn * sizeof(*nv));
        if (nv == NULL) {
            return -ENOMEM;
        }
        for (size_t i = c->nfd; i < nn; i++) {
            nv[i] = FD_NONE;
        }
        c->fdmap = nv;
        c->nfd = nn;
    }
    c->fdmap[fd] = target;
    return 0;
}

static int
fdmap_get(const hp_pfs_cursor *c, int fd)
{
    return fd >= 0 && (size_t)fd < c->nfd ? c->fdmap[fd] : FD_NONE;
}

static int
push_pend(inode *in, size_t idx)
{
    int rc;
    GROW(in->pend, in->np, in->pcap, rc);
    if (rc < 0) {
        return rc;
    }
    in->pend[in->np++] = idx;
    return 0;
}

/* Apply one pending WRITE/TRUNC entry to b. */
static int
apply_op(hp_buf *b, const hp_pfs_ev *e)
{
    if (e->kind == HP_PFS_TRUNC) {
        return hp_buf_resize(b, (size_t)e->off);
    }
    return hp_buf_put_at(b, (size_t)e->off, e->data, e->len);
}

hp_pfs_cursor *
hp_pfs_cursor_new(hp_pfs *p)
{
    hp_pfs_cursor *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    c->p = p;
    c->qdir_cur = c->qdir_dur = p->base_qdir;
    for (size_t i = 0; i < p->nbase; i++) {
        int ino = new_inode(c);
        if (ino < 0 || hp_buf_put_at(&c->ino[ino].dur, 0, p->base[i].data, p->base[i].len) < 0 ||
            dtab_set(&c->cur, p->base[i].name, ino) < 0 ||
            dtab_set(&c->dur, p->base[i].name, ino) < 0) {
            hp_pfs_cursor_free(c);
            return NULL;
        }
    }
    return c;
}

void
hp_pfs_cursor_free(hp_pfs_cursor *c)
{
    if (c == NULL) {
        return;
    }
    for (size_t i = 0; i < c->nino; i++) {
        free(c->ino[i].dur.data);
        free(c->ino[i].pend);
    }
    free(c->ino);
    free(c->cur.v);
    free(c->dur.v);
    free(c->dops);
    free(c->fdmap);
    free(c);
}

/* The name a file has now, or NULL. */
static const char *
name_of(const hp_pfs_cursor *c, int ino)
{
    for (size_t i = 0; i < c->cur.n; i++) {
        if (c->cur.v[i].ino == ino) {
            return c->cur.v[i].name;
        }
    }
    return NULL;
}

static int
ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s);
    size_t k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Replay entry i. */
static int
step(hp_pfs_cursor *c, size_t i)
{
    hp_pfs_ev *e = &c->p->ev[i];
    int rc = 0;
    switch (e->kind) {
    case HP_PFS_OPEN: {
        int target = FD_NONE;
        if (e->dirfd == AT_FDCWD) {
            if (strcmp(e->name, c->p->qpath) == 0) {
                target = FD_QDIR;
            } else if (strcmp(e->name, c->p->parent) == 0) {
                target = FD_PARENT;
            }
        } else if (fdmap_get(c, e->dirfd) == FD_QDIR) {
            int k = dtab_find(&c->cur, e->name);
            if (k >= 0) {
                target = c->cur.v[k].ino;
            } else if (e->flags & O_CREAT) {
                target = new_inode(c);
                if (target < 0) {
                    return target;
                }
                rc = dtab_set(&c->cur, e->name, target);
                if (rc == 0) {
                    rc = push_dop(c, DOP_CREATE, e->name, NULL, target);
                }
            }
            if (rc == 0 && target >= 0 && (e->flags & O_TRUNC)) {
                abort(); /* not used by the library; would need a pending entry */
            }
        }
        if (rc == 0) {
            rc = fdmap_set(c, e->fd, target);
        }
        break;
    }
    case HP_PFS_WRITE:
    case HP_PFS_TRUNC: {
        int ino = fdmap_get(c, e->fd);
        if (ino >= 0) {
            rc = push_pend(&c->ino[ino], i);
        }
        break;
    }
    case HP_PFS_FSYNC:
    case HP_PFS_FSYNC_DIR: {
        int t = fdmap_get(c, e->fd);
        if (t >= 0) {
            inode *in = &c->ino[t];
            for (size_t k = 0; k < in->np && rc == 0; k++) {
                rc = apply_op(&in->dur, &c->p->ev[in->pend[k]]);
            }
            in->np = 0;
            const char *nm = name_of(c, t);
            e->seg = e->kind == HP_PFS_FSYNC && nm != NULL && ends_with(nm, ".hseg");
            e->begin = c->last_begin[e->tid];
        } else if (t == FD_QDIR) {
            rc = dtab_copy(&c->dur, &c->cur);
            c->ndops = 0;
        } else if (t == FD_PARENT) {
            c->qdir_dur = c->qdir_cur;
        }
        break;
    }
    case HP_PFS_RENAME:
        if (fdmap_get(c, e->dirfd) == FD_QDIR) {
            int k = dtab_find(&c->cur, e->name);
            if (k >= 0) {
                int ino = c->cur.v[k].ino;
                dtab_del(&c->cur, e->name);
                rc = dtab_set(&c->cur, e->name2, ino);
                if (rc == 0) {
                    rc = push_dop(c, DOP_RENAME, e->name, e->name2, ino);
                }
            }
        }
        break;
    case HP_PFS_UNLINK:
        if (fdmap_get(c, e->dirfd) == FD_QDIR && dtab_find(&c->cur, e->name) >= 0) {
            dtab_del(&c->cur, e->name);
            rc = push_dop(c, DOP_UNLINK, e->name, NULL, -1);
        }
        break;
    case HP_PFS_MKDIR:
        if (strcmp(e->name, c->p->qpath) == 0) {
            c->qdir_cur = 1;
        }
        break;
    case HP_PFS_FSYNC_BEGIN:
        c->last_begin[e->tid] = i;
        break;
    default:
        break;
    }
    return rc;
}

void
hp_pfs_annotate(hp_pfs *p)
{
    hp_pfs_cursor *c = hp_pfs_cursor_new(p);
    if (c == NULL) {
        abort();
    }
    for (size_t i = 0; i < p->n; i++) {
        if (step(c, i) < 0) {
            abort();
        }
    }
    hp_pfs_cursor_free(c);
}

/* ---- crash images -------------------------------------------------------- */

static uint64_t
draw(uint64_t *rng, uint64_t n)
{
    return n == 0 ? 0 : hp_test_rand(rng) % n;
}

static void how(hp_pfs_image *img, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
how(hp_pfs_image *img, const char *fmt, ...)
{
    size_t k = strlen(img->how);
    if (k + 1 < sizeof(img->how)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(img->how + k, sizeof(img->how) - k, fmt, ap);
        va_end(ap);
    }
}

/* The content a file may have after the cut: durable content plus, when
 * torn, some of what was pending (see powerfs.h). `desc` says what. */
static int
torn_content(hp_pfs_cursor *c, const inode *in, uint64_t *rng, hp_buf *out, char *desc,
             size_t cap)
{
    int rc = hp_buf_put_at(out, 0, in->dur.data, in->dur.len);
    desc[0] = '\0';
    if (rc < 0 || rng == NULL || in->np == 0) {
        return rc;
    }
    const hp_pfs_ev *ev = c->p->ev;
    unsigned mode = (unsigned)draw(rng, 100);
    if (mode < 25) {
        snprintf(desc, cap, "none of %zu pending", in->np);
        return 0;
    }
    if (mode < 40) {
        for (size_t k = 0; k < in->np && rc == 0; k++) {
            rc = apply_op(out, &ev[in->pend[k]]);
        }
        snprintf(desc, cap, "all %zu pending", in->np);
        return rc;
    }
    if (mode < 85) {
        /* A prefix of the pending entries, then the next write torn. */
        size_t j = (size_t)draw(rng, in->np);
        for (size_t k = 0; k < j && rc == 0; k++) {
            rc = apply_op(out, &ev[in->pend[k]]);
        }
        const hp_pfs_ev *nx = &ev[in->pend[j]];
        snprintf(desc, cap, "%zu of %zu pending", j, in->np);
        if (rc < 0 || nx->kind != HP_PFS_WRITE || nx->len == 0) {
            return rc;
        }
        uint64_t cut = nx->off + draw(rng, nx->len);
        size_t l = strlen(desc);
        if (mode < 60) {
            /* Written up to a byte. */
            rc = hp_buf_put_at(out, (size_t)nx->off, nx->data, (size_t)(cut - nx->off));
            snprintf(desc + l, cap - l, ", next write %zu of %zu bytes",
                     (size_t)(cut - nx->off), nx->len);
        } else if (mode < 72) {
            /* The size reached the disk, the data did not. */
            if (nx->off + nx->len > out->len) {
                rc = hp_buf_resize(out, (size_t)(nx->off + nx->len));
            }
            snprintf(desc + l, cap - l, ", next write (%zu bytes) as zeros", nx->len);
        } else {
            /* Written up to a byte, the rest of that 4 KiB page garbage. */
            uint64_t pg_end = (cut / PAGE + 1) * PAGE;
            uint64_t end = nx->off + nx->len < pg_end ? nx->off + nx->len : pg_end;
            rc = hp_buf_put_at(out, (size_t)nx->off, nx->data, (size_t)(cut - nx->off));
            if (rc == 0 && end > out->len) {
                rc = hp_buf_resize(out, (size_t)end);
            }
            for (uint64_t b = cut; rc == 0 && b < end; b++) {
                out->data[b] = (uint8_t)hp_test_rand(rng);
            }
            snprintf(desc + l, cap - l, ", next write %zu of %zu bytes then %zu garbage",
                     (size_t)(cut - nx->off), nx->len, (size_t)(end - cut));
        }
        return rc;
    }
    /* Pages written back in any order: each 4 KiB page of the final content
     * independently new or old; the size either old or new. */
    hp_buf fin = {0};
    rc = hp_buf_put_at(&fin, 0, in->dur.data, in->dur.len);
    for (size_t k = 0; k < in->np && rc == 0; k++) {
        rc = apply_op(&fin, &ev[in->pend[k]]);
    }
    size_t taken = 0;
    if (rc == 0) {
        size_t size = draw(rng, 2) ? fin.len : in->dur.len;
        size_t old = out->len;
        rc = hp_buf_resize(out, size);
        for (size_t pg = 0; rc == 0 && pg * PAGE < size; pg++) {
            size_t lo = pg * PAGE;
            size_t hi = lo + PAGE < size ? lo + PAGE : size;
            if (draw(rng, 2) && lo < fin.len) {
                size_t top = hi < fin.len ? hi : fin.len;
                memcpy(out->data + lo, fin.data + lo, top - lo);
                if (top < hi) {
                    memset(out->data + top, 0, hi - top);
                }
                taken++;
            } else if (lo >= old) {
                memset(out->data + lo, 0, hi - lo);
            }
        }
        snprintf(desc, cap, "pages of %zu pending: %zu pages new, size %zu (final %zu)", in->np,
                 taken, size, fin.len);
    }
    free(fin.data);
    return rc;
}

int
hp_pfs_image_at(hp_pfs_cursor *c, size_t cut, uint64_t *rng, hp_pfs_image *img)
{
    memset(img, 0, sizeof(*img));
    if (cut < c->at || cut > c->p->n) {
        return -EINVAL;
    }
    while (c->at < cut) {
        int rc = step(c, c->at);
        if (rc < 0) {
            return rc;
        }
        c->at++;
    }
    snprintf(img->how, sizeof(img->how), "cut before entry %zu of %zu, %s", cut, c->p->n,
             rng ? "torn" : "strict");
    /* The directory: durable names, plus (torn) a prefix of what followed. */
    dtab names = {0};
    int rc = dtab_copy(&names, &c->dur);
    img->has_qdir = c->qdir_dur;
    if (rng != NULL && !c->qdir_dur && c->qdir_cur && draw(rng, 2)) {
        img->has_qdir = 1;
        how(img, "; the queue directory's mkdir applied although not durable");
    }
    if (!img->has_qdir) {
        how(img, "; no queue directory (%s)",
            c->qdir_cur ? "created, but its parent never fsynced" : "never created");
    }
    size_t ndop = 0;
    if (rng != NULL && c->ndops > 0 && draw(rng, 2)) {
        ndop = 1 + (size_t)draw(rng, c->ndops);
    }
    for (size_t k = 0; k < ndop && rc == 0; k++) {
        const dop *d = &c->dops[k];
        if (d->kind == DOP_CREATE) {
            rc = dtab_set(&names, (char *)d->name, d->ino);
        } else if (d->kind == DOP_RENAME) {
            dtab_del(&names, d->name);
            rc = dtab_set(&names, (char *)d->name2, d->ino);
        } else {
            dtab_del(&names, d->name);
        }
    }
    if (rng != NULL && c->ndops > 0) {
        how(img, "; directory ops applied %zu/%zu", ndop, c->ndops);
    }
    if (rc == 0 && img->has_qdir && names.n > 0) {
        img->files = calloc(names.n, sizeof(*img->files));
        if (img->files == NULL) {
            rc = -ENOMEM;
        }
    }
    for (size_t k = 0; rc == 0 && img->has_qdir && k < names.n; k++) {
        const inode *in = &c->ino[names.v[k].ino];
        hp_buf b = {0};
        char desc[160];
        rc = torn_content(c, in, rng, &b, desc, sizeof(desc));
        if (desc[0] != '\0') {
            how(img, "; %s: %s", names.v[k].name, desc);
        }
        img->files[img->n].name = strdup(names.v[k].name);
        img->files[img->n].data = b.data;
        img->files[img->n].len = b.len;
        img->n++;
        if (img->files[img->n - 1].name == NULL) {
            rc = -ENOMEM;
        }
    }
    free(names.v);
    if (rc < 0) {
        hp_pfs_image_free(img);
    }
    return rc;
}

int
hp_pfs_image_write(const hp_pfs_image *img, const char *parent, const char *qname)
{
    if (!img->has_qdir) {
        return 0;
    }
    char path[PATH_MAX];
    if (join(path, sizeof(path), parent, qname) < 0) {
        return -ENAMETOOLONG;
    }
    if (mkdir(path, 0700) < 0 && errno != EEXIST) {
        return -errno;
    }
    for (size_t i = 0; i < img->n; i++) {
        char fp[PATH_MAX];
        int rc = join(fp, sizeof(fp), path, img->files[i].name);
        if (rc == 0) {
            rc = hp_test_write_file(fp, img->files[i].data, img->files[i].len);
        }
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

void
hp_pfs_image_free(hp_pfs_image *img)
{
    for (size_t i = 0; i < img->n; i++) {
        free(img->files[i].name);
        free(img->files[i].data);
    }
    free(img->files);
    img->files = NULL;
    img->n = 0;
}
