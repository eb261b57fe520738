/* The update rules of parallel_backprop.optim in one pass over the arrays (module _fused).
 *
 * NumPy applies Adam as a dozen element-wise passes, each reading and writing
 * whole arrays; here every element of p, g and the state is read once and
 * written once. Each function takes arrays of one shape, 1-D or 2-D with
 * contiguous rows (a worker's column block of a layer's W is such a 2-D
 * view), all float32 or all float64, and the rule's constants as Python
 * floats computed by optim.py. The loops run without the GIL.
 *
 * The arithmetic is NumPy's, operation for operation, in the arrays' type:
 * each constant is rounded to that type as NumPy rounds a Python float, each
 * product and sum is rounded on its own (this file is built with
 * -ffp-contract=off, so no fused multiply-add merges two roundings, and
 * -fno-math-errno, which only lets sqrt vectorise), and
 * sqrt and division are IEEE's correctly rounded ones. So a step here equals
 * optim.py's NumPy step bit for bit, and a run resumes identically whether
 * or not this module was built.
 *
 *   adam(p, g, m, v, b1, 1-b1, b2, 1-b2, c2, eps, c1, wd, shrink)
 *       [p *= shrink (AdamW)]  [g' = g + p * wd (L2)]
 *       m = m * b1 + g' * (1-b1);  v = v * b2 + (g' * g') * (1-b2)
 *       p -= ((m / ((sqrt(v) * c2) + eps)) * c1)
 *   momentum(p, g, v, mu, lr, wd, nesterov)
 *       [g' = g + p * wd];  v = v * mu + g'
 *       p -= v * lr  |  nesterov: p -= (g' + v * mu) * lr
 *   sgd(p, g, lr, wd)
 *       [g' = g + p * wd];  p -= g' * lr
 *   descend(p, v, lr, wd)          (momentum, the gradient already in v)
 *       [v = v + p * wd];  p -= v * lr
 *
 * wd = 0 and shrink = 1 leave their operation out, as optim.py does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

/* Below this many elements the loop is shorter than dropping and taking back
 * the GIL is worth (a bias vector, a narrow output layer). */
#define GIL_FREE_MIN 4096
#define MAX_ARRAYS 4

/* Vector widths chosen when the module loads: AVX-512 where the CPU has it
 * (sqrt and division dominate Adam's pass once the arrays are in cache). */
#include "clones.h"
#if defined(_MSC_VER) && !defined(__clang__)
#define restrict __restrict
#endif

typedef struct {
    char *data[MAX_ARRAYS];
    Py_ssize_t rows, cols, row_step[MAX_ARRAYS];   /* row_step in bytes */
    int is_double;
} Blocks;

typedef struct {
    double b1, one_minus_b1, b2, one_minus_b2, c2, eps, c1, wd, shrink;
} AdamConstants;

typedef struct {
    double mu, lr, wd;
    int nesterov;
} MomentumConstants;

typedef struct {
    double lr, wd;
} SgdConstants;     /* sgd and descend */

/* ---- one row of each rule, for float and for double ------------------------ */

#define DEFINE_ROWS(T, SQRT)                                                          \
CLONES static void adam_row_##T(T *restrict p, const T *restrict g, T *restrict m,    \
                                T *restrict v, Py_ssize_t n, const AdamConstants *k)  \
{                                                                                     \
    const T b1 = (T)k->b1, ob1 = (T)k->one_minus_b1, b2 = (T)k->b2;                   \
    const T ob2 = (T)k->one_minus_b2, c2 = (T)k->c2, eps = (T)k->eps;                 \
    const T c1 = (T)k->c1, wd = (T)k->wd, shrink = (T)k->shrink;                      \
    const int l2 = k->wd != 0.0, decoupled = k->shrink != 1.0;                        \
    for (Py_ssize_t i = 0; i < n; i++) {                                              \
        T pi = p[i], gi = g[i];                                                       \
        if (decoupled)                                                                \
            pi = pi * shrink;                                                         \
        if (l2)                                                                       \
            gi = gi + pi * wd;                                                        \
        const T mi = m[i] * b1 + gi * ob1;                                            \
        const T vi = v[i] * b2 + (gi * gi) * ob2;                                     \
        m[i] = mi;                                                                    \
        v[i] = vi;                                                                    \
        p[i] = pi - (mi / (SQRT(vi) * c2 + eps)) * c1;                                \
    }                                                                                 \
}                                                                                     \
                                                                                      \
CLONES static void momentum_row_##T(T *restrict p, const T *restrict g,               \
                                    T *restrict v, Py_ssize_t n,                      \
                                    const MomentumConstants *k)                       \
{                                                                                     \
    const T mu = (T)k->mu, lr = (T)k->lr, wd = (T)k->wd;                              \
    const int l2 = k->wd != 0.0, nesterov = k->nesterov;                              \
    for (Py_ssize_t i = 0; i < n; i++) {                                              \
        T gi = g[i];                                                                  \
        if (l2)                                                                       \
            gi = gi + p[i] * wd;                                                      \
        const T vi = v[i] * mu + gi;                                                  \
        v[i] = vi;                                                                    \
        if (nesterov)                                                                 \
            p[i] = p[i] - (gi + vi * mu) * lr;                                        \
        else                                                                          \
            p[i] = p[i] - vi * lr;                                                    \
    }                                                                                 \
}                                                                                     \
                                                                                      \
CLONES static void sgd_row_##T(T *restrict p, const T *restrict g, Py_ssize_t n,      \
                               const SgdConstants *k)                                 \
{                                                                                     \
    const T lr = (T)k->lr, wd = (T)k->wd;                                             \
    const int l2 = k->wd != 0.0;                                                      \
    for (Py_ssize_t i = 0; i < n; i++) {                                              \
        T gi = g[i];                                                                  \
        if (l2)                                                                       \
            gi = gi + p[i] * wd;                                                      \
        p[i] = p[i] - gi * lr;                                                        \
    }                                                                                 \
}                                                                                     \
                                                                                      \
CLONES static void descend_row_##T(T *restrict p, T *restrict v, Py_ssize_t n,        \
                                   const SgdConstants *k)                             \
{                                                                                     \
    const T lr = (T)k->lr, wd = (T)k->wd;                                             \
    const int l2 = k->wd != 0.0;                                                      \
    for (Py_ssize_t i = 0; i < n; i++) {                                              \
        T vi = v[i];                                                                  \
        if (l2) {                                                                     \
            vi = vi + p[i] * wd;                                                      \
            v[i] = vi;                                                                \
        }                                                                             \
        p[i] = p[i] - vi * lr;                                                        \
    }                                                                                 \
}

DEFINE_ROWS(float, sqrtf)
DEFINE_ROWS(double, sqrt)

/* ---- the arrays: buffers of one shape and type, rows contiguous ------------ */

static void release(Py_buffer *views, int n)
{
    for (int i = 0; i < n; i++)
        PyBuffer_Release(&views[i]);
}

/* Fill ``blocks`` from ``n`` array arguments; on error set an exception, return -1. */
static int get_blocks(PyObject *const *args, int n, Py_buffer *views, Blocks *blocks)
{
    for (int i = 0; i < n; i++) {
        if (PyObject_GetBuffer(args[i], &views[i], PyBUF_RECORDS) < 0) {
            release(views, i);
            return -1;
        }
    }
    const Py_buffer *first = &views[0];
    const char *format = first->format ? first->format : "B";
    if (format[0] == '=' || format[0] == '<' || format[0] == '@')
        format++;
    blocks->is_double = strcmp(format, "d") == 0;
    if (!blocks->is_double && strcmp(format, "f") != 0) {
        PyErr_Format(PyExc_TypeError, "arrays of format %s: expected float32 or float64",
                     first->format);
        release(views, n);
        return -1;
    }
    if (first->ndim < 1 || first->ndim > 2) {
        PyErr_Format(PyExc_ValueError, "arrays of %d dimensions: expected 1 or 2",
                     first->ndim);
        release(views, n);
        return -1;
    }
    blocks->rows = first->ndim == 2 ? first->shape[0] : 1;
    blocks->cols = first->shape[first->ndim - 1];
    for (int i = 0; i < n; i++) {
        const Py_buffer *view = &views[i];
        const int same = view->ndim == first->ndim && view->itemsize == first->itemsize
            && strcmp(view->format ? view->format : "B", first->format ? first->format : "B") == 0
            && memcmp(view->shape, first->shape, sizeof(Py_ssize_t) * view->ndim) == 0;
        /* strides read only once the dimensions are known to match (>= 1) */
        if (!same || (blocks->cols > 1 && view->strides[view->ndim - 1] != view->itemsize)) {
            PyErr_SetString(PyExc_ValueError,
                            "arrays must share one shape and type and have contiguous rows");
            release(views, n);
            return -1;
        }
        blocks->data[i] = view->buf;
        blocks->row_step[i] = view->ndim == 2 ? view->strides[0] : 0;
    }
    return 0;
}

static int get_doubles(PyObject *const *args, int n, double *out)
{
    for (int i = 0; i < n; i++) {
        out[i] = PyFloat_AsDouble(args[i]);
        if (out[i] == -1.0 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

static int check_count(const char *name, Py_ssize_t given, Py_ssize_t expected)
{
    if (given == expected)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name, expected,
                 given);
    return -1;
}

/* Run ``row`` over every row of the blocks, without the GIL when the work is large. */
#define EACH_ROW(blocks, CALL)                                                        \
    do {                                                                              \
        const int free_gil = (blocks).rows * (blocks).cols >= GIL_FREE_MIN;           \
        PyThreadState *saved = free_gil ? PyEval_SaveThread() : NULL;                 \
        for (Py_ssize_t r = 0; r < (blocks).rows; r++) {                              \
            CALL;                                                                     \
        }                                                                             \
        if (free_gil)                                                                 \
            PyEval_RestoreThread(saved);                                              \
    } while (0)

#define ROW(blocks, i, T) ((T *)((blocks).data[i] + r * (blocks).row_step[i]))

/* ---- the module's functions ------------------------------------------------- */

static PyObject *fused_adam(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    double x[9];
    Py_buffer views[4];
    Blocks b;
    if (check_count("adam", nargs, 13) < 0 || get_doubles(args + 4, 9, x) < 0
        || get_blocks(args, 4, views, &b) < 0)
        return NULL;
    const AdamConstants k = {x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8]};
    if (b.is_double)
        EACH_ROW(b, adam_row_double(ROW(b, 0, double), ROW(b, 1, double), ROW(b, 2, double),
                                    ROW(b, 3, double), b.cols, &k));
    else
        EACH_ROW(b, adam_row_float(ROW(b, 0, float), ROW(b, 1, float), ROW(b, 2, float),
                                   ROW(b, 3, float), b.cols, &k));
    release(views, 4);
    Py_RETURN_NONE;
}

static PyObject *fused_momentum(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    MomentumConstants k;
    double numbers[3];
    Py_buffer views[3];
    Blocks b;
    if (check_count("momentum", nargs, 7) < 0 || get_doubles(args + 3, 3, numbers) < 0)
        return NULL;
    k.mu = numbers[0];
    k.lr = numbers[1];
    k.wd = numbers[2];
    k.nesterov = PyObject_IsTrue(args[6]);
    if (k.nesterov < 0 || get_blocks(args, 3, views, &b) < 0)
        return NULL;
    if (b.is_double)
        EACH_ROW(b, momentum_row_double(ROW(b, 0, double), ROW(b, 1, double),
                                        ROW(b, 2, double), b.cols, &k));
    else
        EACH_ROW(b, momentum_row_float(ROW(b, 0, float), ROW(b, 1, float),
                                       ROW(b, 2, float), b.cols, &k));
    release(views, 3);
    Py_RETURN_NONE;
}

/* sgd(p, g, lr, wd) and descend(p, v, lr, wd): two arrays and two numbers each. */
#define TWO_ARRAY_RULE(NAME)                                                          \
    static PyObject *fused_##NAME(PyObject *self, PyObject *const *args,             \
                                  Py_ssize_t nargs)                                   \
    {                                                                                 \
        double x[2];                                                                  \
        Py_buffer views[2];                                                           \
        Blocks b;                                                                     \
        if (check_count(#NAME, nargs, 4) < 0 || get_doubles(args + 2, 2, x) < 0       \
            || get_blocks(args, 2, views, &b) < 0)                                    \
            return NULL;                                                              \
        const SgdConstants k = {x[0], x[1]};                                          \
        if (b.is_double)                                                              \
            EACH_ROW(b, NAME##_row_double(ROW(b, 0, double), ROW(b, 1, double),       \
                                          b.cols, &k));                               \
        else                                                                          \
            EACH_ROW(b, NAME##_row_float(ROW(b, 0, float), ROW(b, 1, float),          \
                                         b.cols, &k));                                \
        release(views, 2);                                                            \
        Py_RETURN_NONE;                                                               \
    }

TWO_ARRAY_RULE(sgd)
TWO_ARRAY_RULE(descend)

static PyMethodDef methods[] = {
    {"adam", (PyCFunction)(void (*)(void))fused_adam, METH_FASTCALL,
     "adam(p, g, m, v, b1, 1-b1, b2, 1-b2, c2, eps, c1, wd, shrink): one Adam/AdamW step "
     "in place (see the module's source)."},
    {"momentum", (PyCFunction)(void (*)(void))fused_momentum, METH_FASTCALL,
     "momentum(p, g, v, mu, lr, wd, nesterov): one momentum or Nesterov step in place."},
    {"sgd", (PyCFunction)(void (*)(void))fused_sgd, METH_FASTCALL,
     "sgd(p, g, lr, wd): one SGD step in place, with L2 weight decay when wd > 0."},
    {"descend", (PyCFunction)(void (*)(void))fused_descend, METH_FASTCALL,
     "descend(p, v, lr, wd): momentum's step once v holds mu * v + g; adds wd * p to v."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fused",
    "The update rules of parallel_backprop.optim, each in one pass over its arrays.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__fused(void)
{
    return PyModule_Create(&module);
}
