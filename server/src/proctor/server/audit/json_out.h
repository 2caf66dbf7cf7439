/* The JSON text of audit events, written into one growable buffer: strings escaped
 * as json.dumps(ensure_ascii=False) writes them, arrays of str, ints, labels in
 * code-point order, and event times as format_micros() writes them. Used by
 * _seal.c (the decision events' canonical JSON); static functions in a header, as
 * ../pb_out.h, so that nothing is exported. */
#ifndef PROCTOR_AUDIT_JSON_OUT_H
#define PROCTOR_AUDIT_JSON_OUT_H

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

/* `s` inserted at offset `at` of the buffer. */
static int put_at(Buf *b, Py_ssize_t at, const char *s, Py_ssize_t n) {
    if (b->cap - b->len < n && grow(b, n) < 0) return FAIL;
    memmove(b->data + at + n, b->data + at, (size_t)(b->len - at));
    memcpy(b->data + at, s, (size_t)n);
    b->len += n;
    return OK;
}

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

#endif
