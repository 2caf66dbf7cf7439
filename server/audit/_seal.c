/* The C twin of decision_body_py() in event.py: the canonical JSON of a decision
 * event, written straight into one buffer instead of through an f-string of
 * escaped pieces. Same bytes, same None cases, same UnicodeEncodeError;
 * tests/audit/test_seal_twin.py holds the two (and the generic encoder) together. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>

/* What every writer returns. DECLINE is the Python twin's `return None`. FAIL
 * means an exception is set; a TypeError or KeyError among them becomes DECLINE at
 * the end, as in the twin's `except (TypeError, KeyError)`. */
enum { FAIL = -1, OK = 0, DECLINE = 1 };

typedef struct {
    char *data;
    Py_ssize_t len, cap;
    /* The first str that will not encode (a lone surrogate). The Python twin meets
     * it only when it encodes the finished text, after every None check: so the
     * error waits until the whole event has been looked at. */
    PyObject *unencodable;
    char stack[1024]; /* a typical event fits: nothing allocated but the result */
} Buf;

static void buf_init(Buf *b) { /* not `= {0}`: that would clear 1 KiB per call */
    b->data = b->stack;
    b->len = 0;
    b->cap = sizeof b->stack;
    b->unencodable = NULL;
}

static void buf_free(Buf *b) {
    Py_XDECREF(b->unencodable);
    if (b->data != b->stack) PyMem_Free(b->data);
}

static int no_memory(void) {
    PyErr_NoMemory();
    return FAIL;
}

static int grow(Buf *b, Py_ssize_t n) {
    if (n > PY_SSIZE_T_MAX / 4 - b->len) return no_memory(); /* and so cap * 2 fits */
    Py_ssize_t want = b->len + n, cap = b->cap * 2 > want ? b->cap * 2 : want;
    char *p = b->data == b->stack ? PyMem_Malloc((size_t)cap)
                                  : PyMem_Realloc(b->data, (size_t)cap);
    if (p == NULL) return no_memory();
    if (b->data == b->stack) memcpy(p, b->stack, (size_t)b->len);
    b->data = p;
    b->cap = cap;
    return OK;
}

static inline int put(Buf *b, const char *s, Py_ssize_t n) {
    if (b->cap - b->len < n && grow(b, n) < 0) return FAIL;
    memcpy(b->data + b->len, s, (size_t)n);
    b->len += n;
    return OK;
}

/* The UTF-8 of str `s`, or NULL. A lone surrogate is remembered in `b` and its
 * error cleared (NULL with no exception: the caller writes nothing and goes on
 * looking for a reason to decline); any other error stays set. */
static const char *utf8(Buf *b, PyObject *s, Py_ssize_t *n) {
    const char *p = PyUnicode_AsUTF8AndSize(s, n);
    if (p == NULL && PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        PyErr_Clear();
        if (b->unencodable == NULL) b->unencodable = Py_NewRef(s);
    }
    return p;
}

/* After the backslash, for bytes below 0x20; 'u' means \u00XX. */
static const char SHORT_ESCAPE[32] = {
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b', 't', 'n', 'u', 'f', 'r', 'u', 'u',
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
};

/* `s` as json.encoder.encode_basestring (ensure_ascii=False) writes it. Bytes
 * from 0x80 up are parts of non-ASCII characters: they go through as they are. */
static int put_escaped(Buf *b, const char *s, Py_ssize_t n) {
    static const char hex[] = "0123456789abcdef";
    Py_ssize_t run = 0;
    if (put(b, "\"", 1) < 0) return FAIL;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        char esc[6] = {'\\', c < 0x20 ? SHORT_ESCAPE[c] : (char)c, '0', '0',
                       hex[c >> 4], hex[c & 15]};
        if (put(b, s + run, i - run) < 0 || put(b, esc, esc[1] == 'u' ? 6 : 2) < 0) return FAIL;
        run = i + 1;
    }
    return put(b, s + run, n - run) < 0 ? FAIL : put(b, "\"", 1);
}

static int put_str(Buf *b, PyObject *v) {
    if (!PyUnicode_Check(v)) /* subclasses pass: encode_basestring writes a StrEnum */
        return DECLINE;
    Py_ssize_t n;
    const char *s = utf8(b, v, &n);
    if (s == NULL) return PyErr_Occurred() ? FAIL : OK;
    return put_escaped(b, s, n);
}

/* An envelope value, already format()ted to a str, unescaped (the caller
 * guarantees it needs none), between quotes or not. */
static int put_raw(Buf *b, PyObject *v, int quoted) {
    Py_ssize_t n;
    const char *s = utf8(b, v, &n);
    if (s == NULL) return PyErr_Occurred() ? FAIL : OK;
    if ((quoted && put(b, "\"", 1) < 0) || put(b, s, n) < 0) return FAIL;
    return quoted ? put(b, "\"", 1) : OK;
}

static int put_array(Buf *b, PyObject *seq) {
    if (!PyTuple_CheckExact(seq) && !PyList_CheckExact(seq)) return DECLINE;
    if (put(b, "[", 1) < 0) return FAIL;
    /* No Python code runs in this loop, so a list cannot change under it. */
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        int r = i > 0 && put(b, ",", 1) < 0 ? FAIL : put_str(b, PySequence_Fast_GET_ITEM(seq, i));
        if (r != OK) return r;
    }
    return put(b, "]", 1);
}

static int put_int(Buf *b, PyObject *v) {
    if (!PyLong_CheckExact(v)) /* not a bool: json writes `true`, the template `True` */
        return DECLINE;
    PyObject *text = PyObject_Str(v); /* any size; past 4300 digits, ValueError as in Python */
    if (text == NULL) return FAIL;
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    int r = s == NULL ? FAIL : put(b, s, n);
    Py_DECREF(text);
    return r;
}

typedef struct {
    PyObject *key, *value;
    const char *k, *v;
    Py_ssize_t kn, vn;
} Label;

/* Code-point order: for UTF-8 without surrogates, that is byte order. */
static int label_cmp(const void *x, const void *y) {
    const Label *a = x, *b = y;
    int c = memcmp(a->k, b->k, (size_t)(a->kn < b->kn ? a->kn : b->kn));
    return c != 0 ? c : (a->kn > b->kn) - (a->kn < b->kn);
}

static int put_labels(Buf *b, PyObject *d) {
    if (!PyDict_CheckExact(d)) return DECLINE;
    Py_ssize_t n = PyDict_GET_SIZE(d), pos = 0, i = 0;
    if (n == 0) return put(b, "{}", 2);
    Label few[8], *labels = n <= 8 ? few : PyMem_Malloc(sizeof(Label) * (size_t)n);
    if (labels == NULL) return no_memory();
    PyObject *items = NULL, *k, *v;
    int r = DECLINE, exact = 1, encoded = 1; /* r: what a `goto done` here means */
    while (PyDict_Next(d, &pos, &k, &v)) {
        if (!PyUnicode_Check(k) || !PyUnicode_Check(v)) goto done;
        exact &= PyUnicode_CheckExact(k);
        labels[i].key = k;
        labels[i++].value = v;
    }
    r = FAIL;
    if (!exact && n > 1) {
        /* A str subclass may order itself: sort as the twin's sorted(items()) does.
         * That runs Python code, which may change the dict: write the sorted list. */
        if ((items = PyDict_Items(d)) == NULL || PyList_Sort(items) < 0) goto done;
        for (i = 0; i < n; i++) {
            labels[i].key = PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 0);
            labels[i].value = PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 1);
        }
    }
    for (i = 0; i < n; i++) {
        labels[i].k = utf8(b, labels[i].key, &labels[i].kn);
        labels[i].v = labels[i].k == NULL ? NULL : utf8(b, labels[i].value, &labels[i].vn);
        if (labels[i].v == NULL && PyErr_Occurred()) goto done;
        encoded &= labels[i].v != NULL;
    }
    r = OK;
    if (!encoded) goto done; /* the event ends in UnicodeEncodeError: nothing to write */
    if (exact && n > 1) qsort(labels, (size_t)n, sizeof(Label), label_cmp);
    for (i = 0; i < n && r == OK; i++) {
        if (put(b, i == 0 ? "{" : ",", 1) < 0 || put_escaped(b, labels[i].k, labels[i].kn) < 0
            || put(b, ":", 1) < 0 || put_escaped(b, labels[i].v, labels[i].vn) < 0)
            r = FAIL;
    }
    if (r == OK) r = put(b, "}", 1);
done:
    Py_XDECREF(items);
    if (labels != few) PyMem_Free(labels);
    return r;
}

/* What decision_body() writes, in canonical (sorted) key order: _DECISION_ORDER. */
enum { STR, ARRAY, LABELS, INT, QUOTED, RAW };
enum { EVENT_ID, SEQ, STAMP, WRITER_JSON, PREV, N_ENVELOPE };
#define FIELD(text, name, kind) {text, sizeof(text) - 1, name, kind, -1}
#define ENVELOPE(text, arg, kind) {text, sizeof(text) - 1, NULL, kind, arg}
static const struct {
    const char *text; /* what comes before the value */
    Py_ssize_t len;
    const char *name; /* the field's key in `f`; NULL for an envelope argument */
    int kind, arg;
} LAYOUT[] = {
    FIELD("{\"approval_id\":", "approval_id", STR),
    FIELD(",\"decision_id\":", "decision_id", STR),
    FIELD(",\"delegation_path\":", "delegation_path", ARRAY),
    FIELD(",\"derived_tags\":", "derived_tags", ARRAY),
    ENVELOPE(",\"event_id\":", EVENT_ID, QUOTED),
    FIELD(",\"kind\":\"decision\",\"labels\":", "labels", LABELS),
    FIELD(",\"latency_us\":", "latency_us", INT),
    FIELD(",\"outcome\":", "outcome", STR),
    FIELD(",\"policy_version\":", "policy_version", STR),
    ENVELOPE(",\"prev_hash\":", PREV, QUOTED),
    FIELD(",\"reason\":", "reason", STR),
    FIELD(",\"request_id\":", "request_id", STR),
    FIELD(",\"risk_tags\":", "risk_tags", ARRAY),
    FIELD(",\"rule_id\":", "rule_id", STR),
    FIELD(",\"run_id\":", "run_id", STR),
    ENVELOPE(",\"seq\":", SEQ, RAW),
    FIELD(",\"tenant\":", "tenant", STR),
    ENVELOPE(",\"time\":", STAMP, QUOTED),
    FIELD(",\"topic\":", "topic", STR),
    ENVELOPE(",\"writer\":", WRITER_JSON, RAW),
};
#define N_LAYOUT ((int)(sizeof(LAYOUT) / sizeof(LAYOUT[0])))

/* Set once at import, never changed: LAYOUT's names interned, so that a lookup in
 * a dict built from literals is a pointer compare; hashlib.sha256 and "hexdigest". */
static PyObject *KEYS[N_LAYOUT], *SHA256, *HEXDIGEST;

/* f[key] as a new reference, KeyError when missing: what f[key] does. */
static PyObject *field(PyObject *f, PyObject *key) {
    if (!PyDict_CheckExact(f)) return PyObject_GetItem(f, key);
    PyObject *v = PyDict_GetItemWithError(f, key);
    if (v == NULL && !PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, key);
    return Py_XNewRef(v);
}

/* The body into `b`, closing brace included: OK, DECLINE, or FAIL. */
static int write_body(Buf *b, PyObject *const *args, Py_ssize_t nargs, const char *name) {
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "%s() takes 6 arguments (f, event_id, seq, stamp, "
                     "writer_json, prev), %zd given", name, nargs);
        return FAIL;
    }
    PyObject *envelope[N_ENVELOPE] = {NULL};
    int r = OK;
    /* As the twin's f-string does (and free for a str): the same text for anything. */
    for (int i = 0; i < N_ENVELOPE && r == OK; i++)
        r = (envelope[i] = PyObject_Format(args[i + 1], NULL)) == NULL ? FAIL : OK;
    for (int i = 0; i < N_LAYOUT && r == OK; i++) {
        int kind = LAYOUT[i].kind;
        if (put(b, LAYOUT[i].text, LAYOUT[i].len) < 0) r = FAIL;
        else if (kind == QUOTED || kind == RAW)
            r = put_raw(b, envelope[LAYOUT[i].arg], kind == QUOTED);
        else {
            PyObject *v = field(args[0], KEYS[i]);
            r = v == NULL         ? FAIL
                : kind == STR     ? put_str(b, v)
                : kind == ARRAY   ? put_array(b, v)
                : kind == LABELS  ? put_labels(b, v)
                                  : put_int(b, v);
            Py_XDECREF(v);
        }
    }
    for (int i = 0; i < N_ENVELOPE; i++)
        Py_XDECREF(envelope[i]);
    if (r == FAIL
        && (PyErr_ExceptionMatches(PyExc_TypeError) || PyErr_ExceptionMatches(PyExc_KeyError))) {
        PyErr_Clear();
        return DECLINE;
    }
    if (r == OK && b->unencodable != NULL) {
        /* Encoding it again raises its error; it cannot succeed the second time. */
        if (PyUnicode_AsUTF8AndSize(b->unencodable, NULL) != NULL)
            PyErr_SetString(PyExc_SystemError, "_seal: a str encoded the second time");
        return FAIL;
    }
    return r == OK ? put(b, "}", 1) : r;
}

static PyObject *decision_body(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Buf b;
    buf_init(&b);
    int r = write_body(&b, args, nargs, "decision_body");
    PyObject *out = r == DECLINE ? Py_NewRef(Py_None)
                    : r == OK    ? PyBytes_FromStringAndSize(b.data, b.len)
                                 : NULL;
    buf_free(&b);
    return out;
}

/* seal_decision(..., key=None) in one call: the hash is taken and appended here,
 * which spares the Python tail's call, slice and concatenations (-0.3 us an event). */
static PyObject *decision_line(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Buf b;
    buf_init(&b);
    PyObject *out = NULL, *body = NULL, *hash = NULL, *digest = NULL, *line = NULL;
    int r = write_body(&b, args, nargs, "decision_line");
    if (r != OK) {
        out = r == DECLINE ? Py_NewRef(Py_None) : NULL;
        goto done;
    }
    Py_ssize_t n = 0;
    const char *hex = NULL;
    if ((body = PyBytes_FromStringAndSize(b.data, b.len)) != NULL
        && (hash = PyObject_CallOneArg(SHA256, body)) != NULL
        && (digest = PyObject_CallMethodNoArgs(hash, HEXDIGEST)) != NULL)
        hex = PyUnicode_AsUTF8AndSize(digest, &n);
    b.len--; /* the tail goes inside the closing brace */
    if (hex != NULL && put(&b, ",\"hash\":\"", 9) == OK && put(&b, hex, n) == OK
        && put(&b, "\"}\n", 3) == OK && (line = PyBytes_FromStringAndSize(b.data, b.len)))
        out = PyTuple_Pack(2, line, digest);
done:
    Py_XDECREF(body);
    Py_XDECREF(hash);
    Py_XDECREF(digest);
    Py_XDECREF(line);
    buf_free(&b);
    return out;
}

static PyMethodDef methods[] = {
    {"decision_body", (PyCFunction)(void (*)(void))decision_body, METH_FASTCALL,
     "decision_body(f, event_id, seq, stamp, writer_json, prev) -> bytes | None\n\n"
     "The C twin of event.decision_body_py(): the same bytes, the same None cases."},
    {"decision_line", (PyCFunction)(void (*)(void))decision_line, METH_FASTCALL,
     "decision_line(f, event_id, seq, stamp, writer_json, prev) -> (bytes, str) | None\n\n"
     "event.seal_decision(..., key=None) over decision_body(): (stored line, hash)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_seal",
    .m_doc = "C twin of the audit decision template (event.decision_body_py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__seal(void) {
    if (SHA256 == NULL) {
        for (int i = 0; i < N_LAYOUT; i++) {
            if (LAYOUT[i].name != NULL
                && (KEYS[i] = PyUnicode_InternFromString(LAYOUT[i].name)) == NULL)
                return NULL;
        }
        HEXDIGEST = PyUnicode_InternFromString("hexdigest");
        PyObject *hashlib = HEXDIGEST == NULL ? NULL : PyImport_ImportModule("hashlib");
        SHA256 = hashlib == NULL ? NULL : PyObject_GetAttrString(hashlib, "sha256");
        Py_XDECREF(hashlib);
        if (SHA256 == NULL) return NULL;
    }
    return PyModule_Create(&module);
}
