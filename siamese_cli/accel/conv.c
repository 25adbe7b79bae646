/* Implicit-GEMM convolution for stride 1 in the batch-last layout (layers/_implicit.py).
 *
 * The padded input is (C, hp, wp, N). For output row y, kernel offset l = (c, i, j) reads the run of
 * R = ow * N floats at p + y * pitch + off[l], with off[l] = c * hp * pitch + i * dh * pitch + j * dw * N
 * and pitch = wp * N: the column matrix of im2col is never built, and the data gradient is added
 * straight into the padded gradient instead of going through a column gradient and col2im.
 * The products are blocked as a BLAS micro-kernel is: a tile of up to 6 x 64 sums held in 24 AVX-512
 * registers, one operand broadcast, the other loaded 64 floats at a time (8 x 48 for a weight gradient's
 * last output panel of 48 to 63; for few outputs the weight gradient runs 16 positions wide instead).
 * Sums run in a fixed order, so results are the same run to run; they equal numpy's to float32
 * summation order. */
#include <immintrin.h>

#define INLINE static inline __attribute__((always_inline))
#define KBLOCK 128 /* sums per pass over a tile: the operand panel stays in L1 across the tiles */
#define FWD_ROWS 5 /* output channels per forward tile: 5 x 4 accumulators (LeNet's 50 channels, no remainder) */
#define DATA_ROWS 6 /* weight columns per data-gradient tile: 6 x 4 accumulators */
#define WEIGHT_ROWS 6 /* weight columns per weight-gradient tile: 6 x 4 accumulators */
#define WEIGHT_ROWS_48 8 /* weight columns per 48-output weight-gradient tile: 8 x 3 accumulators */
#define POS_O 4 /* output channels per position-vectorised weight-gradient tile */
#define POS_L 6 /* weight columns per position-vectorised weight-gradient tile: 4 x 6 accumulators */

/* CALL(n) with n = rows as a constant (1..6), so that each tile function is compiled with its loops unrolled
 * and its sums in registers. */
#define BY_ROWS(rows, CALL) \
    switch (rows) {         \
    case 6: CALL(6); break; \
    case 5: CALL(5); break; \
    case 4: CALL(4); break; \
    case 3: CALL(3); break; \
    case 2: CALL(2); break; \
    default: CALL(1);       \
    }

#ifdef __AVX512F__
int conv_implicit_available(void) { return 1; }

/* The four masks of a 64-wide panel with `left` columns still to go. */
INLINE void panel_masks(long left, __mmask16 mask[4])
{
    for (int v = 0; v < 4; ++v) {
        long k = left - 16 * v;
        mask[v] = k >= 16 ? (__mmask16)0xffff : k <= 0 ? (__mmask16)0 : (__mmask16)((1u << k) - 1);
    }
}

/* acc[r] += a[r] * b over one 64-wide row of b. */
#define FMA_ROW(acc, x, b0, b1, b2, b3)                \
    do {                                               \
        (acc)[0] = _mm512_fmadd_ps(x, b0, (acc)[0]);   \
        (acc)[1] = _mm512_fmadd_ps(x, b1, (acc)[1]);   \
        (acc)[2] = _mm512_fmadd_ps(x, b2, (acc)[2]);   \
        (acc)[3] = _mm512_fmadd_ps(x, b3, (acc)[3]);   \
    } while (0)

#define LOAD_ROW(b, mask, b0, b1, b2, b3)                                                          \
    __m512 b0 = _mm512_maskz_loadu_ps(mask[0], b), b1 = _mm512_maskz_loadu_ps(mask[1], (b) + 16), \
           b2 = _mm512_maskz_loadu_ps(mask[2], (b) + 32), b3 = _mm512_maskz_loadu_ps(mask[3], (b) + 48)

/* out[r][0:64] (+)= sum over l in [l0, l1) of w[r * L + l] * p[off[l] : +64], for `rows` output channels;
 * the last block adds the bias. */
INLINE void forward_tile(int rows, long l0, long l1, const float *w, long L, const float *p, const long *off,
                         float *out, long stride, int first, const float *bias, const __mmask16 mask[4])
{
    __m512 acc[6][4];
    for (int r = 0; r < rows; ++r)
        for (int v = 0; v < 4; ++v)
            acc[r][v] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask[v], out + r * stride + 16 * v);
    for (long l = l0; l < l1; ++l) {
        LOAD_ROW(p + off[l], mask, b0, b1, b2, b3);
        for (int r = 0; r < rows; ++r)
            FMA_ROW(acc[r], _mm512_set1_ps(w[r * L + l]), b0, b1, b2, b3);
    }
    for (int r = 0; r < rows; ++r)
        for (int v = 0; v < 4; ++v) {
            __m512 sum = bias ? _mm512_add_ps(acc[r][v], _mm512_set1_ps(bias[r])) : acc[r][v];
            _mm512_mask_storeu_ps(out + r * stride + 16 * v, mask[v], sum);
        }
}

/* top (O, oh, R) = weights (O, L) times the implicit columns, plus the bias (may be NULL). */
void conv_implicit_forward(const float *w, const float *p, const long *off, const float *bias, float *out,
                           long O, long L, long oh, long R, long pitch)
{
    long stride = oh * R;
    for (long y = 0; y < oh; ++y)
        for (long q = 0; q < R; q += 64) {
            __mmask16 mask[4];
            panel_masks(R - q, mask);
            const float *row = p + y * pitch + q;
            float *target = out + y * R + q;
            for (long l0 = 0; l0 < L; l0 += KBLOCK) {
                long l1 = l0 + KBLOCK < L ? l0 + KBLOCK : L;
                const float *b = l1 == L ? bias : 0;
                for (long o = 0; o < O; o += FWD_ROWS) {
                    int rows = O - o < FWD_ROWS ? (int)(O - o) : FWD_ROWS;
#define FORWARD(n) forward_tile(n, l0, l1, w + o * L, L, row, off, target + o * stride, stride, l0 == 0, b ? b + o : 0, mask)
                    BY_ROWS(rows, FORWARD)
#undef FORWARD
                }
            }
        }
}

/* The sum of the 16 floats of v, in a fixed order. */
INLINE float sum16(__m512 v)
{
    __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    b = _mm_add_ps(b, _mm_movehl_ps(b, b));
    return _mm_cvtss_f32(_mm_add_ss(b, _mm_movehdup_ps(b)));
}

#define POSITION_STEP(mask)                                                                   \
    do {                                                                                      \
        __m512 gv[POS_O];                                                                     \
        for (int o = 0; o < no; ++o) gv[o] = _mm512_maskz_loadu_ps(mask, g + o * stride + k); \
        for (int l = 0; l < nl; ++l) {                                                        \
            __m512 pv = _mm512_maskz_loadu_ps(mask, p + off[l] + k);                          \
            for (int o = 0; o < no; ++o) acc[o][l] = _mm512_fmadd_ps(gv[o], pv, acc[o][l]);   \
        }                                                                                     \
    } while (0)

/* dw[o * so + l * sl] += the dot product over k < R of g[o * stride + k] and p[off[l] + k], for a tile of `no`
 * output channels by `nl` weight columns: the sums run 16 positions wide and are reduced once per output row. */
INLINE void weight_tile_positions(int no, int nl, const float *g, long stride, const float *p, const long *off,
                                  long R, float *dw, long so, long sl)
{
    __m512 acc[POS_O][POS_L];
    for (int o = 0; o < no; ++o)
        for (int l = 0; l < nl; ++l) acc[o][l] = _mm512_setzero_ps();
    long k = 0;
    for (; k + 16 <= R; k += 16) POSITION_STEP((__mmask16)0xffff);
    if (k < R) POSITION_STEP((__mmask16)((1u << (R - k)) - 1));
    float lanes[POS_O][POS_L][16]; /* reduced from memory: reducing the registers made gcc store them every step */
    for (int o = 0; o < no; ++o)
        for (int l = 0; l < nl; ++l) _mm512_storeu_ps(lanes[o][l], acc[o][l]);
    for (int o = 0; o < no; ++o)
        for (int l = 0; l < nl; ++l) dw[o * so + l * sl] += sum16(_mm512_loadu_ps(lanes[o][l]));
}

/* wt[r][0:64] += sum over k in [k0, k1) of p[off[r] + k] * g[k * O : +64]: the weight gradient transposed,
 * one broadcast input value against a row of the transposed top gradient. */
INLINE void weight_tile(int rows, const float *p, const long *off, const float *g, long O, long k0, long k1,
                        float *wt, const __mmask16 mask[4])
{
    __m512 acc[6][4];
    for (int r = 0; r < rows; ++r)
        for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_maskz_loadu_ps(mask[v], wt + r * O + 16 * v);
    for (long k = k0; k < k1; ++k) {
        LOAD_ROW(g + k * O, mask, b0, b1, b2, b3);
        for (int r = 0; r < rows; ++r)
            FMA_ROW(acc[r], _mm512_set1_ps(p[off[r] + k]), b0, b1, b2, b3);
    }
    for (int r = 0; r < rows; ++r)
        for (int v = 0; v < 4; ++v) _mm512_mask_storeu_ps(wt + r * O + 16 * v, mask[v], acc[r][v]);
}

/* For output row y (g and py at that row): dw[o * so + l * sl] += the sums of outputs [o0, o1) and all L weight
 * columns, in tiles evened out over the range (25 columns: five of 5, not 6 + 6 + 6 + 6 + 1). */
static void positions_row(const float *g, long stride, const float *py, const long *off, long R, long o0, long o1,
                          long L, float *dw, long so, long sl)
{
    long tiles_o = (o1 - o0 + POS_O - 1) / POS_O, tiles_l = (L + POS_L - 1) / POS_L;
    long step_o = (o1 - o0 + tiles_o - 1) / tiles_o, step_l = (L + tiles_l - 1) / tiles_l;
    for (long o = o0; o < o1; o += step_o) {
        int no = o1 - o < step_o ? (int)(o1 - o) : (int)step_o;
        for (long l = 0; l < L; l += step_l) {
            int nl = L - l < step_l ? (int)(L - l) : (int)step_l;
            const float *go = g + o * stride;
            float *target = dw + o * so + l * sl;
#define POSITIONS(m, n) weight_tile_positions(m, n, go, stride, py, off + l, R, target, so, sl)
#define P4(n) POSITIONS(4, n)
#define P3(n) POSITIONS(3, n)
#define P2(n) POSITIONS(2, n)
#define P1(n) POSITIONS(1, n)
            switch (no) {
            case 4: { BY_ROWS(nl, P4) } break;
            case 3: { BY_ROWS(nl, P3) } break;
            case 2: { BY_ROWS(nl, P2) } break;
            default: { BY_ROWS(nl, P1) }
            }
#undef POSITIONS
#undef P4
#undef P3
#undef P2
#undef P1
        }
    }
}

/* The weight gradient dw (O, L) += the top gradient g (O, oh, R) times the implicit columns, vectorised over the
 * positions rather than the outputs: for layers with few outputs (conv1's 20), whose 64-wide output panels in
 * conv_implicit_weight_grad would be mostly empty. */
void conv_implicit_weight_grad_positions(const float *g, const float *p, const long *off, float *dw, long O, long L,
                                         long oh, long R, long pitch)
{
    for (long y = 0; y < oh; ++y) positions_row(g + y * R, oh * R, p + y * pitch, off, R, 0, O, L, dw, L, 1);
}

/* wt[r][0:48] += sum over k in [k0, k1) of p[off[r] + k] * g[k * O : +48]: three full vectors and 8 weight columns,
 * for outputs whose last 64-wide panel would hold 48 to 63 (LeNet's 50: the fourth vector would carry 2 of 16). */
INLINE void weight_tile_48(int rows, const float *p, const long *off, const float *g, long O, long k0, long k1,
                           float *wt)
{
    __m512 acc[WEIGHT_ROWS_48][3];
    for (int r = 0; r < rows; ++r)
        for (int v = 0; v < 3; ++v) acc[r][v] = _mm512_loadu_ps(wt + r * O + 16 * v);
    for (long k = k0; k < k1; ++k) {
        __m512 b0 = _mm512_loadu_ps(g + k * O), b1 = _mm512_loadu_ps(g + k * O + 16), b2 = _mm512_loadu_ps(g + k * O + 32);
        for (int r = 0; r < rows; ++r) {
            __m512 x = _mm512_set1_ps(p[off[r] + k]);
            acc[r][0] = _mm512_fmadd_ps(x, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(x, b1, acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(x, b2, acc[r][2]);
        }
    }
    for (int r = 0; r < rows; ++r)
        for (int v = 0; v < 3; ++v) _mm512_storeu_ps(wt + r * O + 16 * v, acc[r][v]);
}

/* wt (L, O) += implicit columns times the top gradient, given transposed as gt (oh * R, O) and as g (O, oh * R).
 * Outputs are taken 64 at a time; a last panel of 48 to 63 runs as 48 in full vectors, and the rest (fewer than
 * 16) through the positions kernel, which reads g. */
void conv_implicit_weight_grad(const float *gt, const float *g, const float *p, const long *off, float *wt, long O,
                               long L, long oh, long R, long pitch)
{
    long split = O % 64 >= 48 ? O - O % 64 + 48 : O;
    for (long y = 0; y < oh; ++y)
        for (long k0 = 0; k0 < R; k0 += KBLOCK) {
            long k1 = k0 + KBLOCK < R ? k0 + KBLOCK : R;
            const float *row = p + y * pitch, *gy = gt + y * R * O;
            for (long o = 0; o < split; o += 64) {
                if (split - o == 48) {
                    for (long l = 0; l < L; l += WEIGHT_ROWS_48) {
                        int rows = L - l < WEIGHT_ROWS_48 ? (int)(L - l) : WEIGHT_ROWS_48;
#define WEIGHT_48(n) weight_tile_48(n, row, off + l, gy + o, O, k0, k1, wt + l * O + o)
                        if (rows == 8) WEIGHT_48(8);
                        else if (rows == 7) WEIGHT_48(7);
                        else { BY_ROWS(rows, WEIGHT_48) }
#undef WEIGHT_48
                    }
                    continue;
                }
                __mmask16 mask[4];
                panel_masks(split - o, mask);
                for (long l = 0; l < L; l += WEIGHT_ROWS) {
                    int rows = L - l < WEIGHT_ROWS ? (int)(L - l) : WEIGHT_ROWS;
#define WEIGHT(n) weight_tile(n, row, off + l, gy + o, O, k0, k1, wt + l * O + o, mask)
                    BY_ROWS(rows, WEIGHT)
#undef WEIGHT
                }
            }
        }
    if (split < O)
        for (long y = 0; y < oh; ++y) positions_row(g + y * R, oh * R, p + y * pitch, off, R, split, O, L, wt, 1, O);
}

/* dp[off[l + r] : +64] += sum over o of w[o * L + l + r] * g[o * stride : +64]. Tiles whose runs overlap
 * (neighbouring kernel offsets) are added one after another, so col2im's sums need no second pass. */
INLINE void data_tile(int rows, long l, const float *w, long L, long O, const float *g, long stride,
                      const long *off, float *dp, const __mmask16 mask[4])
{
    __m512 acc[6][4];
    for (int r = 0; r < rows; ++r)
        for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_setzero_ps();
    for (long o = 0; o < O; ++o) {
        LOAD_ROW(g + o * stride, mask, b0, b1, b2, b3);
        for (int r = 0; r < rows; ++r)
            FMA_ROW(acc[r], _mm512_set1_ps(w[o * L + l + r]), b0, b1, b2, b3);
    }
    for (int r = 0; r < rows; ++r) {
        float *d = dp + off[l + r];
        for (int v = 0; v < 4; ++v) {
            __m512 sum = _mm512_add_ps(_mm512_maskz_loadu_ps(mask[v], d + 16 * v), acc[r][v]);
            _mm512_mask_storeu_ps(d + 16 * v, mask[v], sum);
        }
    }
}

/* The padded input gradient dp (zeroed by the caller) += weights^T times the top gradient g (O, oh, R). */
void conv_implicit_data_grad(const float *w, const float *g, const long *off, float *dp, long O, long L,
                             long oh, long R, long pitch)
{
    long stride = oh * R;
    for (long y = 0; y < oh; ++y)
        for (long q = 0; q < R; q += 64) {
            __mmask16 mask[4];
            panel_masks(R - q, mask);
            const float *g_row = g + y * R + q;
            float *target = dp + y * pitch + q;
            for (long l = 0; l < L; l += DATA_ROWS) {
                int rows = L - l < DATA_ROWS ? (int)(L - l) : DATA_ROWS;
#define DATA(n) data_tile(n, l, w, L, O, g_row, stride, off, target, mask)
                BY_ROWS(rows, DATA)
#undef DATA
            }
        }
}

#else
/* Without AVX-512 the layer keeps its numpy path (im2col and BLAS); these are never called. */
int conv_implicit_available(void) { return 0; }
void conv_implicit_forward(const float *w, const float *p, const long *off, const float *bias, float *out,
                           long O, long L, long oh, long R, long pitch) {}
void conv_implicit_weight_grad(const float *gt, const float *g, const float *p, const long *off, float *wt, long O,
                               long L, long oh, long R, long pitch) {}
void conv_implicit_data_grad(const float *w, const float *g, const long *off, float *dp, long O, long L,
                             long oh, long R, long pitch) {}
void conv_implicit_weight_grad_positions(const float *g, const float *p, const long *off, float *dw, long O, long L,
                                         long oh, long R, long pitch) {}
#endif
