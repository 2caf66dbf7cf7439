/* The C twin of decision_body_py() in event.py: the canonical JSON of a decision
 * event, written straight into one buffer instead of through an f-string of
 * escaped pieces. Same bytes, same None cases, same UnicodeEncodeError;
 * tests/audit/test_seal_twin.py holds the two (and the generic encoder) together.
 * seal_decisions() runs the pipeline's sealing loop over a run of such events;
 * tests/audit/test_seal_chunk.py holds it to the Python loop. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* An envelope value, unescaped (the caller guarantees it needs none), between
 * quotes or not. */
static int put_text(Buf *b, const char *s, Py_ssize_t n, int quoted) {
    if ((quoted && put(b, "\"", 1) < 0) || put(b, s, n) < 0) return FAIL;
    return quoted ? put(b, "\"", 1) : OK;
}

/* The same, already format()ted to a str. */
static int put_raw(Buf *b, PyObject *v, int quoted) {
    Py_ssize_t n;
    const char *s = utf8(b, v, &n);
    if (s == NULL) return PyErr_Occurred() ? FAIL : OK;
    return put_text(b, s, n, quoted);
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

/* Times format_micros() writes with a four-digit year: 1970 up to 10000-01-01.
 * Outside them (and for what the ids refuse) the Python loop answers. */
#define MAX_MICROS 253402300800000000LL

/* `v` as exactly `width` decimal digits at `p`. */
static void put_digits(char *p, long long v, int width) {
    for (int i = width - 1; i >= 0; i--, v /= 10) p[i] = (char)('0' + v % 10);
}

/* format_micros(micros) into out[27], 0 <= micros < MAX_MICROS. The text of the
 * second is kept from the last call, as format_micros() keeps it: events come in
 * time order, so gmtime runs about once a second. */
static int put_stamp(long long micros, char *out) {
    static long long last_sec = -1;
    static char last[20]; /* "YYYY-MM-DDTHH:MM:SS." */
    long long sec = micros / 1000000;
    if (sec != last_sec) {
        time_t t = (time_t)sec;
        struct tm tm;
        if (gmtime_r(&t, &tm) == NULL) return -1;
        memcpy(last, "0000-00-00T00:00:00.", 20);
        put_digits(last, tm.tm_year + 1900LL, 4);
        put_digits(last + 5, tm.tm_mon + 1, 2);
        put_digits(last + 8, tm.tm_mday, 2);
        put_digits(last + 11, tm.tm_hour, 2);
        put_digits(last + 14, tm.tm_min, 2);
        put_digits(last + 17, tm.tm_sec, 2);
        last_sec = sec;
    }
    memcpy(out, last, 20);
    put_digits(out + 20, micros % 1000000, 6);
    out[26] = 'Z';
    return 0;
}

/* round(when * 1_000_000) as float.__round__ computes it (the same two steps, so
 * the same integer whatever the rounding mode), or -1 when outside MAX_MICROS. */
static long long micros_of(double when) {
    double x = when * 1e6, r = round(x);
    if (fabs(x - r) == 0.5) r = 2.0 * round(x / 2.0); /* halfway: to even */
    return r >= 0 && r < (double)MAX_MICROS ? (long long)r : -1; /* NaN: -1 too */
}

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

/* `s` inserted at offset `at` of the buffer. */
static int put_at(Buf *b, Py_ssize_t at, const char *s, Py_ssize_t n) {
    if (b->cap - b->len < n && grow(b, n) < 0) return FAIL;
    memmove(b->data + at + n, b->data + at, (size_t)(b->len - at));
    memcpy(b->data + at, s, (size_t)n);
    b->len += n;
    return OK;
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
