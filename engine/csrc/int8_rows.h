/* Shared by dnnl_gemm.c and amx_attention.c: what the int8 path's fused passes read and write. */
#ifndef RR_INT8_ROWS_H
#define RR_INT8_ROWS_H
#include <stdint.h>

/* Rows of u8 activations, x ≈ scale[r] · (q[r, :] − zero_point[r]), and, for a GEMM output of
 * such rows, the per-column terms of its epilogue (comp: weight scale × the column's weight sum,
 * bias). Which members are read depends on the use. */
struct rr_int8_rows {
    float *scale;
    float *zero_point;
    uint8_t *q;
    const float *comp;
    const float *bias;
};

/* The int8 epilogue of one row (dnnl_gemm.c): y = (y − zp·comp)·scale + bias, or added to acc
 * when acc is given; each attention kernel that fuses it calls this one. */
void rr_scale_row(float *restrict y, int64_t n, float scale, float zp, const float *restrict comp,
                  const float *restrict bias, float *restrict acc);

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
/* AVX-512 row quantization (amx_attention.c); call only where the CPU has AVX-512 BW/DQ/VL. */
float rr_quantize_row_avx512(const float *row, int64_t n, uint8_t *out, float *zero_point);
void rr_gelu_quantize_row_avx512(float *y, int64_t n, float *scale, float *zero_point, const float *comp,
                                 const float *bias, uint8_t *out);
float rr_quantize_known_avx512(const float *row, int64_t n, float lo, float hi, uint8_t *out, float *zero_point);
#endif

#endif
