/*
 * Multi-head attention of one packed sequence in f32 with AVX2 FMAs, for CPUs without AVX-512
 * (Haswell to Alder Lake, AMD Zen 1–3), in every precision mode.
 *
 * Why: oneDNN 2.6's per-sequence primitives (Q·Kᵀ, softmax, P·V) were 14% of an int8 forward
 * pass on a 2-vCPU Zen 3, most of it in the softmax and the primitives' per-call cost. The
 * scheme is avx512_attention.c's f32 kernel at half the vector width: per head Kᵀ is packed once
 * by 8 × 8 in-register transposes and V copied with its rows contiguous; each block of 6 queries
 * computes its scores against 16 keys at a time (12 accumulators of the 16 registers), tracks
 * each row's maximum on the way, takes the softmax numerators in place and its context (6 × 16
 * head values) scaled by 1 / the numerators' sum.
 *
 * Arithmetic: f32, the same exp polynomial as the AVX-512 kernels (relative error ~2e-7).
 * Only functions marked RR_AVX2 use AVX2; callers check rr_avx2_attention_available() first.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define RR_QB2 6

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)

#define RR_AVX2 __attribute__((target("avx2,fma")))

/* Whether this CPU runs the kernel. */
int rr_avx2_attention_available(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

static int64_t rr_round16(int64_t v) { return (v + 15) / 16 * 16; }

/* Bytes of scratch rr_avx2_attend_one needs for a sequence of s tokens (head size d). */
int64_t rr_avx2_scratch_bytes(int64_t s, int64_t d) {
    int64_t s16 = rr_round16(s);
    return 4 * d * s16       /* Kᵀ of one head */
           + 4 * s16 * d     /* its V, rows contiguous */
           + 4 * RR_QB2 * s16 /* scores of a block of queries */
           + 4 * 8           /* a zero row for padding keys */
           + 4 * 64;
}

/* e^x for x ≤ 0: 2^n · p(r), r = x − n·ln 2, degree-6 polynomial; 2^n built in the exponent. */
RR_AVX2 static inline __m256 rr_exp8(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504089f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* All-ones lanes for the first n (≤ 8 counts, more means all) of 8. */
RR_AVX2 static inline __m256 rr_first(int64_t n) {
    __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 8 ? n : 8)), lanes));
}

RR_AVX2 static inline float rr_hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

RR_AVX2 static inline float rr_hsum8(__m256 v) {
    __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    m = _mm_add_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

/* Softmax numerators of one row of s scores scaled by `scale`, in place (padding up to s16 gets
 * 0), given the row's largest score; returns 1 / their sum. */
RR_AVX2 static float rr_softmax_row8(float *row, int64_t s, int64_t s16, float scale, float max) {
    __m256 shift = _mm256_set1_ps(max * scale), vs = _mm256_set1_ps(scale), sum = _mm256_setzero_ps();
    for (int64_t c = 0; c < s16; c += 8) {
        __m256 e = rr_exp8(_mm256_fmsub_ps(_mm256_loadu_ps(row + c), vs, shift));
        e = _mm256_and_ps(e, rr_first(s - c));
        _mm256_storeu_ps(row + c, e);
        sum = _mm256_add_ps(sum, e);
    }
    return 1.0f / rr_hsum8(sum);
}

/* Scores of RR_QB2 query rows against keys j0..j0+15 of Kᵀ (d rows of s16); row r goes to
 * sc + r·s16 + j0 and its maximum over the first s keys into mx[r]. */
RR_AVX2 static void rr_scores_block8(const float *const *q, const float *kt, int64_t d, int64_t s16, int64_t s,
                                     int64_t j0, float *sc, __m256 *mx) {
    __m256 acc[RR_QB2][2];
#pragma GCC unroll 6
    for (int r = 0; r < RR_QB2; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t c = 0; c < d; c++) {
        const float *kr = kt + c * s16 + j0;
        __m256 k0 = _mm256_loadu_ps(kr), k1 = _mm256_loadu_ps(kr + 8);
#pragma GCC unroll 6
        for (int r = 0; r < RR_QB2; r++) {
            __m256 qv = _mm256_broadcast_ss(q[r] + c);
            acc[r][0] = _mm256_fmadd_ps(qv, k0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(qv, k1, acc[r][1]);
        }
    }
    __m256 m0 = rr_first(s - j0), m1 = rr_first(s - j0 - 8), low = _mm256_set1_ps(-INFINITY);
#pragma GCC unroll 6
    for (int r = 0; r < RR_QB2; r++) {
        _mm256_storeu_ps(sc + r * s16 + j0, acc[r][0]);
        _mm256_storeu_ps(sc + r * s16 + j0 + 8, acc[r][1]);
        mx[r] = _mm256_max_ps(mx[r], _mm256_blendv_ps(low, acc[r][0], m0));
        mx[r] = _mm256_max_ps(mx[r], _mm256_blendv_ps(low, acc[r][1], m1));
    }
}

/* Context columns c0..c0+15 of RR_QB2 query rows: inv[r] · Σ_j p[r][j] · v[j] (v rows d apart);
 * row r goes to out[r] + c0 (rows ≥ `rows` are not stored). */
RR_AVX2 static void rr_context_block8(const float *p, int64_t s16, const float *v, int64_t d, int64_t s, int64_t c0,
                                      const float *inv, float *const *out, int rows) {
    __m256 acc[RR_QB2][2];
#pragma GCC unroll 6
    for (int r = 0; r < RR_QB2; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t j = 0; j < s; j++) {
        const float *vr = v + j * d + c0;
        __m256 v0 = _mm256_loadu_ps(vr), v1 = _mm256_loadu_ps(vr + 8);
#pragma GCC unroll 6
        for (int r = 0; r < RR_QB2; r++) {
            __m256 pv = _mm256_broadcast_ss(p + r * s16 + j);
            acc[r][0] = _mm256_fmadd_ps(pv, v0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(pv, v1, acc[r][1]);
        }
    }
    for (int r = 0; r < rows; r++) {
        __m256 scale = _mm256_set1_ps(inv[r]);
        _mm256_storeu_ps(out[r] + c0, _mm256_mul_ps(acc[r][0], scale));
        _mm256_storeu_ps(out[r] + c0 + 8, _mm256_mul_ps(acc[r][1], scale));
    }
}

/* Writes the 8 × 8 block rows[0..7][0..7] transposed: out row i (ldo apart) holds value i of
 * each row. */
RR_AVX2 static void rr_transpose8(const float *const *rows, float *out, int64_t ldo) {
    __m256 r0 = _mm256_loadu_ps(rows[0]), r1 = _mm256_loadu_ps(rows[1]), r2 = _mm256_loadu_ps(rows[2]),
           r3 = _mm256_loadu_ps(rows[3]), r4 = _mm256_loadu_ps(rows[4]), r5 = _mm256_loadu_ps(rows[5]),
           r6 = _mm256_loadu_ps(rows[6]), r7 = _mm256_loadu_ps(rows[7]);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
           t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
           t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee),
           u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee),
           u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee),
           u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    _mm256_storeu_ps(out + 0 * ldo, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(out + 1 * ldo, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(out + 2 * ldo, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(out + 3 * ldo, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(out + 4 * ldo, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(out + 5 * ldo, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(out + 6 * ldo, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(out + 7 * ldo, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/*
 * One sequence's attention: reads its s rows of qkv (s × 3h f32: Q, K, V side by side, heads of
 * d values each, d a multiple of 16) and writes its s rows of ctx (s × h). `scratch`:
 * rr_avx2_scratch_bytes(s, d) bytes, 32-byte aligned. Returns 0, or −1 when the shape is not
 * supported.
 */
RR_AVX2 int rr_avx2_attend_one(const float *qkv, int64_t s, int64_t heads, int64_t d, float scale, void *scratch,
                               float *ctx) {
    const int64_t h = heads * d, w = 3 * h, s16 = rr_round16(s);
    if (s <= 0) return 0;
    if (d % 16 != 0) return -1;
    float *kt = (float *)scratch, *vh = kt + d * s16, *sc = vh + s16 * d, *zero = sc + RR_QB2 * s16;
    memset(zero, 0, 8 * sizeof *zero);
    for (int64_t head = 0; head < heads; head++) {
        const float *q = qkv + head * d, *k = qkv + h + head * d, *v = qkv + 2 * h + head * d;
        for (int64_t i = 0; i < s; i++)
            for (int64_t c = 0; c < d; c += 8) _mm256_storeu_ps(vh + i * d + c, _mm256_loadu_ps(v + i * w + c));
        for (int64_t j0 = 0; j0 < s16; j0 += 8)
            for (int64_t c0 = 0; c0 < d; c0 += 8) {
                const float *keys[8];
                for (int i = 0; i < 8; i++) keys[i] = j0 + i < s ? k + (j0 + i) * w + c0 : zero;
                rr_transpose8(keys, kt + c0 * s16 + j0, s16);
            }
        for (int64_t q0 = 0; q0 < s; q0 += RR_QB2) {
            int rows = s - q0 < RR_QB2 ? (int)(s - q0) : RR_QB2;
            /* Rows past the sequence repeat its last query (computed, never stored). */
            const float *qr[RR_QB2];
            float *cr[RR_QB2];
            for (int r = 0; r < RR_QB2; r++) {
                int64_t i = q0 + (r < rows ? r : rows - 1);
                qr[r] = q + i * w;
                cr[r] = ctx + i * h + head * d;
            }
            __m256 mx[RR_QB2];
            float inv[RR_QB2];
            for (int r = 0; r < RR_QB2; r++) mx[r] = _mm256_set1_ps(-INFINITY);
            for (int64_t j0 = 0; j0 < s16; j0 += 16) rr_scores_block8(qr, kt, d, s16, s, j0, sc, mx);
            for (int r = 0; r < RR_QB2; r++)
                inv[r] = r < rows ? rr_softmax_row8(sc + r * s16, s, s16, scale, rr_hmax8(mx[r])) : 0.f;
            for (int64_t c0 = 0; c0 < d; c0 += 16) rr_context_block8(sc, s16, vh, d, s, c0, inv, cr, rows);
        }
    }
    return 0;
}

#else

int rr_avx2_attention_available(void) { return 0; }
int64_t rr_avx2_scratch_bytes(int64_t s, int64_t d) {
    (void)s, (void)d;
    return 0;
}
int rr_avx2_attend_one(const float *qkv, int64_t s, int64_t heads, int64_t d, float scale, void *scratch,
                       float *ctx) {
    (void)qkv, (void)s, (void)heads, (void)d, (void)scale, (void)scratch, (void)ctx;
    return -1;
}

#endif
