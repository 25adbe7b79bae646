/* Depthwise convolution (group == channels) over NCHW float32 arrays, one pass over memory.
 *
 * Input channel c feeds output channels c * m ... c * m + m - 1 (m = num_output / group), each
 * with its own kh x kw filter. A plane is worked through row by row while its rows are in cache:
 * for kernel offset (i, j) the output columns whose input column falls inside the image form one
 * range, computed once per call, so the padding is skipped rather than read from a padded copy of
 * the input, and the inner loops are branch-free runs that the compiler vectorises. 3 x 3 kernels
 * at stride 1 (MobileNet's) keep an output's nine products in a register; planes with short rows
 * go through a small zero-bordered tile instead (below).
 *
 * Rounding: each output is x * w for the first kernel offset, plus x * w for the next ones in
 * row-major order (multiply, then add: contraction is off), plus the bias: the numpy path's order.
 * Where the padding is skipped, the zeros numpy adds for it are missing, which changes no sum (up
 * to the sign of an exact zero). The bottom gradient is added up offset by offset in numpy's
 * order, and for m > 1 the m output channels of an input channel are added in channel order, as
 * numpy's sum over the repeated axis does. The weight and bias gradients are sums over the batch
 * and the image in another order than numpy's pairwise float32 sums: here exact products added in
 * double and rounded once, so they agree with numpy's to float32 tolerance (and are the more
 * accurate of the two).
 *
 * Each call handles the input channels [c0, c1) of every image, so threads given disjoint channel
 * ranges write disjoint outputs and each weight's gradient is summed by one thread, in one order,
 * whatever the number of threads. */
#include <stddef.h>
#include <stdlib.h>

/* A layer's shape; first[j], last[j]: the output columns [first, last) that kernel column j reads
 * inside the image (computed once per call: the divisions would cost more than a short row);
 * [lo, hi): the columns where every kernel column does. */
typedef struct {
    long H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw;
    long *first, *last;
    long lo, hi;
} Geometry;

static void column_ranges(Geometry *g)
{
    for (long j = 0; j < g->kw; ++j) {
        long start = j * g->dw - g->pw; /* input column of output column 0 */
        long f = start < 0 ? (-start + g->sw - 1) / g->sw : 0;
        long l = g->W - 1 - start >= 0 ? (g->W - 1 - start) / g->sw + 1 : 0;
        l = l < g->OW ? l : g->OW;
        g->first[j] = f;
        g->last[j] = f < l ? l : f;
    }
    g->lo = 0;
    g->hi = g->OW;
    for (long j = 0; j < g->kw; ++j) {
        g->lo = g->first[j] > g->lo ? g->first[j] : g->lo;
        g->hi = g->last[j] < g->hi ? g->last[j] : g->hi;
    }
}

/* Where output column first of kernel column j reads, within its input row. */
static long column_start(const Geometry *g, long j)
{
    return g->first[j] * g->sw + j * g->dw - g->pw;
}

/* out[v] += in[v * sw] * w for v in [0, count); a constant stride lets the compiler vectorise. */
#define MULTIPLY_ADD(STRIDE)                                                                        \
    for (long v = 0; v < count; ++v) out[v] = out[v] + in[v * (STRIDE)] * w;

static void row_multiply_add(float *restrict out, const float *restrict in, float w, long count, long sw)
{
    if (sw == 1) {
        MULTIPLY_ADD(1)
    } else if (sw == 2) {
        MULTIPLY_ADD(2)
    } else {
        MULTIPLY_ADD(sw)
    }
}

/* 3 x 3 kernels at stride 1: the nine products of an output added up in a register, one store
 * per output instead of nine: out[v] = r0[v + o0] * w0 + r0[v + o1] * w1 + ... + r2[v + o2] * w8 + b,
 * in that order, for v in [lo, hi) (b = -0.0f, which changes no sum, for no bias). The outputs go
 * in blocks of CHUNK, the last block moved back to end at hi (a few outputs computed twice, the
 * same values), so that none is left to a scalar remainder loop: for nine products that costs more
 * than the vectors. (At stride 2 the nine strided reads cost more than nine passes: not used.) */
#define CHUNK 16
#define NINE                                                                                        \
    for (long v = v0; v < v1; ++v) {                                                                \
        float s = r0[v + o0] * w[0];                                                                \
        s = s + r0[v + o1] * w[1];                                                                  \
        s = s + r0[v + o2] * w[2];                                                                  \
        s = s + r1[v + o0] * w[3];                                                                  \
        s = s + r1[v + o1] * w[4];                                                                  \
        s = s + r1[v + o2] * w[5];                                                                  \
        s = s + r2[v + o0] * w[6];                                                                  \
        s = s + r2[v + o1] * w[7];                                                                  \
        s = s + r2[v + o2] * w[8];                                                                  \
        out[v] = s + b;                                                                             \
    }

static void run_3x3(const float *restrict r0, const float *restrict r1, const float *restrict r2, long o0, long o1,
                    long o2, const float *restrict wt, float b, float *restrict out, long lo, long hi)
{
    float w[9];
    for (int t = 0; t < 9; ++t) w[t] = wt[t];
    if (hi - lo < CHUNK) {
        long v0 = lo, v1 = hi;
        NINE
        return;
    }
    for (long start = lo; start < hi; start += CHUNK) {
        long v0 = start + CHUNK <= hi ? start : hi - CHUNK, v1 = v0 + CHUNK; /* a constant trip count */
        NINE
    }
}

/* Output (y, v) alone, its kernel offsets in row-major order (the few columns at the edges). */
static float column_sum(const Geometry *g, const float *x, const float *wt, long y, long v)
{
    float s = -0.0f;
    for (long i = 0; i < g->kh; ++i) {
        long h = y * g->sh - g->ph + i * g->dh;
        if (h < 0 || h >= g->H) continue;
        for (long j = 0; j < g->kw; ++j) {
            long c = v * g->sw + j * g->dw - g->pw;
            if (c >= 0 && c < g->W) s = s + x[h * g->W + c] * wt[i * g->kw + j];
        }
    }
    return s;
}

/* One output plane from one input plane, row by row: 3 x 3 kernels at stride 1 (given `zeros`, a
 * row of W zeros standing for the rows outside the image, as numpy's padding does) through run_3x3
 * in the columns every kernel column reaches and column_sum at the edges; others offset by offset. */
static void forward_plane(const Geometry *g, const float *restrict x, const float *restrict wt, const float *bias,
                          const float *zeros, float *restrict out)
{
    float b = bias ? *bias : -0.0f;
    for (long y = 0; y < g->OH; ++y) {
        float *row = out + y * g->OW;
        if (zeros && g->lo < g->hi) {
            const float *rows[3];
            for (long i = 0; i < 3; ++i) {
                long h = y * g->sh - g->ph + i * g->dh;
                rows[i] = h < 0 || h >= g->H ? zeros : x + h * g->W;
            }
            for (long v = 0; v < g->lo; ++v) row[v] = column_sum(g, x, wt, y, v) + b;
            for (long v = g->hi; v < g->OW; ++v) row[v] = column_sum(g, x, wt, y, v) + b;
            run_3x3(rows[0], rows[1], rows[2], -g->pw, g->dw - g->pw, 2 * g->dw - g->pw, wt, b, row, g->lo, g->hi);
            continue;
        }
        for (long v = 0; v < g->OW; ++v) row[v] = 0.0f;
        for (long i = 0; i < g->kh; ++i) {
            long h = y * g->sh - g->ph + i * g->dh;
            if (h < 0 || h >= g->H) continue;
            for (long j = 0; j < g->kw; ++j)
                if (g->first[j] < g->last[j])
                    row_multiply_add(row + g->first[j], x + h * g->W + column_start(g, j), wt[i * g->kw + j],
                                     g->last[j] - g->first[j], g->sw);
        }
        if (bias)
            for (long v = 0; v < g->OW; ++v) row[v] = row[v] + b;
    }
}

#define GEOMETRY(g)                                                                                 \
    long first_[kw], last_[kw];                                                                     \
    Geometry g = {H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw, first_, last_, 0, 0};                     \
    column_ranges(&g);

/* Small images (output rows under SHORT_ROW), equal strides s: the plane is copied into a
 * zero-bordered tile (hp x wp floats, in L1) and every kernel offset is one flat run over the whole
 * plane, as numpy's path does it: output (y, v) is computed at position q = y * wp + v of a pitched
 * buffer and offset (i, j) reads tile[s * q + i * dh * wp + j * dw]; the columns past OW are
 * computed and dropped. A row of 7 or 14 outputs is too short for the vector units, a run over the
 * plane is not. Identical sums: the tile's zeros are numpy's padding. (At stride 2, splitting the
 * tile into stride phases, as numpy's path does, measured slower here than the strided reads.) */
#define SHORT_ROW 32
#define TILE_FLOATS 65536

typedef struct {
    long hp, wp, run;
} Tile;

static Tile tile_shape(const Geometry *g)
{
    Tile t;
    long need_h = (g->OH - 1) * g->sh + g->dh * (g->kh - 1) + 1, need_w = (g->OW - 1) * g->sw + g->dw * (g->kw - 1) + 1;
    t.hp = g->H + 2 * g->ph > need_h ? g->H + 2 * g->ph : need_h;
    t.wp = g->W + 2 * g->pw > need_w ? g->W + 2 * g->pw : need_w;
    t.run = (g->OH - 1) * t.wp + g->OW;
    return t;
}

/* acc[q] = in[q * s] * w (the first offset) or acc[q] + in[q * s] * w (the others), q < run. */
#define FLAT_RUN(STRIDE)                                                                            \
    if (first)                                                                                      \
        for (long q = 0; q < t->run; ++q) acc[q] = in[q * (STRIDE)] * w;                            \
    else                                                                                            \
        for (long q = 0; q < t->run; ++q) acc[q] = acc[q] + in[q * (STRIDE)] * w;

static void flat_run(const Tile *t, float *restrict acc, const float *restrict in, float w, long stride, int first)
{
    if (stride == 1) {
        FLAT_RUN(1)
    } else if (stride == 2) {
        FLAT_RUN(2)
    } else {
        FLAT_RUN(stride)
    }
}

static void forward_plane_tiled(const Geometry *g, const Tile *t, float *restrict tile, float *restrict acc,
                                const float *restrict x, const float *restrict wt, const float *bias,
                                float *restrict out)
{
    for (long h = 0; h < g->H; ++h)
        for (long v = 0; v < g->W; ++v) tile[(h + g->ph) * t->wp + g->pw + v] = x[h * g->W + v];
    if (g->kh == 3 && g->kw == 3 && g->sw == 1) {
        long step = g->dh * t->wp;
        run_3x3(tile, tile + step, tile + 2 * step, 0, g->dw, 2 * g->dw, wt, -0.0f, acc, 0, t->run);
    } else {
        for (long i = 0; i < g->kh; ++i)
            for (long j = 0; j < g->kw; ++j)
                flat_run(t, acc, tile + i * g->dh * t->wp + j * g->dw, wt[i * g->kw + j], g->sw, i == 0 && j == 0);
    }
    for (long y = 0; y < g->OH; ++y) {
        const float *row = acc + y * t->wp;
        float *target = out + y * g->OW;
        if (bias)
            for (long v = 0; v < g->OW; ++v) target[v] = row[v] + *bias;
        else
            for (long v = 0; v < g->OW; ++v) target[v] = row[v];
    }
}

void depthwise_forward(const float *x, const float *weight, const float *bias, float *out, long N, long C, long m,
                       long H, long W, long OH, long OW, long kh, long kw, long sh, long sw, long ph, long pw,
                       long dh, long dw, long c0, long c1)
{
    GEOMETRY(g)
    Tile t = tile_shape(&g);
    int tiled = OW < SHORT_ROW && sh == sw && t.hp * t.wp + OH * t.wp <= TILE_FLOATS;
    float *tile = tiled ? calloc((size_t)(t.hp * t.wp + OH * t.wp), sizeof(float)) : NULL; /* zero border */
    float *acc = tile ? tile + t.hp * t.wp : NULL;
    tiled = tile != NULL;
    float *zeros = !tiled && kh == 3 && kw == 3 && sw == 1 ? calloc((size_t)W, sizeof(float)) : NULL;
    for (long n = 0; n < N; ++n)
        for (long c = c0; c < c1; ++c)
            for (long k = 0; k < m; ++k) {
                long o = c * m + k;
                const float *plane = x + (n * C + c) * H * W, *b = bias ? bias + o : NULL;
                float *target = out + (n * C * m + o) * OH * OW;
                if (tiled)
                    forward_plane_tiled(&g, &t, tile, acc, plane, weight + o * kh * kw, b, target);
                else
                    forward_plane(&g, plane, weight + o * kh * kw, b, zeros, target);
            }
    free(tile);
    free(zeros);
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
static void bottom_row(const Geometry *g, float *restrict target, const float *restrict dy, const float *restrict wt,
                       long h)
{
    for (long v = 0; v < g->W; ++v) target[v] = 0.0f;
    for (long i = 0; i < g->kh; ++i) {
        long reach = h + g->ph - i * g->dh; /* = y * sh for the output row y that reads row h at offset i */
        if (reach < 0 || reach % g->sh || reach / g->sh >= g->OH) continue;
        const float *grow = dy + reach / g->sh * g->OW;
        for (long j = 0; j < g->kw; ++j)
            if (g->first[j] < g->last[j])
                row_scatter(target + column_start(g, j), grow + g->first[j], wt[i * g->kw + j],
                            g->last[j] - g->first[j], g->sw);
    }
}

/* Gradients of the input channels [c0, c1): weight_diff (and bias_diff unless NULL) are added to,
 * dx (unless NULL) is written. Work memory from the caller (one set per thread): acc holds
 * m * (kh * kw + 1) * OW doubles, spare W floats. */
void depthwise_backward(const float *x, const float *dy, const float *weight, float *weight_diff, float *bias_diff,
                        float *dx, double *acc, float *spare, long N, long C, long m, long H, long W, long OH, long OW,
                        long kh, long kw, long sh, long sw, long ph, long pw, long dh, long dw, long c0, long c1)
{
    GEOMETRY(geometry)
    long taps = kh * kw, O = C * m;
    /* per output channel: a row of OW sums per kernel offset, and one for the bias */
    for (long v = 0; v < m * (taps + 1) * OW; ++v) acc[v] = 0.0;
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
                        for (long j = 0; j < kw; ++j)
                            if (first_[j] < last_[j])
                                row_accumulate(wacc + (i * kw + j) * OW + first_[j],
                                               plane + h * W + column_start(&geometry, j), grow + first_[j],
                                               last_[j] - first_[j], sw);
                    }
                }
            }
            if (!dx) continue;
            float *target = dx + (n * C + c) * H * W;
            for (long h = 0; h < H; ++h) {
                float *row = target + h * W;
                for (long k = 0; k < m; ++k) {
                    long o = c * m + k;
                    bottom_row(&geometry, k ? spare : row, dy + (n * O + o) * OH * OW, weight + o * taps, h);
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
