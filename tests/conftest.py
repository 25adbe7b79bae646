import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402


@pytest.fixture(params=["compiled", "numpy"])
def kernel_path(request, monkeypatch):
    """Runs a test once with the compiled kernels (siamese_cli.accel) and once with the numpy path.

    Where a C compiler exists the compiled kernels must build: a failed build fails the test
    instead of quietly testing the numpy path twice. Size thresholds below which a layer keeps to
    numpy are lowered so that the small blobs of the tests take the compiled path.
    """
    from siamese_cli import accel
    from siamese_cli.layers import _implicit, pooling

    if request.param == "numpy":
        monkeypatch.setenv(accel.ENV, "0")
    else:
        monkeypatch.setenv(accel.ENV, "1")
        monkeypatch.setattr(pooling, "COMPILED_MIN_ROW", 1)
        monkeypatch.setattr(_implicit, "MIN_RUN", 1)
        monkeypatch.setattr(_implicit, "MIN_FILL", 0)
        if accel.kernels() is None:
            if accel._compiler() is None:
                pytest.skip(accel.status())
            pytest.fail(accel.status())
    return request.param
