/* The C twins of server/audit/redis_sink.py's append_args_py and exchange_py: the
 * Redis sink's writer thread packs a batch into append.lua calls, then sends them and
 * reads their replies.
 *
 * Why: the writer holds the GIL while it packs, and in Python that was ~1.8 us an
 * event, so a batch of a few hundred events kept the event loop waiting for the GIL
 * for the better part of a millisecond; here it is a copy of each line. Why the
 * exchange: see below. tests/audit/test_redis_sink.py and test_append_exchange.py
 * hold each pair of twins to the same results.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
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

/* One event's parts: seq and line.
 * The item is any tuple whose last two members are seq (int) and line (bytes): a
 * Sealed (writer, seq, line) or a (seq, line) pair. */
typedef struct {
    long long seq;
    const char *line;
    Py_ssize_t line_len; /* without its newline */
    Py_ssize_t full_len;
} Parts;

static int parts_of(PyObject *item, Parts *p) {
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 2) {
        PyErr_SetString(PyExc_TypeError, "append_args: items must be (..., seq, line) tuples");
        return -1;
    }
    Py_ssize_t size = PyTuple_GET_SIZE(item);
    PyObject *seq = PyTuple_GET_ITEM(item, size - 2);
    PyObject *line = PyTuple_GET_ITEM(item, size - 1);
    if (!PyLong_Check(seq) || !PyBytes_Check(line)) {
        PyErr_SetString(PyExc_TypeError, "append_args: seq must be an int and line bytes");
        return -1;
    }
    p->seq = PyLong_AsLongLong(seq);
    if (p->seq == -1 && PyErr_Occurred()) return -1;
    p->line = PyBytes_AS_STRING(line);
    p->line_len = PyBytes_GET_SIZE(line);
    p->full_len = p->line_len;
    if (p->line_len && p->line[p->line_len - 1] == '\n') p->line_len--;
    return 0;
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

static PyObject *append_args(PyObject *module, PyObject *args) {
    PyObject *items;
    Py_ssize_t start, stop;
    if (!PyArg_ParseTuple(args, "O!nn", &PyList_Type, &items, &start, &stop)) return NULL;
    if (start < 0 || stop <= start || stop > PyList_GET_SIZE(items)) {
        PyErr_SetString(PyExc_ValueError, "append_args: need 0 <= start < stop <= len(items)");
        return NULL;
    }
    /* the run: each seq one above the last; the sizes first, then the bytes */
    Py_ssize_t cap = stop - start, n = 0, size = 0;
    Parts *parts = PyMem_Malloc((size_t)cap * sizeof(Parts));
    if (parts == NULL) return PyErr_NoMemory();
    for (; n < cap; n++) {
        Parts *p = &parts[n];
        if (parts_of(PyList_GET_ITEM(items, start + n), p) < 0) {
            PyMem_Free(parts);
            return NULL;
        }
        if (n > 0 && (p[-1].seq == LLONG_MAX || p->seq != p[-1].seq + 1)) break;
        size += bulk_size(p->line_len);
    }
    /* the first seq, and the head after the run: "<last seq>:<its digest>" */
    char first[24];
    Py_ssize_t first_len = put_decimal(first, parts[0].seq) - first;
    Parts *last = &parts[n - 1];
    const char *digest;
    Py_ssize_t digest_len;
    /* searched in the whole line, newline included, as the twin does */
    find_digest(last->line, last->full_len, &digest, &digest_len);
    char head[24 + 1 + DIGEST_LEN];
    Py_ssize_t head_len = put_decimal(head, last->seq) - head;
    head[head_len++] = ':';
    memcpy(head + head_len, digest, (size_t)digest_len);
    head_len += digest_len;
    size += bulk_size(first_len) + bulk_size(head_len);
    /* the lines the parts point into are held by `items`, which nothing here changes */
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out != NULL) {
        char *w = PyBytes_AS_STRING(out);
        w = put_bulk(w, first, first_len);
        w = put_bulk(w, head, head_len);
        for (Py_ssize_t i = 0; i < n; i++) w = put_bulk(w, parts[i].line, parts[i].line_len);
    }
    PyMem_Free(parts);
    if (out == NULL) return NULL;
    return Py_BuildValue("(Nn)", out, start + n);
}

/* ---- exchange: the append commands of a batch, sent and answered without the GIL ----
 *
 * Why: the writer thread sent each append script and read its reply through redis-py,
 * and every blocking call gave the GIL up and took it back. Taking it back while the
 * event loop runs Python waits for the loop to be forced off it (the switch interval),
 * and on a busy host the loop then waits for a CPU to run again: ~24 hand-offs a batch
 * cost Evaluate ~4% of its throughput at 8 in flight (a writer that only slept three
 * times a chunk, sending nothing, cost as much). Here the whole batch is one call that
 * gives the GIL up once. Commands still go one at a time, each after the last one's
 * reply, so other clients of the Redis never wait behind more than one script.
 */

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

static PyObject *exchange(PyObject *module, PyObject *args) {
    int fd, timeout_ms;
    PyObject *commands;
    if (!PyArg_ParseTuple(args, "iOi", &fd, &commands, &timeout_ms)) return NULL;
    /* a tuple of bytes: neither it nor its members can change while the GIL is given up */
    PyObject *held = PySequence_Tuple(commands);
    if (held == NULL) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(held);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(held, i))) {
            Py_DECREF(held);
            PyErr_SetString(PyExc_TypeError, "exchange: commands must be bytes");
            return NULL;
        }
    }
    long long *values = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(long long));
    if (values == NULL) {
        Py_DECREF(held);
        return PyErr_NoMemory();
    }
    char msg[REPLY_CAP];
    size_t msg_len = 0;
    int kind = XCH_OK, err = 0;
    Py_ssize_t done = 0;
    Py_BEGIN_ALLOW_THREADS
    for (; done < n; done++) {
        PyObject *c = PyTuple_GET_ITEM(held, done);
        long long deadline = now_ms() + timeout_ms;
        kind = send_all(fd, PyBytes_AS_STRING(c), PyBytes_GET_SIZE(c), deadline, &err);
        if (kind == XCH_OK) kind = read_reply(fd, deadline, &values[done], msg, &msg_len, &err);
        if (kind != XCH_OK) break;
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(held);
    PyObject *replies = PyList_New(done);
    for (Py_ssize_t i = 0; replies != NULL && i < done; i++) {
        PyObject *v = PyLong_FromLongLong(values[i]);
        if (v == NULL) Py_CLEAR(replies);
        else PyList_SET_ITEM(replies, i, v);
    }
    PyMem_Free(values);
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

static PyMethodDef methods[] = {
    {"append_args", append_args, METH_VARARGS,
     "append_args(items, start, stop) -> (bytes, end): append.lua's ARGV from the third on "
     "(first seq, head after the run, the lines) for the run of items[start:stop] whose seqs "
     "are consecutive, and where that run ends"},
    {"exchange", exchange, METH_VARARGS,
     "exchange(fd, commands, timeout_ms) -> (replies, kind, message): send each command and "
     "read its integer reply, in order, without the GIL; stops at the first failure. kind: "
     "0 ok, 1 error reply (message), 2 closed, 3 timeout, 4 OS error, 5 unexpected reply"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_xadd", "The Redis audit sink's command packing, in C.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__xadd(void) { return PyModule_Create(&module_def); }
