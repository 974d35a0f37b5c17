/* SPDX-License-Identifier: MIT */
/* The queue's checkpoint file (FORMAT.md §4): where the acknowledged
 * position is kept, and how it reaches the disk. State and locking:
 * queue_int.h; every function here is [consumer] and runs without `mu`
 * (hopper_open and hopper_close call them when no other thread runs).
 *
 * Two slots, overwritten in place. A version-2 file has two 32-byte slots
 * 4096 bytes apart, each with a generation number; readers take the valid
 * slot of the newer generation. One slot (`ckpt_w`) is the working slot,
 * the other holds the last durable position and is never written while it
 * is the only durable one:
 *   mark     pwrite the working slot (generation g+1), no fsync: cheap, often
 *            (hopper_ack every HP_CKPT_MARK_RECORDS records or HP_CKPT_MARK_NS,
 *            and before the consumer waits); survives a kill -9, which keeps
 *            the page cache
 *   durable  pwrite the working slot, fdatasync, then the slots swap roles:
 *            the one just synced is the durable one (g+1) and the other
 *            becomes the working slot
 * A torn write (power loss) can only damage the working slot, so a reader
 * always finds the last durable position or a later one. Writing in place
 * needs no new blocks, so a full file system cannot stop the consumer from
 * acknowledging, reclaiming and so freeing space.
 *
 * Open: a missing, version-1 or damaged file is replaced by a fresh
 * version-2 file (temp, fsync, rename, fsync dir), written before any data
 * can fill the file system. When even that finds no space, a version-1 file
 * is kept and overwritten in place with fdatasync (one slot; relies on a
 * 32-byte write within one sector not being torn), and a missing one stays
 * missing; each durable write tries the conversion again.
 *
 * ENOSPC/EDQUOT from the checkpoint is not a failure of the queue: the old
 * checkpoint stays valid, reclaim waits, and the write is tried again later.
 * Any other error is sticky (STYLE §6 rule 5).
 */
#include "queue_int.h"

#include "fsio.h"

#include <fcntl.h>
#include <stdlib.h>

/* A durable write that found no space is not tried again before this. */
#define CKPT_RETRY_NS 100000000ull

/* Create a version-2 file (positions in slot 0, generation 1; slot 1 empty)
 * under the checkpoint's name, atomically, and open it. 0 or -errno. */
static int
ckpt_create(hopper_queue *q, uint64_t ack_next, uint64_t read_next)
{
    /* Zeros between and after the slots are written, not left as a hole, so
     * that the blocks are allocated now and later in-place writes need none. */
    uint8_t *img = calloc(1, HP_CKPT_FILE_SIZE);
    if (img == NULL) {
        return -ENOMEM;
    }
    hp_ckpt_encode(img, ack_next, read_next, 1);
    int rc = hp_fs_atomic_write(q->dirfd, HP_CKPT_NAME, img, HP_CKPT_FILE_SIZE);
    free(img);
    if (rc < 0) {
        return rc;
    }
    rc = hp_fs_openat(q->dirfd, HP_CKPT_NAME, O_RDWR, 0);
    if (rc < 0) {
        return rc;
    }
    hp_fs_close(q->ckpt_fd);
    q->ckpt_fd = rc;
    q->ckpt_layout = 2;
    q->ckpt_gen = 1;
    q->ckpt_w = 1;
    return 0;
}

int
hp_q_ckpt_open(hopper_queue *q, uint64_t *read_next)
{
    q->ckpt_fd = -1;
    q->ckpt_layout = 0;
    q->ack_next = 0;
    *read_next = 0;
    hp_ckpt c = {0};
    int fd;
    int orc = hp_fs_open_regular(q->dirfd, HP_CKPT_NAME, O_RDWR, &fd);
    if (orc == 1) {
        fd = -ENOENT; /* not a file (a FIFO would block the read): none */
    } else if (orc < 0) {
        fd = orc;
    }
    if (fd >= 0) {
        int rc = hp_ckpt_read_fd(fd, &c);
        if (rc < 0) {
            hp_fs_close(fd);
            return rc;
        }
        q->ckpt_fd = fd; /* kept for in-place writes when it cannot be replaced */
    } else if (fd != -ENOENT) {
        return fd;
    }
    q->ack_next = c.ack_next;
    *read_next = c.read_next;
    q->ckpt_ack = c.ack_next;
    q->ckpt_mark_ack = c.ack_next;
    q->ckpt_ns = hp_now_mono_ns();
    q->ckpt_mark_ns = q->ckpt_ns;
    uint64_t size = 0;
    if (fd >= 0) {
        HP_GUARD(hp_fs_size(fd, &size));
    }
    if (size == HP_CKPT_FILE_SIZE) {
        /* Version 2 (maybe with damaged slots): write it in place. The slot
         * read may be an unsynced mark of an earlier open; make it durable
         * before the other slot is overwritten. */
        q->ckpt_layout = 2;
        q->ckpt_gen = c.gen;
        q->ckpt_w = c.layout == 2 ? !c.slot : 0;
        return c.layout == 2 ? hp_fs_fdatasync(fd) : 0;
    }
    /* Missing, version 1 or damaged: replace it by a version-2 file. */
    int rc = ckpt_create(q, c.ack_next, c.read_next);
    if (rc == 0 || !hp_q_is_space_error(rc)) {
        return rc;
    }
    if (size == HP_CKPT_SIZE) {
        q->ckpt_layout = 1; /* keep the version-1 file and write it in place */
    } else {
        hp_fs_close(q->ckpt_fd); /* nothing to write in place */
        q->ckpt_fd = -1;
    }
    return 0;
}

/* Write the positions into the working slot of a version-2 file. [consumer] */
static int
ckpt_put_slot(hopper_queue *q, uint64_t ack_next, uint64_t read_next)
{
    uint8_t b[HP_CKPT_SIZE];
    hp_ckpt_encode(b, ack_next, read_next, q->ckpt_gen + 1);
    return hp_fs_pwrite_all(q->ckpt_fd, b, sizeof(b), (uint64_t)q->ckpt_w * HP_CKPT_SLOT_STRIDE);
}

int
hp_q_ckpt_mark(hopper_queue *q, uint64_t ack_next, uint64_t read_next)
{
    int rc = 0;
    if (q->ckpt_layout == 2) {
        rc = ckpt_put_slot(q, ack_next, read_next);
    }
    /* Also after a failure: a mark is tried again only when the ack moves. */
    q->ckpt_mark_ack = ack_next;
    q->ckpt_mark_ns = hp_now_mono_ns();
    return rc;
}

int
hp_q_ckpt_write(hopper_queue *q, uint64_t ack_next, uint64_t read_next)
{
    int rc;
    if (q->ckpt_layout != 2) {
        rc = ckpt_create(q, ack_next, read_next);
        if (rc == 0 || !hp_q_is_space_error(rc) || q->ckpt_layout != 1) {
            goto out;
        }
        /* No room for a new file: overwrite the version-1 one in place. */
        uint8_t b[HP_CKPT_SIZE];
        hp_ckpt_encode_v1(b, ack_next, read_next);
        rc = hp_fs_pwrite_all(q->ckpt_fd, b, sizeof(b), 0);
        if (rc == 0) {
            rc = hp_fs_fdatasync(q->ckpt_fd);
        }
        goto out;
    }
    /* write -> fdatasync -> swap: the slot just synced becomes the durable
     * one only once it is durable. */
    rc = ckpt_put_slot(q, ack_next, read_next);
    if (rc == 0) {
        rc = hp_fs_fdatasync(q->ckpt_fd);
    }
    if (rc == 0) {
        q->ckpt_gen++;
        q->ckpt_w = !q->ckpt_w;
    }
out:
    if (rc == 0) {
        q->ckpt_ack = ack_next;
        q->ckpt_mark_ack = ack_next;
        q->ckpt_ns = hp_now_mono_ns();
        q->ckpt_mark_ns = q->ckpt_ns;
    } else if (hp_q_is_space_error(rc)) {
        q->ckpt_retry_ns = hp_now_mono_ns() + CKPT_RETRY_NS;
    }
    return rc;
}
