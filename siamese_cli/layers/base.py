"""The contract every layer keeps: setup, reshape, forward, backward."""
from ..errors import SiameseError


class Layer:
    """A layer built from its LayerParameter.

    `type` is Caffe's type string, by which the registry finds the class.
    `self.blobs` holds the learnable parameters (weights, bias) as Blobs; the net may
    replace them with shared Blobs after `setup`. Layers never see the net, the
    solver or any file.

    Subclasses set the class attributes that describe them:
    - `num_bottom`/`num_top`: exact counts (None: any), or
      `min_bottom`/`min_top` and `max_bottom`/`max_top`: bounds.
    - `is_loss`: the first top defaults to loss_weight 1.
    - `no_gradient_bottoms`: indices of bottoms that take no gradient (labels).
    - `frozen_params`: the net gives every blob lr_mult 0 (BatchNorm's statistics, as Caffe forces).
    The net sets `needs_backward` on each layer.
    """

    type = None
    num_bottom = None
    num_top = None
    min_bottom = 0
    min_top = 0
    max_bottom = None
    max_top = None
    is_loss = False
    no_gradient_bottoms = ()
    frozen_params = False
    #: False when the net will never run this layer's backward pass (a TEST net, a deploy net), so that
    #: forward may skip what only backward reads (a copy of an input a layer running in place overwrites).
    needs_backward = True
    #: The layer can take its bottoms and give its tops (and their diffs) in the batch-last layout
    #: (Blob.defer_data); the net allows it on blobs that pass between two such layers and nowhere else.
    batch_last = False

    def allow_backward(self, index):
        """False for bottoms that never take a gradient (labels), even under force_backward."""
        return index not in self.no_gradient_bottoms

    def __init__(self, param, phase="TEST", rng=None):
        self.param = param
        self.phase = phase
        self.rng = rng
        self.blobs = []

    @property
    def name(self):
        return self.param.name

    def check_counts(self, bottom, top):
        for what, blobs, exact, least, most in (
            ("bottom", bottom, self.num_bottom, self.min_bottom, self.max_bottom),
            ("top", top, self.num_top, self.min_top, self.max_top),
        ):
            if exact is not None and len(blobs) != exact:
                raise self.error(f"takes {exact} {what} blob(s), got {len(blobs)}")
            if len(blobs) < least:
                raise self.error(f"takes at least {least} {what} blob(s), got {len(blobs)}")
            if most is not None and len(blobs) > most:
                joiner = "or" if most == least + 1 else "to"
                raise self.error(f"takes {least} {joiner} {most} {what}s, got {len(blobs)}")

    def error(self, message):
        return SiameseError(f'layer "{self.name}" ({self.type}): {message}')

    def setup(self, bottom, top):
        """Read the layer's parameters and create `self.blobs`; called once."""

    def reshape(self, bottom, top):
        """Shape the tops (and any buffers) for the current bottom shapes."""
        raise NotImplementedError

    def forward(self, bottom, top):
        raise NotImplementedError

    def backward(self, top, propagate_down, bottom):
        """Write bottom diffs (where propagate_down[i]) and ADD param gradients into blob.diff."""
        raise NotImplementedError


class NeuronLayer(Layer):
    """One bottom, one top of the same shape, element by element (ReLU, Sigmoid, ...); may run in place."""

    num_bottom = 1
    num_top = 1

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)
