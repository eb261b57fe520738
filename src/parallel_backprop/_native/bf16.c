/* float32 -> bfloat16 conversion, rounding to nearest even, GIL released.
 *
 * parallel_backprop._bf16.to_bf16(src, dst): src a float32 buffer, dst a
 * uint16 buffer (a bfloat16 array's bits) of the same shape, 1-D or 2-D with
 * contiguous rows (a column block of a matrix is fine). NumPy's cast through
 * ml_dtypes runs at ~0.65 ns per element here, several passes' worth of a
 * NumPy add; the bf16 mixed-precision step converts its activations, deltas
 * and weights every step, so the conversion must run at memory speed.
 *
 * On CPUs with AVX512-BF16, VCVTNE2PS2BF16 converts 32 floats per
 * instruction (round to nearest even, like the portable loop below); the
 * choice is made once, at run time, from the CPU's feature flags.
 *
 * sigmoid_scale_to_bf16(delta, a, dst[, sums]): the backward pass's element-wise
 * step of a sigmoid layer and the conversion of its result in one pass:
 * delta *= (1 - a) * a in float32, then dst = delta rounded to bfloat16;
 * with sums (float32, one per column), the column sums of the result
 * instead of the result itself: the bias gradient, each row added in order
 * while it is in registers, and delta is only read (the step's other
 * readers take the bf16 copy). A separate pass over the float32 delta for
 * the sums took 0.26 ms of an 11 ms step, and not writing it back made
 * the step another 1.6-2.7% faster.
 * NumPy takes three passes for the first (activations._sigmoid_scale) and
 * the converter a fourth; the arithmetic is NumPy's, operation for
 * operation (built with -ffp-contract=off: no fused multiply-add), so the
 * float32 delta is bit for bit the same either way.
 *
 * sigmoid_to_bf16(z, b, dst): the forward pass's element-wise step of a
 * sigmoid layer and the conversion of its result in one pass:
 * z = 1 / (1 + exp(-(z + b))) in float32, then dst = z rounded to bfloat16.
 * NumPy's formulation (activations._sigmoid, 0.5 tanh(z / 2) + 0.5, kept for
 * fp32) needs its tanh in a pass of its own, so it was three passes over z;
 * this one computes exp itself (below), within 3 ulp of the exact sigmoid
 * (NumPy's is within 1e-7 absolute, far more in relative terms for small
 * outputs), the same values from the portable and the AVX-512 loops.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define HAVE_AVX512BF16_PATH 1
#endif

static void convert_portable(const float *src, uint16_t *dst, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &src[i], sizeof bits);
        if ((bits & 0x7fffffffu) > 0x7f800000u) {       /* NaN: keep it a quiet NaN */
            dst[i] = (uint16_t)((bits >> 16) | 0x40u);
            continue;
        }
        bits += 0x7fffu + ((bits >> 16) & 1u);          /* round half to even */
        dst[i] = (uint16_t)(bits >> 16);
    }
}

#ifdef HAVE_AVX512BF16_PATH
__attribute__((target("avx512f,avx512bw,avx512bf16")))
static void convert_avx512bf16(const float *src, uint16_t *dst, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 lo = _mm512_loadu_ps(src + i), hi = _mm512_loadu_ps(src + i + 16);
        __m512bh both = _mm512_cvtne2ps_pbh(hi, lo);    /* lo in the low half */
        _mm512_storeu_si512((void *)(dst + i), (__m512i)both);
    }
    if (i < n) {                                        /* the tail, masked */
        Py_ssize_t left = n - i;
        __mmask16 first = (__mmask16)(left >= 16 ? 0xffff : (1u << left) - 1u);
        __mmask16 second = (__mmask16)(left > 16 ? (1u << (left - 16)) - 1u : 0);
        __m512 lo = _mm512_maskz_loadu_ps(first, src + i);
        __m512 hi = _mm512_maskz_loadu_ps(second, src + i + 16);
        __m512bh both = _mm512_cvtne2ps_pbh(hi, lo);
        _mm512_mask_storeu_epi16((void *)(dst + i), (__mmask32)(first | ((uint32_t)second << 16)),
                                 (__m512i)both);
    }
}
#endif

static void sigmoid_scale_portable(float *delta, const float *a, uint16_t *dst, float *sums,
                                   Py_ssize_t n)
{
    if (sums == NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            float slope = (1.0f - a[i]) * a[i];
            delta[i] = delta[i] * slope;
        }
        convert_portable(delta, dst, n);      /* the row is still in L1 */
        return;
    }
    float chunk[64];                          /* delta is only read: the results go here */
    for (Py_ssize_t i = 0; i < n; i += 64) {
        Py_ssize_t m = n - i < 64 ? n - i : 64;
        for (Py_ssize_t j = 0; j < m; j++) {
            float slope = (1.0f - a[i + j]) * a[i + j];
            chunk[j] = delta[i + j] * slope;
            sums[i + j] += chunk[j];
        }
        convert_portable(chunk, dst + i, m);
    }
}

#ifdef HAVE_AVX512BF16_PATH
__attribute__((target("avx512f,avx512bw,avx512bf16")))
static void sigmoid_scale_avx512bf16(float *delta, const float *a, uint16_t *dst, float *sums,
                                     Py_ssize_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    Py_ssize_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 a_lo = _mm512_loadu_ps(a + i), a_hi = _mm512_loadu_ps(a + i + 16);
        __m512 lo = _mm512_mul_ps(_mm512_loadu_ps(delta + i),
                                  _mm512_mul_ps(_mm512_sub_ps(one, a_lo), a_lo));
        __m512 hi = _mm512_mul_ps(_mm512_loadu_ps(delta + i + 16),
                                  _mm512_mul_ps(_mm512_sub_ps(one, a_hi), a_hi));
        if (sums == NULL) {
            _mm512_storeu_ps(delta + i, lo);
            _mm512_storeu_ps(delta + i + 16, hi);
        } else {
            _mm512_storeu_ps(sums + i, _mm512_add_ps(_mm512_loadu_ps(sums + i), lo));
            _mm512_storeu_ps(sums + i + 16, _mm512_add_ps(_mm512_loadu_ps(sums + i + 16), hi));
        }
        _mm512_storeu_si512((void *)(dst + i), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
    if (i < n) {                              /* the tail: through chunk, converted masked */
        float chunk[32];
        for (Py_ssize_t j = i; j < n; j++) {
            chunk[j - i] = delta[j] * ((1.0f - a[j]) * a[j]);
            if (sums == NULL)
                delta[j] = chunk[j - i];
            else
                sums[j] += chunk[j - i];
        }
        convert_avx512bf16(chunk, dst + i, n - i);
    }
}
#endif

/* exp(-x) for the sigmoid, in float arithmetic that both loops below repeat
 * operation for operation (fused multiply-adds as fmaf, 2^k as ldexpf: each
 * rounded once, so the same values): 2^k e^r with k = round(t / ln 2) and
 * r = t - k ln 2 (ln 2 split in two so that k ln2_hi is exact), e^r by a
 * degree-7 polynomial on |r| <= ln 2 / 2. t = -x is held to [-87, 80]
 * first, so the result stays a normal float: the sigmoid is 1 to within
 * float32 below t = -17 and under 2e-35 above t = 80, where the true value
 * is smaller still. NaN fails both comparisons and stays NaN. */
#define EXP_T_MIN (-87.0f)
#define EXP_T_MAX 80.0f
#define EXP_LOG2E 1.44269504f
#define EXP_ROUND 12582912.0f          /* 1.5 * 2^23: adding it rounds to an integer */
#define EXP_LN2_HI 0.693359375f         /* 8 significant bits: k * EXP_LN2_HI is exact */
#define EXP_LN2_LO (-2.12194440e-4f)
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f

static inline float sigmoid_of(float x)
{
    float t = -x;
    if (t > EXP_T_MAX)
        t = EXP_T_MAX;
    if (t < EXP_T_MIN)
        t = EXP_T_MIN;
    if (t != t)
        return t;
    float k = fmaf(t, EXP_LOG2E, EXP_ROUND) - EXP_ROUND;
    float r = fmaf(k, -EXP_LN2_LO, fmaf(k, -EXP_LN2_HI, t));
    float p = fmaf(EXP_P0, r, EXP_P1);
    p = fmaf(p, r, EXP_P2);
    p = fmaf(p, r, EXP_P3);
    p = fmaf(p, r, EXP_P4);
    p = fmaf(p, r, EXP_P5);
    p = fmaf(p, r * r, r) + 1.0f;
    return 1.0f / (ldexpf(p, (int)k) + 1.0f);
}

static void sigmoid_portable(float *z, const float *b, uint16_t *dst, float *sums, Py_ssize_t n)
{
    (void)sums;                           /* none in the forward pass: row_pass refuses them */
    for (Py_ssize_t i = 0; i < n; i++)
        z[i] = sigmoid_of(z[i] + b[i]);
    convert_portable(z, dst, n);          /* the row is still in L1 */
}

#ifdef HAVE_AVX512BF16_PATH
__attribute__((target("avx512f,avx512bw,avx512bf16,fma")))
static inline __m512 sigmoid16(__m512 x)
{
    __m512 t = _mm512_sub_ps(_mm512_setzero_ps(), x);
    /* min/max return their second operand when either is NaN: t second keeps NaN */
    t = _mm512_min_ps(_mm512_set1_ps(EXP_T_MAX), t);
    t = _mm512_max_ps(_mm512_set1_ps(EXP_T_MIN), t);
    const __m512 round = _mm512_set1_ps(EXP_ROUND);
    __m512 k = _mm512_sub_ps(_mm512_fmadd_ps(t, _mm512_set1_ps(EXP_LOG2E), round), round);
    __m512 r = _mm512_fmadd_ps(k, _mm512_set1_ps(-EXP_LN2_LO),
                               _mm512_fmadd_ps(k, _mm512_set1_ps(-EXP_LN2_HI), t));
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(EXP_P0), r, _mm512_set1_ps(EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P5));
    const __m512 one = _mm512_set1_ps(1.0f);
    p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), one);
    return _mm512_div_ps(one, _mm512_add_ps(_mm512_scalef_ps(p, k), one));
}

__attribute__((target("avx512f,avx512bw,avx512bf16,fma")))
static void sigmoid_avx512bf16(float *z, const float *b, uint16_t *dst, float *sums, Py_ssize_t n)
{
    (void)sums;
    Py_ssize_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 lo = sigmoid16(_mm512_add_ps(_mm512_loadu_ps(z + i), _mm512_loadu_ps(b + i)));
        __m512 hi = sigmoid16(_mm512_add_ps(_mm512_loadu_ps(z + i + 16),
                                            _mm512_loadu_ps(b + i + 16)));
        _mm512_storeu_ps(z + i, lo);
        _mm512_storeu_ps(z + i + 16, hi);
        _mm512_storeu_si512((void *)(dst + i), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
    for (Py_ssize_t j = i; j < n; j++)
        z[j] = sigmoid_of(z[j] + b[j]);
    if (i < n)
        convert_avx512bf16(z + i, dst + i, n - i);
}
#endif

typedef void (*converter)(const float *, uint16_t *, Py_ssize_t);
typedef void (*scaler)(float *, const float *, uint16_t *, float *, Py_ssize_t);
static converter convert = convert_portable;
static scaler sigmoid_scale = sigmoid_scale_portable;
static scaler sigmoid = sigmoid_portable;
static const char *kernel = "portable";

static int rows_of(Py_buffer *view, Py_ssize_t itemsize, Py_ssize_t *rows, Py_ssize_t *cols,
                   Py_ssize_t *stride)
{
    if (view->itemsize != itemsize || view->ndim < 1 || view->ndim > 2) {
        PyErr_SetString(PyExc_ValueError, "to_bf16: expected 1-D or 2-D float32 -> uint16");
        return -1;
    }
    *rows = view->ndim == 2 ? view->shape[0] : 1;
    *cols = view->shape[view->ndim - 1];
    *stride = view->ndim == 2 ? view->strides[0] : 0;
    if (view->strides[view->ndim - 1] != itemsize && *cols > 1) {
        PyErr_SetString(PyExc_ValueError, "to_bf16: expected contiguous rows");
        return -1;
    }
    return 0;
}

static PyObject *to_bf16(PyObject *self, PyObject *args)
{
    PyObject *src_obj, *dst_obj;
    Py_buffer src, dst;
    if (!PyArg_ParseTuple(args, "OO", &src_obj, &dst_obj))
        return NULL;
    if (PyObject_GetBuffer(src_obj, &src, PyBUF_STRIDES) < 0)
        return NULL;
    if (PyObject_GetBuffer(dst_obj, &dst, PyBUF_STRIDES | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    Py_ssize_t rows, cols, src_stride, drows, dcols, dst_stride;
    int bad = rows_of(&src, 4, &rows, &cols, &src_stride) < 0
              || rows_of(&dst, 2, &drows, &dcols, &dst_stride) < 0;
    if (!bad && (rows != drows || cols != dcols)) {
        PyErr_SetString(PyExc_ValueError, "to_bf16: source and destination shapes differ");
        bad = 1;
    }
    if (!bad) {
        const char *s = src.buf;
        char *d = dst.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t r = 0; r < rows; r++)
            convert((const float *)(s + r * src_stride), (uint16_t *)(d + r * dst_stride), cols);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    if (bad)
        return NULL;
    Py_RETURN_NONE;
}

/* The row layout of a 2-D (or 1-D) buffer of the given item size. */
static int layout_of(PyObject *obj, Py_buffer *view, int flags, Py_ssize_t itemsize,
                     Py_ssize_t *rows, Py_ssize_t *cols, Py_ssize_t *stride)
{
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    if (rows_of(view, itemsize, rows, cols, stride) < 0) {
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* kernel(row of out, row of in, row of dst, sums, cols) over every row, without the
 * GIL. out: float32, written (read only, with sums); in: float32 of out's
 * shape, or 1-D (one row for all: a bias); dst: uint16 of out's shape, or
 * None; sums: None (NULL to the kernel), or float32 1-D of out's width,
 * zeroed here, that the kernel adds each row of its results to. */
static PyObject *each_row(const char *name, PyObject *const objects[4], scaler kernel)
{
    Py_buffer views[4];
    Py_ssize_t rows[4] = {0, 0, 0, 0}, cols[4] = {0, 0, 0, 0}, strides[4] = {0, 0, 0, 0};
    static const Py_ssize_t sizes[4] = {4, 4, 2, 4};
    int got = 0, bad = 0;
    for (; got < 4 && !bad; got++) {
        if (objects[got] == Py_None)
            break;
        int flags = PyBUF_STRIDES | (got == 1 ? 0 : PyBUF_WRITABLE);
        bad = layout_of(objects[got], &views[got], flags, sizes[got], &rows[got], &cols[got],
                        &strides[got]) < 0;
    }
    if (bad)
        got--;                                      /* the failed one holds no buffer */
    else if (got < 2 || (got >= 3 && (rows[2] != rows[0] || cols[2] != cols[0]))
             || cols[1] != cols[0] || (rows[1] != rows[0] && views[1].ndim != 1)
             || (got == 4 && (views[3].ndim != 1 || cols[3] != cols[0]))) {
        PyErr_Format(PyExc_ValueError, "%s: shapes differ", name);
        bad = 1;
    }
    if (!bad) {
        char *d = views[0].buf, *s = got >= 3 ? views[2].buf : NULL;
        const char *a = views[1].buf;
        float *sums = got == 4 ? views[3].buf : NULL;
        Py_BEGIN_ALLOW_THREADS
        if (sums)
            memset(sums, 0, (size_t)cols[0] * sizeof *sums);
        for (Py_ssize_t r = 0; r < rows[0]; r++)
            kernel((float *)(d + r * strides[0]), (const float *)(a + r * strides[1]),
                   s ? (uint16_t *)(s + r * strides[2]) : NULL, sums, cols[0]);
        Py_END_ALLOW_THREADS
    }
    for (int i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    if (bad)
        return NULL;
    Py_RETURN_NONE;
}

/* name(out, in, dst[, sums]): ``kernel`` over every row, as each_row lays them out;
 * sums only where the kernel computes them (``summing``). */
static PyObject *row_pass(PyObject *args, const char *name, scaler kernel, int summing)
{
    PyObject *objects[4] = {NULL, NULL, NULL, Py_None};
    if (!PyArg_ParseTuple(args, summing ? "OOO|O" : "OOO", &objects[0], &objects[1],
                          &objects[2], &objects[3]))
        return NULL;
    if (objects[2] == Py_None && objects[3] != Py_None) {
        PyErr_Format(PyExc_ValueError, "%s: sums need dst", name);
        return NULL;
    }
    return each_row(name, objects, kernel);
}

static PyObject *sigmoid_scale_to_bf16(PyObject *self, PyObject *args)
{
    return row_pass(args, "sigmoid_scale_to_bf16", sigmoid_scale, 1);
}

static PyObject *sigmoid_to_bf16(PyObject *self, PyObject *args)
{
    return row_pass(args, "sigmoid_to_bf16", sigmoid, 0);
}

/* The same passes through the portable loops, whatever the CPU (for tests). */
static PyObject *sigmoid_scale_to_bf16_portable(PyObject *self, PyObject *args)
{
    return row_pass(args, "sigmoid_scale_to_bf16", sigmoid_scale_portable, 1);
}

static PyObject *sigmoid_to_bf16_portable(PyObject *self, PyObject *args)
{
    return row_pass(args, "sigmoid_to_bf16", sigmoid_portable, 0);
}

static PyObject *to_bf16_portable(PyObject *self, PyObject *args)
{
    converter chosen = convert;
    convert = convert_portable;          /* for tests: the loop other CPUs run */
    PyObject *result = to_bf16(self, args);
    convert = chosen;
    return result;
}

static PyMethodDef methods[] = {
    {"to_bf16", to_bf16, METH_VARARGS,
     "to_bf16(src, dst): float32 src into uint16 dst (bfloat16 bits), round to nearest even."},
    {"to_bf16_portable", to_bf16_portable, METH_VARARGS,
     "to_bf16 through the portable loop, whatever the CPU (for tests)."},
    {"sigmoid_scale_to_bf16", sigmoid_scale_to_bf16, METH_VARARGS,
     "sigmoid_scale_to_bf16(delta, a, dst[, sums]): delta *= (1 - a) * a (float32, in place), "
     "then dst = delta as bfloat16 bits (uint16), in one pass; with sums, sums = its column "
     "sums instead, delta left as it was."},
    {"sigmoid_scale_to_bf16_portable", sigmoid_scale_to_bf16_portable, METH_VARARGS,
     "sigmoid_scale_to_bf16 through the portable loop, whatever the CPU (for tests)."},
    {"sigmoid_to_bf16", sigmoid_to_bf16, METH_VARARGS,
     "sigmoid_to_bf16(z, b, dst): z = 1 / (1 + exp(-(z + b))) in place (float32, b one row), "
     "then dst = z as bfloat16 bits (uint16), in one pass."},
    {"sigmoid_to_bf16_portable", sigmoid_to_bf16_portable, METH_VARARGS,
     "sigmoid_to_bf16 through the portable loop, whatever the CPU (for tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_bf16",
                                    "float32 -> bfloat16 conversion at memory speed.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__bf16(void)
{
#ifdef HAVE_AVX512BF16_PATH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512bf16")) {
        convert = convert_avx512bf16;
        sigmoid_scale = sigmoid_scale_avx512bf16;
        sigmoid = sigmoid_avx512bf16;
        kernel = "avx512bf16";
    }
#endif
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddStringConstant(m, "KERNEL", kernel) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
