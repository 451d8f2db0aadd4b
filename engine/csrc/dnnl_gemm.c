/*
 * A thin C layer over oneDNN for the node's packed (padding-free) encoder forward pass.
 *
 * oneDNN 2.x exposes its memory descriptors as large C structs; keeping them on this side of
 * the FFI boundary lets the Rust code see only opaque handles and plain buffers. Everything
 * here runs on oneDNN's OpenMP thread pool — the GEMMs, attention, and the few row loops
 * (LayerNorm, int8 quantization, as `omp parallel for`) — so the forward pass never has two
 * thread pools spinning against each other on a small machine.
 *
 * A projection handle holds one weight matrix, reordered once into the layout oneDNN's kernels
 * prefer, and primitives for the row counts (M) seen most recently: a brgemm primitive is
 * compiled for a fixed M, and oneDNN's primitive cache makes re-creating one cheap.
 */
#include <dnnl.h>
#include <pthread.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "int8_rows.h"

/* Input × weight types: f32 × f32, bf16 × bf16, u8 × s8 (int8: unsigned activations with a
 * per-row zero point, signed weights — VNNI's native vpdpbusd). */
enum rr_kind { RR_F32 = 0, RR_BF16 = 1, RR_U8 = 2 };
enum rr_flags { RR_GELU = 1, RR_ACCUMULATE = 2, RR_DST_BF16 = 4 };

#define RR_SLOTS 8

struct rr_slot {
    int64_t m;
    dnnl_primitive_t prim;
};

/* Primitives for the last few keys (row counts), replaced round-robin. */
struct rr_slots {
    struct rr_slot slot[RR_SLOTS];
    int next;
};

static dnnl_primitive_t rr_slots_get(const struct rr_slots *c, int64_t key) {
    for (int i = 0; i < RR_SLOTS; i++)
        if (c->slot[i].prim && c->slot[i].m == key) return c->slot[i].prim;
    return NULL;
}

/* Stores `prim` (created from `pd`, which is destroyed) under `key`; NULL on failure. */
static dnnl_primitive_t rr_slots_put(struct rr_slots *c, int64_t key, dnnl_primitive_desc_t pd) {
    dnnl_primitive_t prim;
    dnnl_status_t s = dnnl_primitive_create(&prim, pd);
    dnnl_primitive_desc_destroy(pd);
    if (s != dnnl_success) return NULL;
    struct rr_slot *slot = &c->slot[c->next];
    c->next = (c->next + 1) % RR_SLOTS;
    if (slot->prim) dnnl_primitive_destroy(slot->prim);
    slot->m = key;
    slot->prim = prim;
    return prim;
}

static void rr_slots_free(struct rr_slots *c) {
    for (int i = 0; i < RR_SLOTS; i++)
        if (c->slot[i].prim) dnnl_primitive_destroy(c->slot[i].prim);
}

struct rr_gemm {
    int kind, flags;
    int64_t k, n;
    dnnl_memory_desc_t wmd;
    void *wbuf;
    dnnl_memory_t wmem;
    dnnl_memory_t bmem;
    float *bbuf;
    float *scales;
    struct rr_slots prims;
    char impl[128];
};

static dnnl_engine_t rr_engine;
static pthread_once_t rr_once = PTHREAD_ONCE_INIT;

static void rr_create_engine(void) {
    if (dnnl_engine_create(&rr_engine, dnnl_cpu, 0) != dnnl_success) rr_engine = NULL;
}

/* The CPU engine, shared by every model (oneDNN engines are thread-safe). */
static int rr_init(void) {
    pthread_once(&rr_once, rr_create_engine);
    return rr_engine ? 0 : -1;
}

static dnnl_data_type_t rr_src_type(int kind) {
    return kind == RR_F32 ? dnnl_f32 : kind == RR_BF16 ? dnnl_bf16 : dnnl_u8;
}

static dnnl_data_type_t rr_wei_type(int kind) {
    return kind == RR_F32 ? dnnl_f32 : kind == RR_BF16 ? dnnl_bf16 : dnnl_s8;
}

static dnnl_status_t rr_plain(dnnl_memory_desc_t *md, int64_t rows, int64_t cols, dnnl_data_type_t t) {
    dnnl_dims_t d = {rows, cols};
    return dnnl_memory_desc_init_by_tag(md, 2, d, t, dnnl_ab);
}

/* Runs a one-shot primitive and destroys it. */
static dnnl_status_t rr_execute(dnnl_primitive_desc_t pd, dnnl_stream_t stream, int nargs,
                                const dnnl_exec_arg_t *args) {
    dnnl_primitive_t prim;
    dnnl_status_t s = dnnl_primitive_create(&prim, pd);
    dnnl_primitive_desc_destroy(pd);
    if (s != dnnl_success) return s;
    s = dnnl_primitive_execute(prim, stream, nargs, args);
    if (s == dnnl_success) s = dnnl_stream_wait(stream);
    dnnl_primitive_destroy(prim);
    return s;
}

/* Wraps `ptr` as a memory object of descriptor `md`. */
static dnnl_memory_t rr_mem(const dnnl_memory_desc_t *md, const void *ptr) {
    dnnl_memory_t mem = NULL;
    if (dnnl_memory_create(&mem, md, rr_engine, (void *)ptr) != dnnl_success) return NULL;
    return mem;
}

/* A primitive descriptor for `m` rows; weights in `wmd` (or `any` when wmd is NULL). */
static dnnl_status_t rr_pd(const struct rr_gemm *g, int64_t m, const dnnl_memory_desc_t *wmd,
                           dnnl_primitive_desc_t *pd) {
    dnnl_memory_desc_t src, wei, dst, bias;
    dnnl_dims_t wd = {g->k, g->n};
    dnnl_data_type_t t = rr_src_type(g->kind);
    dnnl_status_t s;
    if ((s = rr_plain(&src, m, g->k, t)) != dnnl_success) return s;
    if (wmd) wei = *wmd;
    else if ((s = dnnl_memory_desc_init_by_tag(&wei, 2, wd, rr_wei_type(g->kind), dnnl_format_tag_any)) !=
             dnnl_success)
        return s;
    if ((s = rr_plain(&dst, m, g->n, (g->flags & RR_DST_BF16) ? dnnl_bf16 : dnnl_f32)) != dnnl_success) return s;
    if ((s = rr_plain(&bias, 1, g->n, dnnl_f32)) != dnnl_success) return s;
    dnnl_matmul_desc_t md;
    if ((s = dnnl_matmul_desc_init(&md, &src, &wei, g->bbuf ? &bias : NULL, &dst)) != dnnl_success) return s;
    dnnl_primitive_attr_t attr;
    if ((s = dnnl_primitive_attr_create(&attr)) != dnnl_success) return s;
    if (g->scales) s = dnnl_primitive_attr_set_output_scales(attr, g->n, 1 << 1, g->scales);
    if (s == dnnl_success && (g->flags & (RR_GELU | RR_ACCUMULATE))) {
        dnnl_post_ops_t ops;
        s = dnnl_post_ops_create(&ops);
        if (s == dnnl_success && (g->flags & RR_ACCUMULATE)) s = dnnl_post_ops_append_sum(ops, 1.0f);
        if (s == dnnl_success && (g->flags & RR_GELU))
            s = dnnl_post_ops_append_eltwise(ops, 1.0f, dnnl_eltwise_gelu_erf, 0.f, 0.f);
        if (s == dnnl_success) s = dnnl_primitive_attr_set_post_ops(attr, ops);
        dnnl_post_ops_destroy(ops);
    }
    if (s == dnnl_success) s = dnnl_primitive_desc_create(pd, &md, attr, rr_engine, NULL);
    dnnl_primitive_attr_destroy(attr);
    return s;
}

void rr_gemm_free(struct rr_gemm *g) {
    if (!g) return;
    rr_slots_free(&g->prims);
    if (g->wmem) dnnl_memory_destroy(g->wmem);
    if (g->bmem) dnnl_memory_destroy(g->bmem);
    free(g->wbuf);
    free(g->bbuf);
    free(g->scales);
    free(g);
}

/*
 * Creates y[m, n] = x[m, k] · W^T (+ bias), with W given row-major as n × k (PyTorch's layout)
 * in the kind's weight type: f32, bf16 (as uint16), or s8 with one f32 scale per output column
 * in `scales` (applied to the int32 accumulators; inputs are then u8). `flags`: RR_ACCUMULATE adds the result to what
 * y holds, RR_GELU applies exact GELU last, RR_DST_BF16 writes y as bf16.
 * Returns NULL when oneDNN cannot run it on this CPU.
 */
struct rr_gemm *rr_gemm_create(int kind, int64_t k, int64_t n, const void *weights,
                               const float *bias, const float *scales, int flags) {
    if (rr_init() != 0 || k <= 0 || n <= 0) return NULL;
    struct rr_gemm *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->kind = kind;
    g->flags = flags;
    g->k = k;
    g->n = n;
    if (bias) {
        g->bbuf = malloc(sizeof(float) * n);
        if (!g->bbuf) goto fail;
        memcpy(g->bbuf, bias, sizeof(float) * n);
    }
    if (scales) {
        g->scales = malloc(sizeof(float) * n);
        if (!g->scales) goto fail;
        memcpy(g->scales, scales, sizeof(float) * n);
    }
    /* The weight layout is chosen for a mid-sized M and then kept for every M. */
    dnnl_primitive_desc_t pd;
    if (rr_pd(g, 256, NULL, &pd) != dnnl_success) goto fail;
    const char *impl = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    if (impl) strncpy(g->impl, impl, sizeof g->impl - 1);
    g->wmd = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_primitive_desc_destroy(pd);

    dnnl_memory_desc_t user;
    dnnl_dims_t wd = {k, n};
    if (dnnl_memory_desc_init_by_tag(&user, 2, wd, rr_wei_type(kind), dnnl_ba) != dnnl_success) goto fail;
    g->wbuf = aligned_alloc(64, (dnnl_memory_desc_get_size(&g->wmd) + 63) / 64 * 64);
    if (!g->wbuf) goto fail;
    dnnl_memory_t umem = rr_mem(&user, weights);
    if (!umem) goto fail;
    g->wmem = rr_mem(&g->wmd, g->wbuf);
    dnnl_primitive_desc_t rpd;
    dnnl_status_t s = g->wmem ? dnnl_reorder_primitive_desc_create(&rpd, &user, rr_engine, &g->wmd, rr_engine, NULL)
                              : dnnl_out_of_memory;
    dnnl_stream_t stream = NULL;
    if (s == dnnl_success) s = dnnl_stream_create(&stream, rr_engine, dnnl_stream_default_flags);
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, umem}, {DNNL_ARG_TO, g->wmem}};
        s = rr_execute(rpd, stream, 2, args);
    }
    if (stream) dnnl_stream_destroy(stream);
    dnnl_memory_destroy(umem);
    if (s != dnnl_success) goto fail;
    if (g->bbuf) {
        dnnl_memory_desc_t bmd;
        if (rr_plain(&bmd, 1, n, dnnl_f32) != dnnl_success) goto fail;
        if (!(g->bmem = rr_mem(&bmd, g->bbuf))) goto fail;
    }
    return g;
fail:
    rr_gemm_free(g);
    return NULL;
}

/* The oneDNN implementation chosen (e.g. "brg:avx512_core_bf16"), for logs. */
const char *rr_gemm_impl(const struct rr_gemm *g) { return g->impl; }

static dnnl_primitive_t rr_primitive(struct rr_gemm *g, int64_t m) {
    dnnl_primitive_t prim = rr_slots_get(&g->prims, m);
    if (prim) return prim;
    dnnl_primitive_desc_t pd;
    if (rr_pd(g, m, &g->wmd, &pd) != dnnl_success) return NULL;
    return rr_slots_put(&g->prims, m, pd);
}

/*
 * The per-model execution context: a stream, and the primitives for attention (by sequence
 * length), conversions and GELU (by length). A context and the projection handles
 * used with it must be driven by one thread at a time.
 */
struct rr_ctx {
    dnnl_stream_t stream;
    /* One stream per OpenMP thread for attention, which runs sequences in parallel. */
    dnnl_stream_t *thread_streams;
    int threads;
    int64_t heads, d, hidden;
    float scale, eps;
    /* by_len[s]: Q·K^T, softmax, P·V for a sequence of s tokens. */
    dnnl_primitive_t (*by_len)[3];
    int64_t by_len_cap;
    float *scores;
    int64_t scores_cap;
    struct rr_slots bf16, gelu;
    /* Which kernel runs attention (RR_ATTN_*), with per-thread scratch for our own kernels. */
    int attn;
    void **attn_scratch;
    int64_t attn_scratch_cap;
};

/* Attention kernels: oneDNN's f32 primitives per sequence; our f32 kernels, the default where
 * the CPU has AVX-512 (avx512_attention.c) or else AVX2 (avx2_attention.c); our bf16 kernels, which the
 * reduced-precision modes ask for: AMX tiles (amx_attention.c) or, without AMX, AVX512-BF16 dot
 * products (avx512_attention.c). */
enum { RR_ATTN_ONEDNN = 0, RR_ATTN_AVX512 = 1, RR_ATTN_AMX = 2, RR_ATTN_AVX512_BF16 = 3, RR_ATTN_AVX2 = 4 };

int rr_amx_available(void);
int64_t rr_amx_scratch_bytes(int64_t s, int64_t h, int64_t d);
int rr_amx_attend_one(const float *qkv, int64_t s, int64_t heads, int64_t d, float scale, void *scratch,
                      float *ctx, const struct rr_int8_rows *in, struct rr_int8_rows *out);
int rr_avx512_attention_available(void);
int64_t rr_avx512_scratch_bytes(int64_t s, int64_t d);
int rr_avx512_attend_one(float *qkv, int64_t s, int64_t heads, int64_t d, float scale, void *scratch, float *ctx,
                         const struct rr_int8_rows *in, struct rr_int8_rows *out);
int rr_avx512bf16_attention_available(void);
int64_t rr_avx512bf16_scratch_bytes(int64_t s, int64_t d);
int rr_avx512bf16_attend_one(float *qkv, int64_t s, int64_t heads, int64_t d, float scale, void *scratch, float *ctx,
                             const struct rr_int8_rows *in, struct rr_int8_rows *out);

int rr_avx2_attention_available(void);
int64_t rr_avx2_scratch_bytes(int64_t s, int64_t d);
int rr_avx2_attend_one(const float *qkv, int64_t s, int64_t heads, int64_t d, float scale, void *scratch,
                       float *ctx);
static int rr_f32_attention(const struct rr_ctx *c);

void rr_ctx_free(struct rr_ctx *c) {
    if (!c) return;
    for (int64_t s = 0; s < c->by_len_cap; s++)
        for (int i = 0; i < 3; i++)
            if (c->by_len[s][i]) dnnl_primitive_destroy(c->by_len[s][i]);
    free(c->by_len);
    free(c->scores);
    rr_slots_free(&c->bf16);
    rr_slots_free(&c->gelu);
    if (c->attn_scratch)
        for (int t = 0; t < c->threads; t++) free(c->attn_scratch[t]);
    free(c->attn_scratch);
    for (int t = 0; t < c->threads; t++)
        if (c->thread_streams[t]) dnnl_stream_destroy(c->thread_streams[t]);
    free(c->thread_streams);
    if (c->stream) dnnl_stream_destroy(c->stream);
    free(c);
}

/* A context for a model with `heads` attention heads of `d` values and LayerNorm epsilon `eps`. */
struct rr_ctx *rr_ctx_create(int64_t heads, int64_t d, float eps) {
    if (rr_init() != 0 || heads <= 0 || d <= 0) return NULL;
    struct rr_ctx *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->heads = heads;
    c->d = d;
    c->hidden = heads * d;
    c->scale = 1.0f / sqrtf((float)d);
    c->eps = eps;
    if (dnnl_stream_create(&c->stream, rr_engine, dnnl_stream_default_flags) != dnnl_success) {
        c->stream = NULL;
        rr_ctx_free(c);
        return NULL;
    }
    int threads = omp_get_max_threads();
    c->thread_streams = calloc((size_t)threads, sizeof *c->thread_streams);
    if (!c->thread_streams) {
        rr_ctx_free(c);
        return NULL;
    }
    c->threads = threads;
    c->attn = rr_f32_attention(c);
    for (int t = 0; t < threads; t++)
        if (dnnl_stream_create(&c->thread_streams[t], rr_engine, dnnl_stream_default_flags) != dnnl_success) {
            c->thread_streams[t] = NULL;
            rr_ctx_free(c);
            return NULL;
        }
    return c;
}

/* Runs the GEMM on `m` rows of x (m × k, row-major, the kind's type) into y (m × n).
 * Returns 0 on success. */
int rr_gemm_run(struct rr_ctx *c, struct rr_gemm *g, int64_t m, const void *x, void *y) {
    if (m <= 0) return 0;
    dnnl_primitive_t prim = rr_primitive(g, m);
    if (!prim) return -1;
    dnnl_memory_desc_t src, dst;
    if (rr_plain(&src, m, g->k, rr_src_type(g->kind)) != dnnl_success) return -1;
    if (rr_plain(&dst, m, g->n, (g->flags & RR_DST_BF16) ? dnnl_bf16 : dnnl_f32) != dnnl_success) return -1;
    dnnl_memory_t smem = rr_mem(&src, x), dmem = rr_mem(&dst, y);
    dnnl_status_t s = dnnl_runtime_error;
    if (smem && dmem) {
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, smem}, {DNNL_ARG_WEIGHTS, g->wmem}, {DNNL_ARG_DST, dmem},
                                   {DNNL_ARG_BIAS, g->bmem}};
        s = dnnl_primitive_execute(prim, c->stream, g->bmem ? 4 : 3, args);
        if (s == dnnl_success) s = dnnl_stream_wait(c->stream);
    }
    if (smem) dnnl_memory_destroy(smem);
    if (dmem) dnnl_memory_destroy(dmem);
    return s == dnnl_success ? 0 : -1;
}


/* Executes `prim` on `stream` and waits for it. */
static dnnl_status_t rr_exec(dnnl_stream_t stream, dnnl_primitive_t prim, int nargs, const dnnl_exec_arg_t *args) {
    dnnl_status_t s = dnnl_primitive_execute(prim, stream, nargs, args);
    return s == dnnl_success ? dnnl_stream_wait(stream) : s;
}

/* Executes `prim` on the context's stream and waits for it. */
static dnnl_status_t rr_run(struct rr_ctx *c, dnnl_primitive_t prim, int nargs, const dnnl_exec_arg_t *args) {
    return rr_exec(c->stream, prim, nargs, args);
}

/* (a, b, c) f32 view with the given strides. */
static dnnl_status_t rr_view3(dnnl_memory_desc_t *md, int64_t a, int64_t b, int64_t c, int64_t sa, int64_t sb,
                              int64_t sc) {
    dnnl_dims_t d = {a, b, c}, s = {sa, sb, sc};
    return dnnl_memory_desc_init_by_strides(md, 3, d, dnnl_f32, s);
}

/* Descriptors of one s-token sequence's attention operands inside the packed buffers. */
struct rr_attn_mds {
    dnnl_memory_desc_t q, kt, scores, v, ctx;
};

static dnnl_status_t rr_attn_mds(const struct rr_ctx *c, int64_t s, struct rr_attn_mds *m) {
    int64_t h = c->hidden, H = c->heads, d = c->d;
    dnnl_status_t st;
    if ((st = rr_view3(&m->q, H, s, d, d, 3 * h, 1)) != dnnl_success) return st;
    if ((st = rr_view3(&m->kt, H, d, s, d, 1, 3 * h)) != dnnl_success) return st;
    if ((st = rr_view3(&m->scores, H, s, s, s * s, s, 1)) != dnnl_success) return st;
    if ((st = rr_view3(&m->v, H, s, d, d, 3 * h, 1)) != dnnl_success) return st;
    return rr_view3(&m->ctx, H, s, d, d, h, 1);
}

/* The three attention primitives for sequences of s tokens, created on first use. */
static dnnl_primitive_t *rr_attn_prims(struct rr_ctx *c, int64_t s, const struct rr_attn_mds *m) {
    if (s >= c->by_len_cap) {
        int64_t cap = s + 64;
        dnnl_primitive_t(*grown)[3] = realloc(c->by_len, sizeof *grown * (size_t)cap);
        if (!grown) return NULL;
        memset(grown + c->by_len_cap, 0, sizeof *grown * (size_t)(cap - c->by_len_cap));
        c->by_len = grown;
        c->by_len_cap = cap;
    }
    dnnl_primitive_t *p = c->by_len[s];
    if (p[0] && p[1] && p[2]) return p;
    dnnl_primitive_desc_t pd;
    dnnl_matmul_desc_t md;
    dnnl_softmax_desc_t sd;
    dnnl_primitive_attr_t attr;
    if (!p[0]) {
        if (dnnl_matmul_desc_init(&md, &m->q, &m->kt, NULL, &m->scores) != dnnl_success) return NULL;
        if (dnnl_primitive_attr_create(&attr) != dnnl_success) return NULL;
        dnnl_status_t st = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &c->scale);
        if (st == dnnl_success) st = dnnl_primitive_desc_create(&pd, &md, attr, rr_engine, NULL);
        dnnl_primitive_attr_destroy(attr);
        if (st != dnnl_success) return NULL;
        st = dnnl_primitive_create(&p[0], pd);
        dnnl_primitive_desc_destroy(pd);
        if (st != dnnl_success) return NULL;
    }
    if (!p[1]) {
        if (dnnl_softmax_forward_desc_init(&sd, dnnl_forward_inference, &m->scores, 2) != dnnl_success) return NULL;
        if (dnnl_primitive_desc_create(&pd, &sd, NULL, rr_engine, NULL) != dnnl_success) return NULL;
        dnnl_status_t st = dnnl_primitive_create(&p[1], pd);
        dnnl_primitive_desc_destroy(pd);
        if (st != dnnl_success) return NULL;
    }
    if (!p[2]) {
        if (dnnl_matmul_desc_init(&md, &m->scores, &m->v, NULL, &m->ctx) != dnnl_success) return NULL;
        if (dnnl_primitive_desc_create(&pd, &md, NULL, rr_engine, NULL) != dnnl_success) return NULL;
        dnnl_status_t st = dnnl_primitive_create(&p[2], pd);
        dnnl_primitive_desc_destroy(pd);
        if (st != dnnl_success) return NULL;
    }
    return p;
}

/* One sequence's multi-head attention, reading Q, K, V from its rows of the packed QKV
 * projection (s × 3h) and writing the context into its rows of ctx (s × h). */
static dnnl_status_t rr_attend_one(const struct rr_ctx *c, dnnl_stream_t stream, const float *qkv, int64_t s,
                                   float *scores, float *ctx) {
    struct rr_attn_mds m;
    dnnl_status_t st = rr_attn_mds(c, s, &m);
    if (st != dnnl_success) return st;
    dnnl_primitive_t *p = c->by_len[s];
    int64_t h = c->hidden;
    dnnl_memory_t qm = rr_mem(&m.q, qkv), km = rr_mem(&m.kt, qkv + h), sm = rr_mem(&m.scores, scores),
                  vm = rr_mem(&m.v, qkv + 2 * h), cm = rr_mem(&m.ctx, ctx);
    st = (qm && km && sm && vm && cm) ? dnnl_success : dnnl_out_of_memory;
    if (st == dnnl_success) {
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, qm}, {DNNL_ARG_WEIGHTS, km}, {DNNL_ARG_DST, sm}};
        st = rr_exec(stream, p[0], 3, args);
    }
    if (st == dnnl_success) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_SRC, sm}, {DNNL_ARG_DST, sm}};
        st = rr_exec(stream, p[1], 2, args);
    }
    if (st == dnnl_success) {
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, sm}, {DNNL_ARG_WEIGHTS, vm}, {DNNL_ARG_DST, cm}};
        st = rr_exec(stream, p[2], 3, args);
    }
    if (qm) dnnl_memory_destroy(qm);
    if (km) dnnl_memory_destroy(km);
    if (sm) dnnl_memory_destroy(sm);
    if (vm) dnnl_memory_destroy(vm);
    if (cm) dnnl_memory_destroy(cm);
    return st;
}

/* Whether this CPU and head size run the attention kernel `kind` (RR_ATTN_*): the one place
 * that says what each kernel needs. */
static int rr_attention_runs(const struct rr_ctx *c, int kind) {
    switch (kind) {
    case RR_ATTN_ONEDNN:
        return 1;
    case RR_ATTN_AVX512:
        return c->d % 16 == 0 && rr_avx512_attention_available();
    case RR_ATTN_AVX2:
        return c->d % 16 == 0 && rr_avx2_attention_available();
    case RR_ATTN_AMX:
        return c->d % 32 == 0 && rr_amx_available();
    case RR_ATTN_AVX512_BF16:
        return c->d % 32 == 0 && rr_avx512bf16_attention_available();
    default:
        return 0;
    }
}

/* The f32 kernel this CPU and head size run: AVX-512, else AVX2, else oneDNN's primitives. */
static int rr_f32_attention(const struct rr_ctx *c) {
    if (rr_attention_runs(c, RR_ATTN_AVX512)) return RR_ATTN_AVX512;
    return rr_attention_runs(c, RR_ATTN_AVX2) ? RR_ATTN_AVX2 : RR_ATTN_ONEDNN;
}

/* Asks for attention with bf16 products (for the bf16 and int8 modes): on AMX tiles where the CPU
 * and kernel allow them, else with AVX512-BF16 dot products, for head sizes that are multiples of
 * 32; with on = 0, back to f32. Returns whether a bf16 kernel will run. */
int rr_ctx_use_bf16_attention(struct rr_ctx *c, int on) {
    if (on && rr_attention_runs(c, RR_ATTN_AMX))
        c->attn = RR_ATTN_AMX;
    else if (on && rr_attention_runs(c, RR_ATTN_AVX512_BF16))
        c->attn = RR_ATTN_AVX512_BF16;
    else
        c->attn = rr_f32_attention(c);
    return c->attn == RR_ATTN_AMX || c->attn == RR_ATTN_AVX512_BF16;
}

/* Picks the attention kernel (RR_ATTN_*) where this CPU and head size run it, to compare them;
 * any other kind leaves it; returns the one now in use. */
int rr_ctx_set_attention(struct rr_ctx *c, int kind) {
    if (rr_attention_runs(c, kind)) c->attn = kind;
    return c->attn;
}

/* Per-thread scratch of at least `need` bytes (64-byte aligned) for our attention kernels. */
static int rr_attn_scratch(struct rr_ctx *c, int64_t need) {
    if (!c->attn_scratch && !(c->attn_scratch = calloc((size_t)c->threads, sizeof *c->attn_scratch))) return -1;
    if (need > c->attn_scratch_cap) {
        for (int t = 0; t < c->threads; t++) {
            free(c->attn_scratch[t]);
            c->attn_scratch[t] = NULL;
        }
        c->attn_scratch_cap = 0;
        for (int t = 0; t < c->threads; t++)
            if (!(c->attn_scratch[t] = aligned_alloc(64, (size_t)(need + 63) / 64 * 64))) return -1;
        c->attn_scratch_cap = need;
    }
    return 0;
}

/* Our kernels (by c->attn) over the packed sequences, whole sequences per thread. `in` and
 * `out` (both or neither, never for AVX2): the int8 QKV epilogue applied on the way in (in place
 * in qkv on AVX-512), the context requantized on the way out (see rr_attention_int8). */
static int rr_attention_own(struct rr_ctx *c, float *qkv, int64_t nseq, const int64_t *offsets, int64_t longest,
                            float *ctx, const struct rr_int8_rows *in, const struct rr_int8_rows *out) {
    int64_t h = c->hidden;
    int kind = c->attn;
    int64_t need = kind == RR_ATTN_AMX            ? rr_amx_scratch_bytes(longest, h, c->d)
                   : kind == RR_ATTN_AVX512_BF16 ? rr_avx512bf16_scratch_bytes(longest, c->d)
                   : kind == RR_ATTN_AVX2        ? rr_avx2_scratch_bytes(longest, c->d)
                                                 : rr_avx512_scratch_bytes(longest, c->d);
    if (rr_attn_scratch(c, need)) return -1;
    int failed = 0;
#pragma omp parallel num_threads(c->threads) reduction(| : failed)
    {
        void *scratch = c->attn_scratch[omp_get_thread_num()];
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < nseq; i++) {
            int64_t s = offsets[i + 1] - offsets[i];
            if (s <= 0 || failed) continue;
            int64_t r = offsets[i];
            struct rr_int8_rows seq_in, seq_out;
            if (in) {
                seq_in = *in;
                seq_in.scale += r;
                seq_in.zero_point += r;
                seq_out = *out;
                seq_out.scale += r;
                seq_out.zero_point += r;
                seq_out.q += r * h;
            }
            const struct rr_int8_rows *si = in ? &seq_in : NULL;
            struct rr_int8_rows *so = in ? &seq_out : NULL;
            float *x = qkv + r * 3 * h, *y = ctx + r * h;
            int st = kind == RR_ATTN_AMX ? rr_amx_attend_one(x, s, c->heads, c->d, c->scale, scratch, y, si, so)
                     : kind == RR_ATTN_AVX512_BF16
                         ? rr_avx512bf16_attend_one(x, s, c->heads, c->d, c->scale, scratch, y, si, so)
                     : kind == RR_ATTN_AVX2 ? rr_avx2_attend_one(x, s, c->heads, c->d, c->scale, scratch, y)
                                            : rr_avx512_attend_one(x, s, c->heads, c->d, c->scale, scratch, y, si, so);
            if (st != 0) failed = 1;
        }
    }
    return failed ? -1 : 0;
}

/*
 * Multi-head self-attention over packed sequences: sequence i owns rows
 * [offsets[i], offsets[i+1]) of qkv (M × 3h: Q, K, V side by side) and of ctx (M × h). No
 * sequence sees another's keys, so no padding and no mask are needed.
 *
 * One sequence's products are small (12 heads × 127² × 32 for a MiniLM pair), too small to
 * split across threads without paying more in barriers than they cost; so the threads take
 * whole sequences, each running oneDNN single-threaded on its own stream.
 */
int rr_attention(struct rr_ctx *c, const float *qkv, int64_t nseq, const int64_t *offsets, float *ctx) {
    int64_t h = c->hidden, longest = 0;
    for (int64_t i = 0; i < nseq; i++)
        if (offsets[i + 1] - offsets[i] > longest) longest = offsets[i + 1] - offsets[i];
    /* The AVX-512 kernel writes qkv only where it applies an int8 epilogue, not here. */
    if (c->attn != RR_ATTN_ONEDNN) return rr_attention_own(c, (float *)qkv, nseq, offsets, longest, ctx, NULL, NULL);
    /* Primitives are created up front: the parallel region below only reads the cache. */
    for (int64_t i = 0; i < nseq; i++) {
        int64_t s = offsets[i + 1] - offsets[i];
        struct rr_attn_mds m;
        if (s > 0 && (rr_attn_mds(c, s, &m) != dnnl_success || !rr_attn_prims(c, s, &m))) return -1;
    }
    int64_t per_thread = c->heads * longest * longest;
    int64_t need = per_thread * c->threads;
    if (need > c->scores_cap) {
        float *grown = realloc(c->scores, sizeof(float) * (size_t)need);
        if (!grown) return -1;
        c->scores = grown;
        c->scores_cap = need;
    }
    int failed = 0;
#pragma omp parallel num_threads(c->threads) reduction(| : failed)
    {
        int t = omp_get_thread_num();
        float *scores = c->scores + per_thread * t;
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < nseq; i++) {
            int64_t s = offsets[i + 1] - offsets[i];
            if (s <= 0 || failed) continue;
            if (rr_attend_one(c, c->thread_streams[t], qkv + offsets[i] * 3 * h, s, scores, ctx + offsets[i] * h) !=
                dnnl_success)
                failed = 1;
        }
    }
    return failed ? -1 : 0;
}

void rr_scale_rows(float *y, int64_t m, int64_t n, const float *scale, const float *zero_point, const float *comp,
                   const float *bias, float *acc);
void rr_quantize_rows(const float *x, int64_t m, int64_t n, uint8_t *q, float *scale, float *zero_point);
static int rr_avx512_rows(void);

/*
 * The int8 path's attention: qkv holds the QKV GEMM's raw output for rows quantized with
 * in->scale/zero_point (in->comp, in->bias: its epilogue terms); the context goes to ctx (f32)
 * and, requantized, to out->q with its scales and zero points in out->scale/zero_point (which may
 * be in's arrays). On AMX the epilogue is applied while Q, K, V are rounded to bf16 and each
 * sequence's context is quantized as it is finished: two passes over the batch fewer.
 */
int rr_attention_int8(struct rr_ctx *c, float *qkv, int64_t nseq, const int64_t *offsets, const float *in_scale,
                      const float *in_zero_point, const float *comp, const float *bias, float *ctx, uint8_t *q,
                      float *out_scale, float *out_zero_point) {
    int64_t h = c->hidden, m = offsets[nseq], longest = 0;
    for (int64_t i = 0; i < nseq; i++)
        if (offsets[i + 1] - offsets[i] > longest) longest = offsets[i + 1] - offsets[i];
    if (c->attn != RR_ATTN_ONEDNN && c->attn != RR_ATTN_AVX2) {
        struct rr_int8_rows in = {(float *)in_scale, (float *)in_zero_point, NULL, comp, bias};
        struct rr_int8_rows out = {out_scale, out_zero_point, q, NULL, NULL};
        return rr_attention_own(c, qkv, nseq, offsets, longest, ctx, &in, &out);
    }
    rr_scale_rows(qkv, m, 3 * h, in_scale, in_zero_point, comp, bias, NULL);
    if (rr_attention(c, qkv, nseq, offsets, ctx) != 0) return -1;
    rr_quantize_rows(ctx, m, h, q, out_scale, out_zero_point);
    return 0;
}

/* The cached element-wise primitive for `len` values. */
static dnnl_primitive_t rr_cached(struct rr_ctx *c, struct rr_slots *slots, int64_t key,
                                  dnnl_status_t (*make)(struct rr_ctx *, int64_t, dnnl_primitive_desc_t *)) {
    dnnl_primitive_t prim = rr_slots_get(slots, key);
    if (prim) return prim;
    dnnl_primitive_desc_t pd;
    if (make(c, key, &pd) != dnnl_success) return NULL;
    return rr_slots_put(slots, key, pd);
}

static dnnl_status_t rr_flat(dnnl_memory_desc_t *md, int64_t len, dnnl_data_type_t t) {
    dnnl_dims_t d = {len};
    return dnnl_memory_desc_init_by_tag(md, 1, d, t, dnnl_a);
}

static dnnl_status_t rr_make_bf16(struct rr_ctx *c, int64_t len, dnnl_primitive_desc_t *pd) {
    (void)c;
    dnnl_memory_desc_t a, b;
    dnnl_status_t s = rr_flat(&a, len, dnnl_f32);
    if (s == dnnl_success) s = rr_flat(&b, len, dnnl_bf16);
    return s == dnnl_success ? dnnl_reorder_primitive_desc_create(pd, &a, rr_engine, &b, rr_engine, NULL) : s;
}

/* f32 → bf16 (round to nearest even), `len` values. */
int rr_to_bf16(struct rr_ctx *c, const float *x, uint16_t *y, int64_t len) {
    if (len <= 0) return 0;
    dnnl_primitive_t prim = rr_cached(c, &c->bf16, len, rr_make_bf16);
    if (!prim) return -1;
    dnnl_memory_desc_t a, b;
    if (rr_flat(&a, len, dnnl_f32) != dnnl_success || rr_flat(&b, len, dnnl_bf16) != dnnl_success) return -1;
    dnnl_memory_t am = rr_mem(&a, x), bm = rr_mem(&b, y);
    dnnl_status_t s = dnnl_out_of_memory;
    if (am && bm) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, am}, {DNNL_ARG_TO, bm}};
        s = rr_run(c, prim, 2, args);
    }
    if (am) dnnl_memory_destroy(am);
    if (bm) dnnl_memory_destroy(bm);
    return s == dnnl_success ? 0 : -1;
}

static dnnl_status_t rr_make_gelu(struct rr_ctx *c, int64_t len, dnnl_primitive_desc_t *pd) {
    (void)c;
    dnnl_memory_desc_t a;
    dnnl_eltwise_desc_t ed;
    dnnl_status_t s = rr_flat(&a, len, dnnl_f32);
    if (s == dnnl_success)
        s = dnnl_eltwise_forward_desc_init(&ed, dnnl_forward_inference, dnnl_eltwise_gelu_erf, &a, 0.f, 0.f);
    return s == dnnl_success ? dnnl_primitive_desc_create(pd, &ed, NULL, rr_engine, NULL) : s;
}

/* Exact (erf) GELU in place over `len` values. */
int rr_gelu(struct rr_ctx *c, float *x, int64_t len) {
    if (len <= 0) return 0;
    dnnl_primitive_t prim = rr_cached(c, &c->gelu, len, rr_make_gelu);
    if (!prim) return -1;
    dnnl_memory_desc_t a;
    if (rr_flat(&a, len, dnnl_f32) != dnnl_success) return -1;
    dnnl_memory_t am = rr_mem(&a, x);
    if (!am) return -1;
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_SRC, am}, {DNNL_ARG_DST, am}};
    dnnl_status_t s = rr_run(c, prim, 2, args);
    dnnl_memory_destroy(am);
    return s == dnnl_success ? 0 : -1;
}

/* Row kernels, compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time (the
 * rest of the library is portable; oneDNN dispatches its own kernels). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RR_CLONES
#endif

/* Asymmetric u8 quantization of one row: x ≈ scale · (q − zero_point), with the range widened
 * to include 0 so that 0 is exact. Returns the scale; the zero point goes to *zero_point. */
RR_CLONES static float rr_quantize_row(const float *row, int64_t n, uint8_t *out, float *zero_point) {
    float lo = 0.f, hi = 0.f;
#pragma omp simd reduction(min : lo) reduction(max : hi)
    for (int64_t c = 0; c < n; c++) {
        lo = row[c] < lo ? row[c] : lo;
        hi = row[c] > hi ? row[c] : hi;
    }
    float s = hi > lo ? (hi - lo) / 255.f : 1.f, inv = 1.f / s;
    float zp = (float)(int)(-lo * inv + 0.5f);
#pragma omp simd
    for (int64_t c = 0; c < n; c++) {
        float v = row[c] * inv + zp + 0.5f;
        v = v < 0.f ? 0.f : v > 255.f ? 255.f : v;
        out[c] = (uint8_t)(int)v;
    }
    *zero_point = zp;
    return s;
}

RR_CLONES void rr_scale_row(float *restrict y, int64_t n, float s, float zp, const float *restrict comp,
                                   const float *restrict bias, float *restrict acc) {
    if (acc) {
#pragma omp simd
        for (int64_t c = 0; c < n; c++) acc[c] += (y[c] - zp * comp[c]) * s + bias[c];
    } else {
#pragma omp simd
        for (int64_t c = 0; c < n; c++) y[c] = (y[c] - zp * comp[c]) * s + bias[c];
    }
}

/* Whether oneDNN's int8 kernels on this CPU multiply with VNNI (vpdpbusd: u8×s8 products summed
 * straight into int32). Without it they use vpmaddubsw, whose pairwise u8×s8 sums saturate at
 * int16: 255·127·2 overflows, 255·63·2 does not, so the caller keeps weights to 7 bits. */
int rr_int8_has_vnni(void) {
    unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    return (isa & ((unsigned)dnnl_cpu_isa_avx512_core_vnni & ~(unsigned)dnnl_cpu_isa_avx512_core)) != 0 ||
           (isa & ((unsigned)dnnl_cpu_isa_avx2_vnni & ~(unsigned)dnnl_cpu_isa_avx2)) != 0;
}

/* Whether the AVX-512 row quantization (amx_attention.c) can run here. */
static int rr_avx512_rows(void) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    static int known = -1;
    if (known < 0)
        known = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    return known;
#else
    return 0;
#endif
}

static float rr_quantize_row_any(const float *row, int64_t n, uint8_t *out, float *zero_point) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    if (rr_avx512_rows()) return rr_quantize_row_avx512(row, n, out, zero_point);
#endif
    return rr_quantize_row(row, n, out, zero_point);
}

/* Dynamic per-row u8 quantization: x[r, :] ≈ scale[r] · (q[r, :] − zero_point[r]). */
void rr_quantize_rows(const float *x, int64_t m, int64_t n, uint8_t *q, float *scale, float *zero_point) {
    rr_avx512_rows(); /* decided before the threads read it */
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < m; r++) scale[r] = rr_quantize_row_any(x + r * n, n, q + r * n, zero_point + r);
}

/* The int8 GEMM's epilogue. y holds wscale[c] · Σ q·w; with comp[c] = wscale[c] · Σ_k w[c, k]:
 * y[r, c] = (y[r, c] − zero_point[r] · comp[c]) · scale[r] + bias[c], written to y, or added to
 * acc when acc is given. */
void rr_scale_rows(float *y, int64_t m, int64_t n, const float *scale, const float *zero_point, const float *comp,
                   const float *bias, float *acc) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < m; r++)
        rr_scale_row(y + r * n, n, scale[r], zero_point[r], comp, bias, acc ? acc + r * n : NULL);
}

/* Exact-GELU's Φ part by A&S 7.1.28: erf(u) = 1 − (1 + a1·u + … + a6·u⁶)^−16 for u ≥ 0, absolute
 * error ≤ 3e-7. No exp and no selects, so GCC vectorizes it in both target clones (an exp-based
 * erf kept the AVX2 clone scalar and cost 6× oneDNN's GELU). Used only on int8's path, whose
 * activations are rounded to 8 bits right after. */
static inline float rr_gelu_value(float x) {
    float u = fabsf(x) * 0.70710678118654752f;
    float p = 1.f + u * (0.0705230784f +
                         u * (0.0422820123f + u * (0.0092705272f + u * (0.0001520143f +
                                                                        u * (0.0002765672f + u * 0.0000430638f)))));
    p = p * p;
    p = p * p;
    p = p * p;
    p = p * p;
    return 0.5f * x * (1.f + copysignf(1.f - 1.f / p, x));
}

/* The u8 codes of a row whose range [lo, hi] is known (rr_quantize_row's rounding). */
RR_CLONES static float rr_quantize_known(const float *restrict row, int64_t n, float lo, float hi,
                                         uint8_t *restrict out, float *zero_point) {
    lo = lo < 0.f ? lo : 0.f;
    hi = hi > 0.f ? hi : 0.f;
    float s = hi > lo ? (hi - lo) / 255.f : 1.f, inv = 1.f / s;
    float zp = (float)(int)(-lo * inv + 0.5f);
#pragma omp simd
    for (int64_t c = 0; c < n; c++) {
        float v = row[c] * inv + zp + 0.5f;
        v = v < 0.f ? 0.f : v > 255.f ? 255.f : v;
        out[c] = (uint8_t)(int)v;
    }
    *zero_point = zp;
    return s;
}

static float rr_quantize_codes(const float *row, int64_t n, float lo, float hi, uint8_t *out, float *zero_point) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    if (rr_avx512_rows()) return rr_quantize_known_avx512(row, n, lo, hi, out, zero_point);
#endif
    return rr_quantize_known(row, n, lo, hi, out, zero_point);
}

/* One row of the int8 FFN-in epilogue, GELU and requantization: the row stays in L1 between the
 * three, where separate passes would stream the (tokens × intermediate) f32 matrix from memory
 * three times. */
RR_CLONES static void rr_gelu_quantize_row(float *restrict y, int64_t n, float *scale, float *zero_point,
                                           const float *restrict comp, const float *restrict bias,
                                           uint8_t *restrict out) {
    float s = *scale, zp = *zero_point, lo = 0.f, hi = 0.f;
#pragma omp simd reduction(min : lo) reduction(max : hi)
    for (int64_t c = 0; c < n; c++) {
        float v = rr_gelu_value((y[c] - zp * comp[c]) * s + bias[c]);
        y[c] = v;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    *scale = rr_quantize_codes(y, n, lo, hi, out, zero_point);
}

/* Int8 epilogue + exact GELU + per-row u8 requantization of y (m × n), row by row: y's rows were
 * quantized with scale/zero_point, which are replaced by those of q (y keeps the GELU output). */
void rr_gelu_quantize_rows(float *y, int64_t m, int64_t n, float *scale, float *zero_point, const float *comp,
                           const float *bias, uint8_t *q) {
    rr_avx512_rows();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < m; r++) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
        if (rr_avx512_rows()) {
            rr_gelu_quantize_row_avx512(y + r * n, n, scale + r, zero_point + r, comp, bias, q + r * n);
            continue;
        }
#endif
        rr_gelu_quantize_row(y + r * n, n, scale + r, zero_point + r, comp, bias, q + r * n);
    }
}

/* One row of: x += epilogue(t); LayerNorm(x); optionally requantize x (see rr_norm_quantize_rows). */
RR_CLONES static void rr_norm_quantize_row(const float *restrict t, float *restrict x, int64_t n, float *scale,
                                           float *zero_point, const float *restrict comp,
                                           const float *restrict bias, const float *restrict gamma,
                                           const float *restrict beta, float eps, uint8_t *restrict out) {
    float s = *scale, zp = *zero_point, sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < n; c++) {
        float v = x[c] + ((t[c] - zp * comp[c]) * s + bias[c]);
        x[c] = v;
        sum += v;
    }
    float mean = sum / (float)n, var = 0.f;
#pragma omp simd reduction(+ : var)
    for (int64_t c = 0; c < n; c++) {
        float d = x[c] - mean;
        var += d * d;
    }
    float rstd = 1.f / sqrtf(var / (float)n + eps), lo = 0.f, hi = 0.f;
#pragma omp simd reduction(min : lo) reduction(max : hi)
    for (int64_t c = 0; c < n; c++) {
        float v = (x[c] - mean) * rstd * gamma[c] + beta[c];
        x[c] = v;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    if (out) *scale = rr_quantize_codes(x, n, lo, hi, out, zero_point);
}

/* The int8 path's residual sublayer end, row by row: x += (t − zero_point·comp)·scale + bias
 * (the epilogue of t, an int8 GEMM's output for rows quantized with scale/zero_point), then
 * LayerNorm of x with gamma/beta, then, when q is given, x requantized into q with its scales and
 * zero points replacing the old ones: one pass where there were three. */
int rr_norm_quantize_rows(struct rr_ctx *c, const float *t, float *x, int64_t m, float *scale, float *zero_point,
                          const float *comp, const float *bias, const float *gamma, const float *beta, uint8_t *q) {
    const int64_t n = c->hidden;
    const float eps = c->eps;
    rr_avx512_rows();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < m; r++)
        rr_norm_quantize_row(t + r * n, x + r * n, n, scale + r, zero_point + r, comp, bias, gamma, beta, eps,
                             q ? q + r * n : NULL);
    return 0;
}

/* LayerNorm of one row in place: mean and variance in f32 over vector lanes (partial sums per
 * lane keep the rounding error of a 384–1024 wide row far below the 1e-4 parity tolerance). */
RR_CLONES static void rr_layer_norm_row(float *restrict x, int64_t n, const float *restrict gamma,
                                        const float *restrict beta, float eps) {
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < n; c++) sum += x[c];
    float mean = sum / (float)n, var = 0.f;
#pragma omp simd reduction(+ : var)
    for (int64_t c = 0; c < n; c++) {
        float d = x[c] - mean;
        var += d * d;
    }
    float rstd = 1.f / sqrtf(var / (float)n + eps);
#pragma omp simd
    for (int64_t c = 0; c < n; c++) x[c] = (x[c] - mean) * rstd * gamma[c] + beta[c];
}

/* In-place LayerNorm over the rows of x (m × hidden) with gamma and beta. An own kernel rather
 * than oneDNN's primitive: oneDNN 2.6 has only a scalar reference LayerNorm below AVX-512
 * (measured on an AVX2 EPYC: ~10 ms per 508 × 384 call, ~10% of a 4 × 127-token pass). */
int rr_layer_norm(struct rr_ctx *c, float *x, int64_t m, const float *gamma, const float *beta) {
    const int64_t n = c->hidden;
    const float eps = c->eps;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < m; r++) rr_layer_norm_row(x + r * n, n, gamma, beta, eps);
    return 0;
}

/* Runs f(ctx, begin, end) over [0, n), one contiguous run per OpenMP thread: the Rust kernels
 * between the GEMMs (kernels/parallel.rs) share oneDNN's thread pool rather than compete with
 * its spin-waiting threads. */
typedef void (*rr_range_fn)(void *ctx, int64_t begin, int64_t end);

void rr_parallel_for(int64_t n, rr_range_fn f, void *ctx) {
    if (n <= 0) return;
#pragma omp parallel
    {
        int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
        int64_t begin = n * t / nt, end = n * (t + 1) / nt;
        if (begin < end) f(ctx, begin, end);
    }
}

/* Threads an OpenMP parallel region runs on. */
int rr_max_threads(void) { return omp_get_max_threads(); }
