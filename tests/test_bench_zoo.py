"""Smoke test of scripts/bench.py --zoo: the toolkit's forward pass of a zoo net is timed (no timing asserted)."""
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"


def test_zoo_benchmark_reports_each_net(capsys):
    spec = importlib.util.spec_from_file_location("bench", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--zoo", "squeezenet_v1.1", "--quick", "--iterations", "1", "--no-torch"])
    assert results["squeezenet_v1.1"][1]["toolkit_ms"] > 0
    assert "squeezenet_v1.1 batch   1: toolkit" in capsys.readouterr().out
