/*
 * Multi-head attention of one packed sequence on Intel AMX (bf16 tiles, f32 accumulation),
 * for the reduced-precision modes (bf16, int8) on CPUs that have it (Sapphire Rapids and later).
 *
 * Why not oneDNN: attention is ~5% of a MiniLM pair's FLOPs, but oneDNN 2.6 runs its
 * per-sequence products on `gemm:jit` (no AMX for small strided batches) and its softmax at
 * ~1.5 G values/s over 127-wide rows; on a 2-vCPU Sapphire Rapids that made attention a third of
 * an int8 forward pass whose GEMMs run on AMX. Here one sequence's heads go through tiles with
 * no primitive calls: per head, K is packed into AMX's pair-interleaved B layout with gathers and
 * V with one permute per tile row, then each block of 32 queries computes its scores
 * (32 × keys, f32), its softmax (f32, vectorized exp), and its context from P (bf16) · V.
 *
 * Rounding: Q, K, V and the probabilities P are rounded to bf16 (as PyTorch's bf16 autocast
 * does); scores, softmax and the context are accumulated in f32.
 *
 * Only the functions marked RR_AMX use AMX/AVX-512 instructions; the caller checks
 * rr_amx_available() first, which asks the kernel for the tile state (Linux ≥ 5.16).
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "int8_rows.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)

#include "avx512_exp.h"

#define RR_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))

/* The layout the tile registers are configured with (palette 1): every tile 16 rows × 64 bytes. */
struct rr_tile_config {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

static int rr_amx_ok;
static pthread_once_t rr_amx_once = PTHREAD_ONCE_INIT;

#define RR_ARCH_REQ_XCOMP_PERM 0x1023
#define RR_XFEATURE_XTILEDATA 18

static void rr_amx_probe(void) {
    unsigned a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    int tile = (d >> 24) & 1, bf16 = (d >> 22) & 1, avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(1));
    int avx512bf16 = (a >> 5) & 1;
    if (!(tile && bf16 && avx512f && avx512bw && avx512bf16)) return;
    /* The kernel hands out the (8 KiB) tile state only to processes that ask; oneDNN asks too,
     * and asking twice is harmless. */
    rr_amx_ok = syscall(SYS_arch_prctl, RR_ARCH_REQ_XCOMP_PERM, RR_XFEATURE_XTILEDATA) == 0;
}

/* Whether this CPU and kernel run AMX bf16 tiles. */
int rr_amx_available(void) {
    pthread_once(&rr_amx_once, rr_amx_probe);
    return rr_amx_ok;
}

static int64_t rr_round_up(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

/* Bytes of scratch rr_amx_attend_one needs for a sequence of s tokens (hidden h, head size d). */
int64_t rr_amx_scratch_bytes(int64_t s, int64_t h, int64_t d) {
    int64_t s32 = rr_round_up(s, 32);
    return 2 * s32 * 3 * h      /* the sequence's Q, K, V in bf16 */
           + 2 * 2 * s32 * d    /* packed K and V of one head */
           + 4 * 32 * s32       /* scores of 32 queries */
           + 2 * 32 * s32       /* their probabilities */
           + 4 * 32 * d         /* their context */
           + 5 * 64;            /* alignment of each part */
}

/* f32 → bf16 (round to nearest even) of n values. */
RR_AMX static void rr_to_bf16_row(const float *x, uint16_t *y, int64_t n) {
    int64_t c = 0;
    for (; c + 16 <= n; c += 16)
        _mm256_storeu_si256((__m256i *)(y + c), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + c)));
    if (c < n) {
        __mmask16 m = (__mmask16)((1u << (n - c)) - 1);
        __m256i v = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + c));
        _mm256_mask_storeu_epi16(y + c, m, v);
    }
}

/* Softmax of `rows` (≤ 32) rows of `s` scores (row stride `stride`) with the scores scaled by
 * `scale`, written as bf16 probabilities (row stride `stride`); columns s..stride−1 and rows
 * rows..31 get 0. */
RR_AMX static void rr_softmax_rows(const float *scores, int64_t rows, int64_t s, int64_t stride, float scale,
                                   uint16_t *p) {
    for (int64_t r = 0; r < rows; r++) {
        const float *row = scores + r * stride;
        uint16_t *out = p + r * stride;
        __m512 mx = _mm512_set1_ps(-INFINITY);
        int64_t c = 0;
        for (; c + 16 <= s; c += 16) mx = _mm512_max_ps(mx, _mm512_loadu_ps(row + c));
        __mmask16 tail = (__mmask16)((1u << (s - c)) - 1);
        if (c < s) mx = _mm512_mask_max_ps(mx, tail, mx, _mm512_maskz_loadu_ps(tail, row + c));
        __m512 shift = _mm512_set1_ps(_mm512_reduce_max_ps(mx) * scale), vs = _mm512_set1_ps(scale);
        __m512 sum = _mm512_setzero_ps();
        /* e^(scale·x − scale·max), kept in `out`'s f32 twin: the scores row itself. */
        float *e = (float *)row;
        for (c = 0; c + 16 <= s; c += 16) {
            __m512 v = rr_exp16(_mm512_fmsub_ps(_mm512_loadu_ps(row + c), vs, shift));
            _mm512_storeu_ps(e + c, v);
            sum = _mm512_add_ps(sum, v);
        }
        if (c < s) {
            __m512 v = rr_exp16(_mm512_fmsub_ps(_mm512_maskz_loadu_ps(tail, row + c), vs, shift));
            v = _mm512_maskz_mov_ps(tail, v);
            _mm512_mask_storeu_ps(e + c, tail, v);
            sum = _mm512_add_ps(sum, v);
        }
        __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
        for (c = 0; c + 16 <= s; c += 16)
            _mm256_storeu_si256((__m256i *)(out + c),
                                (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(e + c), inv)));
        if (c < s) {
            __m256i v = (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_maskz_loadu_ps(tail, e + c), inv));
            _mm256_mask_storeu_epi16(out + c, tail, v);
        }
        for (c = s; c < stride; c++) out[c] = 0;
    }
    for (int64_t r = rows; r < 32; r++) memset(p + r * stride, 0, (size_t)stride * 2);
}

/* The int8 QKV epilogue of one row, (y − zp·comp)·scale + bias, rounded to bf16. */
RR_AMX static void rr_epilogue_bf16_row(const float *y, int64_t n, float scale, float zp, const float *comp,
                                        const float *bias, uint16_t *out) {
    __m512 vs = _mm512_set1_ps(scale), vz = _mm512_set1_ps(zp);
    int64_t c = 0;
    for (; c + 16 <= n; c += 16) {
        __m512 v = _mm512_fnmadd_ps(vz, _mm512_loadu_ps(comp + c), _mm512_loadu_ps(y + c));
        v = _mm512_fmadd_ps(v, vs, _mm512_loadu_ps(bias + c));
        _mm256_storeu_si256((__m256i *)(out + c), (__m256i)_mm512_cvtneps_pbh(v));
    }
    for (; c < n; c++) {
        float v = (y[c] - zp * comp[c]) * scale + bias[c];
        uint16_t b;
        _mm_storeu_si16(&b, (__m128i)_mm_cvtneps_pbh(_mm_set1_ps(v)));
        out[c] = b;
    }
}

static void *rr_align(char **cursor, int64_t bytes) {
    char *p = (char *)(((uintptr_t)*cursor + 63) & ~(uintptr_t)63);
    *cursor = p + bytes;
    return p;
}

/*
 * One sequence's attention: reads its s rows of qkv (s × 3h f32: Q, K, V side by side, heads of
 * d values each, d a multiple of 32) and writes its s rows of ctx (s × h). `scratch` holds
 * rr_amx_scratch_bytes(s, h, d) bytes. Returns 0, or −1 when the shape is not supported.
 */
RR_AMX int rr_amx_attend_one(const float *qkv, int64_t s, int64_t heads, int64_t d, float scale, void *scratch,
                             float *ctx, const struct rr_int8_rows *in, struct rr_int8_rows *out) {
    const int64_t h = heads * d, w = 3 * h;
    if (s <= 0) return 0;
    if (d % 32 != 0 || w % 2 != 0) return -1;
    const int64_t s32 = rr_round_up(s, 32), dc_n = d / 32, nc_n = d / 16;
    char *cursor = scratch;
    uint16_t *xb = rr_align(&cursor, 2 * s32 * w);
    uint16_t *kp = rr_align(&cursor, 2 * s32 * d);
    uint16_t *vp = rr_align(&cursor, 2 * s32 * d);
    float *sc = rr_align(&cursor, 4 * 32 * s32);
    uint16_t *pb = rr_align(&cursor, 2 * 32 * s32);
    float *co = rr_align(&cursor, 4 * 32 * d);

    if (in)
        for (int64_t i = 0; i < s; i++)
            rr_epilogue_bf16_row(qkv + i * w, w, in->scale[i], in->zero_point[i], in->comp, in->bias, xb + i * w);
    else
        for (int64_t i = 0; i < s; i++) rr_to_bf16_row(qkv + i * w, xb + i * w, w);
    memset(xb + s * w, 0, (size_t)((s32 - s) * w * 2));

    struct rr_tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);

    /* Gather indices: one 32-bit pair of bf16 per key, keys a row (w bf16) apart. */
    const __m512i key_rows = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                                _mm512_set1_epi32((int)(w / 2)));
    /* Interleave of two rows' 16 bf16: a0 b0 a1 b1 … */
    __m512i pairs;
    {
        uint16_t idx[32];
        for (int i = 0; i < 16; i++) {
            idx[2 * i] = (uint16_t)i;
            idx[2 * i + 1] = (uint16_t)(32 + i);
        }
        pairs = _mm512_loadu_si512(idx);
    }

    for (int64_t head = 0; head < heads; head++) {
        const uint16_t *q = xb + head * d, *k = xb + h + head * d, *v = xb + 2 * h + head * d;
        /* K in B layout: block of 16 keys kb, 32 head values dc, row r = values (2r, 2r+1) of
         * each of the 16 keys. */
        for (int64_t kb = 0; kb < s32 / 16; kb++)
            for (int64_t dc = 0; dc < dc_n; dc++) {
                const int *base = (const int *)(k + kb * 16 * w + dc * 32);
                int *dst = (int *)(kp + (kb * dc_n + dc) * 512);
                for (int r = 0; r < 16; r++)
                    _mm512_storeu_si512(dst + r * 16, _mm512_i32gather_epi32(key_rows, base + r, 4));
            }
        /* V in B layout: chunk of 32 keys kc, 16 head values nc, row r = keys (2r, 2r+1) of
         * each of the 16 values. */
        for (int64_t kc = 0; kc < s32 / 32; kc++)
            for (int64_t nc = 0; nc < nc_n; nc++) {
                uint16_t *dst = vp + (kc * nc_n + nc) * 512;
                for (int r = 0; r < 16; r++) {
                    const uint16_t *a = v + (kc * 32 + 2 * r) * w + nc * 16;
                    __m512i ra = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a));
                    __m512i rb = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(a + w)));
                    _mm512_storeu_si512(dst + r * 32, _mm512_permutex2var_epi16(ra, pairs, rb));
                }
            }
        /* Two blocks of 16 queries at a time (rows past s are zero), so that each pass keeps
         * four independent accumulator tiles in flight: a tile product's latency is what a
         * single chain of them waits on. */
        for (int64_t q0 = 0; q0 < s; q0 += 32) {
            int64_t rows = s - q0 < 32 ? s - q0 : 32;
            const uint16_t *qa = q + q0 * w, *qb = q + (q0 + 16) * w;
            /* Scores of the 32 queries against every (padded) key, two key blocks per pass. */
            for (int64_t kb = 0; kb < s32 / 16; kb += 2) {
                _tile_zero(4);
                _tile_zero(5);
                _tile_zero(6);
                _tile_zero(7);
                for (int64_t dc = 0; dc < dc_n; dc++) {
                    _tile_loadd(0, qa + dc * 32, w * 2);
                    _tile_loadd(1, qb + dc * 32, w * 2);
                    _tile_loadd(2, kp + (kb * dc_n + dc) * 512, 64);
                    _tile_loadd(3, kp + ((kb + 1) * dc_n + dc) * 512, 64);
                    _tile_dpbf16ps(4, 0, 2);
                    _tile_dpbf16ps(5, 0, 3);
                    _tile_dpbf16ps(6, 1, 2);
                    _tile_dpbf16ps(7, 1, 3);
                }
                _tile_stored(4, sc + kb * 16, s32 * 4);
                _tile_stored(5, sc + (kb + 1) * 16, s32 * 4);
                _tile_stored(6, sc + 16 * s32 + kb * 16, s32 * 4);
                _tile_stored(7, sc + 16 * s32 + (kb + 1) * 16, s32 * 4);
            }
            rr_softmax_rows(sc, rows, s, s32, scale, pb);
            /* Context: P (32 × keys) · V, 16 head values per accumulator tile, two such column
             * chunks for each of the two query blocks. */
            for (int64_t n0 = 0; n0 < nc_n; n0 += 2) {
                _tile_zero(4);
                _tile_zero(5);
                _tile_zero(6);
                _tile_zero(7);
                for (int64_t kc = 0; kc < s32 / 32; kc++) {
                    const uint16_t *b = vp + (kc * nc_n + n0) * 512;
                    _tile_loadd(0, pb + kc * 32, s32 * 2);
                    _tile_loadd(1, pb + 16 * s32 + kc * 32, s32 * 2);
                    _tile_loadd(2, b, 64);
                    _tile_loadd(3, b + 512, 64);
                    _tile_dpbf16ps(4, 0, 2);
                    _tile_dpbf16ps(5, 0, 3);
                    _tile_dpbf16ps(6, 1, 2);
                    _tile_dpbf16ps(7, 1, 3);
                }
                _tile_stored(4, co + n0 * 16, d * 4);
                _tile_stored(5, co + (n0 + 1) * 16, d * 4);
                _tile_stored(6, co + 16 * d + n0 * 16, d * 4);
                _tile_stored(7, co + 16 * d + (n0 + 1) * 16, d * 4);
            }
            for (int64_t r = 0; r < rows; r++)
                memcpy(ctx + (q0 + r) * h + head * d, co + r * d, (size_t)d * 4);
        }
    }
    _tile_release();
    if (out)
        for (int64_t i = 0; i < s; i++)
            out->scale[i] = rr_quantize_row_avx512(ctx + i * h, h, out->q + i * h, &out->zero_point[i]);
    return 0;
}

/* rr_quantize_row (dnnl_gemm.c) with AVX-512 intrinsics: GCC's vectorization of its clamp and
 * narrowing to u8 spends more on mask moves than on the arithmetic. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma"))) float
rr_quantize_row_avx512(const float *row, int64_t n, uint8_t *out, float *zero_point) {
    __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + 16 <= n; c += 16) {
        __m512 v = _mm512_loadu_ps(row + c);
        lo = _mm512_min_ps(lo, v);
        hi = _mm512_max_ps(hi, v);
    }
    __mmask16 tail = (__mmask16)((1u << (n - c)) - 1);
    if (c < n) {
        __m512 v = _mm512_maskz_loadu_ps(tail, row + c);
        lo = _mm512_min_ps(lo, v);
        hi = _mm512_max_ps(hi, v);
    }
    return rr_quantize_known_avx512(row, n, _mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi), out, zero_point);
}

/* rr_gelu_quantize_row (dnnl_gemm.c) with AVX-512 intrinsics: the same A&S 7.1.28 erf, with
 * 1/p from vrcp14ps and one Newton step (relative error ~1e-7) where GCC's vectorization divides
 * (vdivps: 16 cycles per 16 values on Sapphire Rapids). */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma"))) void
rr_gelu_quantize_row_avx512(float *y, int64_t n, float *scale, float *zero_point, const float *comp,
                            const float *bias, uint8_t *out) {
    const __m512 vs = _mm512_set1_ps(*scale), vz = _mm512_set1_ps(*zero_point);
    const __m512 one = _mm512_set1_ps(1.f), half = _mm512_set1_ps(0.5f), two = _mm512_set1_ps(2.f);
    const __m512 sqrt_half = _mm512_set1_ps(0.70710678118654752f);
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
    for (int64_t c = 0; c < n; c += 16) {
        __mmask16 m = n - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - c)) - 1);
        __m512 x = _mm512_fnmadd_ps(vz, _mm512_maskz_loadu_ps(m, comp + c), _mm512_maskz_loadu_ps(m, y + c));
        x = _mm512_fmadd_ps(x, vs, _mm512_maskz_loadu_ps(m, bias + c));
        __m512 u = _mm512_mul_ps(_mm512_abs_ps(x), sqrt_half);
        __m512 p = _mm512_fmadd_ps(u, _mm512_set1_ps(0.0000430638f), _mm512_set1_ps(0.0002765672f));
        p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(0.0001520143f));
        p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(0.0092705272f));
        p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(0.0422820123f));
        p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(0.0705230784f));
        p = _mm512_fmadd_ps(p, u, one);
        __m512 r = _mm512_rcp14_ps(p);
        r = _mm512_mul_ps(r, _mm512_fnmadd_ps(p, r, two));
        r = _mm512_mul_ps(r, r);
        r = _mm512_mul_ps(r, r);
        r = _mm512_mul_ps(r, r);
        r = _mm512_mul_ps(r, r);
        /* erf(|x|/√2) = 1 − r, given x's sign; GELU = ½·x·(1 + erf(x/√2)). */
        __m512 e = _mm512_sub_ps(one, r);
        e = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(e),
                                                _mm512_and_si512(_mm512_castps_si512(x), sign)));
        __m512 g = _mm512_mul_ps(_mm512_mul_ps(half, x), _mm512_add_ps(one, e));
        g = _mm512_maskz_mov_ps(m, g);
        _mm512_mask_storeu_ps(y + c, m, g);
        lo = _mm512_min_ps(lo, g);
        hi = _mm512_max_ps(hi, g);
    }
    *scale = rr_quantize_known_avx512(y, n, _mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi), out, zero_point);
}

/* The u8 codes of a row whose range [lo, hi] is known; returns the scale. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma"))) float
rr_quantize_known_avx512(const float *row, int64_t n, float lo, float hi, uint8_t *out, float *zero_point) {
    lo = lo < 0.f ? lo : 0.f;
    hi = hi > 0.f ? hi : 0.f;
    float s = hi > lo ? (hi - lo) / 255.f : 1.f, inv = 1.f / s;
    float zp = (float)(int)(-lo * inv + 0.5f);
    __m512 vi = _mm512_set1_ps(inv), vz = _mm512_set1_ps(zp + 0.5f), top = _mm512_set1_ps(255.f);
    __m512 zero = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + 16 <= n; c += 16) {
        __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_fmadd_ps(_mm512_loadu_ps(row + c), vi, vz), zero), top);
        _mm_storeu_si128((__m128i *)(out + c), _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v)));
    }
    if (c < n) {
        __mmask16 tail = (__mmask16)((1u << (n - c)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(tail, row + c);
        v = _mm512_min_ps(_mm512_max_ps(_mm512_fmadd_ps(v, vi, vz), zero), top);
        _mm_mask_storeu_epi8(out + c, tail, _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(v)));
    }
    *zero_point = zp;
    return s;
}

#else

int rr_amx_available(void) { return 0; }
int64_t rr_amx_scratch_bytes(int64_t s, int64_t h, int64_t d) {
    (void)s, (void)h, (void)d;
    return 0;
}
int rr_amx_attend_one(const float *qkv, int64_t s, int64_t heads, int64_t d, float scale, void *scratch,
                      float *ctx, const struct rr_int8_rows *in, struct rr_int8_rows *out) {
    (void)qkv, (void)s, (void)heads, (void)d, (void)scale, (void)scratch, (void)ctx, (void)in, (void)out;
    return -1;
}

#endif
