"""Smoke test of scripts/bench.py --quick: it runs end to end and reports every figure (no timing is asserted)."""
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"

# Convolution and InnerProduct multiply-adds of the example train net at batch 64, per tower:
# conv1 64*20*24*24*25, conv2 64*50*8*8*500, ip1 64*500*800, ip2 64*10*500, feat 64*2*10 (x2 FLOP).
# Backward doubles each, except conv1, which passes no gradient to the data.
FORWARD = 2 * 2 * (64 * 20 * 24 * 24 * 25 + 64 * 50 * 8 * 8 * 500 + 64 * 500 * 800 + 64 * 10 * 500 + 64 * 2 * 10)
BACKWARD = 2 * FORWARD - 2 * 2 * 64 * 20 * 24 * 24 * 25


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_reports_every_figure(tmp_path, capsys):
    bench = load_bench()
    try:
        import torch  # noqa: F401  (PyTorch is optional: the bench extra)
        with_torch = True
    except ImportError:
        with_torch = False
    argv = ["--quick", "--iterations", "2", "--rounds", "1", "--workdir", str(tmp_path),
            "--json", str(tmp_path / "bench.json")]
    if not with_torch:
        argv.append("--no-torch")
    results = bench.main(argv)
    out = capsys.readouterr().out
    fields = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line and not line.startswith(" "))
    for name in ("machine", "numpy", "blas", "OPENBLAS_CORETYPE", "matmul peak", "create-db", "work per iteration",
                 "toolkit iteration", "toolkit throughput", "torch", "peak memory (training run)",
                 "deploy tower, batch 1", "deploy tower, batch 500", "test pass (100 x 100 pairs)",
                 "full run, modelled"):
        assert name in fields, f"{name!r} missing from:\n{out}"
    assert fields["create-db"].startswith("10000 pairs in ")
    assert results["gflop_per_iteration"] == pytest.approx((FORWARD + BACKWARD) / 1e9)
    assert fields["work per iteration"].startswith(f"{(FORWARD + BACKWARD) / 1e9:.3f} GFLOP")
    assert results["iteration_ms"] > 0 and len(results["iteration_ms_rounds"]) == 1
    # A units check only: on a busy machine the two-thread matmul peak collapses while the towers,
    # one thread each, do not, so the fraction can exceed 1.
    assert 0 < results["fraction_of_peak"] < 10
    assert 50 << 20 < results["peak_memory_bytes"] < 4 << 30
    layers = [layer["name"] for layer in results["layers"]]
    assert layers[:3] == ["pair_data", "slice_pair", "conv1"] and layers[-1] == "loss"
    assert "per-layer ms (forward, backward):" in out and "conv2_p" in out
    assert (tmp_path / "bench.json").read_text().startswith("{")
    assert [entry["batch"] for entry in results["inference"]] == [1, 500]
    assert all(entry["toolkit_images_s"] > 0 for entry in results["inference"])
    model = results["full_run_model"]
    # The example solver: 50,000 iterations, a test pass at 0 and every 500 (101), a snapshot every 5,000.
    assert (model["iterations"], model["test_passes"], model["snapshots"]) == (50000, 101, 10)
    assert model["total_s"] == pytest.approx(model["training_s"] + model["testing_s"] + model["snapshots_s"])
    assert model["training_s"] == pytest.approx(50000 * results["iteration_ms"] / 1e3)
    if with_torch:
        assert results["ratio_toolkit_torch"] > 0
        assert "ratio toolkit/torch" in fields
    else:
        assert fields["torch"].startswith("not measured")
