/* SPDX-License-Identifier: MIT */
/* The in-memory file system of memfs.h, and src/lib/fsio.c compiled over it
 * (at the end of this file). */
#include "memfs.h"

#include "buf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#define MEMFS_MAX_FD 1024
#define MEMFS_FIRST_FD 3 /* 0-2 are stdio, as in a process */

typedef struct mnode mnode;
typedef struct mdir mdir;

/* A regular file: alive while it has a name or an open description. */
struct mnode {
    hp_buf b; /* the file's bytes (b.len is its size) */
    int nlink;
    int nopen;
    uint64_t ino;
};

typedef struct ment {
    char *name;
    mnode *file; /* exactly one of file, sub */
    mdir *sub;
} ment;

struct mdir {
    ment *v;
    size_t n;
    size_t cap;
    mdir *parent;
    int nopen;
    int removed; /* rmdir'ed while open: freed by the last close */
    uint64_t ino;
};

/* An open file description (shared by dup). */
typedef struct ofd {
    int refs;
    int flags;
    mnode *file;
    mdir *dir;
    uint64_t pos;
    int lock; /* 0, LOCK_SH or LOCK_EX */
} ofd;

/* A directory stream (what fdopendir returns, cast to DIR *). */
typedef struct mstream {
    int fd;
    char (*names)[NAME_MAX + 1];
    unsigned char *types;
    size_t n;
    size_t at;
    struct dirent de;
} mstream;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static mdir g_root;
static ofd *g_fds[MEMFS_MAX_FD];
static uint64_t g_ino = 1;

/* ---- tree ---------------------------------------------------------------- */

static ment *
dir_find(mdir *d, const char *name)
{
    for (size_t i = 0; i < d->n; i++) {
        if (strcmp(d->v[i].name, name) == 0) {
            return &d->v[i];
        }
    }
    return NULL;
}

static int
dir_add(mdir *d, const char *name, mnode *file, mdir *sub)
{
    if (strlen(name) > NAME_MAX || strchr(name, '/') != NULL || name[0] == '\0') {
        return -EINVAL;
    }
    if (d->n == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 16;
        ment *nv = realloc(d->v, nc * sizeof(*nv));
        if (nv == NULL) {
            return -ENOMEM;
        }
        d->v = nv;
        d->cap = nc;
    }
    char *nm = strdup(name);
    if (nm == NULL) {
        return -ENOMEM;
    }
    d->v[d->n++] = (ment){.name = nm, .file = file, .sub = sub};
    return 0;
}

static void
node_put(mnode *f)
{
    if (f != NULL && f->nlink == 0 && f->nopen == 0) {
        hp_buf_free(&f->b);
        free(f);
    }
}

static void dir_free(mdir *d);

/* Remove entry e of d (its name; the node is dropped when unused). */
static void
dir_del(mdir *d, ment *e)
{
    free(e->name);
    if (e->file != NULL) {
        e->file->nlink--;
        node_put(e->file);
    }
    /* Keep the order of the rest (a listing stays in creation order). */
    size_t i = (size_t)(e - d->v);
    memmove(&d->v[i], &d->v[i + 1], (d->n - i - 1) * sizeof(*d->v));
    d->n--;
}

static void
dir_free(mdir *d)
{
    while (d->n > 0) {
        ment *e = &d->v[d->n - 1];
        if (e->sub != NULL) {
            dir_free(e->sub);
            e->sub = NULL;
        }
        dir_del(d, e);
    }
    free(d->v);
    d->v = NULL;
    d->cap = 0;
    if (d != &g_root) {
        free(d);
    }
}

/* Resolve an absolute path to its parent directory and last component.
 * "/" alone has no last component (*last = ""). */
static int
resolve_parent(const char *path, mdir **parent, char *last)
{
    if (path[0] != '/') {
        return -ENOENT; /* only absolute paths are modelled */
    }
    mdir *d = &g_root;
    const char *p = path + 1;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len > NAME_MAX) {
            return -ENAMETOOLONG;
        }
        if (slash == NULL) {
            memcpy(last, p, len);
            last[len] = '\0';
            *parent = d;
            return 0;
        }
        char comp[NAME_MAX + 1];
        memcpy(comp, p, len);
        comp[len] = '\0';
        ment *e = dir_find(d, comp);
        if (e == NULL) {
            return -ENOENT;
        }
        if (e->sub == NULL) {
            return -ENOTDIR;
        }
        d = e->sub;
        p = slash + 1;
    }
}

static ofd *
fd_get(int fd)
{
    return fd >= 0 && fd < MEMFS_MAX_FD ? g_fds[fd] : NULL;
}

/* The directory dirfd/name is relative to (AT_FDCWD: an absolute name). */
static int
at_parent(int dirfd, const char *name, mdir **parent, char *last)
{
    if (dirfd == AT_FDCWD) {
        return resolve_parent(name, parent, last);
    }
    ofd *o = fd_get(dirfd);
    if (o == NULL) {
        return -EBADF;
    }
    if (o->dir == NULL) {
        return -ENOTDIR;
    }
    if (strchr(name, '/') != NULL || strlen(name) > NAME_MAX) {
        return -EINVAL; /* the library names files in one directory */
    }
    *parent = o->dir;
    strcpy(last, name);
    return 0;
}

static int
fd_alloc(ofd *o)
{
    for (int fd = MEMFS_FIRST_FD; fd < MEMFS_MAX_FD; fd++) {
        if (g_fds[fd] == NULL) {
            g_fds[fd] = o;
            return fd;
        }
    }
    return -EMFILE;
}

static void
ofd_put(ofd *o)
{
    if (--o->refs > 0) {
        return;
    }
    if (o->file != NULL) {
        o->file->nopen--;
        node_put(o->file);
    }
    if (o->dir != NULL) {
        o->dir->nopen--;
        if (o->dir->removed && o->dir->nopen == 0) {
            dir_free(o->dir);
        }
    }
    free(o);
}

#define FAIL(err)                                                                              \
    do {                                                                                       \
        errno = (err);                                                                         \
        pthread_mutex_unlock(&g_mu);                                                           \
        return -1;                                                                             \
    } while (0)

/* ---- the calls fsio.c makes --------------------------------------------- */

static int
openat_locked(int dirfd, const char *name, int flags)
{
    mdir *parent;
    char last[NAME_MAX + 1];
    int rc = at_parent(dirfd, name, &parent, last);
    if (rc < 0) {
        return rc;
    }
    int acc = flags & O_ACCMODE;
    ofd *o = calloc(1, sizeof(*o));
    if (o == NULL) {
        return -ENOMEM;
    }
    o->refs = 1;
    o->flags = flags;
    ment *e = last[0] == '\0' ? NULL : dir_find(parent, last);
    if (last[0] == '\0' || (e != NULL && e->sub != NULL)) {
        /* A directory ("/" itself, or a subdirectory). */
        if (acc != O_RDONLY || (flags & O_CREAT)) {
            free(o);
            return (flags & O_EXCL) ? -EEXIST : -EISDIR;
        }
        o->dir = last[0] == '\0' ? &g_root : e->sub;
        o->dir->nopen++;
    } else {
        if (e != NULL && (flags & O_CREAT) && (flags & O_EXCL)) {
            free(o);
            return -EEXIST;
        }
        if (e != NULL && (flags & O_DIRECTORY)) {
            free(o);
            return -ENOTDIR;
        }
        if (e == NULL) {
            if (!(flags & O_CREAT)) {
                free(o);
                return -ENOENT;
            }
            mnode *f = calloc(1, sizeof(*f));
            if (f == NULL) {
                free(o);
                return -ENOMEM;
            }
            f->ino = ++g_ino;
            rc = dir_add(parent, last, f, NULL);
            if (rc < 0) {
                free(f);
                free(o);
                return rc;
            }
            f->nlink = 1;
            e = &parent->v[parent->n - 1];
        }
        o->file = e->file;
        o->file->nopen++;
        if ((flags & O_TRUNC) && acc != O_RDONLY) {
            o->file->b.len = 0;
        }
    }
    int fd = fd_alloc(o);
    if (fd < 0) {
        ofd_put(o);
    }
    return fd;
}

int
memfs_open(const char *path, int flags, ...)
{
    pthread_mutex_lock(&g_mu);
    int fd = openat_locked(AT_FDCWD, path, flags);
    if (fd < 0) {
        FAIL(-fd);
    }
    pthread_mutex_unlock(&g_mu);
    return fd;
}

int
memfs_openat(int dirfd, const char *name, int flags, ...)
{
    pthread_mutex_lock(&g_mu);
    int fd = openat_locked(dirfd, name, flags);
    if (fd < 0) {
        FAIL(-fd);
    }
    pthread_mutex_unlock(&g_mu);
    return fd;
}

/* Write at `at` (or at the position, or the end with O_APPEND, when at < 0;
 * Linux appends a pwrite on an O_APPEND descriptor too). */
static ssize_t
write_at(int fd, const void *p, size_t n, int64_t at)
{
    pthread_mutex_lock(&g_mu);
    ofd *o = fd_get(fd);
    if (o == NULL || (o->flags & O_ACCMODE) == O_RDONLY) {
        FAIL(EBADF);
    }
    if (o->file == NULL) {
        FAIL(EISDIR);
    }
    mnode *f = o->file;
    uint64_t off = (o->flags & O_APPEND) ? f->b.len : at < 0 ? o->pos : (uint64_t)at;
    if (off + n < off || off + n > (uint64_t)SSIZE_MAX) {
        FAIL(EFBIG);
    }
    int rc = hp_buf_put_at(&f->b, (size_t)off, p, n);
    if (rc < 0) {
        FAIL(-rc);
    }
    if (at < 0) {
        o->pos = off + n;
    }
    pthread_mutex_unlock(&g_mu);
    return (ssize_t)n;
}

ssize_t
memfs_write(int fd, const void *p, size_t n)
{
    return write_at(fd, p, n, -1);
}

ssize_t
memfs_pwrite(int fd, const void *p, size_t n, off_t off)
{
    if (off < 0) {
        errno = EINVAL;
        return -1;
    }
    return write_at(fd, p, n, (int64_t)off);
}

ssize_t
memfs_pread(int fd, void *p, size_t n, off_t off)
{
    pthread_mutex_lock(&g_mu);
    ofd *o = fd_get(fd);
    if (o == NULL || (o->flags & O_ACCMODE) == O_WRONLY) {
        FAIL(EBADF);
    }
    if (o->file == NULL) {
        FAIL(EISDIR);
    }
    if (off < 0) {
        FAIL(EINVAL);
    }
    mnode *f = o->file;
    size_t got = 0;
    if ((uint64_t)off < f->b.len) {
        got = f->b.len - (size_t)off < n ? f->b.len - (size_t)off : n;
        memcpy(p, f->b.data + off, got);
    }
    pthread_mutex_unlock(&g_mu);
    return (ssize_t)got;
}

off_t
memfs_lseek(int fd, off_t off, int whence)
{
    pthread_mutex_lock(&g_mu);
    ofd *o = fd_get(fd);
    if (o == NULL) {
        FAIL(EBADF);
    }
    int64_t base = whence == SEEK_SET   ? 0
                   : whence == SEEK_CUR ? (int64_t)o->pos
                   : whence == SEEK_END && o->file != NULL ? (int64_t)o->file->b.len
                                                           : -1;
    if (base < 0 || base + off < 0) {
        FAIL(EINVAL);
    }
    o->pos = (uint64_t)(base + off);
    pthread_mutex_unlock(&g_mu);
    return (off_t)o->pos;
}

static int
sync_fd(int fd)
{
    pthread_mutex_lock(&g_mu);
    if (fd_get(fd) == NULL) {
        FAIL(EBADF);
    }
    pthread_mutex_unlock(&g_mu);
    return 0; /* durability is powerfs's model, not ours */
}

int
memfs_fsync(int fd)
{
    return sync_fd(fd);
}

int
memfs_fdatasync(int fd)
{
    return sync_fd(fd);
}

int
memfs_renameat(int olddirfd, const char *from, int newdirfd, const char *to)
{
    pthread_mutex_lock(&g_mu);
    mdir *da;
    mdir *db;
    char a[NAME_MAX + 1];
    char b[NAME_MAX + 1];
    int rc = at_parent(olddirfd, from, &da, a);
    if (rc == 0) {
        rc = at_parent(newdirfd, to, &db, b);
    }
    if (rc < 0) {
        FAIL(-rc);
    }
    ment *src = dir_find(da, a);
    if (src == NULL) {
        FAIL(ENOENT);
    }
    if (src->sub != NULL) {
        FAIL(EXDEV); /* renaming directories is not modelled (nor used) */
    }
    ment *dst = dir_find(db, b);
    if (dst == src) {
        pthread_mutex_unlock(&g_mu);
        return 0;
    }
    if (dst != NULL && dst->sub != NULL) {
        FAIL(EISDIR);
    }
    mnode *f = src->file;
    f->nlink++; /* held while the entries move */
    if (dst != NULL) {
        dir_del(db, dst);
    }
    rc = dir_add(db, b, f, NULL);
    if (rc < 0) {
        f->nlink--;
        FAIL(-rc);
    }
    src = dir_find(da, a); /* dir_add may have moved the array */
    dir_del(da, src);
    pthread_mutex_unlock(&g_mu);
    return 0;
}

int
memfs_unlinkat(int dirfd, const char *name, int flags)
{
    pthread_mutex_lock(&g_mu);
    mdir *d;
    char last[NAME_MAX + 1];
    int rc = at_parent(dirfd, name, &d, last);
    if (rc < 0) {
        FAIL(-rc);
    }
    ment *e = dir_find(d, last);
    if (e == NULL) {
        FAIL(ENOENT);
    }
    if (e->sub != NULL || flags != 0) {
        FAIL(EISDIR); /* AT_REMOVEDIR is not used */
    }
    dir_del(d, e);
    pthread_mutex_unlock(&g_mu);
    return 0;
}

int
memfs_ftruncate(int fd, off_t len)
{
    pthread_mutex_lock(&g_mu);
    ofd *o = fd_get(fd);
    if (o == NULL || o->file == NULL || (o->flags & O_ACCMODE) == O_RDONLY) {
        FAIL(o == NULL ? EBADF : EINVAL);
    }
    if (len < 0) {
        FAIL(EINVAL);
    }
    int rc = hp_buf_resize(&o->file->b, (size_t)len);
    if (rc < 0) {
        FAIL(-rc);
    }
    pthread_mutex_unlock(&g_mu);
    return 0;
}

static int
mkdir_locked(const char *path)
{
    mdir *parent;
    char last[NAME_MAX + 1];
    int rc = resolve_parent(path, &parent, last);
    if (rc < 0) {
        return rc;
    }
    if (last[0] == '\0' || dir_find(parent, last) != NULL) {
        return -EEXIST;
    }
    mdir *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        return -ENOMEM;
    }
    d->parent = parent;
    d->ino = ++g_ino;
    rc = dir_add(parent, last, NULL, d);
    if (rc < 0) {
        free(d);
    }
    return rc;
}

int
memfs_mkdir(const char *path, mode_t mode)
{
    (void)mode;
    pthread_mutex_lock(&g_mu);
    int rc = mkdir_locked(path);
    if (rc < 0) {
        FAIL(-rc);
    }
    pthread_mutex_unlock(&g_mu);
    return 0;
}

int
memfs_rmdir(const char *path)
{
    pthread_mutex_lock(&g_mu);
    mdir *parent;
    char last[NAME_MAX + 1];
    int rc = resolve_parent(path, &parent, last);
    if (rc < 0) {
        FAIL(-rc);
    }
    ment *e = last[0] == '\0' ? NULL : dir_find(parent, last);
    if (e == NULL) {
        FAIL(last[0] == '\0' ? EBUSY : ENOENT);
    }
    if (e->sub == NULL) {
        FAIL(ENOTDIR);
    }
    mdir *d = e->sub;
    if (d->n > 0) {
        FAIL(ENOTEMPTY);
    }
    e->sub = NULL;
    dir_del(parent, e);
    if (d->nopen > 0) {
        d->removed = 1;
    } else {
        dir_free(d);
    }
    pthread_mutex_unlock(&g_mu);
    return 0;
}

int
memfs_flock(int fd, int op)
{
    pthread_mutex_lock(&g_mu);
    ofd *o = fd_get(fd);
    if (o == NULL) {
        FAIL(EBADF);
    }
    int want = op & (LOCK_SH | LOCK_EX | LOCK_UN);
    if (want == LOCK_UN) {
        o->lock = 0;
        pthread_mutex_unlock(&g_mu);
        return 0;
    }
    if (want != LOCK_SH && want != LOCK_EX) {
        FAIL(EINVAL);
    }
    for (int i = 0; i < MEMFS_MAX_FD; i++) {
        ofd *x = g_fds[i];
        if (x != NULL && x != o && x->lock != 0 && x->file == o->file && x->dir == o->dir &&
            (x->lock == LOCK_EX || want == LOCK_EX)) {
            if (!(op & LOCK_NB)) {
                FAIL(EDEADLK); /* one thread would wait for itself */
            }
            FAIL(EWOULDBLOCK);
        }
    }
    o->lock = want;
    pthread_mutex_unlock(&g_mu);
    return 0;
}

static void
fill_stat(struct stat *sb, const mnode *f, const mdir *d)
{
    memset(sb, 0, sizeof(*sb));
    if (f != NULL) {
        sb->st_mode = S_IFREG | 0600;
        sb->st_size = (off_t)f->b.len;
        sb->st_nlink = (nlink_t)f->nlink;
        sb->st_ino = (ino_t)f->ino;
    } else {
        sb->st_mode = S_IFDIR | 0700;
        sb->st_size = (off_t)(d->n * 32);
        sb->st_nlink = 2;
        sb->st_ino = (ino_t)d->ino;
    }
    sb->st_blksize = 4096;
    sb->st_blocks = (sb->st_size + 511) / 512;
}

int
memfs_fstat(int fd, struct stat *sb)
{
    pthread_mutex_lock(&g_mu);
    ofd *o = fd_get(fd);
    if (o == NULL) {
        FAIL(EBADF);
    }
    fill_stat(sb, o->file, o->dir);
    pthread_mutex_unlock(&g_mu);
    return 0;
}

static int
lookup_at(int dirfd, const char *name, mnode **f, mdir **d)
{
    mdir *parent;
    char last[NAME_MAX + 1];
    int rc = at_parent(dirfd, name, &parent, last);
    if (rc < 0) {
        return rc;
    }
    if (last[0] == '\0') {
        *f = NULL;
        *d = &g_root;
        return 0;
    }
    ment *e = dir_find(parent, last);
    if (e == NULL) {
        return -ENOENT;
    }
    *f = e->file;
    *d = e->sub;
    return 0;
}

int
memfs_fstatat(int dirfd, const char *name, struct stat *sb, int flags)
{
    (void)flags; /* there are no symlinks to follow */
    pthread_mutex_lock(&g_mu);
    mnode *f;
    mdir *d;
    int rc = lookup_at(dirfd, name, &f, &d);
    if (rc < 0) {
        FAIL(-rc);
    }
    fill_stat(sb, f, d);
    pthread_mutex_unlock(&g_mu);
    return 0;
}

int
memfs_faccessat(int dirfd, const char *name, int mode, int flags)
{
    (void)mode;
    (void)flags;
    pthread_mutex_lock(&g_mu);
    mnode *f;
    mdir *d;
    int rc = lookup_at(dirfd, name, &f, &d);
    if (rc < 0) {
        FAIL(-rc);
    }
    pthread_mutex_unlock(&g_mu);
    return 0;
}

int
memfs_dup(int fd)
{
    pthread_mutex_lock(&g_mu);
    ofd *o = fd_get(fd);
    if (o == NULL) {
        FAIL(EBADF);
    }
    int nfd = fd_alloc(o);
    if (nfd < 0) {
        FAIL(-nfd);
    }
    o->refs++;
    pthread_mutex_unlock(&g_mu);
    return nfd;
}

static int
close_locked(int fd)
{
    ofd *o = fd_get(fd);
    if (o == NULL) {
        return -EBADF;
    }
    g_fds[fd] = NULL;
    if (o->refs == 1) {
        o->lock = 0; /* the last descriptor of a description drops its flock */
    }
    ofd_put(o);
    return 0;
}

int
memfs_close(int fd)
{
    pthread_mutex_lock(&g_mu);
    int rc = close_locked(fd);
    if (rc < 0) {
        FAIL(-rc);
    }
    pthread_mutex_unlock(&g_mu);
    return 0;
}

/* The listing is taken when the stream is opened or rewound: entries made
 * or removed during a walk are seen or not, as POSIX allows either. */
static int
stream_fill(mstream *s)
{
    ofd *o = fd_get(s->fd);
    if (o == NULL || o->dir == NULL) {
        return -EBADF;
    }
    mdir *d = o->dir;
    free(s->names);
    free(s->types);
    s->names = NULL;
    s->types = NULL;
    s->n = s->at = 0;
    if (d->n == 0) {
        return 0;
    }
    s->names = malloc(d->n * sizeof(*s->names));
    s->types = malloc(d->n);
    if (s->names == NULL || s->types == NULL) {
        return -ENOMEM;
    }
    /* Newest first, as tmpfs lists. */
    for (size_t i = 0; i < d->n; i++) {
        const ment *e = &d->v[d->n - 1 - i];
        strcpy(s->names[i], e->name);
        s->types[i] = e->sub != NULL ? DT_DIR : DT_REG;
    }
    s->n = d->n;
    return 0;
}

DIR *
memfs_fdopendir(int fd)
{
    pthread_mutex_lock(&g_mu);
    ofd *o = fd_get(fd);
    if (o == NULL || o->dir == NULL) {
        errno = o == NULL ? EBADF : ENOTDIR;
        pthread_mutex_unlock(&g_mu);
        return NULL;
    }
    mstream *s = calloc(1, sizeof(*s));
    int rc = s == NULL ? -ENOMEM : 0;
    if (rc == 0) {
        s->fd = fd;
        rc = stream_fill(s);
    }
    if (rc < 0) {
        if (s != NULL) {
            free(s->names);
            free(s->types);
            free(s);
        }
        errno = -rc;
        pthread_mutex_unlock(&g_mu);
        return NULL;
    }
    pthread_mutex_unlock(&g_mu);
    return (DIR *)(void *)s;
}

void
memfs_rewinddir(DIR *d)
{
    mstream *s = (mstream *)(void *)d;
    pthread_mutex_lock(&g_mu);
    if (stream_fill(s) < 0) {
        s->n = s->at = 0; /* out of memory: an empty listing (readdir has no way to say) */
    }
    pthread_mutex_unlock(&g_mu);
}

struct dirent *
memfs_readdir(DIR *d)
{
    mstream *s = (mstream *)(void *)d;
    if (s->at >= s->n) {
        return NULL;
    }
    memset(&s->de, 0, sizeof(s->de));
    strcpy(s->de.d_name, s->names[s->at]);
    s->de.d_type = s->types[s->at];
    s->de.d_ino = (ino_t)(s->at + 1);
    s->at++;
    return &s->de;
}

int
memfs_closedir(DIR *d)
{
    mstream *s = (mstream *)(void *)d;
    int rc = memfs_close(s->fd);
    free(s->names);
    free(s->types);
    free(s);
    return rc;
}

/* ---- for the harness ----------------------------------------------------- */

int
memfs_reset(void)
{
    pthread_mutex_lock(&g_mu);
    int leaked = 0;
    for (int fd = 0; fd < MEMFS_MAX_FD; fd++) {
        if (g_fds[fd] != NULL) {
            leaked++;
            (void)close_locked(fd);
        }
    }
    dir_free(&g_root);
    memset(&g_root, 0, sizeof(g_root));
    pthread_mutex_unlock(&g_mu);
    return leaked;
}

int
memfs_open_fds(void)
{
    pthread_mutex_lock(&g_mu);
    int n = 0;
    for (int fd = 0; fd < MEMFS_MAX_FD; fd++) {
        n += g_fds[fd] != NULL;
    }
    pthread_mutex_unlock(&g_mu);
    return n;
}

static mdir *
dir_at(const char *path)
{
    mdir *parent;
    char last[NAME_MAX + 1];
    if (resolve_parent(path, &parent, last) < 0) {
        return NULL;
    }
    if (last[0] == '\0') {
        return &g_root;
    }
    ment *e = dir_find(parent, last);
    return e != NULL ? e->sub : NULL;
}

void
memfs_files_free(memfs_file *files, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(files[i].name);
        free(files[i].data);
    }
    free(files);
}

int
memfs_snapshot(const char *dir, memfs_file **files, size_t *n)
{
    *files = NULL;
    *n = 0;
    pthread_mutex_lock(&g_mu);
    mdir *d = dir_at(dir);
    if (d == NULL) {
        pthread_mutex_unlock(&g_mu);
        return -ENOENT;
    }
    memfs_file *v = d->n ? calloc(d->n, sizeof(*v)) : NULL;
    size_t k = 0;
    int rc = d->n && v == NULL ? -ENOMEM : 0;
    for (size_t i = 0; rc == 0 && i < d->n; i++) {
        const ment *e = &d->v[d->n - 1 - i]; /* newest first, as listed */
        if (e->file == NULL) {
            continue;
        }
        v[k].name = strdup(e->name);
        v[k].len = e->file->b.len;
        v[k].data = malloc(e->file->b.len ? e->file->b.len : 1);
        k++;
        if (v[k - 1].name == NULL || v[k - 1].data == NULL) {
            rc = -ENOMEM;
            break;
        }
        if (e->file->b.len > 0) {
            memcpy(v[k - 1].data, e->file->b.data, e->file->b.len);
        }
    }
    pthread_mutex_unlock(&g_mu);
    if (rc < 0) {
        memfs_files_free(v, k);
        return rc;
    }
    *files = v;
    *n = k;
    return 0;
}

int
memfs_restore(const char *dir, const memfs_file *files, size_t n)
{
    pthread_mutex_lock(&g_mu);
    mdir *d = dir_at(dir);
    if (d == NULL) {
        int rc = mkdir_locked(dir);
        d = rc == 0 ? dir_at(dir) : NULL;
        if (d == NULL) {
            pthread_mutex_unlock(&g_mu);
            return rc < 0 ? rc : -ENOENT;
        }
    }
    for (size_t i = 0; i < d->n; i++) {
        if (d->v[i].sub != NULL) {
            pthread_mutex_unlock(&g_mu);
            return -EISDIR; /* the queue_ops directory holds no directory */
        }
    }
    /* The entries in the image's order, as if its files were written one by
     * one into an emptied directory (so the listing is the one tmpfs gave
     * the harness before memfs: torn images draw per file in that order).
     * A file whose bytes are unchanged keeps its node. */
    ment *nv = n ? calloc(n, sizeof(*nv)) : NULL;
    int rc = n && nv == NULL ? -ENOMEM : 0;
    for (size_t k = 0; rc == 0 && k < n; k++) {
        ment *e = dir_find(d, files[k].name);
        mnode *f = e != NULL ? e->file : calloc(1, sizeof(*f));
        nv[k].name = strdup(files[k].name);
        if (f == NULL || nv[k].name == NULL) {
            if (e == NULL) {
                free(f);
            }
            free(nv[k].name);
            rc = -ENOMEM;
            break;
        }
        if (e == NULL) {
            f->ino = ++g_ino;
        }
        f->nlink++;
        nv[k].file = f;
        if (f->b.len == files[k].len &&
            (f->b.len == 0 || memcmp(f->b.data, files[k].data, f->b.len) == 0)) {
            continue;
        }
        f->b.len = 0;
        rc = hp_buf_put_at(&f->b, 0, files[k].data, files[k].len);
    }
    if (rc < 0) {
        for (size_t k = 0; k < n && nv[k].file != NULL; k++) {
            nv[k].file->nlink--;
            node_put(nv[k].file);
            free(nv[k].name);
        }
        free(nv);
        pthread_mutex_unlock(&g_mu);
        return rc;
    }
    while (d->n > 0) {
        dir_del(d, &d->v[d->n - 1]); /* a node the image keeps has a link there */
    }
    free(d->v);
    d->v = nv;
    d->n = d->cap = n;
    pthread_mutex_unlock(&g_mu);
    return 0;
}

/* ---- src/lib/fsio.c over memfs ------------------------------------------ */

/* Every header fsio.c includes is in by now (include guards keep them from
 * being read again), so the macros below rename only fsio.c's own calls. */
#include "fsio.h"

#define open(...) memfs_open(__VA_ARGS__)
#define openat(...) memfs_openat(__VA_ARGS__)
#define write(...) memfs_write(__VA_ARGS__)
#define pwrite(...) memfs_pwrite(__VA_ARGS__)
#define pread(...) memfs_pread(__VA_ARGS__)
#define lseek(...) memfs_lseek(__VA_ARGS__)
#define fsync(...) memfs_fsync(__VA_ARGS__)
#define fdatasync(...) memfs_fdatasync(__VA_ARGS__)
#define renameat(...) memfs_renameat(__VA_ARGS__)
#define unlinkat(...) memfs_unlinkat(__VA_ARGS__)
#define ftruncate(...) memfs_ftruncate(__VA_ARGS__)
#define mkdir(...) memfs_mkdir(__VA_ARGS__)
#define rmdir(...) memfs_rmdir(__VA_ARGS__)
#define flock(...) memfs_flock(__VA_ARGS__)
#define fstat(...) memfs_fstat(__VA_ARGS__)
#define fstatat(...) memfs_fstatat(__VA_ARGS__)
#define faccessat(...) memfs_faccessat(__VA_ARGS__)
#define dup(...) memfs_dup(__VA_ARGS__)
#define close(...) memfs_close(__VA_ARGS__)
#define fdopendir(...) memfs_fdopendir(__VA_ARGS__)
#define rewinddir(...) memfs_rewinddir(__VA_ARGS__)
#define readdir(...) memfs_readdir(__VA_ARGS__)
#define closedir(...) memfs_closedir(__VA_ARGS__)

#include "../src/lib/fsio.c"
