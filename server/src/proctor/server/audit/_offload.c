/* A background I/O thread for the audit writer that never takes the GIL.
 *
 * Why: at one call in flight, the call running while the writer took a batch was
 * ~1.6x the median, and such calls were a quarter to a third of those slower than p99.
 * Two things held the event loop: touching each of the batch's events, written up to
 * 250 ms earlier and long out of the cache (~0.3 us each: a slice, a join), and the
 * executor thread that wrote the batch taking the GIL back after each wake-up, write
 * or fsync. Here the loop hands the batch's list over as it is (one reference)
 * and a plain C thread walks it, writes it and fsyncs it; the outcome comes back
 * through an eventfd the loop watches.
 *
 * The thread reads the list, its tuples and their bytes without the GIL: the caller
 * gives the list up until the job is done, tuples and bytes never change, and the
 * job's reference keeps them all alive. It never touches a reference count. Jobs run
 * one at a time, in the order they were given; done() hands the results back, and
 * drops the references, on the caller's thread, with the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <unistd.h>

typedef struct Job {
    struct Job *next;
    int fd, fsync;
    PyObject *items, *token; /* the batch (a list), and what done() pairs its result with */
    Py_ssize_t n;            /* items at submission */
    Py_ssize_t total, written, room; /* bytes asked, written, and the limit */
    int err;                         /* errno of a failure */
} Job;

typedef struct {
    PyObject_HEAD
    pthread_mutex_t mu;
    pthread_cond_t cv;
    Job *todo, *todo_last, *finished, *finished_last;
    int efd, started, stopping;
    pid_t owner; /* the process that started the thread: a forked child has no thread */
    pthread_t thread;
} Offload;

static void free_job(Job *j) {
    Py_XDECREF(j->items);
    Py_XDECREF(j->token);
    PyMem_RawFree(j);
}

/* Item i's line (a bytes, or the last member of a tuple), or NULL for anything else.
 * Reads only fields that never change; see the top. */
static PyObject *line_at(const Job *j, Py_ssize_t i) {
    PyObject *b = PyList_GET_ITEM(j->items, i);
    if (PyTuple_Check(b) && PyTuple_GET_SIZE(b) > 0) b = PyTuple_GET_ITEM(b, PyTuple_GET_SIZE(b) - 1);
    return PyBytes_Check(b) ? b : NULL;
}

/* Every line, in order, then fdatasync if asked; nothing at all when they would not
 * fit in `room` (the caller rotates segments and takes its other path). */
static void run_write(Job *j) {
    for (Py_ssize_t i = 0; i < j->n; i++) {
        PyObject *b = line_at(j, i);
        if (b == NULL) {
            j->err = EINVAL;
            return;
        }
        j->total += PyBytes_GET_SIZE(b);
    }
    if (j->total > j->room) return;
    enum { MAX_IOV = IOV_MAX < 1024 ? IOV_MAX : 1024 };
    struct iovec iov[MAX_IOV];
    Py_ssize_t line = 0, off = 0; /* the next byte to write: line `line`, at `off` */
    while (j->written < j->total) {
        int count = 0;
        for (Py_ssize_t i = line, skip = off; i < j->n && count < MAX_IOV; i++, skip = 0) {
            PyObject *b = line_at(j, i);
            Py_ssize_t size = PyBytes_GET_SIZE(b) - skip;
            if (size > 0) iov[count++] = (struct iovec){PyBytes_AS_STRING(b) + skip, (size_t)size};
        }
        ssize_t w = writev(j->fd, iov, count);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            j->err = w < 0 ? errno : EIO;
            return;
        }
        j->written += w;
        for (Py_ssize_t left = w; left > 0;) { /* the cursor moves on by w bytes */
            Py_ssize_t rest = PyBytes_GET_SIZE(line_at(j, line)) - off;
            if (left >= rest) {
                left -= rest;
                line++;
                off = 0;
            } else {
                off += left;
                left = 0;
            }
        }
    }
    if (j->fsync && fdatasync(j->fd) != 0) j->err = errno;
}

static void *run(void *arg) {
    Offload *o = arg;
    prctl(PR_SET_NAME, "audit-io", 0, 0, 0); /* for top -H and ps; best effort */
    pthread_mutex_lock(&o->mu);
    for (;;) {
        while (o->todo == NULL && !o->stopping) pthread_cond_wait(&o->cv, &o->mu);
        Job *j = o->todo;
        if (j == NULL) break; /* stopping, and every job given is done */
        o->todo = j->next;
        if (o->todo == NULL) o->todo_last = NULL;
        pthread_mutex_unlock(&o->mu);
        run_write(j);
        j->next = NULL;
        pthread_mutex_lock(&o->mu);
        if (o->finished_last) o->finished_last->next = j;
        else o->finished = j;
        o->finished_last = j;
        pthread_mutex_unlock(&o->mu);
        uint64_t one = 1;
        while (write(o->efd, &one, sizeof one) < 0 && errno == EINTR) {
        }
        pthread_mutex_lock(&o->mu);
    }
    pthread_mutex_unlock(&o->mu);
    return NULL;
}

static PyObject *offload_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Offload() takes no arguments");
        return NULL;
    }
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) return PyErr_SetFromErrno(PyExc_OSError);
    Offload *o = (Offload *)type->tp_alloc(type, 0);
    if (o == NULL) {
        close(efd);
        return NULL;
    }
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    o->efd = efd;
    return (PyObject *)o;
}

/* Stop the thread once every job given is done (waits for them, without the GIL). */
static void stop(Offload *o) {
    if (!o->started || o->owner != getpid()) return;
    pthread_mutex_lock(&o->mu);
    o->stopping = 1;
    pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(o->thread, NULL);
    Py_END_ALLOW_THREADS
    o->started = 0;
}

static void offload_dealloc(Offload *o) {
    stop(o);
    for (Job *j = o->todo; j != NULL;) { /* only in a forked child: no thread ran them */
        Job *next = j->next;
        free_job(j);
        j = next;
    }
    for (Job *j = o->finished; j != NULL;) {
        Job *next = j->next;
        free_job(j);
        j = next;
    }
    if (o->efd >= 0) close(o->efd);
    pthread_mutex_destroy(&o->mu);
    pthread_cond_destroy(&o->cv);
    Py_TYPE(o)->tp_free((PyObject *)o);
}

/* A job over `items`, a list the caller leaves alone until done() gives its result. */
static Job *new_job(Offload *o, int fd, PyObject *items, PyObject *token) {
    if (o->stopping) {
        PyErr_SetString(PyExc_RuntimeError, "Offload is closed");
        return NULL;
    }
    if (o->started && o->owner != getpid()) {
        PyErr_SetString(PyExc_RuntimeError, "Offload: its thread belongs to the parent process");
        return NULL;
    }
    if (!PyList_CheckExact(items)) {
        PyErr_SetString(PyExc_TypeError, "Offload: items must be a list");
        return NULL;
    }
    Job *j = PyMem_RawCalloc(1, sizeof(Job));
    if (j == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    j->fd = fd;
    j->items = Py_NewRef(items);
    j->token = Py_NewRef(token);
    j->n = PyList_GET_SIZE(items);
    return j;
}

static PyObject *submit(Offload *o, Job *j) {
    if (!o->started) {
        o->owner = getpid();
        int rc = pthread_create(&o->thread, NULL, run, o);
        if (rc != 0) {
            free_job(j);
            errno = rc;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        o->started = 1;
    }
    pthread_mutex_lock(&o->mu);
    if (o->todo_last) o->todo_last->next = j;
    else o->todo = j;
    o->todo_last = j;
    pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
    Py_RETURN_NONE;
}

static PyObject *offload_write(Offload *o, PyObject *args) {
    int fd, fsync;
    Py_ssize_t room;
    PyObject *items, *token;
    if (!PyArg_ParseTuple(args, "iOpnO", &fd, &items, &fsync, &room, &token)) return NULL;
    Job *j = new_job(o, fd, items, token);
    if (j == NULL) return NULL;
    j->fsync = fsync;
    j->room = room;
    return submit(o, j);
}

/* The jobs finished since the last call, oldest first, as (token, result). */
static PyObject *offload_done(Offload *o, PyObject *unused) {
    uint64_t count;
    while (read(o->efd, &count, sizeof count) < 0 && errno == EINTR) {
    }
    pthread_mutex_lock(&o->mu);
    Job *j = o->finished;
    o->finished = o->finished_last = NULL;
    pthread_mutex_unlock(&o->mu);
    PyObject *out = PyList_New(0);
    while (j != NULL) {
        Job *next = j->next;
        PyObject *result = NULL;
        if (out != NULL) {
            result = Py_BuildValue("(nni)", j->total, j->written, j->err);
            PyObject *pair = result == NULL ? NULL : PyTuple_Pack(2, j->token, result);
            if (pair == NULL || PyList_Append(out, pair) < 0) Py_CLEAR(out);
            Py_XDECREF(pair);
            Py_XDECREF(result);
        }
        free_job(j);
        j = next;
    }
    return out;
}

static PyObject *offload_fileno(Offload *o, PyObject *unused) { return PyLong_FromLong(o->efd); }

static PyObject *offload_close(Offload *o, PyObject *unused) {
    stop(o);
    o->stopping = 1;
    Py_RETURN_NONE;
}

static PyMethodDef offload_methods[] = {
    {"write", (PyCFunction)offload_write, METH_VARARGS,
     "write(fd, items, fsync, room, token): queue writing every item's line (items: a list "
     "of bytes, or of tuples ending in one) to fd, in order "
     "(then fdatasync if fsync). Nothing is written when they add up to more than room. "
     "Result: (total, written, errno)"},
    {"done", (PyCFunction)offload_done, METH_NOARGS,
     "done() -> [(token, result)]: the jobs finished since the last call, oldest first"},
    {"fileno", (PyCFunction)offload_fileno, METH_NOARGS,
     "fileno() -> int: an eventfd that is readable while finished jobs wait for done()"},
    {"close", (PyCFunction)offload_close, METH_NOARGS,
     "close(): wait for every queued job to finish, then stop the thread (done() still "
     "returns their results)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject OffloadType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "proctor.server.audit._offload.Offload",
    .tp_basicsize = sizeof(Offload),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Offload(): one C thread that runs the audit file sink's writes without the "
              "GIL.",
    .tp_new = offload_new,
    .tp_dealloc = (destructor)offload_dealloc,
    .tp_methods = offload_methods,
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_offload",
    "The audit writer's I/O thread, in C: see Offload.", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__offload(void) {
    if (PyType_Ready(&OffloadType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m != NULL && PyModule_AddObjectRef(m, "Offload", (PyObject *)&OffloadType) < 0)
        Py_CLEAR(m);
    return m;
}
