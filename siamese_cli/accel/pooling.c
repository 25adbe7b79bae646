/* MAX pooling over (planes, H, W) float32 arrays, Caffe's rules: each window is clipped to the
 * image, the first maximum in row-major order wins (a strictly greater value replaces it), and the
 * mask holds its flat index h * W + w within the plane. A NaN propagates as numpy's maximum does.
 * The mask may be NULL (a forward-only pass). */
#include <math.h>
#include <stddef.h>

/* A later value replaces the maximum if strictly greater, or NaN (which then stays, as numpy's maximum keeps it). */
#define TAKES(c, best) (((c) > (best)) | ((c) != (c)))
#define CHUNK 4096

/* 2x2 windows, stride 2, no padding: first the maximum of every horizontal pair (W is even, so the
 * pairs of a run of whole rows are one flat loop), then of the two rows of each window; both loops
 * are branch-free so that the compiler vectorises them. */
static void pool_2x2(const float *restrict x, float *restrict out, int *restrict mask, long planes, long W, long OH,
                     long OW)
{
    float pair_max[CHUNK];
    int pair_right[CHUNK];
    long rows = planes * OH, step = CHUNK / (2 * OW) > 0 ? CHUNK / (2 * OW) : 1;
    for (long r0 = 0; r0 < rows; r0 += step) {
        long r1 = r0 + step < rows ? r0 + step : rows;
        const float *row = x + r0 * 2 * W;
        for (long j = 0, n = (r1 - r0) * 2 * OW; j < n; ++j) {
            float a = row[2 * j], b = row[2 * j + 1];
            int right = TAKES(b, a);
            pair_max[j] = right ? b : a;
            pair_right[j] = right;
        }
        for (long r = r0; r < r1; ++r) {
            const float *upper = pair_max + (r - r0) * 2 * OW, *lower = upper + OW;
            const int *upper_right = pair_right + (r - r0) * 2 * OW, *lower_right = upper_right + OW;
            float *o = out + r * OW;
            int base = (int)(2 * (r % OH) * W);
            for (long v = 0; v < OW; ++v) {
                int down = TAKES(lower[v], upper[v]) & (upper[v] == upper[v]);
                o[v] = down ? lower[v] : upper[v];
                if (mask)
                    mask[r * OW + v] = base + 2 * (int)v + upper_right[v] + down * ((int)W + lower_right[v] - upper_right[v]);
            }
        }
    }
}

void max_pool_forward(const float *x, float *out, int *mask, long planes, long H, long W, long OH, long OW,
                      long kh, long kw, long sh, long sw, long ph, long pw)
{
    if (kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0 && H == 2 * OH && W == 2 * OW) {
        pool_2x2(x, out, mask, planes, W, OH, OW);
        return;
    }
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
