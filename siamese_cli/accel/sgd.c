/* Caffe's SGD step for one parameter in a single pass over its arrays, instead of numpy's six:
 *   diff += decay * data  (L2 weight decay, when decay != 0)
 *   history = momentum * history + rate * diff
 *   diff = history;  data -= diff
 * Every operation is rounded to float32 in that order (no contraction), so the result is the numpy
 * path's bit for bit. */
void sgd_update(float *restrict data, float *restrict diff, float *restrict history, long count, float rate,
                float momentum, float decay)
{
    if (decay != 0.0f) {
        for (long i = 0; i < count; ++i) {
            float d = diff[i] + decay * data[i];
            float h = history[i] * momentum + rate * d;
            history[i] = h;
            diff[i] = h;
            data[i] = data[i] - h;
        }
    } else {
        for (long i = 0; i < count; ++i) {
            float h = history[i] * momentum + rate * diff[i];
            history[i] = h;
            diff[i] = h;
            data[i] = data[i] - h;
        }
    }
}
