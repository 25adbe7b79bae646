/* MAX pooling over (planes, H, W) float32 arrays for any window (2x2 tiles have their own, faster
 * kernel in pool2x2.c), Caffe's rules: each window is clipped to the image, the first maximum in
 * row-major order wins (a strictly greater value replaces it), and the mask holds its flat index
 * h * W + w within the plane. A NaN propagates as numpy's maximum does. The mask may be NULL. */
#include <math.h>
#include <stddef.h>

/* A later value replaces the maximum if strictly greater, or NaN (which then stays, as numpy's maximum keeps it). */
#define TAKES(c, best) (((c) > (best)) | ((c) != (c)))

void max_pool_forward(const float *x, float *out, int *mask, long planes, long H, long W, long OH, long OW,
                      long kh, long kw, long sh, long sw, long ph, long pw)
{
    /* Offset by offset in row-major order, each over a run of output columns (vectorised); a
     * window's offsets are visited in Caffe's order, so the first maximum still wins. */
    for (long p = 0; p < planes; ++p) {
        const float *plane = x + p * H * W;
        for (long y = 0; y < OH; ++y) {
            long h0 = y * sh - ph, h1 = h0 + kh < H ? h0 + kh : H;
            h0 = h0 > 0 ? h0 : 0;
            float *o = out + (p * OH + y) * OW;
            int *m = mask ? mask + (p * OH + y) * OW : NULL;
            for (long v = 0; v < OW; ++v) {
                long w0 = v * sw - pw;
                o[v] = -INFINITY;
                if (m) m[v] = (int)(h0 * W + (w0 > 0 ? w0 : 0));
            }
            for (long h = h0; h < h1; ++h) {
                const float *row = plane + h * W;
                for (long j = 0; j < kw; ++j) {
                    /* columns v whose window holds input column v * sw - pw + j */
                    long first = pw - j > 0 ? (pw - j + sw - 1) / sw : 0;
                    long last = (W - 1 + pw - j) >= 0 ? (W - 1 + pw - j) / sw + 1 : 0;
                    last = last < OW ? last : OW;
                    const float *source = row + j - pw;
                    for (long v = first; v < last; ++v) {
                        float c = source[v * sw];
                        int take = TAKES(c, o[v]) & (o[v] == o[v]);
                        o[v] = take ? c : o[v];
                        if (m) m[v] = take ? (int)(h * W + v * sw + j - pw) : m[v];
                    }
                }
            }
        }
    }
}

/* dx = 0, then each top gradient is added at its window's maximum, in Caffe's order (output by output). */
void max_pool_backward(const float *dy, const int *mask, float *dx, long planes, long H, long W, long OH, long OW)
{
    for (long p = 0; p < planes; ++p) {
        float *plane = dx + p * H * W;
        const float *g = dy + p * OH * OW;
        const int *m = mask + p * OH * OW;
        for (long i = 0; i < H * W; ++i) plane[i] = 0.0f;
        for (long i = 0; i < OH * OW; ++i) plane[m[i]] += g[i];
    }
}
