/* Transposing copies between batch-first (N, C, H, W) blobs and the batch-last buffers of the implicit-GEMM
 * convolution (layers/_implicit.py). numpy's strided copy moves one float at a time with a stride of the
 * batch size; here 16 x 16 blocks are transposed in registers, every load and store a vector. */
#include <immintrin.h>

#ifdef __AVX512F__
/* permutex2var indices that swap bit b of the row index with bit b of the column index (b = 0..3), for
 * the lower row of each pair and for the upper one: four such swaps transpose a 16 x 16 block. */
static const int LOW[4][16] = {
    {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30},
    {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
    {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
    {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}};
static const int HIGH[4][16] = {
    {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31},
    {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31},
    {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31},
    {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}};

static inline __attribute__((always_inline)) void swap_bit(__m512 r[16], int b)
{
    int step = 1 << b;
    __m512i lo = _mm512_loadu_si512(LOW[b]), hi = _mm512_loadu_si512(HIGH[b]);
    for (int i = 0; i < 16; ++i)
        if (!(i & step)) {
            __m512 a = r[i], c = r[i | step];
            r[i] = _mm512_permutex2var_ps(a, lo, c);
            r[i | step] = _mm512_permutex2var_ps(a, hi, c);
        }
}

static inline __attribute__((always_inline)) void block(const float *s, long si, float *d, long dj, int rows, int cols)
{
    __m512 r[16];
    __mmask16 load = (__mmask16)((1u << cols) - 1), store = (__mmask16)((1u << rows) - 1);
    for (int i = 0; i < 16; ++i)
        r[i] = i < rows ? _mm512_maskz_loadu_ps(load, s + i * si) : _mm512_setzero_ps();
    for (int b = 0; b < 4; ++b)
        swap_bit(r, b);
    for (int j = 0; j < cols; ++j)
        _mm512_mask_storeu_ps(d + j * dj, store, r[j]);
}

/* dst[a*da + b*db + j*dj + i] = src[a*sa + b*sb + i*si + j] for a < A, b < B, i < rows, j < cols. */
void transpose_copy(const float *src, float *dst, long A, long B, long rows, long cols, long sa, long sb,
                    long si, long da, long db, long dj)
{
    for (long a = 0; a < A; ++a)
        for (long b = 0; b < B; ++b) {
            const float *s = src + a * sa + b * sb;
            float *d = dst + a * da + b * db;
            for (long i = 0; i < rows; i += 16)
                for (long j = 0; j < cols; j += 16)
                    block(s + i * si + j, si, d + j * dj + i, dj, rows - i < 16 ? (int)(rows - i) : 16,
                          cols - j < 16 ? (int)(cols - j) : 16);
        }
}
#else
void transpose_copy(const float *src, float *dst, long A, long B, long rows, long cols, long sa, long sb,
                    long si, long da, long db, long dj)
{
    for (long a = 0; a < A; ++a)
        for (long b = 0; b < B; ++b)
            for (long i = 0; i < rows; ++i)
                for (long j = 0; j < cols; ++j)
                    dst[a * da + b * db + j * dj + i] = src[a * sa + b * sb + i * si + j];
}
#endif
