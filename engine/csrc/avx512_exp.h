/* e^x on 16 floats with AVX-512, shared by the attention kernels' softmax (amx_attention.c,
 * avx512_attention.c). Include only inside their GCC x86-64 sections. */
#ifndef RR_AVX512_EXP_H
#define RR_AVX512_EXP_H
#include <immintrin.h>

/* e^x for x ≤ 0 (softmax's shifted scores): 2^n · p(r), r = x − n·ln 2 ∈ [−ln2/2, ln2/2], with a
 * degree-6 polynomial (relative error ~2e-7: below f32 attention's own rounding, far below bf16's
 * rounding of the probabilities). Its target is a subset of every caller's, so it inlines. */
__attribute__((target("avx512f,fma"))) static inline __m512 rr_exp16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504089f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

#endif
