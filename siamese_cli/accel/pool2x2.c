/* MAX pooling with 2x2 windows, stride 2, that tile the input exactly (even H and W, no padding):
 * LeNet's and VGG's pooling. The argmax is the window offset 0..3 in row-major order (as the numpy
 * path keeps it; int32 here), so neither pass needs a division to place a window.
 *
 * Forward: first the maximum of each vertical pair (the two rows of a window; whole rows, contiguous),
 * then of each horizontal pair of those (one flat loop over a run of row pairs). Both loops are
 * branch-free and vectorise, also for rows of 4 or 8 outputs. Caffe's rule is kept: the first maximum
 * in row-major order wins. With columns first, a tie between the winners of the two columns goes to
 * the right one only when it is in the upper row and the left one in the lower (offset 1 before 2).
 * A NaN propagates (as numpy's maximum does); which NaN the offset names is not specified. */
#include <stddef.h>
#include <string.h>

#define CHUNK 4096

void max_pool_2x2_forward(const float *restrict x, float *restrict out, int *restrict offset, long rows,
                          long W)
{
    float column_max[CHUNK];
    int column_down[CHUNK];
    long step = CHUNK / W > 0 ? CHUNK / W : 1;
    for (long r0 = 0; r0 < rows; r0 += step) {
        long r1 = r0 + step < rows ? r0 + step : rows;
        for (long r = r0; r < r1; ++r) {
            const float *upper = x + 2 * r * W, *lower = upper + W;
            float *m = column_max + (r - r0) * W;
            int *d = column_down + (r - r0) * W;
            for (long k = 0; k < W; ++k) {
                float u = upper[k], l = lower[k];
                int down = ((l > u) | (l != l)) & (u == u);
                m[k] = down ? l : u;
                d[k] = down;
            }
        }
        long pairs = (r1 - r0) * W / 2;
        float *o = out + r0 * (W / 2);
        int *at = offset + r0 * (W / 2);
        for (long j = 0; j < pairs; ++j) {
            float a = column_max[2 * j], b = column_max[2 * j + 1];
            int da = column_down[2 * j], db = column_down[2 * j + 1];
            int right = (b > a) | ((b == a) & da & (db ^ 1)) | ((b != b) & (a == a));
            o[j] = right ? b : a;
            at[j] = right ? 1 + 2 * db : 2 * da;
        }
    }
}

/* dx = 0, then each top gradient is written at its window's maximum. */
void max_pool_2x2_backward(const float *restrict dy, const int *restrict offset, float *restrict dx,
                           long rows, long W)
{
    long OW = W / 2;
    memset(dx, 0, (size_t)(2 * rows * W) * sizeof(float));
    for (long r = 0; r < rows; ++r) {
        float *pair = dx + 2 * r * W;
        const float *g = dy + r * OW;
        const int *at = offset + r * OW;
        for (long v = 0; v < OW; ++v)
            pair[2 * v + (at[v] & 1) + (at[v] >> 1) * W] = g[v];
    }
}

/* The same pooling in the batch-last layout (C, H, W, N) of the compiled convolution: the four values of a
 * window are four runs of N floats, so each output is one branch-free pass over the batch. Offsets are taken
 * in row-major order and a later one wins only if strictly greater (Caffe's first maximum), or if it is a NaN
 * and the maximum so far is not (a NaN propagates; the offset names the first one). */
#ifdef __AVX512F__
#include <immintrin.h>

#define TAKE(pointer, k)                                                                                  \
    do {                                                                                                  \
        __m512 value = _mm512_maskz_loadu_ps(mask, (pointer) + n);                                        \
        __mmask16 take = _mm512_cmp_ps_mask(value, best, _CMP_GT_OQ) |                                   \
                         (_mm512_cmp_ps_mask(value, value, _CMP_UNORD_Q) & _mm512_cmp_ps_mask(best, best, _CMP_ORD_Q)); \
        best = _mm512_mask_mov_ps(best, take, value);                                                     \
        where = _mm512_mask_mov_epi32(where, take, _mm512_set1_epi32(k));                                 \
    } while (0)

void max_pool_2x2_batch_last_forward(const float *x, float *out, int *offset, long rows, long OW, long N)
{
    long W = 2 * OW;
    for (long r = 0; r < rows; ++r)
        for (long v = 0; v < OW; ++v) {
            const float *w0 = x + (2 * r * W + 2 * v) * N, *w1 = w0 + N, *w2 = w0 + W * N, *w3 = w2 + N;
            float *o = out + (r * OW + v) * N;
            int *at = offset + (r * OW + v) * N;
            for (long n = 0; n < N; n += 16) {
                __mmask16 mask = N - n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (N - n)) - 1);
                __m512 best = _mm512_maskz_loadu_ps(mask, w0 + n);
                __m512i where = _mm512_setzero_si512();
                TAKE(w1, 1);
                TAKE(w2, 2);
                TAKE(w3, 3);
                _mm512_mask_storeu_ps(o + n, mask, best);
                _mm512_mask_storeu_epi32(at + n, mask, where);
            }
        }
}

/* dx (C, H, W, N): each top gradient at its window's maximum, zeros at the window's other three places. */
void max_pool_2x2_batch_last_backward(const float *dy, const int *offset, float *dx, long rows, long OW, long N)
{
    long W = 2 * OW;
    for (long r = 0; r < rows; ++r)
        for (long v = 0; v < OW; ++v) {
            const float *g = dy + (r * OW + v) * N;
            const int *at = offset + (r * OW + v) * N;
            float *window = dx + (2 * r * W + 2 * v) * N;
            for (long n = 0; n < N; n += 16) {
                __mmask16 mask = N - n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (N - n)) - 1);
                __m512 grad = _mm512_maskz_loadu_ps(mask, g + n);
                __m512i where = _mm512_maskz_loadu_epi32(mask, at + n);
                for (int k = 0; k < 4; ++k) {
                    __mmask16 here = _mm512_cmpeq_epi32_mask(where, _mm512_set1_epi32(k));
                    _mm512_mask_storeu_ps(window + (k >> 1) * W * N + (k & 1) * N + n, mask, _mm512_maskz_mov_ps(here, grad));
                }
            }
        }
}
#else
/* Without AVX-512 the convolution hands nothing over batch-last, so these are never called. */
void max_pool_2x2_batch_last_forward(const float *x, float *out, int *offset, long rows, long OW, long N) {}
void max_pool_2x2_batch_last_backward(const float *dy, const int *offset, float *dx, long rows, long OW, long N) {}
#endif
