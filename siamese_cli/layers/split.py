"""Split: one bottom copied to several tops; backward sums the tops' diffs in top order."""
from .base import Layer


class Split(Layer):
    type = "Split"
    num_bottom = 1
    min_top = 1

    def reshape(self, bottom, top):
        for blob in top:
            if blob is bottom[0]:
                raise self.error("cannot run in place; give each top its own name")
            blob.reshape(bottom[0].shape)

    def forward(self, bottom, top):
        for blob in top:
            blob.data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff = bottom[0].diff
        if len(top) == 1:
            diff[...] = top[0].diff
            return
        diff[...] = top[0].diff + top[1].diff
        for blob in top[2:]:
            diff += blob.diff
