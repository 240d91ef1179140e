/* openat2(2) for static files (cycle/static_open.py): one syscall, without
 * the ctypes call that costs more than the open itself (about 20 us a call
 * against 1 here). RESOLVE_BENEATH makes the kernel refuse any path that
 * leads out of dirfd ("..", an absolute symlink, a symlink out), so the check
 * and the open are one step. */
#include "fastpath.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_openat2
#if defined(__x86_64__) || defined(__aarch64__)
#define SYS_openat2 437
#endif
#endif

struct fp_open_how {
    uint64_t flags, mode, resolve;
};

/* openat2(2) with the GIL released: the descriptor, or -errno (-ENOSYS
 * where the platform has no openat2). */
int fp_openat2(int dirfd, const char *path, unsigned long long flags,
               unsigned long long resolve)
{
#ifdef SYS_openat2
    struct fp_open_how how = {flags, 0, resolve};
    long fd;
    Py_BEGIN_ALLOW_THREADS
    fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    Py_END_ALLOW_THREADS
    return fd >= 0 ? (int)fd : -errno;
#else
    (void)dirfd; (void)path; (void)flags; (void)resolve;
    return -ENOSYS;
#endif
}

/* openat2(dirfd, path, flags, resolve) -> the descriptor, or -errno (no
 * exception: a missing file is the common answer). -ENOSYS where the
 * platform has no openat2. */
PyObject *fp_openat2_py(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    int dirfd;
    unsigned long long flags, resolve;
    const char *path;

    if (nargs != 4 || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "openat2(dirfd, path: bytes, flags, resolve)");
        return NULL;
    }
    dirfd = (int)PyLong_AsLong(args[0]);
    flags = PyLong_AsUnsignedLongLong(args[2]);
    resolve = PyLong_AsUnsignedLongLong(args[3]);
    if (PyErr_Occurred())
        return NULL;
    path = PyBytes_AS_STRING(args[1]);
    if ((size_t)PyBytes_GET_SIZE(args[1]) != strlen(path))
        return PyLong_FromLong(-EINVAL); /* a NUL inside: never a file */
    return PyLong_FromLong(fp_openat2(dirfd, path, flags, resolve));
}
