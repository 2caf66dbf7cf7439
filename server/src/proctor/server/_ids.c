/* The C twin of server/ids.py's UlidGenerator: the same ids from the same state.
 *
 * Why: every decision takes two ULIDs (its decision id, and its audit event's id),
 * ~5,000 interpreted instructions each in Python; this takes a few hundred.
 * The algorithm is the Python one, step for step (ids.py documents it): the
 * random part counts up from a random start, fresh random bits (from the `draw`
 * callable given at construction, Python's generator) only for the first id and
 * after 2**80 ids. tests/server/test_units.py holds the two to the same output.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <time.h>

static const char ALPHABET[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
#define HI_MASK 0xffffULL /* the random part is 80 bits: 16 in rnd_hi, 64 in rnd_lo */

typedef struct {
    PyObject_HEAD
    PyObject *draw; /* draw(79) -> int: a fresh random start */
    int64_t last_ms;
    uint64_t rnd_hi, rnd_lo;
} Ulid;

static PyObject *sixty_four; /* the int 64, for shifting the drawn bits */

static int draw_random(Ulid *self) {
    PyObject *v = PyObject_CallFunction(self->draw, "i", 79);
    if (v == NULL) return -1;
    PyObject *hi = PyNumber_Rshift(v, sixty_four);
    if (hi == NULL) {
        Py_DECREF(v);
        return -1;
    }
    self->rnd_lo = PyLong_AsUnsignedLongLongMask(v);
    self->rnd_hi = PyLong_AsUnsignedLongLongMask(hi) & HI_MASK;
    Py_DECREF(hi);
    Py_DECREF(v);
    return PyErr_Occurred() ? -1 : 0;
}

static char symbol(uint64_t hi, uint64_t lo, int shift) {
    uint64_t v;
    if (shift >= 64)
        v = hi >> (shift - 64);
    else if (shift + 5 <= 64)
        v = lo >> shift;
    else
        v = (lo >> shift) | (hi << (64 - shift));
    return ALPHABET[v & 31];
}

static PyObject *Ulid_new_id(Ulid *self, PyObject *const *args, Py_ssize_t nargs) {
    int64_t ms;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "new(ms=None) takes at most one argument");
        return NULL;
    }
    if (nargs == 0 || args[0] == Py_None) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    } else {
        ms = PyLong_AsLongLong(args[0]);
        if (ms == -1 && PyErr_Occurred()) return NULL;
    }
    if (ms < self->last_ms) ms = self->last_ms; /* the clock stepped back: keep order */
    uint64_t lo = self->rnd_lo + 1, hi = self->rnd_hi + (lo == 0);
    if (hi > HI_MASK || self->last_ms < 0) {
        if (self->last_ms >= 0) ms += 1;
        if (draw_random(self) < 0) return NULL;
        lo = self->rnd_lo;
        hi = self->rnd_hi;
    }
    self->last_ms = ms;
    self->rnd_hi = hi;
    self->rnd_lo = lo;

    char text[26];
    /* 10 symbols of the time (50 bits, the top two zero), 16 of the random part. */
    for (int i = 0; i < 10; i++) text[i] = ALPHABET[((uint64_t)ms >> (45 - 5 * i)) & 31];
    for (int i = 0; i < 16; i++) text[10 + i] = symbol(hi, lo, 75 - 5 * i);
    PyObject *out = PyUnicode_New(26, 127);
    if (out != NULL) memcpy(PyUnicode_DATA(out), text, 26);
    return out;
}

static PyObject *Ulid_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *draw;
    static char *kwlist[] = {"draw", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Ulid", kwlist, &draw)) return NULL;
    if (!PyCallable_Check(draw)) {
        PyErr_SetString(PyExc_TypeError, "Ulid(draw): draw(bits) must be callable");
        return NULL;
    }
    Ulid *self = (Ulid *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->draw = Py_NewRef(draw);
    self->last_ms = -1;
    return (PyObject *)self;
}

static int Ulid_traverse(Ulid *self, visitproc visit, void *arg) {
    Py_VISIT(self->draw);
    return 0;
}

static int Ulid_clear(Ulid *self) {
    Py_CLEAR(self->draw);
    return 0;
}

static void Ulid_dealloc(Ulid *self) {
    PyObject_GC_UnTrack(self);
    Ulid_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Ulid_methods[] = {
    {"new", (PyCFunction)(void (*)(void))Ulid_new_id, METH_FASTCALL,
     "new(ms=None): a ULID for now, or for the given Unix millisecond."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject UlidType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "proctor.server._ids.Ulid",
    .tp_basicsize = sizeof(Ulid),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Ulid(draw): monotonic ULIDs; not thread-safe (one per event loop).",
    .tp_new = Ulid_new,
    .tp_dealloc = (destructor)Ulid_dealloc,
    .tp_traverse = (traverseproc)Ulid_traverse,
    .tp_clear = (inquiry)Ulid_clear,
    .tp_methods = Ulid_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ids", NULL, -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__ids(void) {
    if (PyType_Ready(&UlidType) < 0) return NULL;
    sixty_four = PyLong_FromLong(64);
    if (sixty_four == NULL) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Ulid", (PyObject *)&UlidType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
