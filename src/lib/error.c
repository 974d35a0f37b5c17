/* SPDX-License-Identifier: MIT */
/* Error strings (one X-macro list in hopper.h, plus a table of the system's
 * errno values), version and clock helpers. */
#include "internal.h"

#include <stdio.h>
#include <time.h>

/* Every errno value the system defines, with its name and the system's
 * message (as glibc words it in the C locale), so that hopper_err_name()
 * names any -errno a file-system call can return and hopper_strerror()
 * never returns a buffer that a later strerror() call could overwrite or
 * that belongs to another thread: every string here is a literal. POSIX
 * names are always defined; the others are system-specific. */
typedef struct errno_info {
    int num;
    const char *name;
    const char *msg;
} errno_info;

static const errno_info k_errnos[] = {
#define E_(n, m) {n, #n, m},
    E_(EPERM, "Operation not permitted")
    E_(ENOENT, "No such file or directory")
    E_(ESRCH, "No such process")
    E_(EINTR, "Interrupted system call")
    E_(EIO, "Input/output error")
    E_(ENXIO, "No such device or address")
    E_(E2BIG, "Argument list too long")
    E_(ENOEXEC, "Exec format error")
    E_(EBADF, "Bad file descriptor")
    E_(ECHILD, "No child processes")
    E_(EAGAIN, "Resource temporarily unavailable")
    E_(ENOMEM, "Cannot allocate memory")
    E_(EACCES, "Permission denied")
    E_(EFAULT, "Bad address")
#ifdef ENOTBLK
    E_(ENOTBLK, "Block device required")
#endif
    E_(EBUSY, "Device or resource busy")
    E_(EEXIST, "File exists")
    E_(EXDEV, "Invalid cross-device link")
    E_(ENODEV, "No such device")
    E_(ENOTDIR, "Not a directory")
    E_(EISDIR, "Is a directory")
    E_(EINVAL, "Invalid argument")
    E_(ENFILE, "Too many open files in system")
    E_(EMFILE, "Too many open files")
    E_(ENOTTY, "Inappropriate ioctl for device")
    E_(ETXTBSY, "Text file busy")
    E_(EFBIG, "File too large")
    E_(ENOSPC, "No space left on device")
    E_(ESPIPE, "Illegal seek")
    E_(EROFS, "Read-only file system")
    E_(EMLINK, "Too many links")
    E_(EPIPE, "Broken pipe")
    E_(EDOM, "Numerical argument out of domain")
    E_(ERANGE, "Numerical result out of range")
    E_(EDEADLK, "Resource deadlock avoided")
    E_(ENAMETOOLONG, "File name too long")
    E_(ENOLCK, "No locks available")
    E_(ENOSYS, "Function not implemented")
    E_(ENOTEMPTY, "Directory not empty")
    E_(ELOOP, "Too many levels of symbolic links")
    E_(ENOMSG, "No message of desired type")
    E_(EIDRM, "Identifier removed")
#ifdef ECHRNG
    E_(ECHRNG, "Channel number out of range")
#endif
#ifdef EL2NSYNC
    E_(EL2NSYNC, "Level 2 not synchronized")
#endif
#ifdef EL3HLT
    E_(EL3HLT, "Level 3 halted")
#endif
#ifdef EL3RST
    E_(EL3RST, "Level 3 reset")
#endif
#ifdef ELNRNG
    E_(ELNRNG, "Link number out of range")
#endif
#ifdef EUNATCH
    E_(EUNATCH, "Protocol driver not attached")
#endif
#ifdef ENOCSI
    E_(ENOCSI, "No CSI structure available")
#endif
#ifdef EL2HLT
    E_(EL2HLT, "Level 2 halted")
#endif
#ifdef EBADE
    E_(EBADE, "Invalid exchange")
#endif
#ifdef EBADR
    E_(EBADR, "Invalid request descriptor")
#endif
#ifdef EXFULL
    E_(EXFULL, "Exchange full")
#endif
#ifdef ENOANO
    E_(ENOANO, "No anode")
#endif
#ifdef EBADRQC
    E_(EBADRQC, "Invalid request code")
#endif
#ifdef EBADSLT
    E_(EBADSLT, "Invalid slot")
#endif
#ifdef EBFONT
    E_(EBFONT, "Bad font file format")
#endif
    E_(ENOSTR, "Device not a stream")
    E_(ENODATA, "No data available")
    E_(ETIME, "Timer expired")
    E_(ENOSR, "Out of streams resources")
#ifdef ENONET
    E_(ENONET, "Machine is not on the network")
#endif
#ifdef ENOPKG
    E_(ENOPKG, "Package not installed")
#endif
#ifdef EREMOTE
    E_(EREMOTE, "Object is remote")
#endif
    E_(ENOLINK, "Link has been severed")
#ifdef EADV
    E_(EADV, "Advertise error")
#endif
#ifdef ESRMNT
    E_(ESRMNT, "Srmount error")
#endif
#ifdef ECOMM
    E_(ECOMM, "Communication error on send")
#endif
    E_(EPROTO, "Protocol error")
    E_(EMULTIHOP, "Multihop attempted")
#ifdef EDOTDOT
    E_(EDOTDOT, "RFS specific error")
#endif
    E_(EBADMSG, "Bad message")
    E_(EOVERFLOW, "Value too large for defined data type")
#ifdef ENOTUNIQ
    E_(ENOTUNIQ, "Name not unique on network")
#endif
#ifdef EBADFD
    E_(EBADFD, "File descriptor in bad state")
#endif
#ifdef EREMCHG
    E_(EREMCHG, "Remote address changed")
#endif
#ifdef ELIBACC
    E_(ELIBACC, "Can not access a needed shared library")
#endif
#ifdef ELIBBAD
    E_(ELIBBAD, "Accessing a corrupted shared library")
#endif
#ifdef ELIBSCN
    E_(ELIBSCN, ".lib section in a.out corrupted")
#endif
#ifdef ELIBMAX
    E_(ELIBMAX, "Attempting to link in too many shared libraries")
#endif
#ifdef ELIBEXEC
    E_(ELIBEXEC, "Cannot exec a shared library directly")
#endif
    E_(EILSEQ, "Invalid or incomplete multibyte or wide character")
#ifdef ERESTART
    E_(ERESTART, "Interrupted system call should be restarted")
#endif
#ifdef ESTRPIPE
    E_(ESTRPIPE, "Streams pipe error")
#endif
#ifdef EUSERS
    E_(EUSERS, "Too many users")
#endif
    E_(ENOTSOCK, "Socket operation on non-socket")
    E_(EDESTADDRREQ, "Destination address required")
    E_(EMSGSIZE, "Message too long")
    E_(EPROTOTYPE, "Protocol wrong type for socket")
    E_(ENOPROTOOPT, "Protocol not available")
    E_(EPROTONOSUPPORT, "Protocol not supported")
#ifdef ESOCKTNOSUPPORT
    E_(ESOCKTNOSUPPORT, "Socket type not supported")
#endif
    E_(EOPNOTSUPP, "Operation not supported")
#ifdef EPFNOSUPPORT
    E_(EPFNOSUPPORT, "Protocol family not supported")
#endif
    E_(EAFNOSUPPORT, "Address family not supported by protocol")
    E_(EADDRINUSE, "Address already in use")
    E_(EADDRNOTAVAIL, "Cannot assign requested address")
    E_(ENETDOWN, "Network is down")
    E_(ENETUNREACH, "Network is unreachable")
    E_(ENETRESET, "Network dropped connection on reset")
    E_(ECONNABORTED, "Software caused connection abort")
    E_(ECONNRESET, "Connection reset by peer")
    E_(ENOBUFS, "No buffer space available")
    E_(EISCONN, "Transport endpoint is already connected")
    E_(ENOTCONN, "Transport endpoint is not connected")
#ifdef ESHUTDOWN
    E_(ESHUTDOWN, "Cannot send after transport endpoint shutdown")
#endif
#ifdef ETOOMANYREFS
    E_(ETOOMANYREFS, "Too many references: cannot splice")
#endif
    E_(ETIMEDOUT, "Connection timed out")
    E_(ECONNREFUSED, "Connection refused")
#ifdef EHOSTDOWN
    E_(EHOSTDOWN, "Host is down")
#endif
    E_(EHOSTUNREACH, "No route to host")
    E_(EALREADY, "Operation already in progress")
    E_(EINPROGRESS, "Operation now in progress")
    E_(ESTALE, "Stale file handle")
#ifdef EUCLEAN
    E_(EUCLEAN, "Structure needs cleaning")
#endif
#ifdef ENOTNAM
    E_(ENOTNAM, "Not a XENIX named type file")
#endif
#ifdef ENAVAIL
    E_(ENAVAIL, "No XENIX semaphores available")
#endif
#ifdef EISNAM
    E_(EISNAM, "Is a named type file")
#endif
#ifdef EREMOTEIO
    E_(EREMOTEIO, "Remote I/O error")
#endif
    E_(EDQUOT, "Disk quota exceeded")
#ifdef ENOMEDIUM
    E_(ENOMEDIUM, "No medium found")
#endif
#ifdef EMEDIUMTYPE
    E_(EMEDIUMTYPE, "Wrong medium type")
#endif
    E_(ECANCELED, "Operation canceled")
#ifdef ENOKEY
    E_(ENOKEY, "Required key not available")
#endif
#ifdef EKEYEXPIRED
    E_(EKEYEXPIRED, "Key has expired")
#endif
#ifdef EKEYREVOKED
    E_(EKEYREVOKED, "Key has been revoked")
#endif
#ifdef EKEYREJECTED
    E_(EKEYREJECTED, "Key was rejected by service")
#endif
    E_(EOWNERDEAD, "Owner died")
    E_(ENOTRECOVERABLE, "State not recoverable")
#ifdef ERFKILL
    E_(ERFKILL, "Operation not possible due to RF-kill")
#endif
#ifdef EHWPOISON
    E_(EHWPOISON, "Memory page has hardware error")
#endif
    /* Aliases (the same value on Linux; the first entry of a value wins). */
    E_(ENOTSUP, "Operation not supported")
    E_(EWOULDBLOCK, "Resource temporarily unavailable")

#undef E_
};

static const errno_info *
errno_find(int err)
{
    if (err >= 0 || err <= -4096) {
        return NULL;
    }
    for (size_t i = 0; i < sizeof(k_errnos) / sizeof(k_errnos[0]); i++) {
        if (k_errnos[i].num == -err) {
            return &k_errnos[i]; /* the first entry of a value: aliases come last */
        }
    }
    return NULL;
}

const char *
hopper_strerror(int err)
{
    if (err == 0) {
        return "success";
    }
    switch (err) {
#define HP_XX_(name, val, msg)                                                                 \
    case HOPPER_##name:                                                                        \
        return msg;
        HOPPER_ERRNO_MAP(HP_XX_)
#undef HP_XX_
    default:
        break;
    }
    const errno_info *e = errno_find(err);
    return e != NULL ? e->msg : "unknown error";
}

const char *
hopper_err_name(int err)
{
    switch (err) {
    case 0:
        return "OK";
#define HP_XX_(name, val, msg)                                                                 \
    case HOPPER_##name:                                                                        \
        return #name;
        HOPPER_ERRNO_MAP(HP_XX_)
#undef HP_XX_
    default:
        break;
    }
    const errno_info *e = errno_find(err);
    return e != NULL ? e->name : "EUNKNOWN";
}

unsigned
hopper_version(void)
{
    return (HOPPER_VERSION_MAJOR << 16) | (HOPPER_VERSION_MINOR << 8) | HOPPER_VERSION_PATCH;
}

const char *
hopper_version_string(void)
{
    return HOPPER_VERSION_STRING;
}

uint64_t
hp_now_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t
hp_now_wall_ms(void)
{
    /* Record timestamps need milliseconds, not precision: the coarse clock
     * costs a few ns instead of a full vDSO clock read. */
    struct timespec ts;
#ifdef CLOCK_REALTIME_COARSE
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
#else
    clock_gettime(CLOCK_REALTIME, &ts);
#endif
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
