"""The optional compiled kernels: how they are found, built, turned off, and reported."""
import numpy as np
import pytest

from siamese_cli import accel


def test_off_by_environment(monkeypatch):
    monkeypatch.setenv(accel.ENV, "0")
    assert accel.kernels() is None
    assert accel.status() == "numpy only (SIAMESE_ACCEL=0)"


def test_missing_compiler_falls_back_to_numpy_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv(accel.ENV, "1")
    monkeypatch.setenv("SIAMESE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    assert accel.kernels() is None
    assert "could not be built" in accel.status() and "no-such-cc" in accel.status()
    assert not list(tmp_path.glob("*.so")) and not list(tmp_path.glob("*.tmp*"))


def test_builds_into_the_cache_and_pools(monkeypatch, tmp_path):
    if accel._compiler() is None:
        pytest.skip("no C compiler on this machine")
    monkeypatch.setenv(accel.ENV, "1")
    monkeypatch.setenv("SIAMESE_CACHE_DIR", str(tmp_path))
    k = accel.kernels()
    assert k is not None and k.path.parent == tmp_path and str(tmp_path) in accel.status()
    x = np.array([[[[1, 3], [3, 2]]], [[[-1, -1], [-1, -5]]]], np.float32)
    out, mask = np.zeros((2, 1, 1, 1), np.float32), np.zeros((2, 1, 1, 1), np.int32)
    k.max_pool_forward(k.ptr(x), k.ptr(out), k.ptr(mask, accel.INT32), 2, 2, 2, 1, 1, 2, 2, 2, 2, 0, 0)
    assert out.ravel().tolist() == [3, -1] and mask.ravel().tolist() == [1, 0]  # the first maximum wins
    with pytest.raises(ValueError):
        k.ptr(x[:, :, :, ::-1])
