/* out = x * a[c] + b[c] over (outer, channels, inner) float32 arrays, in one pass: BatchNorm's
 * normalisation (a = 1/std, b = -mean/std) and Scale (a = the factor, b = the bias). numpy does the
 * multiply and the add as two passes; each is rounded the same way here (no contraction), so the
 * result is numpy's bit for bit. x and out may be the same array (layers run in place). */
void channel_affine(const float *x, const float *a, const float *b, float *out, long outer, long channels,
                    long inner)
{
    for (long o = 0; o < outer; ++o)
        for (long c = 0; c < channels; ++c) {
            const float *source = x + (o * channels + c) * inner;
            float *target = out + (o * channels + c) * inner;
            float scale = a[c];
            if (b) {
                float shift = b[c];
                for (long s = 0; s < inner; ++s)
                    target[s] = source[s] * scale + shift;
            } else {
                for (long s = 0; s < inner; ++s)
                    target[s] = source[s] * scale;
            }
        }
}
