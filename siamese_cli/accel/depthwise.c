/* Depthwise convolution (group == channels) over NCHW float32 arrays, one pass over memory.
 *
 * Input channel c feeds output channels c * m ... c * m + m - 1 (m = num_output / group), each
 * with its own kh x kw filter. Every output row is accumulated in place (it stays in L1) offset by
 * offset: for kernel offset (i, j) the output columns whose input column falls inside the image
 * form one range, computed up front, so the padding is skipped rather than read from a padded copy
 * and the inner loops are branch-free runs that the compiler vectorises.
 *
 * Rounding: each output is 0, plus x * w for the offsets in row-major order (multiply, then add:
 * contraction is off), plus the bias, which is the order of the numpy path; the zeros numpy adds
 * for the padding do not change a sum (up to the sign of an exact zero). The bottom gradient is
 * added up offset by offset in the same order as numpy's, and for m > 1 the m output channels of
 * an input channel are added in channel order, as numpy's sum over the repeated axis does. The
 * weight and bias gradients are sums over the batch and the image in another order than numpy's
 * pairwise float32 sums: here exact products added in double and rounded once, so they agree with
 * numpy's to float32 tolerance (and are the more accurate of the two).
 *
 * Each call handles the input channels [c0, c1) of every image, so threads given disjoint channel
 * ranges write disjoint outputs and each weight's gradient is summed by one thread, in one order,
 * whatever the number of threads. */
/* Output columns [first, last) whose input column v * sw + start lies in [0, W). */
static void column_range(long W, long OW, long sw, long start, long *first, long *last)
{
    long f = start < 0 ? (-start + sw - 1) / sw : 0;
    long l = W - 1 - start >= 0 ? (W - 1 - start) / sw + 1 : 0;
    l = l < OW ? l : OW;
    *first = f;
    *last = f < l ? l : f;
}

/* out[v] += in[v * sw] * w for v in [first, last); a constant stride lets the compiler vectorise. */
#define MULTIPLY_ADD(STRIDE)                                                                        \
    for (long v = first; v < last; ++v) out[v] = out[v] + in[v * (STRIDE)] * w;

static void row_multiply_add(float *restrict out, const float *restrict in, float w, long first, long last, long sw)
{
    if (sw == 1) {
        MULTIPLY_ADD(1)
    } else if (sw == 2) {
        MULTIPLY_ADD(2)
    } else {
        MULTIPLY_ADD(sw)
    }
}

/* One output plane from one input plane. */
static void forward_plane(const float *restrict x, const float *restrict wt, float bias, int has_bias,
                          float *restrict out, long H, long W, long OH, long OW, long kh, long kw, long sh,
                          long sw, long ph, long pw, long dh, long dw)
{
    for (long y = 0; y < OH; ++y) {
        float *row = out + y * OW;
        for (long v = 0; v < OW; ++v) row[v] = 0.0f;
        for (long i = 0; i < kh; ++i) {
            long h = y * sh - ph + i * dh;
            if (h < 0 || h >= H) continue;
            for (long j = 0; j < kw; ++j) {
                long start = j * dw - pw, first, last;
                column_range(W, OW, sw, start, &first, &last);
                if (first < last)
                    row_multiply_add(row + first, x + h * W + first * sw + start, wt[i * kw + j], 0, last - first, sw);
            }
        }
        if (has_bias)
            for (long v = 0; v < OW; ++v) row[v] = row[v] + bias;
    }
}

void depthwise_forward(const float *x, const float *weight, const float *bias, float *out, long N, long C, long m,
                       long H, long W, long OH, long OW, long kh, long kw, long sh, long sw, long ph, long pw,
                       long dh, long dw, long c0, long c1)
{
    for (long n = 0; n < N; ++n)
        for (long c = c0; c < c1; ++c)
            for (long k = 0; k < m; ++k) {
                long o = c * m + k;
                forward_plane(x + (n * C + c) * H * W, weight + o * kh * kw, bias ? bias[o] : 0.0f, bias != 0,
                              out + (n * C * m + o) * OH * OW, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw);
            }
}

/* acc[v] += (double)in[v * sw] * g[v] for v in [0, count): exact products, double sums, no reduction
 * inside the loop (so it vectorises without reassociating anything). */
#define ACCUMULATE(STRIDE)                                                                          \
    for (long v = 0; v < count; ++v) acc[v] = acc[v] + (double)in[v * (STRIDE)] * (double)g[v];

static void row_accumulate(double *restrict acc, const float *restrict in, const float *restrict g, long count, long sw)
{
    if (sw == 1) {
        ACCUMULATE(1)
    } else if (sw == 2) {
        ACCUMULATE(2)
    } else {
        ACCUMULATE(sw)
    }
}

/* target[v * sw] += g[v] * w for v in [0, count): each target column is hit once per call. */
#define SCATTER(STRIDE)                                                                             \
    for (long v = 0; v < count; ++v) target[v * (STRIDE)] = target[v * (STRIDE)] + g[v] * w;

static void row_scatter(float *restrict target, const float *restrict g, float w, long count, long sw)
{
    if (sw == 1) {
        SCATTER(1)
    } else if (sw == 2) {
        SCATTER(2)
    } else {
        SCATTER(sw)
    }
}

/* One input row h of the bottom gradient from output plane g (one output channel's filter wt). */
static void bottom_row(float *restrict target, const float *restrict g, const float *restrict wt, long h, long W,
                       long OH, long OW, long kh, long kw, long sh, long sw, long ph, long pw, long dh, long dw)
{
    for (long v = 0; v < W; ++v) target[v] = 0.0f;
    for (long i = 0; i < kh; ++i) {
        long reach = h + ph - i * dh; /* = y * sh for the output row y that reads row h at offset i */
        if (reach < 0 || reach % sh || reach / sh >= OH) continue;
        const float *grow = g + reach / sh * OW;
        for (long j = 0; j < kw; ++j) {
            long start = j * dw - pw, first, last;
            column_range(W, OW, sw, start, &first, &last);
            if (first < last)
                row_scatter(target + first * sw + start, grow + first, wt[i * kw + j], last - first, sw);
        }
    }
}

/* Gradients of the input channels [c0, c1): weight_diff (and bias_diff unless NULL) are added to,
 * dx (unless NULL) is written. Work memory from the caller (one set per thread): acc holds
 * m * (kh * kw + 1) * OW doubles, spare W floats. */
void depthwise_backward(const float *x, const float *dy, const float *weight, float *weight_diff, float *bias_diff,
                        float *dx, double *acc, float *spare, long N, long C, long m, long H, long W, long OH, long OW,
                        long kh, long kw, long sh, long sw, long ph, long pw, long dh, long dw, long c0, long c1)
{
    long taps = kh * kw, O = C * m;
    for (long v = 0; v < m * (taps + 1) * OW; ++v) acc[v] = 0.0; /* per output channel: a row per tap, one for the bias */
    for (long c = c0; c < c1; ++c) {
        for (long n = 0; n < N; ++n) {
            const float *plane = x + (n * C + c) * H * W;
            for (long k = 0; k < m; ++k) {
                long o = c * m + k;
                const float *g = dy + (n * O + o) * OH * OW;
                double *wacc = acc + k * (taps + 1) * OW, *bacc = wacc + taps * OW;
                for (long y = 0; y < OH; ++y) {
                    const float *grow = g + y * OW;
                    for (long v = 0; v < OW; ++v) bacc[v] = bacc[v] + (double)grow[v];
                    for (long i = 0; i < kh; ++i) {
                        long h = y * sh - ph + i * dh;
                        if (h < 0 || h >= H) continue;
                        for (long j = 0; j < kw; ++j) {
                            long start = j * dw - pw, first, last;
                            column_range(W, OW, sw, start, &first, &last);
                            if (first < last)
                                row_accumulate(wacc + (i * kw + j) * OW + first, plane + h * W + first * sw + start,
                                               grow + first, last - first, sw);
                        }
                    }
                }
            }
            if (!dx) continue;
            float *target = dx + (n * C + c) * H * W;
            for (long h = 0; h < H; ++h) {
                float *row = target + h * W;
                for (long k = 0; k < m; ++k) {
                    long o = c * m + k;
                    bottom_row(k ? spare : row, dy + (n * O + o) * OH * OW, weight + o * taps, h, W, OH, OW, kh, kw,
                               sh, sw, ph, pw, dh, dw);
                    if (k)
                        for (long v = 0; v < W; ++v) row[v] = row[v] + spare[v];
                }
            }
        }
        for (long k = 0; k < m; ++k) {
            long o = c * m + k;
            double *wacc = acc + k * (taps + 1) * OW;
            for (long t = 0; t <= taps; ++t) {
                double total = 0.0;
                for (long v = 0; v < OW; ++v) total += wacc[t * OW + v];
                if (t < taps)
                    weight_diff[o * taps + t] += (float)total;
                else if (bias_diff)
                    bias_diff[o] += (float)total;
            }
            for (long v = 0; v < (taps + 1) * OW; ++v) wacc[v] = 0.0;
        }
    }
}
