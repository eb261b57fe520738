/* The step's small pieces without Python in between (module _kernels).
 *
 * At the batch sizes people train with (128 to 256 rows), a step is a few
 * matrix products and a dozen element-wise passes over arrays that fit in
 * cache; NumPy makes each pass a call of its own (a few microseconds each) and
 * ctypes adds ~5 us to every BLAS call. Here:
 *
 *   gemm(kind, address, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb,
 *        beta, c, ldc)
 *       calls the BLAS routine at ``address`` (blas_libraries.py finds it):
 *       kind 0/1/2 CBLAS sgemm/dgemm/gemm_bf16bf16f32, row-major; kind 3/4
 *       Fortran sgemm/dgemm (SciPy's OpenBLAS), c^T = b^T a^T with the
 *       operands swapped. a, b, c are arrays (their first elements are the
 *       operands' corners); trans_* b"N" or b"T".
 *   bias_relu(z, bias)            z = max(z + bias, 0)
 *   bias_scale(z, bias, s)        z = (z + bias) * s      (sigmoid: s = 1/2, then tanh)
 *   affine(z, s, t)               z = z * s + t           (sigmoid after tanh)
 *   shift_rows(z)                 z -= the maximum of its row (softmax, before exp)
 *   scale_delta(kind, delta, a)   delta *= f'(a): 0 relu [a > 0], 1 sigmoid
 *                                 (1 - a) * a, 2 tanh 1 - a * a
 *   column_sums(x, out, s)        out = s * (0 + x[0] + x[1] + ... + x[n-1])
 *
 * z, delta, a and x are 2-D with contiguous rows, bias and out 1-D contiguous,
 * all float32 or all float64 alike. The arithmetic is NumPy's, operation for
 * operation and in the same order (built with -ffp-contract=off): the rows of
 * a column sum are added first to last, as NumPy reduces over axis 0, and
 * max(v, 0) is NumPy's maximum (NaN kept, -0 made +0). So a step with this
 * module equals one without it bit for bit. The GIL is dropped for products
 * and passes large enough to be worth the hand-over.
 *
 *   Barrier(parties, spin=True)   a cyclic barrier for the threads executor's
 *                                 workers: wait() and abort(), as threading's
 *                                 (BrokenBarrierError once aborted), waiting
 *                                 without the GIL by spinning first (unless
 *                                 spin is false), then asleep (waking every
 *                                 50 ms for signal handlers: Ctrl-C).
 *
 * Each pass returns the floating-point errors it raised, as NumPy's bits
 * (1 divide, 2 overflow, 4 underflow, 8 invalid; 0 for none), for compiled.py
 * to handle as np.seterr says, as NumPy would have.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <fenv.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define GIL_FREE_MIN 4096            /* elements of a pass */
#define GIL_FREE_PRODUCT (1 << 18)   /* m * n * k of a product */

#include "clones.h"

/* ---- BLAS ----------------------------------------------------------------- */

enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };
typedef void (*cblas_s)(int, int, int, int, int, int, float, const void *, int,
                        const void *, int, float, void *, int);
typedef void (*cblas_d)(int, int, int, int, int, int, double, const void *, int,
                        const void *, int, double, void *, int);
typedef void (*fortran_s)(const char *, const char *, const int *, const int *, const int *,
                          const float *, const void *, const int *, const void *, const int *,
                          const float *, void *, const int *);
typedef void (*fortran_d)(const char *, const char *, const int *, const int *, const int *,
                          const double *, const void *, const int *, const void *,
                          const int *, const double *, void *, const int *);

typedef struct {
    int kind, m, n, k, lda, ldb, ldc;
    char ta, tb;
    double alpha, beta;
    uintptr_t routine, a, b, c;
} Product;

static void run_product(const Product *p)
{
    int ta = p->ta == 'T' ? CBLAS_TRANS : CBLAS_NO_TRANS;
    int tb = p->tb == 'T' ? CBLAS_TRANS : CBLAS_NO_TRANS;
    const void *a = (const void *)p->a, *b = (const void *)p->b;
    void *c = (void *)p->c;
    if (p->kind == 0 || p->kind == 2)
        ((cblas_s)p->routine)(CBLAS_ROW_MAJOR, ta, tb, p->m, p->n, p->k, (float)p->alpha,
                              a, p->lda, b, p->ldb, (float)p->beta, c, p->ldc);
    else if (p->kind == 1)
        ((cblas_d)p->routine)(CBLAS_ROW_MAJOR, ta, tb, p->m, p->n, p->k, p->alpha,
                              a, p->lda, b, p->ldb, p->beta, c, p->ldc);
    else if (p->kind == 3) {
        float alpha = (float)p->alpha, beta = (float)p->beta;
        ((fortran_s)p->routine)(&p->tb, &p->ta, &p->n, &p->m, &p->k, &alpha, b, &p->ldb,
                                a, &p->lda, &beta, c, &p->ldc);
    } else
        ((fortran_d)p->routine)(&p->tb, &p->ta, &p->n, &p->m, &p->k, &p->alpha, b, &p->ldb,
                                a, &p->lda, &p->beta, c, &p->ldc);
}

static PyObject *gemm(PyObject *self, PyObject *args)
{
    Product p;
    unsigned long long routine;
    PyObject *operands[3];
    Py_buffer views[3];
    int taken = 0;
    if (!PyArg_ParseTuple(args, "iKcciiidOiOidOi", &p.kind, &routine, &p.ta, &p.tb, &p.m,
                          &p.n, &p.k, &p.alpha, &operands[0], &p.lda, &operands[1], &p.ldb,
                          &p.beta, &operands[2], &p.ldc))
        return NULL;
    if (p.kind < 0 || p.kind > 4 || !routine) {
        PyErr_SetString(PyExc_ValueError, "gemm: unknown routine kind or no address");
        return NULL;
    }
    /* The arrays' first elements (the buffer protocol: no ctypes object per call). */
    for (; taken < 3; taken++)
        if (PyObject_GetBuffer(operands[taken], &views[taken],
                               PyBUF_STRIDES | (taken == 2 ? PyBUF_WRITABLE : 0)) < 0)
            break;
    if (taken == 3) {
        p.routine = (uintptr_t)routine;
        p.a = (uintptr_t)views[0].buf;
        p.b = (uintptr_t)views[1].buf;
        p.c = (uintptr_t)views[2].buf;
        if ((double)p.m * p.n * p.k >= GIL_FREE_PRODUCT) {
            Py_BEGIN_ALLOW_THREADS
            run_product(&p);
            Py_END_ALLOW_THREADS
        } else
            run_product(&p);
    }
    while (taken-- > 0)
        PyBuffer_Release(&views[taken]);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* ---- element-wise passes, one row at a time --------------------------------- */

static long fp_errors(void)
{
    int raised = fetestexcept(FE_DIVBYZERO | FE_OVERFLOW | FE_UNDERFLOW | FE_INVALID);
    return (raised & FE_DIVBYZERO ? 1 : 0) | (raised & FE_OVERFLOW ? 2 : 0)
           | (raised & FE_UNDERFLOW ? 4 : 0) | (raised & FE_INVALID ? 8 : 0);
}

typedef struct {
    double s, t;        /* the pass's constants */
    int kind;           /* scale_delta's f' */
} Constants;

#define DEFINE_ROWS(T)                                                                    \
CLONES static void bias_relu_##T(T *z, const T *b, const Constants *k, Py_ssize_t n)     \
{                                                                                          \
    (void)k;                                                                               \
    for (Py_ssize_t i = 0; i < n; i++) {                                                   \
        T v = z[i] + b[i];                                                                 \
        z[i] = (v > 0 || v != v) ? v : (T)0;                                               \
    }                                                                                      \
}                                                                                          \
CLONES static void bias_scale_##T(T *z, const T *b, const Constants *k, Py_ssize_t n)    \
{                                                                                          \
    const T s = (T)k->s;                                                                   \
    for (Py_ssize_t i = 0; i < n; i++)                                                     \
        z[i] = (z[i] + b[i]) * s;                                                          \
}                                                                                          \
CLONES static void affine_##T(T *z, const T *unused, const Constants *k, Py_ssize_t n)   \
{                                                                                          \
    const T s = (T)k->s, t = (T)k->t;                                                      \
    (void)unused;                                                                          \
    for (Py_ssize_t i = 0; i < n; i++)                                                     \
        z[i] = z[i] * s + t;                                                               \
}                                                                                          \
CLONES static void shift_row_##T(T *z, const T *unused, const Constants *k, Py_ssize_t n)  \
{                                                                                          \
    T top = z[0];                     /* NumPy's max: a NaN anywhere makes it NaN */      \
    (void)unused;                                                                          \
    (void)k;                                                                               \
    for (Py_ssize_t i = 1; i < n && top == top; i++)                                       \
        if (z[i] > top || z[i] != z[i])                                                    \
            top = z[i];                                                                    \
    for (Py_ssize_t i = 0; i < n; i++)                                                     \
        z[i] = z[i] - top;                                                                 \
}                                                                                          \
CLONES static void scale_delta_##T(T *d, const T *a, const Constants *k, Py_ssize_t n)   \
{                                                                                          \
    if (k->kind == 0)                                                                      \
        for (Py_ssize_t i = 0; i < n; i++)                                                 \
            d[i] = d[i] * (a[i] > 0 ? (T)1 : (T)0);                                        \
    else if (k->kind == 1)                                                                 \
        for (Py_ssize_t i = 0; i < n; i++)                                                 \
            d[i] = d[i] * (((T)1 - a[i]) * a[i]);                                          \
    else                                                                                   \
        for (Py_ssize_t i = 0; i < n; i++)                                                 \
            d[i] = d[i] * ((T)1 - a[i] * a[i]);                                            \
}                                                                                          \
CLONES static void add_row_##T(T *out, const T *x, const Constants *k, Py_ssize_t n)     \
{                                                                                          \
    (void)k;                                                                               \
    for (Py_ssize_t i = 0; i < n; i++)                                                     \
        out[i] = out[i] + x[i];                                                            \
}                                                                                          \
CLONES static void scale_row_##T(T *out, const T *unused, const Constants *k,             \
                                 Py_ssize_t n)                                             \
{                                                                                          \
    const T s = (T)k->s;                                                                   \
    (void)unused;                                                                          \
    for (Py_ssize_t i = 0; i < n; i++)                                                     \
        out[i] = out[i] * s;                                                               \
}

DEFINE_ROWS(float)
DEFINE_ROWS(double)

typedef void (*row_f)(float *, const float *, const Constants *, Py_ssize_t);
typedef void (*row_d)(double *, const double *, const Constants *, Py_ssize_t);
typedef struct {
    const char *name;
    row_f f;
    row_d d;
    int second_is_row;      /* the second operand is a matrix (else a vector, or none) */
} Pass;

static const Pass BIAS_RELU = {"bias_relu", bias_relu_float, bias_relu_double, 0};
static const Pass BIAS_SCALE = {"bias_scale", bias_scale_float, bias_scale_double, 0};
static const Pass AFFINE = {"affine", affine_float, affine_double, 0};
static const Pass SHIFT_ROWS = {"shift_rows", shift_row_float, shift_row_double, 0};
static const Pass SCALE_DELTA = {"scale_delta", scale_delta_float, scale_delta_double, 1};
static const Pass ADD_ROW = {"column_sums", add_row_float, add_row_double, 0};
static const Pass SCALE_ROW = {"column_sums", scale_row_float, scale_row_double, 0};

/* The rows of a 2-D buffer with contiguous rows (a 1-D one is one row). */
static int matrix_of(const char *name, Py_buffer *view, Py_ssize_t *rows, Py_ssize_t *cols,
                     Py_ssize_t *stride)
{
    int two_d = view->ndim == 2;
    if (view->ndim < 1 || view->ndim > 2 || (view->itemsize != 4 && view->itemsize != 8)
        || view->format == NULL || (view->format[0] != 'f' && view->format[0] != 'd')) {
        PyErr_Format(PyExc_ValueError, "%s: expected 1-D or 2-D float32 or float64 arrays",
                     name);
        return -1;
    }
    *rows = two_d ? view->shape[0] : 1;
    *cols = view->shape[view->ndim - 1];
    *stride = two_d ? view->strides[0] : 0;
    if (*cols > 1 && view->strides[view->ndim - 1] != view->itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: expected contiguous rows", name);
        return -1;
    }
    return 0;
}

/* Apply ``pass`` to every row of ``target`` with the matching row of ``other``
 * (a matrix of the same shape) or the same vector ``other`` (one row's length);
 * ``other`` may be NULL for passes that read nothing else. */
static PyObject *run_pass(const Pass *pass, PyObject *target_obj, PyObject *other_obj,
                          const Constants *k)
{
    Py_buffer target, other = {0};
    Py_ssize_t rows, cols, stride, orows = 1, ocols = 0, ostride = 0;
    long errors = 0;
    if (PyObject_GetBuffer(target_obj, &target, PyBUF_STRIDES | PyBUF_FORMAT | PyBUF_WRITABLE) < 0)
        return NULL;
    int bad = matrix_of(pass->name, &target, &rows, &cols, &stride) < 0;
    if (!bad && other_obj != NULL) {
        if (PyObject_GetBuffer(other_obj, &other, PyBUF_STRIDES | PyBUF_FORMAT) < 0) {
            PyBuffer_Release(&target);
            return NULL;
        }
        bad = matrix_of(pass->name, &other, &orows, &ocols, &ostride) < 0;
        if (!bad && (ocols != cols || other.itemsize != target.itemsize
                     || (pass->second_is_row ? orows != rows : orows != 1))) {
            PyErr_Format(PyExc_ValueError, "%s: operand shapes or dtypes differ", pass->name);
            bad = 1;
        }
    }
    if (!bad) {
        char *t = target.buf;
        const char *o = other_obj != NULL ? other.buf : NULL;
        Py_ssize_t ostep = pass->second_is_row ? ostride : 0;
        int is_double = target.itemsize == 8;
        PyThreadState *state = rows * cols >= GIL_FREE_MIN ? PyEval_SaveThread() : NULL;
        feclearexcept(FE_ALL_EXCEPT);
        for (Py_ssize_t r = 0; r < rows; r++) {
            if (is_double)
                pass->d((double *)(t + r * stride), (const double *)(o ? o + r * ostep : NULL),
                        k, cols);
            else
                pass->f((float *)(t + r * stride), (const float *)(o ? o + r * ostep : NULL),
                        k, cols);
        }
        errors = fp_errors();
        if (state != NULL)
            PyEval_RestoreThread(state);
    }
    if (other_obj != NULL)
        PyBuffer_Release(&other);
    PyBuffer_Release(&target);
    if (bad)
        return NULL;
    return PyLong_FromLong(errors);
}

static PyObject *bias_relu(PyObject *self, PyObject *args)
{
    PyObject *z, *bias;
    Constants k = {0};
    if (!PyArg_ParseTuple(args, "OO", &z, &bias))
        return NULL;
    return run_pass(&BIAS_RELU, z, bias, &k);
}

static PyObject *bias_scale(PyObject *self, PyObject *args)
{
    PyObject *z, *bias;
    Constants k = {0};
    if (!PyArg_ParseTuple(args, "OOd", &z, &bias, &k.s))
        return NULL;
    return run_pass(&BIAS_SCALE, z, bias, &k);
}

static PyObject *affine(PyObject *self, PyObject *args)
{
    PyObject *z;
    Constants k = {0};
    if (!PyArg_ParseTuple(args, "Odd", &z, &k.s, &k.t))
        return NULL;
    return run_pass(&AFFINE, z, NULL, &k);
}

static PyObject *shift_rows(PyObject *self, PyObject *args)
{
    PyObject *z;
    Constants k = {0};
    if (!PyArg_ParseTuple(args, "O", &z))
        return NULL;
    return run_pass(&SHIFT_ROWS, z, NULL, &k);
}

static PyObject *scale_delta(PyObject *self, PyObject *args)
{
    PyObject *delta, *a;
    Constants k = {0};
    if (!PyArg_ParseTuple(args, "iOO", &k.kind, &delta, &a))
        return NULL;
    if (k.kind < 0 || k.kind > 2) {
        PyErr_SetString(PyExc_ValueError, "scale_delta: kind 0 (relu), 1 (sigmoid) or 2 (tanh)");
        return NULL;
    }
    return run_pass(&SCALE_DELTA, delta, a, &k);
}

/* out = s * (x[0] + x[1] + ... + x[rows-1]), the rows added in order. */
static PyObject *column_sums(PyObject *self, PyObject *args)
{
    PyObject *x_obj, *out_obj;
    Constants k = {0};
    Py_buffer x, out;
    Py_ssize_t rows, cols, stride, orows, ocols, ostride;
    long errors = 0;
    if (!PyArg_ParseTuple(args, "OOd", &x_obj, &out_obj, &k.s))
        return NULL;
    if (PyObject_GetBuffer(x_obj, &x, PyBUF_STRIDES | PyBUF_FORMAT) < 0)
        return NULL;
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_STRIDES | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    int bad = matrix_of("column_sums", &x, &rows, &cols, &stride) < 0
              || matrix_of("column_sums", &out, &orows, &ocols, &ostride) < 0;
    if (!bad && (orows != 1 || ocols != cols || out.itemsize != x.itemsize)) {
        PyErr_SetString(PyExc_ValueError, "column_sums: expected x (n, m) and out (m,)");
        bad = 1;
    }
    if (!bad) {
        int is_double = x.itemsize == 8;
        const char *rows_of_x = x.buf;
        memset(out.buf, 0, cols * x.itemsize);    /* NumPy starts from 0: -0 sums to +0 */
        feclearexcept(FE_ALL_EXCEPT);
        for (Py_ssize_t r = 0; r < rows; r++) {
            if (is_double)
                ADD_ROW.d(out.buf, (const double *)(rows_of_x + r * stride), &k, cols);
            else
                ADD_ROW.f(out.buf, (const float *)(rows_of_x + r * stride), &k, cols);
        }
        if (k.s != 1.0) {
            if (is_double)
                SCALE_ROW.d(out.buf, NULL, &k, cols);
            else
                SCALE_ROW.f(out.buf, NULL, &k, cols);
        }
        errors = fp_errors();
    }
    PyBuffer_Release(&out);
    PyBuffer_Release(&x);
    if (bad)
        return NULL;
    return PyLong_FromLong(errors);
}

/* ---- the workers' barrier ---------------------------------------------------- */

/* A waiter spins this long before it sleeps on the condition variable. Waking a
 * sleeping thread took ~40 us on the 2-core Xeon VM (threading.Barrier crossed in
 * 81 us); the waits inside a step are shorter than this, the wait for the next
 * step is not, and a worker asleep then costs no core. With more workers than
 * cores a spinning waiter takes a core from one still working (steps 9-13%
 * slower, 3-4 workers on 2 cores): the caller then asks for no spinning. */
#define SPIN_NS 200000
/* A sleeping waiter wakes this often to let Python run signal handlers. */
#define SLEEP_NS 50000000

typedef struct {
    PyObject_HEAD
    int parties;
    int64_t spin_ns;                       /* 0: sleep at once (more threads than cores) */
    atomic_int arrived, generation, broken;
    int sleepers;                          /* under lock */
    pthread_mutex_t lock;
    pthread_cond_t wake;
} Barrier;

static PyObject *broken_barrier_error;    /* threading.BrokenBarrierError */

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    sched_yield();
#endif
}

/* Wait (without the GIL) until the generation moves on from ``generation`` or the
 * barrier breaks (returns 1), spinning first if ``spin``; or until SLEEP_NS pass
 * asleep (returns 0), so that the caller can run signal handlers (Ctrl-C). */
static int await_generation(Barrier *b, int generation, int spin)
{
    int64_t until = now_ns() + (spin ? b->spin_ns : 0);
    for (unsigned spins = 1; atomic_load(&b->generation) == generation; spins++) {
        if (atomic_load(&b->broken))
            return 1;
        if (spins % 256 == 0 && now_ns() > until)
            break;
        cpu_relax();
    }
    if (atomic_load(&b->generation) != generation)
        return 1;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_nsec += SLEEP_NS;
    deadline.tv_sec += deadline.tv_nsec / 1000000000;
    deadline.tv_nsec %= 1000000000;
    int timed_out = 0;
    pthread_mutex_lock(&b->lock);
    while (atomic_load(&b->generation) == generation && !atomic_load(&b->broken)
           && !timed_out) {
        b->sleepers++;
        timed_out = pthread_cond_timedwait(&b->wake, &b->lock, &deadline) != 0;
        b->sleepers--;
    }
    int done = atomic_load(&b->generation) != generation || atomic_load(&b->broken);
    pthread_mutex_unlock(&b->lock);
    return done;
}

static void wake_sleepers(Barrier *b)
{
    pthread_mutex_lock(&b->lock);          /* after the change: no sleeper misses it */
    if (b->sleepers)
        pthread_cond_broadcast(&b->wake);
    pthread_mutex_unlock(&b->lock);
}

static PyObject *barrier_wait(Barrier *b, PyObject *unused)
{
    if (atomic_load(&b->broken)) {
        PyErr_SetNone(broken_barrier_error);
        return NULL;
    }
    int generation = atomic_load(&b->generation);
    if (atomic_fetch_add(&b->arrived, 1) == b->parties - 1) {    /* the last one: release */
        atomic_store(&b->arrived, 0);
        atomic_fetch_add(&b->generation, 1);
        wake_sleepers(b);
        Py_RETURN_NONE;
    }
    for (int first = 1;; first = 0) {
        int done;
        Py_BEGIN_ALLOW_THREADS
        done = await_generation(b, generation, first);
        Py_END_ALLOW_THREADS
        if (done)
            break;
        if (PyErr_CheckSignals() < 0)     /* a handler raised (KeyboardInterrupt): the */
            return NULL;                  /* caller aborts the barrier for the others  */
    }
    if (atomic_load(&b->generation) == generation) {            /* aborted, not released */
        PyErr_SetNone(broken_barrier_error);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *barrier_abort(Barrier *b, PyObject *unused)
{
    atomic_store(&b->broken, 1);
    wake_sleepers(b);
    Py_RETURN_NONE;
}

static int barrier_init(Barrier *b, PyObject *args, PyObject *kwargs)
{
    int parties, spin = 1;
    if (!PyArg_ParseTuple(args, "i|p", &parties, &spin))
        return -1;
    if (parties < 1) {
        PyErr_SetString(PyExc_ValueError, "Barrier: parties must be at least 1");
        return -1;
    }
    b->parties = parties;
    b->spin_ns = spin ? SPIN_NS : 0;
    atomic_store(&b->arrived, 0);
    atomic_store(&b->generation, 0);
    atomic_store(&b->broken, 0);
    b->sleepers = 0;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->wake, NULL);
    return 0;
}

static void barrier_dealloc(Barrier *b)
{
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->wake);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static PyMethodDef barrier_methods[] = {
    {"wait", (PyCFunction)barrier_wait, METH_NOARGS, "Wait until every party has arrived."},
    {"abort", (PyCFunction)barrier_abort, METH_NOARGS,
     "Break the barrier: every wait, now and later, raises BrokenBarrierError."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject BarrierType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "parallel_backprop._kernels.Barrier",
    .tp_basicsize = sizeof(Barrier),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A cyclic barrier whose waiters spin, then sleep, without the GIL.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)barrier_init,
    .tp_dealloc = (destructor)barrier_dealloc,
    .tp_methods = barrier_methods,
};

static PyMethodDef methods[] = {
    {"gemm", gemm, METH_VARARGS, "A BLAS routine at an address, called with row-major operands."},
    {"bias_relu", bias_relu, METH_VARARGS, "z = max(z + bias, 0) in place."},
    {"bias_scale", bias_scale, METH_VARARGS, "z = (z + bias) * s in place."},
    {"affine", affine, METH_VARARGS, "z = z * s + t in place."},
    {"shift_rows", shift_rows, METH_VARARGS, "z -= the maximum of its row, in place."},
    {"scale_delta", scale_delta, METH_VARARGS, "delta *= f'(a) for relu, sigmoid, tanh."},
    {"column_sums", column_sums, METH_VARARGS, "out = s * column sums of x."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels",
    "Direct BLAS calls and fused element-wise passes of a training step.", -1, methods,
};

PyMODINIT_FUNC PyInit__kernels(void)
{
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL)
        return NULL;
    broken_barrier_error = PyObject_GetAttrString(threading, "BrokenBarrierError");
    Py_DECREF(threading);
    if (broken_barrier_error == NULL || PyType_Ready(&BarrierType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&BarrierType);
    if (PyModule_AddObject(m, "Barrier", (PyObject *)&BarrierType) < 0) {
        Py_DECREF(&BarrierType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
