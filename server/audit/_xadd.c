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
#include <string.h>

#include "resp_io.h"

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
    PyObject *out = exchange_result(values, done, kind, msg, msg_len, err, timeout_ms);
    PyMem_Free(values);
    return out;
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
