/* The Evaluate hot path in C: EvaluateRequest bytes -> engine.Request, and
 * EvaluateResponse fields -> bytes.
 *
 * Why: through upb and engine.Request.__init__ one call costs ~30k instructions
 * of interpreted Python before the policy is even asked; this does the same in
 * a few hundred. server/wire.py holds the reference twins (upb + engine.Request)
 * and tests hold the two to the same answers, byte for byte.
 *
 * decode_evaluate() decides only the common, clean case: well-formed wire data,
 * valid UTF-8, every value within the limits of DESIGN section 2 in a form whose
 * normalization is plain ASCII work. For anything else it returns None and the
 * caller takes the reference path, which either accepts the request the same way
 * or raises the error that names the field and the limit. So this file never has
 * to word an error, and a request it does not understand is never misjudged.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#include "pb_out.h"

/* DESIGN section 2 limits; engine/request.py is the reference. */
#define MAX_TOPIC_BYTES 256
#define MAX_SEGMENTS 32
#define MAX_SEGMENT_CHARS 64
#define MAX_PATH 32
#define MAX_AGENT_BYTES 128
#define MAX_TAGS 64
#define MAX_TAG_CHARS 64
#define MAX_LABELS 32
#define MAX_LABEL_KEY_BYTES 64
#define MAX_LABEL_VALUE_BYTES 256
#define MAX_ID_BYTES 128

/* engine.Request's slots, in the order set below. */
static const char *const SLOT_NAMES[] = {
    "topic", "risk_tags", "delegation_path", "tenant", "run_id", "request_id", "labels",
};
enum { S_TOPIC, S_TAGS, S_PATH, S_TENANT, S_RUN, S_REQUEST, S_LABELS, N_SLOTS };

static PyTypeObject *request_type = NULL;
static PyObject *fallback = NULL; /* the reference decoder, for what the fast path declines */
static Py_ssize_t slot_offset[N_SLOTS];

typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
} span;

/* -- wire reading ------------------------------------------------------------------ */

/* A varint at *pos; 0 on a truncated or over-long one. */
static int read_varint(const uint8_t *buf, Py_ssize_t end, Py_ssize_t *pos, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*pos >= end) return 0;
        uint8_t b = buf[(*pos)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

static int read_span(const uint8_t *buf, Py_ssize_t end, Py_ssize_t *pos, span *out) {
    uint64_t len;
    if (!read_varint(buf, end, pos, &len) || len > (uint64_t)(end - *pos)) return 0;
    out->p = buf + *pos;
    out->n = (Py_ssize_t)len;
    *pos += (Py_ssize_t)len;
    return 1;
}

/* Skip one unknown field of wire type wt; groups (3, 4) are left to upb. */
static int skip_field(const uint8_t *buf, Py_ssize_t end, Py_ssize_t *pos, unsigned wt) {
    uint64_t ignored;
    span s;
    switch (wt) {
    case 0: return read_varint(buf, end, pos, &ignored);
    case 1: if (end - *pos < 8) return 0; *pos += 8; return 1;
    case 2: return read_span(buf, end, pos, &s);
    case 5: if (end - *pos < 4) return 0; *pos += 4; return 1;
    default: return 0;
    }
}

/* -- checks of the fast case --------------------------------------------------------- */

static uint8_t segment_char[256]; /* 1 for [A-Za-z0-9_:-], filled at import */

static int valid_topic(span t) {
    if (t.n < 1 || t.n > MAX_TOPIC_BYTES) return 0;
    int segments = 1;
    Py_ssize_t seg_len = 0;
    for (Py_ssize_t i = 0; i < t.n; i++) {
        uint8_t c = t.p[i];
        if (c == '.') {
            if (seg_len == 0 || ++segments > MAX_SEGMENTS) return 0;
            seg_len = 0;
        } else if (segment_char[c]) {
            if (++seg_len > MAX_SEGMENT_CHARS) return 0;
        } else {
            return 0;
        }
    }
    return seg_len > 0;
}

/* A tag whose normalization is ASCII lower-casing alone: printable ASCII, no
 * space at either end (str.strip() would change it), within the length limit. */
static int plain_tag(span t) {
    if (t.n > MAX_TAG_CHARS) return 0;
    if (t.n && (t.p[0] == ' ' || t.p[t.n - 1] == ' ')) return 0;
    for (Py_ssize_t i = 0; i < t.n; i++)
        if (t.p[i] < 0x20 || t.p[i] > 0x7e) return 0;
    return 1;
}

static int span_cmp(const span *a, const span *b) {
    Py_ssize_t n = a->n < b->n ? a->n : b->n;
    int c = memcmp(a->p, b->p, (size_t)n);
    return c ? c : (a->n > b->n) - (a->n < b->n);
}

/* -- Python objects ---------------------------------------------------------------- */

/* A str from UTF-8 bytes; NULL with no exception set when they are not valid UTF-8. */
static PyObject *make_str(span s) {
    Py_ssize_t i = 0;
    while (i < s.n && s.p[i] < 0x80) i++;
    if (i == s.n) {
        PyObject *o = PyUnicode_New(s.n, 127);
        if (o != NULL) memcpy(PyUnicode_DATA(o), s.p, (size_t)s.n);
        return o;
    }
    PyObject *o = PyUnicode_DecodeUTF8((const char *)s.p, s.n, NULL);
    if (o == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) PyErr_Clear();
    return o;
}

static PyObject *make_lower_str(span s) {
    PyObject *o = PyUnicode_New(s.n, 127);
    if (o == NULL) return NULL;
    Py_UCS1 *d = PyUnicode_1BYTE_DATA(o);
    for (Py_ssize_t i = 0; i < s.n; i++) {
        uint8_t c = s.p[i];
        d[i] = (c >= 'A' && c <= 'Z') ? (Py_UCS1)(c + 32) : c;
    }
    return o;
}

/* -- decode_evaluate ----------------------------------------------------------------- */

typedef struct {
    span request_id, run_id, tenant, topic, approval_id;
    span path[MAX_PATH];
    int n_path;
    span tags[MAX_TAGS];
    int n_tags;
    span label_key[MAX_LABELS * 2], label_value[MAX_LABELS * 2];
    int n_labels;
    int explain;
} fields;

/* One map<string, string> entry: key 1, value 2, either may be absent (""). */
static int read_label(span entry, span *key, span *value) {
    Py_ssize_t pos = 0;
    key->p = value->p = entry.p;
    key->n = value->n = 0;
    while (pos < entry.n) {
        uint64_t tag;
        if (!read_varint(entry.p, entry.n, &pos, &tag)) return 0;
        unsigned field = (unsigned)(tag >> 3), wt = (unsigned)(tag & 7);
        if (field == 1 && wt == 2) {
            if (!read_span(entry.p, entry.n, &pos, key)) return 0;
        } else if (field == 2 && wt == 2) {
            if (!read_span(entry.p, entry.n, &pos, value)) return 0;
        } else if (field == 1 || field == 2 || field == 0 || !skip_field(entry.p, entry.n, &pos, wt)) {
            return 0;
        }
    }
    return key->n <= MAX_LABEL_KEY_BYTES && value->n <= MAX_LABEL_VALUE_BYTES;
}

/* Parse and check; 0 when the request is not the fast case. */
static int parse(const uint8_t *buf, Py_ssize_t end, fields *f) {
    Py_ssize_t pos = 0;
    memset(f, 0, sizeof *f);
    while (pos < end) {
        uint64_t tag, v;
        if (!read_varint(buf, end, &pos, &tag)) return 0;
        unsigned field = (unsigned)(tag >> 3), wt = (unsigned)(tag & 7);
        span s;
        if (field >= 1 && field <= 8) {
            if (wt != 2 || !read_span(buf, end, &pos, &s)) return 0;
            switch (field) {
            case 1: f->request_id = s; break;
            case 2: f->run_id = s; break;
            case 3: f->tenant = s; break;
            case 4:
                if (f->n_path == MAX_PATH || s.n < 1 || s.n > MAX_AGENT_BYTES) return 0;
                f->path[f->n_path++] = s;
                break;
            case 5: f->topic = s; break;
            case 6:
                if (f->n_tags == MAX_TAGS || !plain_tag(s)) return 0;
                f->tags[f->n_tags++] = s;
                break;
            case 7:
                /* Room for repeated keys (the last wins); a dict of more than
                 * MAX_LABELS distinct keys is refused when it is built. */
                if (f->n_labels == MAX_LABELS * 2) return 0;
                if (!read_label(s, &f->label_key[f->n_labels], &f->label_value[f->n_labels]))
                    return 0;
                f->n_labels++;
                break;
            case 8: f->approval_id = s; break;
            }
        } else if (field == 9) {
            if (wt != 0 || !read_varint(buf, end, &pos, &v)) return 0;
            f->explain = v != 0;
        } else if (field == 0 || !skip_field(buf, end, &pos, wt)) {
            return 0;
        }
    }
    return f->n_path > 0 && valid_topic(f->topic) && f->request_id.n <= MAX_ID_BYTES &&
           f->run_id.n <= MAX_ID_BYTES && f->tenant.n <= MAX_ID_BYTES &&
           f->approval_id.n <= MAX_ID_BYTES;
}

/* Sorted, de-duplicated, lower-cased tags (empty ones dropped) as a tuple. */
static PyObject *build_tags(fields *f) {
    span lowered[MAX_TAGS];
    uint8_t store[MAX_TAGS * MAX_TAG_CHARS];
    int n = 0;
    for (int i = 0; i < f->n_tags; i++) {
        span t = f->tags[i];
        if (t.n == 0) continue;
        uint8_t *d = store + (Py_ssize_t)i * MAX_TAG_CHARS;
        for (Py_ssize_t k = 0; k < t.n; k++) {
            uint8_t c = t.p[k];
            d[k] = (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
        }
        span s = {d, t.n};
        int j = n;
        while (j > 0 && span_cmp(&lowered[j - 1], &s) > 0) j--;
        if (j > 0 && span_cmp(&lowered[j - 1], &s) == 0) continue;
        memmove(&lowered[j + 1], &lowered[j], (size_t)(n - j) * sizeof(span));
        lowered[j] = s;
        n++;
    }
    PyObject *tuple = PyTuple_New(n);
    if (tuple == NULL) return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *s = make_lower_str(lowered[i]);
        if (s == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, i, s);
    }
    return tuple;
}

/* NULL with no exception: invalid UTF-8 or too many labels (the reference path decides). */
static PyObject *build_labels(fields *f) {
    PyObject *d = PyDict_New();
    if (d == NULL) return NULL;
    for (int i = 0; i < f->n_labels; i++) {
        PyObject *k = make_str(f->label_key[i]);
        PyObject *v = k ? make_str(f->label_value[i]) : NULL;
        int err = v == NULL || PyDict_SetItem(d, k, v) < 0;
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (err) {
            Py_DECREF(d);
            return NULL;
        }
    }
    if (PyDict_GET_SIZE(d) > MAX_LABELS) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

static PyObject *build_path(fields *f) {
    PyObject *tuple = PyTuple_New(f->n_path);
    if (tuple == NULL) return NULL;
    for (int i = 0; i < f->n_path; i++) {
        PyObject *s = make_str(f->path[i]);
        if (s == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, i, s);
    }
    return tuple;
}

static void set_slot(PyObject *obj, int slot, PyObject *value) {
    PyObject **p = (PyObject **)((char *)obj + slot_offset[slot]);
    Py_XSETREF(*p, value);
}

static PyObject *decode_fast(PyObject *self, PyObject *arg) {
    if (request_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_wire.bind(engine.Request, ...) was not called");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    fields *f = PyMem_Malloc(sizeof(fields));
    if (f == NULL) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    PyObject *req = NULL, *approval = NULL, *result = NULL;
    if (!parse(view.buf, view.len, f)) goto fallback;

    req = request_type->tp_alloc(request_type, 0);
    if (req == NULL) goto done;
    const span strs[] = {f->topic, f->tenant, f->run_id, f->request_id};
    const int slots[] = {S_TOPIC, S_TENANT, S_RUN, S_REQUEST};
    for (int i = 0; i < 4; i++) {
        PyObject *s = make_str(strs[i]);
        if (s == NULL) goto fallback_or_error;
        set_slot(req, slots[i], s);
    }
    PyObject *o = build_tags(f);
    if (o == NULL) goto done;
    set_slot(req, S_TAGS, o);
    if ((o = build_path(f)) == NULL) goto fallback_or_error;
    set_slot(req, S_PATH, o);
    if ((o = build_labels(f)) == NULL) goto fallback_or_error;
    set_slot(req, S_LABELS, o);
    if ((approval = make_str(f->approval_id)) == NULL) goto fallback_or_error;
    result = PyTuple_Pack(3, req, approval, f->explain ? Py_True : Py_False);
    goto done;

fallback_or_error:
    if (PyErr_Occurred()) goto done;
fallback:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(req);
    Py_XDECREF(approval);
    PyMem_Free(f);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *decode_evaluate(PyObject *self, PyObject *arg) {
    PyObject *out = decode_fast(self, arg);
    if (out != Py_None) return out;
    Py_DECREF(out);
    return PyObject_CallOneArg(fallback, arg);
}

/* -- encode_response --------------------------------------------------------------- */

static int put_strings(out_buf *b, uint8_t tag, PyObject *seq) {
    PyObject *fast = PySequence_Fast(seq, "matched_rule_ids and derived_tags must be sequences");
    if (fast == NULL) return 0;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    int ok = 1;
    for (Py_ssize_t i = 0; ok && i < n; i++) ok = pb_put_string(b, tag, items[i], 1);
    Py_DECREF(fast);
    return ok;
}

static PyObject *encode_response(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "encode_response(decision, rule_id, reason, policy_version, "
                        "decision_id, approval_id, matched_rule_ids, derived_tags)");
        return NULL;
    }
    long decision = PyLong_AsLong(args[0]);
    if (decision == -1 && PyErr_Occurred()) return NULL;
    if (decision < 0 || decision > 3) {
        PyErr_Format(PyExc_ValueError, "decision %ld is not a Decision value", decision);
        return NULL;
    }
    char stack[512];
    out_buf b = {stack, 0, sizeof stack, stack};
    int ok = 1;
    if (decision) {
        b.buf[b.len++] = 0x08;
        b.buf[b.len++] = (char)decision;
    }
    /* Field numbers 2..6 (tags 0x12..0x32), then the repeated 7 and 8. */
    for (int i = 1; ok && i < 6; i++) ok = pb_put_string(&b, (uint8_t)(((i + 1) << 3) | 2), args[i], 0);
    ok = ok && put_strings(&b, 0x3a, args[6]) && put_strings(&b, 0x42, args[7]);
    return pb_bytes(&b, ok);
}

/* -- bind ---------------------------------------------------------------------------- */

static PyObject *bind(PyObject *self, PyObject *args) {
    PyObject *cls, *reference;
    if (!PyArg_ParseTuple(args, "OO:bind", &cls, &reference)) return NULL;
    if (!PyType_Check(cls) || !PyCallable_Check(reference)) {
        PyErr_SetString(PyExc_TypeError, "bind(engine.Request, reference_decoder)");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)cls;
    Py_ssize_t offsets[N_SLOTS];
    for (int i = 0; i < N_SLOTS; i++) {
        PyObject *d = PyObject_GetAttrString(cls, SLOT_NAMES[i]);
        if (d == NULL) return NULL;
        int is_slot = Py_IS_TYPE(d, &PyMemberDescr_Type) &&
                      ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX;
        if (is_slot) offsets[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        Py_DECREF(d);
        if (!is_slot) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", type->tp_name,
                         SLOT_NAMES[i]);
            return NULL;
        }
    }
    memcpy(slot_offset, offsets, sizeof offsets);
    Py_XSETREF(request_type, (PyTypeObject *)Py_NewRef(cls));
    Py_XSETREF(fallback, Py_NewRef(reference));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"bind", bind, METH_VARARGS,
     "bind(Request, reference): the class decode_fast builds, and the decoder of the rest."},
    {"decode_fast", decode_fast, METH_O,
     "decode_fast(data) -> (Request, approval_id, explain), or None: the reference decides."},
    {"decode_evaluate", decode_evaluate, METH_O,
     "decode_evaluate(data) -> decode_fast(data), or the reference decoder's answer."},
    {"encode_response", (PyCFunction)(void (*)(void))encode_response, METH_FASTCALL,
     "encode_response(decision, rule_id, reason, policy_version, decision_id, approval_id, "
     "matched_rule_ids, derived_tags) -> EvaluateResponse bytes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_wire", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__wire(void) {
    static const char ok[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_:-";
    for (const char *c = ok; *c; c++) segment_char[(uint8_t)*c] = 1;
    return PyModule_Create(&module);
}
