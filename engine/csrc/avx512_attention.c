/*
 * Multi-head attention of one packed sequence on AVX-512 CPUs: in f32 with FMAs (the f32 mode,
 * and every mode on CPUs without bf16 instructions, Skylake-SP to Ice Lake), and with AVX512-BF16
 * dot products (rr_avx512bf16_attend_one, below: the bf16 and int8 modes on Zen 4/5 and Cooper
 * Lake; AMX CPUs use amx_attention.c for those).
 *
 * Why not oneDNN: a sequence's products are small (MiniLM: 12 heads × 127² × 32), and oneDNN 2.6
 * runs them as three primitives per sequence (Q·Kᵀ on `gemm:jit`, a softmax at ~1.5 G values/s,
 * P·V), ~74 GFLOP/s on a 2-vCPU Zen 4 whose sgemm reaches 220: a quarter of an int8 forward
 * pass. Here each head's Kᵀ is packed once (16 keys per vector), then each block of 6 queries
 * computes its scores (6 × 32 keys in 12 accumulators), its softmax in place (vectorized exp),
 * and its context (6 × 32 head values in 12 accumulators), all in L1.
 *
 * Arithmetic: f32 throughout, accumulated in the same order for every row; the exp is a degree-6
 * polynomial (relative error ~2e-7), so results match oneDNN's to f32 rounding.
 *
 * For the int8 mode the QKV epilogue is applied to the sequence's rows in place first and its
 * context requantized as it is finished (two passes over the batch fewer). Only functions marked
 * RR_AVX512 use AVX-512; callers check rr_avx512_attention_available() first.
 */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "int8_rows.h"

/* Queries per block: 6 rows × 2 vectors = 12 accumulators, beside 2 loaded vectors and the
 * broadcasts, within the 32 vector registers. */
#define RR_QB 6

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)

#include "avx512_exp.h"

#define RR_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))

/* Whether this CPU runs the kernel (AVX-512 F/BW/VL/DQ, as the row passes need too). */
int rr_avx512_attention_available(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}

static int64_t rr_round16(int64_t v) { return (v + 15) / 16 * 16; }

/* Bytes of scratch rr_avx512_attend_one needs for a sequence of s tokens (head size d). */
int64_t rr_avx512_scratch_bytes(int64_t s, int64_t d) {
    int64_t s16 = rr_round16(s);
    return 4 * d * s16        /* Kᵀ of one head */
           + 4 * s16 * d      /* its V, rows contiguous */
           + 4 * RR_QB * s16  /* scores of a block of queries */
           + 4 * 16           /* a zero row for padding keys */
           + 5 * 64;
}

/* The mask of the first `n` (< 16) lanes, or all lanes for n ≥ 16. */
static inline __mmask16 rr_lanes(int64_t n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1); }

/* Softmax numerators of one row of s scores scaled by `scale`, in place (the padding up to s16
 * gets 0), given the row's largest score `max`; returns 1 / their sum, which the context is
 * multiplied by (one pass over the row fewer than normalizing it here). */
RR_AVX512 static float rr_softmax_row(float *row, int64_t s, int64_t s16, float scale, float max) {
    __m512 shift = _mm512_set1_ps(max * scale), vs = _mm512_set1_ps(scale);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t c = 0; c < s16; c += 16) {
        __mmask16 m = c < s ? rr_lanes(s - c) : 0;
        __m512 e = _mm512_maskz_mov_ps(m, rr_exp16(_mm512_fmsub_ps(_mm512_loadu_ps(row + c), vs, shift)));
        _mm512_storeu_ps(row + c, e);
        sum = _mm512_add_ps(sum, e);
    }
    return 1.0f / _mm512_reduce_add_ps(sum);
}

/* The two f32 blocks below are kept out of the kernel (GCC still specializes them for nv = 1, 2):
 * inlined, GCC 12 spilled V's vectors to the stack and fed every FMA from there, 33.5 instead of
 * 25.2 µs per head of a 127-token sequence on Zen 4. */

/* Scores of RR_QB query rows (q[r]: row pointers) against keys j0.. of the packed Kᵀ (d rows of
 * s16), `nv` (1 or 2) vectors of 16 keys; row r goes to sc + r·s16 + j0, and its running
 * maximum over the first s keys into mx[r] (so that softmax needs no pass of its own for it). */
RR_AVX512 static __attribute__((noinline)) void
rr_scores_block(const float *const *q, const float *kt, int64_t d, int64_t s16, int64_t s, int64_t j0, float *sc,
                __m512 *mx, const int nv) {
    __m512 acc[RR_QB][2];
#pragma GCC unroll 6
    for (int r = 0; r < RR_QB; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t c = 0; c < d; c++) {
        const float *kr = kt + c * s16 + j0;
        __m512 k0 = _mm512_loadu_ps(kr), k1 = nv > 1 ? _mm512_loadu_ps(kr + 16) : k0;
#pragma GCC unroll 6
        for (int r = 0; r < RR_QB; r++) {
            __m512 qv = _mm512_set1_ps(q[r][c]);
            acc[r][0] = _mm512_fmadd_ps(qv, k0, acc[r][0]);
            if (nv > 1) acc[r][1] = _mm512_fmadd_ps(qv, k1, acc[r][1]);
        }
    }
    __mmask16 m0 = rr_lanes(s - j0), m1 = j0 + 16 < s ? rr_lanes(s - j0 - 16) : 0;
#pragma GCC unroll 6
    for (int r = 0; r < RR_QB; r++) {
        _mm512_storeu_ps(sc + r * s16 + j0, acc[r][0]);
        mx[r] = _mm512_mask_max_ps(mx[r], m0, mx[r], acc[r][0]);
        if (nv > 1) {
            _mm512_storeu_ps(sc + r * s16 + j0 + 16, acc[r][1]);
            mx[r] = _mm512_mask_max_ps(mx[r], m1, mx[r], acc[r][1]);
        }
    }
}

/* Context columns c0.. (`nv` vectors of 16) of RR_QB query rows: inv[r] · Σ_j p[r][j] · v[j];
 * v's rows are w apart; row r goes to out[r] + c0 (rows ≥ `rows` are not stored). */
RR_AVX512 static __attribute__((noinline)) void
rr_context_block(const float *p, int64_t s16, const float *v, int64_t w, int64_t s, int64_t c0, const float *inv,
                 float *const *out, int rows, const int nv) {
    __m512 acc[RR_QB][2];
#pragma GCC unroll 6
    for (int r = 0; r < RR_QB; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t j = 0; j < s; j++) {
        const float *vr = v + j * w + c0;
        __m512 v0 = _mm512_loadu_ps(vr), v1 = nv > 1 ? _mm512_loadu_ps(vr + 16) : v0;
#pragma GCC unroll 6
        for (int r = 0; r < RR_QB; r++) {
            __m512 pv = _mm512_set1_ps(p[r * s16 + j]);
            acc[r][0] = _mm512_fmadd_ps(pv, v0, acc[r][0]);
            if (nv > 1) acc[r][1] = _mm512_fmadd_ps(pv, v1, acc[r][1]);
        }
    }
    for (int r = 0; r < rows; r++) {
        __m512 scale = _mm512_set1_ps(inv[r]);
        _mm512_storeu_ps(out[r] + c0, _mm512_mul_ps(acc[r][0], scale));
        if (nv > 1) _mm512_storeu_ps(out[r] + c0 + 16, _mm512_mul_ps(acc[r][1], scale));
    }
}

/* Writes the 16 × 16 block of floats rows[0..15][0..15] transposed: out row i (ldo apart)
 * holds value i of each of the 16 rows. Three rounds of in-lane and cross-lane
 * shuffles; on Zen 4 a gather per output row costs several times more. */
RR_AVX512 static void rr_transpose16(const float *const *rows, float *out, int64_t ldo) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(rows[i]);
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        __m512d c = _mm512_castps_pd(t[4 * i + 2]), e = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, e));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, e));
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0x88);
        t[4 + i] = _mm512_shuffle_f32x4(r[i], r[4 + i], 0xdd);
        t[8 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0x88);
        t[12 + i] = _mm512_shuffle_f32x4(r[8 + i], r[12 + i], 0xdd);
    }
    for (int i = 0; i < 4; i++) {
        _mm512_storeu_ps(out + i * ldo, _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88));
        _mm512_storeu_ps(out + (8 + i) * ldo, _mm512_shuffle_f32x4(t[i], t[8 + i], 0xdd));
        _mm512_storeu_ps(out + (4 + i) * ldo, _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0x88));
        _mm512_storeu_ps(out + (12 + i) * ldo, _mm512_shuffle_f32x4(t[4 + i], t[12 + i], 0xdd));
    }
}

/*
 * One sequence's attention: reads its s rows of qkv (s × 3h f32: Q, K, V side by side, heads of
 * d values each, d a multiple of 16) and writes its s rows of ctx (s × h). With `in` the rows are
 * the int8 QKV GEMM's raw output and get its epilogue in place first; with `out` the context is
 * also quantized into out->q. `scratch`: rr_avx512_scratch_bytes(s, d) bytes, 64-byte aligned.
 * Returns 0, or −1 when the shape is not supported.
 */
RR_AVX512 int rr_avx512_attend_one(float *qkv, int64_t s, int64_t heads, int64_t d, float scale, void *scratch,
                                   float *ctx, const struct rr_int8_rows *in, struct rr_int8_rows *out) {
    const int64_t h = heads * d, w = 3 * h, s16 = rr_round16(s);
    if (s <= 0) return 0;
    if (d % 16 != 0) return -1;
    if (in)
        for (int64_t i = 0; i < s; i++)
            rr_scale_row(qkv + i * w, w, in->scale[i], in->zero_point[i], in->comp, in->bias, NULL);
    float *kt = (float *)scratch, *vh = kt + d * s16, *sc = vh + s16 * d,
          *zero = sc + RR_QB * s16;
    memset(zero, 0, 16 * sizeof *zero);
    for (int64_t head = 0; head < heads; head++) {
        const float *q = qkv + head * d, *k = qkv + h + head * d, *v = qkv + 2 * h + head * d;
        /* The head's V with its rows contiguous (a row of qkv is 3h values: rows of one head
         * are a page apart, and P·V walks all of them for every block of queries), and Kᵀ: row
         * c holds value c of every key, keys s..s16−1 zero. */
        for (int64_t i = 0; i < s; i++)
            for (int64_t c = 0; c < d; c += 16) _mm512_storeu_ps(vh + i * d + c, _mm512_loadu_ps(v + i * w + c));
        for (int64_t j0 = 0; j0 < s16; j0 += 16)
            for (int64_t c0 = 0; c0 < d; c0 += 16) {
                const float *keys[16];
                for (int i = 0; i < 16; i++) keys[i] = j0 + i < s ? k + (j0 + i) * w + c0 : zero;
                rr_transpose16(keys, kt + c0 * s16 + j0, s16);
            }
        for (int64_t q0 = 0; q0 < s; q0 += RR_QB) {
            int rows = s - q0 < RR_QB ? (int)(s - q0) : RR_QB;
            /* Rows past the sequence repeat its last query (computed, never stored). */
            const float *qr[RR_QB];
            float *cr[RR_QB];
            for (int r = 0; r < RR_QB; r++) {
                int64_t i = q0 + (r < rows ? r : rows - 1);
                qr[r] = q + i * w;
                cr[r] = ctx + i * h + head * d;
            }
            __m512 mx[RR_QB];
            float inv[RR_QB];
            for (int r = 0; r < RR_QB; r++) mx[r] = _mm512_set1_ps(-INFINITY);
            int64_t j0 = 0;
            for (; j0 + 32 <= s16; j0 += 32) rr_scores_block(qr, kt, d, s16, s, j0, sc, mx, 2);
            if (j0 < s16) rr_scores_block(qr, kt, d, s16, s, j0, sc, mx, 1);
            for (int r = 0; r < RR_QB; r++)
                inv[r] = r < rows ? rr_softmax_row(sc + r * s16, s, s16, scale, _mm512_reduce_max_ps(mx[r])) : 0.f;
            int64_t c0 = 0;
            for (; c0 + 32 <= d; c0 += 32) rr_context_block(sc, s16, vh, d, s, c0, inv, cr, rows, 2);
            if (c0 < d) rr_context_block(sc, s16, vh, d, s, c0, inv, cr, rows, 1);
        }
    }
    if (out)
        for (int64_t i = 0; i < s; i++)
            out->scale[i] = rr_quantize_row_avx512(ctx + i * h, h, out->q + i * h, &out->zero_point[i]);
    return 0;
}

/*
 * The same attention with bf16 dot products (AVX512-BF16 `vdpbf16ps`: 32 products per
 * instruction, twice an f32 FMA's), for the bf16 and int8 modes on CPUs that have AVX512-BF16
 * but no AMX (Zen 4/5, Cooper Lake). Q, K, V and the probabilities are rounded to bf16 as on
 * AMX; scores, softmax and the context accumulate in f32. Pairs along each product's reduction
 * are what the instruction multiplies: Q's head values (c, c+1) against Kᵀ's pair rows, and P's
 * keys (j, j+1) against V's pair rows.
 */
#define RR_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))

/* Whether this CPU runs the bf16 kernel. */
int rr_avx512bf16_attention_available(void) {
    return rr_avx512_attention_available() && __builtin_cpu_supports("avx512bf16");
}

/* Bytes of scratch rr_avx512bf16_attend_one needs (head size d, a multiple of 32). */
int64_t rr_avx512bf16_scratch_bytes(int64_t s, int64_t d) {
    int64_t s32 = (s + 31) / 32 * 32;
    return 2 * s32 * d        /* the head's K rows in bf16 */
           + 2 * d * s32      /* Kᵀ in pair rows */
           + 2 * s32 * d      /* V in pair rows */
           + 2 * s32 * d      /* Q in bf16 */
           + 4 * RR_QB * s32  /* scores of a block of queries */
           + 2 * RR_QB * s32  /* their probabilities in bf16 */
           + 4 * 16           /* a zero row */
           + 8 * 64;
}

static void *rr_carve(char **cursor, int64_t bytes) {
    char *p = (char *)(((uintptr_t)*cursor + 63) & ~(uintptr_t)63);
    *cursor = p + bytes;
    return p;
}

/* n floats (a multiple of 16) → bf16. */
RR_BF16 static void rr_bf16_row(const float *x, uint16_t *y, int64_t n) {
    for (int64_t c = 0; c < n; c += 16)
        _mm256_storeu_si256((__m256i *)(y + c), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + c)));
}

/* Scores of RR_QB query rows (q[r]: bf16 rows) against keys j0.. of Kᵀ in pair rows (d/2 rows of
 * s32 words), `nv` vectors of 16 keys, as rr_scores_block. */
RR_BF16 static inline __attribute__((always_inline)) void
rr_scores_block_bf16(const uint16_t *const *q, const uint32_t *kp, int64_t d, int64_t ld, int64_t s, int64_t j0,
                     float *sc, __m512 *mx, const int nv) {
    __m512 acc[RR_QB][2];
#pragma GCC unroll 6
    for (int r = 0; r < RR_QB; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t c2 = 0; c2 < d / 2; c2++) {
        const uint32_t *kr = kp + c2 * ld + j0;
        __m512bh k0 = (__m512bh)_mm512_loadu_si512(kr), k1 = nv > 1 ? (__m512bh)_mm512_loadu_si512(kr + 16) : k0;
#pragma GCC unroll 6
        for (int r = 0; r < RR_QB; r++) {
            uint32_t pair;
            memcpy(&pair, q[r] + 2 * c2, sizeof pair);
            __m512bh qv = (__m512bh)_mm512_set1_epi32((int)pair);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], qv, k0);
            if (nv > 1) acc[r][1] = _mm512_dpbf16_ps(acc[r][1], qv, k1);
        }
    }
    __mmask16 m0 = rr_lanes(s - j0), m1 = j0 + 16 < s ? rr_lanes(s - j0 - 16) : 0;
#pragma GCC unroll 6
    for (int r = 0; r < RR_QB; r++) {
        _mm512_storeu_ps(sc + r * ld + j0, acc[r][0]);
        mx[r] = _mm512_mask_max_ps(mx[r], m0, mx[r], acc[r][0]);
        if (nv > 1) {
            _mm512_storeu_ps(sc + r * ld + j0 + 16, acc[r][1]);
            mx[r] = _mm512_mask_max_ps(mx[r], m1, mx[r], acc[r][1]);
        }
    }
}

/* Context columns c0.. (`nv` vectors of 16) of RR_QB query rows from bf16 probabilities (row r
 * at p + r·ld) and V in pair rows (row j2: keys 2·j2 and 2·j2+1 of each of the d columns),
 * as rr_context_block. */
RR_BF16 static inline __attribute__((always_inline)) void
rr_context_block_bf16(const uint16_t *p, int64_t ld, const uint32_t *vp, int64_t d, int64_t s, int64_t c0,
                      const float *inv, float *const *out, int rows, const int nv) {
    __m512 acc[RR_QB][2];
#pragma GCC unroll 6
    for (int r = 0; r < RR_QB; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t j2 = 0; j2 < (s + 1) / 2; j2++) {
        const uint32_t *vr = vp + j2 * d + c0;
        __m512bh v0 = (__m512bh)_mm512_loadu_si512(vr), v1 = nv > 1 ? (__m512bh)_mm512_loadu_si512(vr + 16) : v0;
#pragma GCC unroll 6
        for (int r = 0; r < RR_QB; r++) {
            uint32_t pair;
            memcpy(&pair, p + r * ld + 2 * j2, sizeof pair);
            __m512bh pv = (__m512bh)_mm512_set1_epi32((int)pair);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], pv, v0);
            if (nv > 1) acc[r][1] = _mm512_dpbf16_ps(acc[r][1], pv, v1);
        }
    }
    for (int r = 0; r < rows; r++) {
        __m512 scale = _mm512_set1_ps(inv[r]);
        _mm512_storeu_ps(out[r] + c0, _mm512_mul_ps(acc[r][0], scale));
        if (nv > 1) _mm512_storeu_ps(out[r] + c0 + 16, _mm512_mul_ps(acc[r][1], scale));
    }
}

/* rr_avx512_attend_one with bf16 products (see above); d a multiple of 32. */
RR_BF16 int rr_avx512bf16_attend_one(float *qkv, int64_t s, int64_t heads, int64_t d, float scale, void *scratch,
                                     float *ctx, const struct rr_int8_rows *in, struct rr_int8_rows *out) {
    const int64_t h = heads * d, w = 3 * h, s32 = (s + 31) / 32 * 32;
    if (s <= 0) return 0;
    if (d % 32 != 0) return -1;
    if (in)
        for (int64_t i = 0; i < s; i++)
            rr_scale_row(qkv + i * w, w, in->scale[i], in->zero_point[i], in->comp, in->bias, NULL);
    char *cursor = scratch;
    uint16_t *kb = rr_carve(&cursor, 2 * s32 * d);
    uint32_t *kp = rr_carve(&cursor, 2 * d * s32);
    uint32_t *vp = rr_carve(&cursor, 2 * s32 * d);
    uint16_t *qb = rr_carve(&cursor, 2 * s32 * d);
    float *sc = rr_carve(&cursor, 4 * RR_QB * s32);
    uint16_t *pb = rr_carve(&cursor, 2 * RR_QB * s32);
    float *zero = rr_carve(&cursor, 4 * 16);
    memset(zero, 0, 16 * sizeof *zero);
    /* Interleaves the two halves of cvtne2ps_pbh(b, a) (a's 16 bf16, then b's) into a0 b0 a1
     * b1 …: each 32-bit word then holds one column's values of two consecutive keys. */
    __m512i pairs;
    {
        uint16_t idx[32];
        for (int i = 0; i < 16; i++) {
            idx[2 * i] = (uint16_t)i;
            idx[2 * i + 1] = (uint16_t)(16 + i);
        }
        pairs = _mm512_loadu_si512(idx);
    }
    const int64_t half = d / 2;
    for (int64_t head = 0; head < heads; head++) {
        const float *q = qkv + head * d, *k = qkv + h + head * d, *v = qkv + 2 * h + head * d;
        for (int64_t i = 0; i < s; i++) {
            rr_bf16_row(q + i * w, qb + i * d, d);
            rr_bf16_row(k + i * w, kb + i * d, d);
        }
        /* Kᵀ in pair rows: the (s × d/2) matrix of 32-bit bf16 pairs, transposed. */
        for (int64_t j0 = 0; j0 < s32; j0 += 16)
            for (int64_t c0 = 0; c0 < half; c0 += 16) {
                const float *keys[16];
                for (int i = 0; i < 16; i++)
                    keys[i] = j0 + i < s ? (const float *)(const void *)(kb + (j0 + i) * d + 2 * c0) : zero;
                rr_transpose16(keys, (float *)(void *)(kp + c0 * s32 + j0), s32);
            }
        /* V in pair rows: row j2 holds keys 2·j2 and 2·j2+1 of each column (a missing last key 0). */
        for (int64_t j = 0; j < s; j += 2)
            for (int64_t c0 = 0; c0 < d; c0 += 16) {
                __m512 a = _mm512_loadu_ps(v + j * w + c0);
                __m512 b = j + 1 < s ? _mm512_loadu_ps(v + (j + 1) * w + c0) : _mm512_setzero_ps();
                __m512i both = (__m512i)_mm512_cvtne2ps_pbh(b, a);
                _mm512_storeu_si512(vp + (j / 2) * d + c0, _mm512_permutexvar_epi16(pairs, both));
            }
        for (int64_t q0 = 0; q0 < s; q0 += RR_QB) {
            int rows = s - q0 < RR_QB ? (int)(s - q0) : RR_QB;
            const uint16_t *qr[RR_QB];
            float *cr[RR_QB];
            for (int r = 0; r < RR_QB; r++) {
                int64_t i = q0 + (r < rows ? r : rows - 1);
                qr[r] = qb + i * d;
                cr[r] = ctx + i * h + head * d;
            }
            __m512 mx[RR_QB];
            float inv[RR_QB];
            for (int r = 0; r < RR_QB; r++) mx[r] = _mm512_set1_ps(-INFINITY);
            int64_t j0 = 0;
            for (; j0 + 32 <= s32; j0 += 32) rr_scores_block_bf16(qr, kp, d, s32, s, j0, sc, mx, 2);
            for (int r = 0; r < RR_QB; r++) {
                inv[r] = r < rows ? rr_softmax_row(sc + r * s32, s, s32, scale, _mm512_reduce_max_ps(mx[r])) : 0.f;
                rr_bf16_row(sc + r * s32, pb + r * s32, s32);
            }
            for (int64_t c0 = 0; c0 < d; c0 += 32) rr_context_block_bf16(pb, s32, vp, d, s, c0, inv, cr, rows, 2);
        }
    }
    if (out)
        for (int64_t i = 0; i < s; i++)
            out->scale[i] = rr_quantize_row_avx512(ctx + i * h, h, out->q + i * h, &out->zero_point[i]);
    return 0;
}

#else

int rr_avx512_attention_available(void) { return 0; }
int64_t rr_avx512_scratch_bytes(int64_t s, int64_t d) {
    (void)s, (void)d;
    return 0;
}
int rr_avx512_attend_one(float *qkv, int64_t s, int64_t heads, int64_t d, float scale, void *scratch, float *ctx,
                         const struct rr_int8_rows *in, struct rr_int8_rows *out) {
    (void)qkv, (void)s, (void)heads, (void)d, (void)scale, (void)scratch, (void)ctx, (void)in, (void)out;
    return -1;
}

int rr_avx512bf16_attention_available(void) { return 0; }
int64_t rr_avx512bf16_scratch_bytes(int64_t s, int64_t d) {
    (void)s, (void)d;
    return 0;
}
int rr_avx512bf16_attend_one(float *qkv, int64_t s, int64_t heads, int64_t d, float scale, void *scratch, float *ctx,
                             const struct rr_int8_rows *in, struct rr_int8_rows *out) {
    (void)qkv, (void)s, (void)heads, (void)d, (void)scale, (void)scratch, (void)ctx, (void)in, (void)out;
    return -1;
}

#endif
