/* The C twin of decision_body_py() in event.py: the canonical JSON of a decision
 * event, written straight into one buffer instead of through an f-string of
 * escaped pieces. Same bytes, same None cases, same UnicodeEncodeError;
 * tests/audit/test_seal_twin.py holds the two (and the generic encoder) together.
 * seal_decisions() runs the pipeline's sealing loop over a run of such events;
 * tests/audit/test_seal_chunk.py holds it to the Python loop. */
#include "json_out.h"

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
    FIELD("\"approval_id\":", "approval_id", STR), /* after "{" and approval_error */
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
#define N_FIELDS (N_LAYOUT - N_ENVELOPE) /* DECISION_FIELDS */

/* Set once at import, never changed: LAYOUT's names interned, so that a lookup in
 * a dict built from literals is a pointer compare; hashlib.sha256, "hexdigest",
 * "new" (the id generator's method) and "decision". */
static PyObject *KEYS[N_LAYOUT], *SHA256, *HEXDIGEST, *NEW, *DECISION;

/* The keys the approval gate may add to a decision event (APPROVAL_FIELDS in
 * event.py), what comes before each value, and where canonical order puts them:
 * approval_error before approval_id (so its text ends in a comma, written after the
 * value), the others between approval_id and decision_id. */
enum { OPT_ERROR, OPT_PRESENTED, OPT_RETRY, OPT_USE, N_OPTIONAL };
static const struct {
    const char *name, *text;
    Py_ssize_t len;
} OPTIONAL[N_OPTIONAL] = {
    {"approval_error", "\"approval_error\":", 17},
    {"approval_presented", ",\"approval_presented\":", 22},
    {"approval_retry", ",\"approval_retry\":", 18},
    {"approval_use", ",\"approval_use\":", 16},
};
static PyObject *OPT_KEYS[N_OPTIONAL];

/* f[key] as a new reference, KeyError when missing: what f[key] does. */
static PyObject *field(PyObject *f, PyObject *key) {
    if (!PyDict_CheckExact(f)) return PyObject_GetItem(f, key);
    PyObject *v = PyDict_GetItemWithError(f, key);
    if (v == NULL && !PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, key);
    return Py_XNewRef(v);
}

/* f[key] as a new reference if `key in f`, else NULL and no exception: as the Python
 * twin asks (a mapping's __missing__ does not invent the key). */
static PyObject *optional_field(PyObject *f, PyObject *key) {
    if (PyDict_CheckExact(f)) return Py_XNewRef(PyDict_GetItemWithError(f, key));
    int has = PySequence_Contains(f, key);
    return has <= 0 ? NULL : PyObject_GetItem(f, key);
}

/* Optional key k of f, if f has it: a str, or for approval_retry a bool. */
static int put_optional(Buf *b, PyObject *f, int k) {
    PyObject *v = optional_field(f, OPT_KEYS[k]);
    if (v == NULL) return PyErr_Occurred() ? FAIL : OK;
    int r = put(b, OPTIONAL[k].text, OPTIONAL[k].len);
    if (r == OK && k == OPT_RETRY)
        r = !PyBool_Check(v) ? DECLINE : v == Py_True ? put(b, "true", 4) : put(b, "false", 5);
    else if (r == OK) r = put_str(b, v);
    if (r == OK && k == OPT_ERROR) r = put(b, ",", 1);
    Py_DECREF(v);
    return r;
}

/* An envelope value: a format()ted str (the twins' arguments), or text made here
 * that needs no escaping (seal_decisions), or neither: a hole, `""` whose offset
 * goes to write_body's `hole`, for a text that can only be made once the body is
 * known to be written (the event id: taking one changes the generator). */
typedef struct {
    PyObject *obj;
    const char *s;
    Py_ssize_t n;
} Envelope;

/* What write_body() returns for `r`, where the body stands (OK: all of it but the
 * closing brace). */
static int settle(Buf *b, int r) {
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

/* The body of `f` into `b`, closing brace included: OK, DECLINE, or FAIL. */
static int write_body(Buf *b, PyObject *f, const Envelope *envelope, Py_ssize_t *hole) {
    int r = put(b, "{", 1) < 0 ? FAIL : put_optional(b, f, OPT_ERROR);
    for (int i = 0; i < N_LAYOUT && r == OK; i++) {
        int kind = LAYOUT[i].kind;
        if (i == 1) /* between approval_id and decision_id */
            for (int k = OPT_PRESENTED; k <= OPT_USE && r == OK; k++) r = put_optional(b, f, k);
        if (r != OK) break;
        const Envelope *e = LAYOUT[i].name == NULL ? &envelope[LAYOUT[i].arg] : NULL;
        if (put(b, LAYOUT[i].text, LAYOUT[i].len) < 0) r = FAIL;
        else if (e != NULL && e->obj != NULL) r = put_raw(b, e->obj, kind == QUOTED);
        else if (e != NULL && e->s != NULL) r = put_text(b, e->s, e->n, kind == QUOTED);
        else if (e != NULL) {
            r = put(b, "\"\"", 2);
            *hole = b->len - 1;
        } else {
            PyObject *v = field(f, KEYS[i]);
            r = v == NULL         ? FAIL
                : kind == STR     ? put_str(b, v)
                : kind == ARRAY   ? put_array(b, v)
                : kind == LABELS  ? put_labels(b, v)
                                  : put_int(b, v);
            Py_XDECREF(v);
        }
    }
    return settle(b, r);
}

/* write_body() for the twins' arguments (f, event_id, seq, stamp, writer_json, prev). */
static int write_args(Buf *b, PyObject *const *args, Py_ssize_t nargs, const char *name) {
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "%s() takes 6 arguments (f, event_id, seq, stamp, "
                     "writer_json, prev), %zd given", name, nargs);
        return FAIL;
    }
    Envelope envelope[N_ENVELOPE] = {{NULL}};
    int r = OK;
    /* As the twin's f-string does (and free for a str): the same text for anything. */
    for (int i = 0; i < N_ENVELOPE && r == OK; i++)
        r = (envelope[i].obj = PyObject_Format(args[i + 1], NULL)) == NULL ? FAIL : OK;
    /* A format() that raises TypeError declines, as in the twin's f-string. */
    r = r == OK ? write_body(b, args[0], envelope, NULL) : settle(b, r);
    for (int i = 0; i < N_ENVELOPE; i++)
        Py_XDECREF(envelope[i].obj);
    return r;
}

/* The stored line of the body in `b`: its hash goes inside the closing brace,
 * then a newline. The line into `b`; the hex digest (a new str) into `digest`. */
static int append_hash(Buf *b, PyObject **digest) {
    PyObject *body = PyBytes_FromStringAndSize(b->data, b->len), *hash = NULL;
    Py_ssize_t n = 0;
    const char *hex = NULL;
    *digest = NULL;
    if (body != NULL && (hash = PyObject_CallOneArg(SHA256, body)) != NULL
        && (*digest = PyObject_CallMethodNoArgs(hash, HEXDIGEST)) != NULL)
        hex = PyUnicode_AsUTF8AndSize(*digest, &n);
    Py_XDECREF(body);
    Py_XDECREF(hash);
    b->len--;
    if (hex != NULL && put(b, ",\"hash\":\"", 9) == OK && put(b, hex, n) == OK
        && put(b, "\"}\n", 3) == OK)
        return OK;
    Py_CLEAR(*digest);
    return FAIL;
}

static PyObject *decision_body(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Buf b;
    buf_init(&b);
    int r = write_args(&b, args, nargs, "decision_body");
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
    PyObject *out = NULL, *digest = NULL, *line = NULL;
    int r = write_args(&b, args, nargs, "decision_line");
    if (r == DECLINE) out = Py_NewRef(Py_None);
    else if (r == OK && append_hash(&b, &digest) == OK
             && (line = PyBytes_FromStringAndSize(b.data, b.len)) != NULL)
        out = PyTuple_Pack(2, line, digest);
    Py_XDECREF(digest);
    Py_XDECREF(line);
    buf_free(&b);
    return out;
}

/* ---- seal_decisions(): the pipeline's sealing loop, for a run of decisions ----
 * Sealing runs on the event loop between calls, a few events at a time, and per
 * event the Python loop around decision_line() (the envelope's arithmetic and
 * text, the call, the tuples) cost about as much as the line itself. */

/* True when JSON writes `s` as it is: the pipeline's digests and "" always are;
 * a resumed head may not be. Only ASCII is taken here, the rest goes to Python. */
static int plain_ascii(PyObject *s) {
    if (!PyUnicode_CheckExact(s) || !PyUnicode_IS_ASCII(s)) return 0;
    const unsigned char *p = PyUnicode_DATA(s);
    for (Py_ssize_t i = 0; i < PyUnicode_GET_LENGTH(s); i++)
        if (p[i] < 0x20 || p[i] == '"' || p[i] == '\\') return 0;
    return 1;
}

static int is_decision(PyObject *kind) {
    return kind == DECISION
           || (PyUnicode_CheckExact(kind) && PyUnicode_Compare(kind, DECISION) == 0);
}


/* One decision event sealed into `b` (its stored line) and `digest`: OK, FAIL, or
 * DECLINE when the Python loop must take it instead. The loop takes the event id
 * before the template, but a declined event must leave the generator as it was
 * (the loop takes that id itself): so the body is written with a hole for the id,
 * and the id is taken only once the body stands. An exception from the template
 * declines too: the loop repeats the event and raises it after taking the id, as
 * it always has. */
static int seal_one(Buf *b, PyObject *f, long long seq, long long micros,
                    Envelope *envelope, PyObject *ids, PyObject **digest) {
    char seq_text[24], stamp[27], *end = seq_text + sizeof seq_text, *p = end;
    Py_ssize_t hole = -1, n;
    unsigned long long u = seq < 0 ? 0ULL - (unsigned long long)seq : (unsigned long long)seq;
    do *--p = (char)('0' + u % 10); while ((u /= 10) != 0);
    if (seq < 0) *--p = '-';
    if (put_stamp(micros, stamp) < 0) return DECLINE;
    envelope[SEQ] = (Envelope){NULL, p, end - p};
    envelope[STAMP] = (Envelope){NULL, stamp, sizeof stamp};
    b->len = 0;
    int r = write_body(b, f, envelope, &hole);
    Py_CLEAR(b->unencodable);
    if (r == FAIL && PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
        return DECLINE;
    }
    if (r != OK) return r;
    /* The generator is any object with new(ms); format() as the twin's f-string
     * writes the id (a str's own text). */
    PyObject *ms = PyLong_FromLongLong(micros / 1000), *id = NULL, *text = NULL;
    const char *s = NULL;
    if (ms != NULL && (id = PyObject_CallMethodOneArg(ids, NEW, ms)) != NULL
        && (text = PyObject_Format(id, NULL)) != NULL)
        s = PyUnicode_AsUTF8AndSize(text, &n); /* a surrogate raises, as in the twin */
    r = s != NULL && put_at(b, hole, s, n) == OK ? append_hash(b, digest) : FAIL;
    Py_XDECREF(ms);
    Py_XDECREF(id);
    Py_XDECREF(text);
    return r;
}

static PyObject *seal_decisions(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 9) {
        PyErr_Format(PyExc_TypeError, "seal_decisions() takes 9 arguments (items, start, "
                     "seq, prev, writer, writer_json, ids, sealed_type, out), %zd given",
                     nargs);
        return NULL;
    }
    PyObject *items = args[0], *seq_arg = args[2], *prev_arg = args[3], *writer = args[4],
             *writer_json = args[5], *ids = args[6], *out = args[8];
    PyTypeObject *sealed_type = (PyTypeObject *)args[7];
    if (!PyList_Check(items) || !PyList_Check(out) || !PyType_Check(args[7])
        || !PyType_IsSubtype(sealed_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "seal_decisions(): items and out must be lists, "
                        "sealed_type a tuple subclass");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]), i = start;
    if (start == -1 && PyErr_Occurred()) return NULL;
    if (start < 0) {
        PyErr_SetString(PyExc_ValueError, "seal_decisions(): start must be >= 0");
        return NULL;
    }
    /* What the whole run needs, else nothing is taken and the Python loop seals
     * the next event: a seq kept in a C integer, a prev_hash the template may
     * write as it is, a writer that encodes. */
    int overflow = 1;
    long long seq = PyLong_CheckExact(seq_arg) ? PyLong_AsLongLongAndOverflow(seq_arg, &overflow)
                                               : 0;
    Envelope envelope[N_ENVELOPE] = {{NULL}};
    int go = !overflow && plain_ascii(prev_arg) && PyUnicode_CheckExact(writer_json);
    if (go) {
        envelope[WRITER_JSON].s = PyUnicode_AsUTF8AndSize(writer_json, &envelope[WRITER_JSON].n);
        if (envelope[WRITER_JSON].s == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return NULL;
            PyErr_Clear();
            go = 0;
        }
    }
    Buf b;
    buf_init(&b);
    PyObject *prev = Py_NewRef(prev_arg), *result = NULL;
    for (; go && i < PyList_GET_SIZE(items) && seq < LLONG_MAX; i++) {
        /* Python code runs below (ids.new, hashlib, a str subclass's ordering): the
         * item is held, and the list's size read again each time. */
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 4) break;
        PyObject *f = PyTuple_GET_ITEM(item, 1), *when = PyTuple_GET_ITEM(item, 2);
        if (!is_decision(PyTuple_GET_ITEM(item, 0)) || !PyDict_CheckExact(f)
            || !PyFloat_CheckExact(when))
            break;
        /* DECISION_FIELDS and maybe the approval keys, nothing else (decision_sized) */
        Py_ssize_t want = N_FIELDS;
        for (int k = 0; k < N_OPTIONAL; k++) {
            PyObject *v = PyDict_GetItemWithError(f, OPT_KEYS[k]);
            if (v == NULL && PyErr_Occurred()) goto done;
            want += v != NULL;
        }
        if (PyDict_GET_SIZE(f) != want) break;
        long long micros = micros_of(PyFloat_AS_DOUBLE(when));
        if (micros < 0) break;
        envelope[PREV].s = PyUnicode_AsUTF8AndSize(prev, &envelope[PREV].n); /* ASCII */
        if (envelope[PREV].s == NULL) goto done;
        PyObject *digest = NULL, *line = NULL, *sealed = NULL;
        Py_INCREF(item);
        int r = seal_one(&b, f, seq + 1, micros, envelope, ids, &digest);
        Py_DECREF(item);
        if (r == DECLINE) break;
        if (r == OK && (line = PyBytes_FromStringAndSize(b.data, b.len)) != NULL
            && (sealed = sealed_type->tp_alloc(sealed_type, 3)) != NULL) {
            /* As tuple.__new__(Sealed, (writer, seq, line)) fills it. */
            PyTuple_SET_ITEM(sealed, 0, Py_NewRef(writer));
            PyTuple_SET_ITEM(sealed, 2, Py_NewRef(line));
            PyObject *seq_obj = PyLong_FromLongLong(seq + 1);
            if (seq_obj != NULL) PyTuple_SET_ITEM(sealed, 1, seq_obj);
            r = seq_obj != NULL && PyList_Append(out, sealed) == 0 ? OK : FAIL;
        } else
            r = FAIL;
        Py_XDECREF(line);
        Py_XDECREF(sealed);
        if (r != OK) {
            Py_XDECREF(digest);
            goto done;
        }
        Py_SETREF(prev, digest);
        seq++;
    }
    result = i == start ? Py_BuildValue("(nOO)", (Py_ssize_t)0, seq_arg, prev)
                        : Py_BuildValue("(nLO)", i - start, seq, prev);
done:
    Py_DECREF(prev);
    buf_free(&b);
    return result;
}

static PyMethodDef methods[] = {
    {"decision_body", (PyCFunction)(void (*)(void))decision_body, METH_FASTCALL,
     "decision_body(f, event_id, seq, stamp, writer_json, prev) -> bytes | None\n\n"
     "The C twin of event.decision_body_py(): the same bytes, the same None cases."},
    {"decision_line", (PyCFunction)(void (*)(void))decision_line, METH_FASTCALL,
     "decision_line(f, event_id, seq, stamp, writer_json, prev) -> (bytes, str) | None\n\n"
     "event.seal_decision(..., key=None) over decision_body(): (stored line, hash)."},
    {"seal_decisions", (PyCFunction)(void (*)(void))seal_decisions, METH_FASTCALL,
     "seal_decisions(items, start, seq, prev, writer, writer_json, ids, sealed_type, out)\n"
     "-> (taken, seq, prev)\n\n"
     "AuditPipeline._seal's loop without an HMAC key, from items[start] for as long as\n"
     "they are decision events the template writes: appends tuple.__new__(sealed_type,\n"
     "(writer, seq, line)) to out for each; stops, without taking it, at the first it\n"
     "cannot seal. taken: how many it sealed; seq, prev: the chain head after them."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "_seal",
    .m_doc = "C twin of the audit decision template (event.decision_body_py), and the\n"
             "pipeline's sealing loop over a run of decision events.",
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
        for (int k = 0; k < N_OPTIONAL; k++) {
            if ((OPT_KEYS[k] = PyUnicode_InternFromString(OPTIONAL[k].name)) == NULL) return NULL;
        }
        HEXDIGEST = PyUnicode_InternFromString("hexdigest");
        NEW = PyUnicode_InternFromString("new");
        DECISION = PyUnicode_InternFromString("decision");
        PyObject *hashlib = HEXDIGEST == NULL || NEW == NULL || DECISION == NULL
                                ? NULL : PyImport_ImportModule("hashlib");
        SHA256 = hashlib == NULL ? NULL : PyObject_GetAttrString(hashlib, "sha256");
        Py_XDECREF(hashlib);
        if (SHA256 == NULL) return NULL;
    }
    return PyModule_Create(&module);
}
