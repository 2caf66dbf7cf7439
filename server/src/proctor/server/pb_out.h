/* Writing protobuf wire data into a growable buffer: shared by the C twins that
 * encode answers (server/_wire.c: EvaluateResponse; server/budgets/_answer.c:
 * ReserveBudgetResponse). Every function returns 1 on success, 0 with a Python
 * exception set. Static functions in a header: each extension gets its own copy,
 * and neither exports a symbol. */
#ifndef PROCTOR_PB_OUT_H
#define PROCTOR_PB_OUT_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
    char *stack; /* the caller's buffer, used until it is outgrown */
} out_buf;

/* Room for `more` bytes. */
static int pb_reserve(out_buf *b, Py_ssize_t more) {
    if (b->len + more <= b->cap) return 1;
    Py_ssize_t cap = (b->len + more) * 2;
    char *p = b->buf == b->stack ? PyMem_Malloc((size_t)cap) : PyMem_Realloc(b->buf, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return 0;
    }
    if (b->buf == b->stack) memcpy(p, b->stack, (size_t)b->len);
    b->buf = p;
    b->cap = cap;
    return 1;
}

/* The caller has made room (pb_reserve): at most 10 bytes. */
static void pb_put_varint(out_buf *b, uint64_t v) {
    while (v >= 0x80) {
        b->buf[b->len++] = (char)(v | 0x80);
        v >>= 7;
    }
    b->buf[b->len++] = (char)v;
}

/* Tag and length-delimited UTF-8 of a str; `always` for repeated items (proto3
 * writes every item, empty ones too, and skips only empty singular strings). */
static int pb_put_string(out_buf *b, uint8_t tag, PyObject *s, int always) {
    if (!PyUnicode_Check(s)) {
        PyErr_Format(PyExc_TypeError, "expected str, got %.100s", Py_TYPE(s)->tp_name);
        return 0;
    }
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(s, &n);
    if (p == NULL) return 0;
    if (n == 0 && !always) return 1;
    if (!pb_reserve(b, n + 11)) return 0;
    b->buf[b->len++] = (char)tag;
    pb_put_varint(b, (uint64_t)n);
    memcpy(b->buf + b->len, p, (size_t)n);
    b->len += n;
    return 1;
}

/* The written bytes as a bytes object when `ok`, else NULL (the exception is set);
 * frees the buffer if it outgrew the caller's stack. */
static PyObject *pb_bytes(out_buf *b, int ok) {
    PyObject *result = ok ? PyBytes_FromStringAndSize(b->buf, b->len) : NULL;
    if (b->buf != b->stack) PyMem_Free(b->buf);
    return result;
}

#endif
