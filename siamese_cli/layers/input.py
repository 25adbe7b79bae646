"""Input: tops the caller fills (deploy nets); shaped once from input_param, then left alone."""
from .base import Layer


class Input(Layer):
    type = "Input"
    num_bottom = 0
    min_top = 1

    def setup(self, bottom, top):
        shapes = self.param.input_param.shape
        if len(shapes) not in (0, 1, len(top)):
            raise self.error(
                f"{len(shapes)} shapes for {len(top)} tops; give one shape for all tops or one per top"
            )
        for i, blob in enumerate(top):
            if shapes:
                dims = tuple(int(d) for d in shapes[0 if len(shapes) == 1 else i].dim)
                if any(d < 0 for d in dims):
                    raise self.error(f"input shape {list(dims)} has a negative dimension")
                blob.reshape(dims)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass
