/*
 * The wire both exchanges write through (declarations in fastpath.h): every
 * byte of a response sent within socket-timeout, and the token characters
 * a header name may hold. Its own unit, so the uwsgi exchange
 * (fastpath_exchange.c) and the HTTP framing (fastpath_httphead.c) depend on
 * it and not on each other.
 */
#include "fastpath.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* Send every byte of iov[0:cnt]: one non-blocking sendmsg() in the common
 * case; when the socket buffer is full, wait for it with the GIL released,
 * all of it bounded by socket-timeout (as socket.sendall with a timeout). */
int fp_send_iov(Exchange *x, struct iovec *iov, int cnt)
{
    double deadline = -1;

    while (cnt > 0) {
        struct msghdr msg;
        ssize_t n;

        memset(&msg, 0, sizeof msg);
        msg.msg_iov = iov;
        msg.msg_iovlen = (size_t)cnt;
        n = sendmsg(x->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            struct pollfd p;
            int left_ms, r;
            if (errno == EINTR) {
                if (PyErr_CheckSignals() < 0)
                    return -1;
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                PyErr_SetFromErrno(PyExc_OSError);
                return -1;
            }
            if (deadline < 0)
                deadline = fp_now_monotonic() + x->timeout;
            left_ms = (int)((deadline - fp_now_monotonic()) * 1000) + 1;
            if (left_ms <= 0) {
                PyErr_SetString(PyExc_TimeoutError, "timed out");
                return -1;
            }
            p.fd = x->fd;
            p.events = POLLOUT;
            Py_BEGIN_ALLOW_THREADS
            r = poll(&p, 1, left_ms);
            Py_END_ALLOW_THREADS
            if (r < 0 && errno == EINTR) {
                if (PyErr_CheckSignals() < 0)
                    return -1;
            } else if (r < 0) {
                PyErr_SetFromErrno(PyExc_OSError);
                return -1;
            } else if (r == 0) {
                PyErr_SetString(PyExc_TimeoutError, "timed out");
                return -1;
            }
            continue;
        }
        x->tx += n;
        while (cnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

const unsigned char fp_token_chars[256] = {
    /* RFC 9110 5.6.2 tchar: ! # $ % & ' * + - . ^ _ ` | ~ DIGIT ALPHA */
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1,
    ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,
    ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,
    ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1,
    ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,
    ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1,
    ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1,
    ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};
