/* The Perceiver's key stream in one pass: brainsymphony._keystream, wrapped by brainsymphony/fused_stream.py.
 *
 * For every subject b and query q (N = heads x regions queries, padded to a multiple of LANES), over all
 * R x T keys (r, t):
 *
 *     score  = (qa[r, q] + qb[t, q] + sum_k qm[k, q] w[r, t, k]) * inv_sigma[r, t]
 *     p      = exp(score - shift[q]),  shift[q] >= every score of query q
 *     region_sum[r, q]  = sum_t p / sigma      region_mass[r, q] = sum_t p
 *     time_sum[t, q]    = sum_r p / sigma      time_mass[t, q]   = sum_r p   (optional)
 *     window_sum[k, q]  = sum_rt p w[r, t, k] / sigma
 *
 * The PyTorch stream writes every exponent to memory and reads it back five times; here each exponent lives
 * in a register, LANES queries at a time, and is reduced where it is made. The caller's shift is an upper
 * bound of the scores: within a few tens of the largest score, every weight near the largest is a normal
 * float and the sums are exact to rounding. Where it is so loose that a query's total weight falls below
 * MIN_TOTAL, the column is streamed again after a first pass for the exact largest scores. One call computes
 * a range of (subject, LANES queries) columns, each independently of the others and always in the same
 * order, so the result does not depend on how callers split the work between threads. The GIL is released
 * while it runs. See docs/model.md, "Context path (1-D conv + Perceiver)".
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

/* Built twice by setup.py: _keystream, 8 queries per register, for any CPU (on x86-64 with GCC, at the widest
 * of AVX-512, AVX2+FMA or the baseline that the CPU has), and _keystream_avx512, 16 per register, compiled
 * for AVX-512 and imported only where the CPU has it. */
#ifndef LANES
#define LANES 8
#endif
#ifndef MODULE
#define MODULE _keystream
#endif
typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(LANES * sizeof(int32_t))));

#if LANES == 8 && defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define WIDEST_ISA __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define WIDEST_ISA
#endif

static inline vf load(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void store(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf splat(float x) { return (vf){0} + x; }
static inline vf blend(vi mask, vf a, vf b) { return (vf)((mask & (vi)a) | (~mask & (vi)b)); }

/* max(a, b) and p 2^n for integral n: one instruction each in the AVX-512 build (the bit-exact same values as
 * the portable forms, which take three and four). */
#if LANES == 16 && defined(__AVX512F__)
static inline vf maximum(vf a, vf b) { return (vf)_mm512_max_ps((__m512)a, (__m512)b); }
static inline vf times_power_of_two(vf p, vf n) { return (vf)_mm512_scalef_ps((__m512)p, (__m512)n); }
#else
static inline vf maximum(vf a, vf b) { return blend(a > b, a, b); }
static inline vf times_power_of_two(vf p, vf n) { return p * (vf)((__builtin_convertvector(n, vi) + 127) << 23); }
#endif

/* Smallest total weight of a query accepted from a shift that bounds its scores (2^-60): over at most 90,000
 * keys the largest weight is then above e^-54, and the keys more than 87 below the shift, which weigh e^-87
 * each instead of less, change the sums by less than 1e-14 of the total. */
#define MIN_TOTAL 8.6736174e-19f

/* e^x for x <= 88 as 2^n e^r, |r| <= ln 2 / 2, Taylor to r^6 (relative error < 2e-7); e^-87 below -87. */
static inline vf exp_bounded(vf x) {
    x = maximum(x, splat(-87.0f));
    const vf n = (x * 1.44269504f + 12582912.0f) - 12582912.0f; /* round(x / ln 2) */
    const vf r = x - n * 0.693145751953125f - n * 1.428606765330187e-06f;
    vf p = splat(1.0f / 720.0f);
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return times_power_of_two(p, n);
}

/* The scores of LANES queries against key (r, t). */
#define SCORE(x)                                                                                                   \
    do {                                                                                                           \
        (x) = qa_r + load(qb + t * n);                                                                             \
        for (long k = 0; k < K; k++) (x) += qm_k[k] * w[k];                                                        \
        (x) *= inv_sigma[r * T + t];                                                                               \
    } while (0)

/* One column of LANES queries: pointers at the column's first query, rows n floats apart; shift NULL for the
 * exact largest scores. Inlined with K a constant, the window terms and sums stay in registers. Returns
 * whether every query's total weight reached MIN_TOTAL. */
static inline __attribute__((always_inline)) int column(const float *qa, const float *qb, const float *qm,
                                                        const float *windows, const float *inv_sigma,
                                                        const float *shift_bound, long R, long T, const long K, long n,
                                                        float *region_sum, float *region_mass, float *time_sum,
                                                        float *time_mass, float *window_sum) {
    vf qm_k[K], window_acc[K], shift = splat(-__builtin_inff()), total = splat(0.0f);
    for (long k = 0; k < K; k++) {
        qm_k[k] = load(qm + k * n);
        window_acc[k] = splat(0.0f);
    }
    if (shift_bound) shift = load(shift_bound);
    for (long r = 0; r < R && !shift_bound; r++) {
        const vf qa_r = load(qa + r * n);
        for (long t = 0; t < T; t++) {
            const float *w = windows + (r * T + t) * K;
            vf score;
            SCORE(score);
            shift = maximum(score, shift);
        }
    }
    for (long t = 0; t < T; t++) {
        store(time_sum + t * n, splat(0.0f));
        if (time_mass) store(time_mass + t * n, splat(0.0f));
    }
    for (long r = 0; r < R; r++) {
        const vf qa_r = load(qa + r * n);
        vf sum = splat(0.0f), mass = splat(0.0f);
        for (long t = 0; t < T; t++) {
            const float *w = windows + (r * T + t) * K;
            vf score;
            SCORE(score);
            const vf p = exp_bounded(score - shift), p_sigma = p * inv_sigma[r * T + t];
            sum += p_sigma;
            mass += p;
            for (long k = 0; k < K; k++) window_acc[k] += p_sigma * w[k];
            store(time_sum + t * n, load(time_sum + t * n) + p_sigma);
            if (time_mass) store(time_mass + t * n, load(time_mass + t * n) + p);
        }
        store(region_sum + r * n, sum);
        store(region_mass + r * n, mass);
        total += mass;
    }
    for (long k = 0; k < K; k++) store(window_sum + k * n, window_acc[k]);
    for (int lane = 0; lane < LANES; lane++)
        if (total[lane] < MIN_TOTAL) return 0;
    return 1;
}

/* Columns first..last-1 of the B x (n / LANES) columns; arrays as in the header, subject-major. */
WIDEST_ISA
static void columns(const float *qa, const float *qb, const float *qm, const float *windows, const float *inv_sigma,
                    const float *shift, long R, long T, long K, long n, long first, long last, float *region_sum,
                    float *region_mass, float *time_sum, float *time_mass, float *window_sum) {
    const long per_subject = n / LANES;
    for (long column_index = first; column_index < last; column_index++) {
        const long b = column_index / per_subject, q = (column_index % per_subject) * LANES;
        const float *a = qa + b * R * n + q, *bq = qb + b * T * n + q, *m = qm + b * K * n + q;
        const float *w = windows + b * R * T * K, *s = inv_sigma + b * R * T, *bound = shift + b * n + q;
        float *rs = region_sum + b * R * n + q, *rm = region_mass + b * R * n + q;
        float *ts = time_sum + b * T * n + q, *tm = time_mass ? time_mass + b * T * n + q : NULL;
        float *ws = window_sum + b * K * n + q;
        /* with the bound, then, if a query's weights all but vanished, with the exact largest scores */
        for (int exact = 0; exact < 2; exact++) {
            const float *given = exact ? NULL : bound;
            int accepted;
            switch (K) { /* the published kernel is 5 */
            case 3: accepted = column(a, bq, m, w, s, given, R, T, 3, n, rs, rm, ts, tm, ws); break;
            case 5: accepted = column(a, bq, m, w, s, given, R, T, 5, n, rs, rm, ts, tm, ws); break;
            case 7: accepted = column(a, bq, m, w, s, given, R, T, 7, n, rs, rm, ts, tm, ws); break;
            default: accepted = column(a, bq, m, w, s, given, R, T, K, n, rs, rm, ts, tm, ws);
            }
            if (accepted) break;
        }
    }
}

static int check_size(const Py_buffer *buffer, Py_ssize_t floats, const char *name) {
    if (buffer->len != floats * (Py_ssize_t)sizeof(float)) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, expected %zd float32 values", name, buffer->len, floats);
        return -1;
    }
    return 0;
}

static PyObject *stream(PyObject *self, PyObject *args) {
    (void)self;
    Py_ssize_t B, R, T, K, n, first, last;
    Py_buffer in[6], out[4];
    PyObject *time_mass_object;
    if (!PyArg_ParseTuple(args, "(nnnnn)nny*y*y*y*y*y*w*w*w*w*O", &B, &R, &T, &K, &n, &first, &last, &in[0],
                          &in[1], &in[2], &in[3], &in[4], &in[5], &out[0], &out[1], &out[2], &out[3],
                          &time_mass_object))
        return NULL;
    Py_buffer time_mass = {0};
    int has_time_mass = time_mass_object != Py_None, ok = 0;
    if (has_time_mass && PyObject_GetBuffer(time_mass_object, &time_mass, PyBUF_WRITABLE) < 0) goto release;
    if (n % LANES || K < 1 || first < 0 || last > B * (n / LANES) || first > last) {
        PyErr_Format(PyExc_ValueError, "bad shape: queries %zd (a multiple of %d), kernel %zd, columns %zd..%zd", n,
                     LANES, K, first, last);
        goto release;
    }
    const Py_ssize_t sizes_in[6] = {B * R * n, B * T * n, B * K * n, B * R * T * K, B * R * T, B * n};
    const Py_ssize_t sizes_out[4] = {B * R * n, B * R * n, B * T * n, B * K * n};
    const char *names_in[6] = {"qa", "qb", "qm", "windows", "inv_sigma", "shift"};
    const char *names_out[4] = {"region_sum", "region_mass", "time_sum", "window_sum"};
    for (int i = 0; i < 6; i++)
        if (check_size(&in[i], sizes_in[i], names_in[i]) < 0) goto release;
    for (int i = 0; i < 4; i++)
        if (check_size(&out[i], sizes_out[i], names_out[i]) < 0) goto release;
    if (has_time_mass && check_size(&time_mass, B * T * n, "time_mass") < 0) goto release;
    Py_BEGIN_ALLOW_THREADS;
    columns(in[0].buf, in[1].buf, in[2].buf, in[3].buf, in[4].buf, in[5].buf, R, T, K, n, first, last, out[0].buf,
            out[1].buf, out[2].buf, has_time_mass ? time_mass.buf : NULL, out[3].buf);
    Py_END_ALLOW_THREADS;
    ok = 1;
release:
    for (int i = 0; i < 6; i++) PyBuffer_Release(&in[i]);
    for (int i = 0; i < 4; i++) PyBuffer_Release(&out[i]);
    if (has_time_mass && time_mass.obj) PyBuffer_Release(&time_mass);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"stream", stream, METH_VARARGS,
     "stream((B, R, T, K, n), first, last, qa, qb, qm, windows, inv_sigma, shift, region_sum, region_mass, "
     "time_sum, window_sum, time_mass_or_None): the key stream of columns first..last-1 (see the module header)."},
    {NULL, NULL, 0, NULL},
};

#define STRING(name) #name
#define NAME(name) STRING(name)
#define INIT(name) PyInit_##name
#define INIT_FUNCTION(name) INIT(name)

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, NAME(MODULE), "The Perceiver's key stream in one pass.", -1,
                                    methods};

PyMODINIT_FUNC INIT_FUNCTION(MODULE)(void) {
    PyObject *created = PyModule_Create(&module);
    if (created && PyModule_AddIntConstant(created, "LANES", LANES) < 0) Py_CLEAR(created);
    return created;
}
