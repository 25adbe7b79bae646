"""DummyData: tops of given shapes filled by fillers; constant fillers once at setup,
others anew on every forward (as Caffe does), drawn from `self.rng`."""
from ..fillers import fill
from ..proto import caffe_pb2
from .base import Layer


class DummyData(Layer):
    type = "DummyData"
    num_bottom = 0
    min_top = 1

    def setup(self, bottom, top):
        p = self.param.dummy_data_param
        n = len(top)
        if len(p.data_filler) not in (0, 1, n):
            raise self.error(f"{len(p.data_filler)} data_filler(s) for {n} tops; give 0, 1 or one per top")
        legacy = [("num", p.num), ("channels", p.channels), ("height", p.height), ("width", p.width)]
        if any(len(values) for _, values in legacy):
            if p.shape:
                raise self.error("give either shape or num/channels/height/width, not both")
            for name, values in legacy:
                if len(values) not in (1, n):
                    raise self.error(f"give '{name}' once, or once per top ({n}); got {len(values)}")
            shapes = [tuple(int(values[0 if len(values) == 1 else i]) for _, values in legacy) for i in range(n)]
        else:
            if len(p.shape) not in (1, n):
                raise self.error(f"give 'shape' once, or once per top ({n}); got {len(p.shape)}")
            shapes = [tuple(int(d) for d in p.shape[0 if len(p.shape) == 1 else i].dim) for i in range(n)]
        if p.data_filler:
            self.fillers = list(p.data_filler)
        else:
            self.fillers = [caffe_pb2.FillerParameter(type="constant", value=0)]
        self.refill = [filler.type != "constant" for filler in self.fillers]
        for i, (blob, shape) in enumerate(zip(top, shapes)):
            if any(d < 0 for d in shape):
                raise self.error(f"shape {list(shape)} of top {i} has a negative dimension")
            blob.reshape(shape)
            if not self.refill[self._filler_index(i)]:
                blob.data[...] = fill(self.fillers[self._filler_index(i)], shape, self.rng)

    def _filler_index(self, i):
        return i if len(self.fillers) > 1 else 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        for i, blob in enumerate(top):
            k = self._filler_index(i)
            if self.refill[k]:
                if self.rng is None:
                    raise self.error("needs a random generator for its non-constant fillers; build it with rng=")
                blob.data[...] = fill(self.fillers[k], blob.shape, self.rng)

    def backward(self, top, propagate_down, bottom):
        pass
