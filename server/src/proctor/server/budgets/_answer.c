/* The C twin of server/budgets/answer.py: a ReserveBudgetResponse as bytes.
 *
 * reserve_response(granted, refused_by, statuses, reservation_id, expires_at) writes
 * the same bytes as building the message with upb and serializing it (the reference,
 * answer.reserve_response_py): proto3 field order, defaults left out, Timestamps at
 * millisecond precision rounded as Python's round() does. `statuses` is a tuple of
 * store.BudgetStatus; any attribute of another type raises TypeError, a number out of
 * int64 range OverflowError, as upb would (tests hold the two together).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../pb_out.h"

static int varint_size(uint64_t v) {
    int n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* A varint field (int64 as two's complement, bool as 0/1); nothing for 0. */
static int put_int(out_buf *b, uint8_t tag, int64_t v) {
    if (v == 0) return 1;
    if (!pb_reserve(b, 11)) return 0;
    b->buf[b->len++] = (char)tag;
    pb_put_varint(b, (uint64_t)v);
    return 1;
}

static int as_int64(PyObject *o, int64_t *out) {
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "expected int, got %.100s", Py_TYPE(o)->tp_name);
        return 0;
    }
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred()) return 0;
    *out = (int64_t)v;
    return 1;
}

/* A Timestamp of `seconds` (a float or int) at ms precision, as service._ts writes it:
 * divmod(round(seconds * 1000), 1000). Nothing is written for None (the field unset). */
static int put_timestamp(out_buf *b, uint8_t tag, PyObject *seconds) {
    if (seconds == Py_None) return 1;
    double x;
    if (PyFloat_Check(seconds)) {
        x = PyFloat_AS_DOUBLE(seconds);
    } else if (PyLong_Check(seconds)) {
        x = PyLong_AsDouble(seconds);
        if (x == -1.0 && PyErr_Occurred()) return 0;
    } else {
        PyErr_Format(PyExc_TypeError, "expected a time in seconds, got %.100s",
                     Py_TYPE(seconds)->tp_name);
        return 0;
    }
    double ms = nearbyint(x * 1000.0); /* ties to even, as Python's round() */
    if (!isfinite(ms) || ms >= 9.2e18 || ms <= -9.2e18) {
        PyErr_SetString(PyExc_OverflowError, "time out of range");
        return 0;
    }
    int64_t total = (int64_t)ms;
    int64_t secs = total / 1000, rest = total % 1000;
    if (rest < 0) { /* floor division, as divmod */
        rest += 1000;
        secs -= 1;
    }
    int64_t nanos = rest * 1000000;
    uint64_t size = 0;
    if (secs) size += 1 + (uint64_t)varint_size((uint64_t)secs);
    if (nanos) size += 1 + (uint64_t)varint_size((uint64_t)nanos);
    if (!pb_reserve(b, 2 + (Py_ssize_t)size)) return 0;
    b->buf[b->len++] = (char)tag;
    pb_put_varint(b, size);
    return put_int(b, 0x08, secs) && put_int(b, 0x10, nanos);
}

static PyObject *S_budget_id, *S_unit, *S_scope, *S_scope_key, *S_kind, *S_limit, *S_used,
    *S_reserved, *S_window, *S_window_resets_at, *S_spend, *S_concurrency;

/* One BudgetStatus message body (fields 1..12) at the end of b. */
static int put_status_body(out_buf *b, PyObject *s) {
    PyObject *v[10] = {NULL};
    PyObject *names[10] = {S_budget_id, S_unit,     S_scope,  S_scope_key, S_kind,
                           S_limit,     S_used,     S_reserved, S_window,  S_window_resets_at};
    int ok = 1;
    for (int i = 0; ok && i < 10; i++) ok = (v[i] = PyObject_GetAttr(s, names[i])) != NULL;
    int64_t limit = 0, used = 0, reserved = 0, kind = 0;
    ok = ok && pb_put_string(b, 0x0a, v[0], 0) && pb_put_string(b, 0x12, v[1], 0) &&
         pb_put_string(b, 0x1a, v[2], 0) && pb_put_string(b, 0x22, v[3], 0);
    if (ok) {
        /* as KINDS.get(kind, UNSPECIFIED): any other hashable kind is 0 */
        if (!PyUnicode_Check(v[4])) {
            ok = PyObject_Hash(v[4]) != -1;
        } else if (PyUnicode_Compare(v[4], S_spend) == 0) {
            kind = 1;
        } else if (PyUnicode_Compare(v[4], S_concurrency) == 0) {
            kind = 2;
        } else if (PyErr_Occurred()) {
            ok = 0;
        }
    }
    ok = ok && as_int64(v[5], &limit) && as_int64(v[6], &used) && as_int64(v[7], &reserved);
    if (ok) {
        /* remaining and over as BudgetStatus computes them, in Python's unbounded ints:
         * the difference must fit int64 as upb requires of the field */
        PyObject *rest = PyNumber_Subtract(v[5], v[6]);
        PyObject *remaining = rest ? PyNumber_Subtract(rest, v[7]) : NULL;
        Py_XDECREF(rest);
        int64_t rem = 0;
        ok = remaining != NULL && as_int64(remaining, &rem);
        Py_XDECREF(remaining);
        ok = ok && put_int(b, 0x28, kind) && put_int(b, 0x30, limit) &&
             put_int(b, 0x38, used) && put_int(b, 0x40, reserved) && put_int(b, 0x48, rem) &&
             pb_put_string(b, 0x52, v[8], 0) && put_timestamp(b, 0x5a, v[9]) &&
             put_int(b, 0x60, rem < 0);
    }
    for (int i = 0; i < 10; i++) Py_XDECREF(v[i]);
    return ok;
}

static PyObject *reserve_response(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "reserve_response(granted, refused_by, statuses, reservation_id, "
                        "expires_at)");
        return NULL;
    }
    int granted = PyObject_IsTrue(args[0]);
    if (granted < 0) return NULL;
    if (!PyTuple_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "statuses must be a tuple of BudgetStatus");
        return NULL;
    }
    char stack[1024];
    out_buf b = {stack, 0, sizeof stack, stack};
    int ok = put_int(&b, 0x08, granted) && pb_put_string(&b, 0x12, args[1], 0);
    Py_ssize_t n = PyTuple_GET_SIZE(args[2]);
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        /* the body goes first, then moves up behind its tag and length */
        Py_ssize_t at = b.len;
        ok = pb_reserve(&b, 11) && (b.len += 11, put_status_body(&b, PyTuple_GET_ITEM(args[2], i)));
        if (ok) {
            Py_ssize_t body = b.len - at - 11;
            char head[11];
            out_buf h = {head, 0, sizeof head, head};
            h.buf[h.len++] = 0x1a;
            pb_put_varint(&h, (uint64_t)body);
            memmove(b.buf + at + h.len, b.buf + at + 11, (size_t)body);
            memcpy(b.buf + at, head, (size_t)h.len);
            b.len = at + h.len + body;
        }
    }
    ok = ok && pb_put_string(&b, 0x22, args[3], 0) && put_timestamp(&b, 0x2a, args[4]);
    return pb_bytes(&b, ok);
}

static PyMethodDef methods[] = {
    {"reserve_response", (PyCFunction)(void (*)(void))reserve_response, METH_FASTCALL,
     "reserve_response(granted, refused_by, statuses, reservation_id, expires_at) -> "
     "ReserveBudgetResponse bytes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_answer", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__answer(void) {
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&S_budget_id, "budget_id"}, {&S_unit, "unit"},
        {&S_scope, "scope"},         {&S_scope_key, "scope_key"},
        {&S_kind, "kind"},           {&S_limit, "limit"},
        {&S_used, "used"},           {&S_reserved, "reserved"},
        {&S_window, "window"},       {&S_window_resets_at, "window_resets_at"},
        {&S_spend, "spend"},         {&S_concurrency, "concurrency"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if ((*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL) return NULL;
    }
    return PyModule_Create(&module);
}
