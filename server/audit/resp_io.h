/* append.lua's arguments in RESP, and one request and its reply on a blocking socket:
 * what the Redis audit sink needs, shared by _xadd.c (the executor thread's calls) and
 * _offload.c (the background I/O thread). Plain C but for exchange_result(): no Python
 * object is touched, so callers run it with the GIL given up. */
#ifndef PROCTOR_RESP_IO_H
#define PROCTOR_RESP_IO_H

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

static const char HASH_KEY[] = "\"hash\":\"";
#define HASH_KEY_LEN 8
#define DIGEST_LEN 64

/* The hex digest after the last `"hash":"` of the line (as Python's rfind and slice
 * would give it: up to 64 bytes, fewer at the very end), or none. */
static void find_digest(const char *line, Py_ssize_t len, const char **at, Py_ssize_t *n) {
    *at = line;
    *n = 0;
    for (Py_ssize_t i = len - HASH_KEY_LEN; i >= 0; i--) {
        if (line[i] == '"' && memcmp(line + i, HASH_KEY, HASH_KEY_LEN) == 0) {
            Py_ssize_t from = i + HASH_KEY_LEN;
            Py_ssize_t to = from + DIGEST_LEN < len ? from + DIGEST_LEN : len;
            *at = line + from;
            *n = to - from;
            return;
        }
    }
}

/* `v` in decimal at `out` (room for 20 chars); the end of what it wrote. printf is
 * several times slower. */
static char *put_decimal(char *out, long long v) {
    char tmp[24];
    int n = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *out++ = '-';
    while (n) *out++ = tmp[--n];
    return out;
}

static Py_ssize_t decimal_len(Py_ssize_t v) {
    Py_ssize_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

/* "$<n>\r\n<data>\r\n" */
static char *put_bulk(char *out, const char *data, Py_ssize_t n) {
    *out++ = '$';
    out = put_decimal(out, n);
    *out++ = '\r';
    *out++ = '\n';
    memcpy(out, data, (size_t)n);
    out += n;
    *out++ = '\r';
    *out++ = '\n';
    return out;
}

static Py_ssize_t bulk_size(Py_ssize_t n) { return 1 + decimal_len(n) + 2 + n + 2; }

enum { XCH_OK, XCH_REPLY_ERROR, XCH_CLOSED, XCH_TIMEOUT, XCH_OS, XCH_PROTOCOL };
#define REPLY_CAP 4096 /* an integer reply or an error message; more is a protocol error */

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for `events` on fd until `deadline`: XCH_OK (ready, or an error the next send or
 * recv reports), XCH_TIMEOUT, or XCH_OS with *err set. */
static int wait_fd(int fd, short events, long long deadline, int *err) {
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0) return XCH_TIMEOUT;
        struct pollfd p = {fd, events, 0};
        int r = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (r > 0) return XCH_OK;
        if (r == 0) return XCH_TIMEOUT;
        if (errno != EINTR) {
            *err = errno;
            return XCH_OS;
        }
    }
}

static int send_all(int fd, const char *buf, Py_ssize_t len, long long deadline, int *err) {
    while (len > 0) {
        ssize_t n = send(fd, buf, (size_t)len, MSG_NOSIGNAL);
        if (n > 0) {
            buf += n;
            len -= n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int w = wait_fd(fd, POLLOUT, deadline, err);
            if (w != XCH_OK) return w;
        } else {
            *err = n < 0 ? errno : EPIPE;
            return XCH_OS;
        }
    }
    return XCH_OK;
}

/* Read one reply: an integer (into *value) or an error (its text into msg). Anything
 * else, or bytes after the reply (nothing else was asked), is a protocol error. */
static int read_reply(int fd, long long deadline, long long *value, char *msg,
                      size_t *msg_len, int *err) {
    char buf[REPLY_CAP];
    size_t have = 0;
    for (;;) {
        int w = wait_fd(fd, POLLIN, deadline, err);
        if (w != XCH_OK) return w;
        ssize_t n = recv(fd, buf + have, sizeof buf - have, 0);
        if (n == 0) return XCH_CLOSED;
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
            *err = errno;
            return XCH_OS;
        }
        have += (size_t)n;
        char *end = memmem(buf, have, "\r\n", 2);
        if (end == NULL) {
            if (have == sizeof buf) break;
            continue;
        }
        if ((size_t)(end - buf) + 2 != have) break;
        if (buf[0] == '-') {
            *msg_len = (size_t)(end - buf) - 1;
            memcpy(msg, buf + 1, *msg_len);
            return XCH_REPLY_ERROR;
        }
        if (buf[0] != ':' || end == buf + 1) break;
        const char *d = buf + 1;
        int negative = *d == '-';
        if (negative) d++;
        long long v = 0;
        if (d == end) break;
        for (; d < end; d++) {
            if (*d < '0' || *d > '9' || v > (LLONG_MAX - 9) / 10) goto protocol;
            v = v * 10 + (*d - '0');
        }
        *value = negative ? -v : v;
        return XCH_OK;
    }
protocol:
    *msg_len = have < 64 ? have : 64;
    memcpy(msg, buf, *msg_len);
    return XCH_PROTOCOL;
}

/* The (replies, kind, message) a caller gets back, from what an exchange gathered:
 * `done` integer replies in values, and the failure's kind, text and errno. */
static PyObject *exchange_result(const long long *values, Py_ssize_t done, int kind,
                                 const char *msg, size_t msg_len, int err, int timeout_ms) {
    PyObject *replies = PyList_New(done);
    for (Py_ssize_t i = 0; replies != NULL && i < done; i++) {
        PyObject *v = PyLong_FromLongLong(values[i]);
        if (v == NULL) Py_CLEAR(replies);
        else PyList_SET_ITEM(replies, i, v);
    }
    if (replies == NULL) return NULL;
    PyObject *text;
    switch (kind) {
    case XCH_OK: text = PyUnicode_FromString(""); break;
    case XCH_REPLY_ERROR:
        text = PyUnicode_DecodeUTF8(msg, (Py_ssize_t)msg_len, "replace");
        break;
    case XCH_CLOSED: text = PyUnicode_FromString("connection closed by the server"); break;
    case XCH_TIMEOUT: text = PyUnicode_FromFormat("no reply within %d ms", timeout_ms); break;
    case XCH_OS: text = PyUnicode_FromString(strerror(err)); break;
    default: {
        PyObject *seen = PyBytes_FromStringAndSize(msg, (Py_ssize_t)msg_len);
        text = seen == NULL ? NULL : PyUnicode_FromFormat("unexpected reply %R", seen);
        Py_XDECREF(seen);
    }
    }
    if (text == NULL) {
        Py_DECREF(replies);
        return NULL;
    }
    return Py_BuildValue("(NiN)", replies, kind, text);
}

#endif
