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
