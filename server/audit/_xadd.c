/* The C twin of server/audit/redis_sink.py's xadd_fields_py: the ARGV triples of
 * lua/append.lua (seq, hash, stored line, each a RESP bulk string) for a run of events.
 *
 * Why: the Redis sink's writer thread packs every event of a batch into one command,
 * and it holds the GIL while it does. In Python that is ~1.8 us an event, so a
 * batch of a few hundred events kept the event loop waiting for the GIL for the
 * better part of a millisecond, again and again; here it is a copy of each line.
 * tests/audit/test_redis_sink.py holds the two twins to the same bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

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
 * several times slower, and this runs six times an event. */
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

/* One event's parts: seq (as decimal), digest and line (its trailing newline left out).
 * The item is any tuple whose last two members are seq (int) and line (bytes): a
 * Sealed (writer, seq, line) or a (seq, line) pair. */
typedef struct {
    char seq[24];
    Py_ssize_t seq_len;
    const char *digest;
    Py_ssize_t digest_len;
    const char *line;
    Py_ssize_t line_len;
} Parts;

static int parts_of(PyObject *item, Parts *p) {
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 2) {
        PyErr_SetString(PyExc_TypeError, "xadd_fields: items must be (..., seq, line) tuples");
        return -1;
    }
    Py_ssize_t size = PyTuple_GET_SIZE(item);
    PyObject *seq = PyTuple_GET_ITEM(item, size - 2);
    PyObject *line = PyTuple_GET_ITEM(item, size - 1);
    if (!PyLong_Check(seq) || !PyBytes_Check(line)) {
        PyErr_SetString(PyExc_TypeError, "xadd_fields: seq must be an int and line bytes");
        return -1;
    }
    long long v = PyLong_AsLongLong(seq);
    if (v == -1 && PyErr_Occurred()) return -1;
    p->seq_len = put_decimal(p->seq, v) - p->seq;
    p->line = PyBytes_AS_STRING(line);
    p->line_len = PyBytes_GET_SIZE(line);
    if (p->line_len && p->line[p->line_len - 1] == '\n') p->line_len--;
    /* the digest is searched in the whole line, newline included, as the twin does */
    find_digest(p->line, PyBytes_GET_SIZE(line), &p->digest, &p->digest_len);
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

static PyObject *xadd_fields(PyObject *module, PyObject *args) {
    PyObject *items;
    Py_ssize_t start, stop;
    if (!PyArg_ParseTuple(args, "O!nn", &PyList_Type, &items, &start, &stop)) return NULL;
    Py_ssize_t count = PyList_GET_SIZE(items);
    if (start < 0) start = 0;
    if (stop > count) stop = count;
    if (stop <= start) return PyBytes_FromStringAndSize(NULL, 0);
    /* each event's parts once: the sizes first, then the bytes, from the same parts */
    Py_ssize_t n = stop - start, size = 0;
    Parts *parts = PyMem_Malloc((size_t)n * sizeof(Parts));
    if (parts == NULL) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        Parts *p = &parts[i];
        if (parts_of(PyList_GET_ITEM(items, start + i), p) < 0) {
            PyMem_Free(parts);
            return NULL;
        }
        size += bulk_size(p->seq_len) + bulk_size(p->digest_len) + bulk_size(p->line_len);
    }
    /* the lines the parts point into are held by `items`, which nothing here changes */
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out != NULL) {
        char *w = PyBytes_AS_STRING(out);
        for (Py_ssize_t i = 0; i < n; i++) {
            w = put_bulk(w, parts[i].seq, parts[i].seq_len);
            w = put_bulk(w, parts[i].digest, parts[i].digest_len);
            w = put_bulk(w, parts[i].line, parts[i].line_len);
        }
    }
    PyMem_Free(parts);
    return out;
}

static PyMethodDef methods[] = {
    {"xadd_fields", xadd_fields, METH_VARARGS,
     "xadd_fields(items, start, stop) -> bytes: append.lua's (seq, hash, line) bulk strings "
     "for items[start:stop]"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_xadd", "The Redis audit sink's command packing, in C.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__xadd(void) { return PyModule_Create(&module_def); }
