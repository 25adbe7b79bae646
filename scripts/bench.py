#!/usr/bin/env python3
"""Benchmark the toolkit on the example siamese train net (batch 64 pairs), and PyTorch beside it.

Measures: milliseconds per full training iteration (forward, backward, SGD update, data layer
included), per-layer forward/backward times, the matmul work per iteration and the fraction of
this machine's float32 matmul peak it reaches, the peak memory of a training run (a child
process that trains with its test net), and the time to build the 60,000-pair training DB.
With PyTorch installed (`pip install -e ".[bench]"`), an equivalent PyTorch model (same
shapes, same contrastive loss, SGD with momentum, same batches) is timed in the same process,
alternating with the toolkit round by round, and the ratio toolkit / PyTorch is printed.

    python scripts/bench.py                # the full benchmark (about a minute on 2 cores)
    python scripts/bench.py --threads 1    # BLAS and PyTorch limited to one thread
    python scripts/bench.py --quick        # a few iterations on a small DB (a smoke run)

This is not a test: timings depend on the machine and its load. Output is `name: value` lines;
--json FILE also writes the figures as JSON.
"""
import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "siamese"
MiB = 1 << 20


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few iterations on a 10,000-pair DB (smoke run)")
    parser.add_argument("--iterations", type=int, help="training iterations per round (default 50; quick 3)")
    parser.add_argument("--rounds", type=int, help="alternating toolkit/PyTorch rounds (default 5; quick 2)")
    parser.add_argument("--threads", type=int,
                        help="BLAS/PyTorch threads (sets OPENBLAS/OMP/MKL_NUM_THREADS and restarts; default: as set)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--workdir", help="folder for the benchmark DBs (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--zoo", nargs="*", metavar="NET",
                        help="instead: forward time of model-zoo nets (default resnet50 googlenet mobilenet) "
                             "at batch 1 and 10, beside PyTorch")
    parser.add_argument("--memory-child", nargs=3, metavar=("TRAIN_DB", "TEST_DB", "ITERS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--mpi", action="store_true",
                        help="data-parallel section: 2 MPI ranks against one process, allreduce, scaling model")
    parser.add_argument("--mpi-child", nargs=4, metavar=("TRAIN_DB", "TEST_DB", "BATCH", "ITERS"),
                        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _restart_with_threads(threads, argv):
    """BLAS reads its thread count when numpy loads, so a different count needs a fresh interpreter."""
    wanted = str(threads)
    names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "SIAMESE_BRANCH_THREADS")
    if all(os.environ.get(name) == wanted for name in names):
        return
    for name in names:
        os.environ[name] = wanted
    os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve())] + list(argv))


# ---- the machine ---------------------------------------------------------------------
def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info():
    """(library and version, kernel, threads) of numpy's BLAS, from threadpoolctl when it is installed."""
    import numpy as np

    try:
        from threadpoolctl import threadpool_info

        for entry in threadpool_info():
            if entry.get("user_api") == "blas":
                return (f"{entry.get('internal_api')} {entry.get('version')}", entry.get("architecture") or "?",
                        entry.get("num_threads"))
    except ImportError:
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}", "? (install threadpoolctl to see it)", None
    except Exception:  # show_config's layout differs between numpy versions
        return "unknown", "?", None


def matmul_peak(n, repeats=5):
    """Best GFLOP/s of an n x n float32 matmul: this machine's practical BLAS peak."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n ** 3 / best / 1e9


# ---- data and nets -------------------------------------------------------------------
def build_dbs(workdir, quick):
    """The train DB (60,000 pairs; quick: 10,000) and the test DB; seconds to build the train DB."""
    from siamese_cli.data import mnist_files
    from siamese_cli.tools.create_db import create_pair_db

    split = "test" if quick else "train"
    train, test = Path(workdir) / "bench_train_leveldb", Path(workdir) / "bench_test_leveldb"
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        records = create_pair_db(*mnist_files(split), train, seed=0, force=True)
        seconds = time.perf_counter() - start
        create_pair_db(*mnist_files("test"), test, seed=1, force=True)
    return train, test, records, seconds


def solver_param(train_db, test_db, test_iter=0, test_interval=0):
    """The example solver and net, reading the benchmark DBs; no display, no snapshots."""
    from siamese_cli.io.prototxt import read_net, read_solver

    net = read_net(EXAMPLE / "mnist_siamese_train_test.prototxt")
    for layer in net.layer:
        if layer.type == "Data":
            is_test = any(rule.phase == 1 for rule in layer.include)
            layer.data_param.source = str(test_db if is_test else train_db)
    param = read_solver(EXAMPLE / "mnist_siamese_solver.prototxt")
    param.ClearField("net")
    param.net_param.CopyFrom(net)
    del param.test_iter[:]
    if test_iter:
        param.test_iter.append(test_iter)
    param.test_interval = test_interval
    param.test_initialization = bool(test_iter)
    param.display = 0
    param.snapshot = 0
    param.snapshot_after_train = False
    param.random_seed = 0
    param.max_iter = 10 ** 9
    return param


def make_solver(param):
    from siamese_cli.log import CaffeLog
    from siamese_cli.solvers import make_solver as build

    return build(param, log=CaffeLog(open(os.devnull, "w")))


def matmul_flops(net):
    """(forward, backward) multiply-add work of the Convolution and InnerProduct layers, in FLOP."""
    forward = backward = 0
    for i, layer in enumerate(net.layers):
        if layer.type == "Convolution":
            o, cg, kh, kw = layer.blobs[0].shape
            per_bottom = [2 * top.data.size * cg * kh * kw for top in net.tops[i]]
        elif layer.type == "InnerProduct":
            per_bottom = [2 * net.tops[i][0].data.size * layer.k]
        else:
            continue
        forward += sum(per_bottom)
        if net.layer_needs_backward[i]:
            down = net.propagate_down[i]
            backward += sum(work * (1 + (k < len(down) and bool(down[k]))) for k, work in enumerate(per_bottom))
    return forward, backward


def memory_child(train_db, test_db, iterations):
    """Train with the test net (one full test pass of 100 batches of 100 pairs) and report the peak RSS."""
    import resource

    quick = iterations < 50
    param = solver_param(train_db, test_db, test_iter=2 if quick else 100, test_interval=max(1, iterations))
    solver = make_solver(param)
    try:
        solver.step(iterations)
        solver.test_all()
    finally:
        solver.close()
    # VmHWM belongs to this process's own memory; ru_maxrss also keeps the parent's size at the fork.
    try:
        status = Path("/proc/self/status").read_text().splitlines()
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak_rss_kib {peak}")


def peak_training_memory(train_db, test_db, iterations):
    """Peak resident memory (bytes) of a child process that trains `iterations` iterations and tests."""
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(train_db), str(test_db),
               str(iterations)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True)
    for line in result.stdout.splitlines():
        if line.startswith("peak_rss_kib "):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"the memory child printed no peak: {result.stdout}{result.stderr}")


# ---- PyTorch ---------------------------------------------------------------------------
def time_per_iteration(step, iterations, settle=0.3):
    """Mean milliseconds per iteration, after `settle` seconds idle.

    Both OpenBLAS's and PyTorch's OpenMP worker threads spin for a while after their last
    call; the pause keeps one library's spinning threads out of the other's timing.
    """
    time.sleep(settle)
    start = time.perf_counter()
    step(iterations)
    return (time.perf_counter() - start) / iterations * 1e3


def run(args):
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_deploy import deploy_forward, full_run_model, images_per_second, test_and_snapshot_seconds, \
        torch_deploy_forward
    from bench_torch import read_batches, torch_trainer

    import numpy as np
    from siamese_cli.tools.timing import time_layers

    iterations = args.iterations or (3 if args.quick else 50)
    rounds = args.rounds or (2 if args.quick else 5)
    results = {}
    blas, kernel, blas_threads = blas_info()
    threads = blas_threads or args.threads or os.cpu_count()
    results["machine"] = f"{cpu_model()}, {os.cpu_count()} logical CPUs"
    results["python"] = platform.python_version()
    results["numpy"] = np.__version__
    results["blas"] = f"{blas}, kernel {kernel}, {blas_threads or '?'} threads"
    results["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE", "(unset)")
    from siamese_cli import accel

    results["kernels"] = accel.status()
    peak = matmul_peak(512 if args.quick else 2048)
    results["matmul_peak_gflops"] = peak

    with tempfile.TemporaryDirectory(prefix="siamese-bench-") as scratch:
        workdir = Path(args.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        train_db, test_db, records, seconds = build_dbs(workdir, args.quick)
        results["create_db_pairs"] = records
        results["create_db_s"] = seconds

        solver = make_solver(solver_param(train_db, test_db))
        plain = make_solver(solver_param(train_db, test_db))  # the same net, one layer at a time
        if plain.net.schedule is not None:
            plain.net.schedule.close()
            plain.net.schedule = None
        try:
            net = solver.net
            results["lanes"] = net.schedule.lane_names() if net.schedule is not None else None
            forward, backward = matmul_flops(net)
            results["gflop_per_iteration"] = (forward + backward) / 1e9
            solver.step(max(2, iterations // 5))  # warm-up: buffers, prefetch queue, BLAS threads
            if results["lanes"]:
                plain.step(max(2, iterations // 5))

            torch_step, torch_version = (None, None)
            if not args.no_torch:
                torch_step, torch_version = torch_trainer(read_batches(train_db, 20), threads)
            if torch_step is not None:
                for _ in range(max(2, iterations // 5)):
                    torch_step()

            ours, plains, theirs = [], [], []
            for _ in range(rounds):
                ours.append(time_per_iteration(solver.step, iterations))
                if results["lanes"]:
                    plains.append(time_per_iteration(plain.step, iterations))
                if torch_step is not None:
                    theirs.append(time_per_iteration(lambda n: [torch_step() for _ in range(n)], iterations))
            ms = statistics.median(ours)
            results["iteration_ms"] = ms
            results["iteration_ms_rounds"] = ours
            results["gflops"] = results["gflop_per_iteration"] / ms * 1e3
            results["fraction_of_peak"] = results["gflops"] / peak
            if plains:
                results["plain_iteration_ms"] = statistics.median(plains)
                results["plain_iteration_ms_rounds"] = plains
            if theirs:
                results["torch"] = torch_version
                results["torch_threads"] = threads
                results["torch_iteration_ms"] = statistics.median(theirs)
                results["torch_iteration_ms_rounds"] = theirs
                results["ratio_toolkit_torch"] = ms / results["torch_iteration_ms"]
                results["ratio_rounds"] = [a / b for a, b in zip(ours, theirs)]
                if plains:
                    results["plain_ratio_rounds"] = [a / b for a, b in zip(plains, theirs)]

            deploy = deploy_forward(net)
            torch_deploy = torch_deploy_forward(torch_step.tower) if torch_step is not None else None
            results["inference"] = []
            for batch, images in ((1, 100 if args.quick else 500), (500, 500 if args.quick else 5000)):
                entry = {"batch": batch, "toolkit_rounds": [], "torch_rounds": []}
                for _ in range(rounds):
                    entry["toolkit_rounds"].append(images_per_second(deploy, batch, images))
                    if torch_deploy is not None:
                        entry["torch_rounds"].append(images_per_second(torch_deploy, batch, images))
                entry["toolkit_images_s"] = statistics.median(entry["toolkit_rounds"])
                if entry["torch_rounds"]:
                    entry["torch_images_s"] = statistics.median(entry["torch_rounds"])
                    entry["ratio_rounds"] = [a / b for a, b in zip(entry["toolkit_rounds"], entry["torch_rounds"])]
                results["inference"].append(entry)

            names, fwd, bwd, _ = time_layers(net, iterations)
            results["layers"] = [{"name": n, "forward_ms": f, "backward_ms": b} for n, f, b in zip(names, fwd, bwd)]
        finally:
            solver.close()
            plain.close()
        tests, snapshots = test_and_snapshot_seconds(train_db, test_db, workdir, *((1, 2) if args.quick else (3, 100)))
        results["test_pass_s_rounds"], results["snapshot_s_rounds"] = tests, snapshots
        results["full_run_model"] = full_run_model(ms, statistics.median(tests), statistics.median(snapshots))
        results["peak_memory_bytes"] = peak_training_memory(train_db, test_db, 5 if args.quick else 300)
    return results


def report(results, out=sys.stdout):
    def line(name, value):
        out.write(f"{name}: {value}\n")

    line("machine", results["machine"])
    line("python", results["python"])
    line("numpy", results["numpy"])
    line("blas", results["blas"])
    line("OPENBLAS_CORETYPE", results["OPENBLAS_CORETYPE"])
    if "kernels" in results:
        line("kernels", results["kernels"])
    line("matmul peak", f"{results['matmul_peak_gflops']:.1f} GFLOP/s (float32)")
    line("create-db", f"{results['create_db_pairs']} pairs in {results['create_db_s']:.2f} s")
    line("work per iteration", f"{results['gflop_per_iteration']:.3f} GFLOP (Convolution and InnerProduct)")
    line("toolkit iteration", f"{results['iteration_ms']:.2f} ms "
                              f"(rounds: {', '.join(f'{v:.2f}' for v in results['iteration_ms_rounds'])})")
    line("toolkit throughput", f"{results['gflops']:.1f} GFLOP/s, {results['fraction_of_peak']:.1%} of matmul peak")
    if "torch_iteration_ms" in results:
        line("torch", f"{results['torch']}, {results['torch_threads']} threads")
        line("torch iteration", f"{results['torch_iteration_ms']:.2f} ms "
                                f"(rounds: {', '.join(f'{v:.2f}' for v in results['torch_iteration_ms_rounds'])})")
        rounds = results["ratio_rounds"]
        line("ratio toolkit/torch", f"{results['ratio_toolkit_torch']:.2f} (per round: median "
                                    f"{statistics.median(rounds):.2f}, range {min(rounds):.2f}-{max(rounds):.2f})")
        if "plain_ratio_rounds" in results:
            rounds = results["plain_ratio_rounds"]
            line("plain path (SIAMESE_BRANCH_THREADS=1) iteration",
                 f"{results['plain_iteration_ms']:.2f} ms, ratio to torch per round: median "
                 f"{statistics.median(rounds):.2f}, range {min(rounds):.2f}-{max(rounds):.2f}")
    else:
        line("torch", "not measured (PyTorch not installed or --no-torch)")
    line("lanes", results["lanes"] and " | ".join(",".join(lane) for lanes in results["lanes"] for lane in lanes))
    for entry in results["inference"]:
        text = f"{entry['toolkit_images_s']:.0f} images/s"
        if "torch_images_s" in entry:
            rounds = entry["ratio_rounds"]
            text += (f", torch {entry['torch_images_s']:.0f} images/s, ratio toolkit/torch (throughput) median "
                     f"{statistics.median(rounds):.2f}, range {min(rounds):.2f}-{max(rounds):.2f}")
        line(f"deploy tower, batch {entry['batch']}", text)
    model = results["full_run_model"]
    line("test pass (100 x 100 pairs)", ", ".join(f"{v:.2f} s" for v in results["test_pass_s_rounds"]))
    line("snapshot (.caffemodel + .solverstate)", ", ".join(f"{v:.3f} s" for v in results["snapshot_s_rounds"]))
    line("full run, modelled", f"{model['total_s'] / 60:.1f} min = training {model['iterations']} x "
                               f"{results['iteration_ms']:.2f} ms = {model['training_s'] / 60:.1f} min + testing "
                               f"{model['test_passes']} passes = {model['testing_s'] / 60:.1f} min + "
                               f"{model['snapshots']} snapshots = {model['snapshots_s']:.1f} s")
    line("peak memory (training run)", f"{results['peak_memory_bytes'] / MiB:.0f} MiB")
    out.write("per-layer ms (forward, backward):\n")
    for layer in results["layers"]:
        out.write(f"  {layer['name']:>12} {layer['forward_ms']:8.3f} {layer['backward_ms']:8.3f}\n")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.threads:
        _restart_with_threads(args.threads, argv)
    sys.path.insert(0, str(ROOT))
    if args.memory_child:
        train_db, test_db, iterations = args.memory_child
        memory_child(train_db, test_db, int(iterations))
        return None
    if args.mpi_child or args.mpi:
        sys.path.insert(0, str(ROOT / "scripts"))
        from bench_mpi import mpi_child, report_mpi, run_mpi

        if args.mpi_child:
            train_db, test_db, batch, iterations = args.mpi_child
            mpi_child(train_db, test_db, int(batch), int(iterations))
            return None
        results = run_mpi(args)
        report_mpi(results)
    elif args.zoo is not None:
        sys.path.insert(0, str(ROOT / "scripts"))
        from bench_zoo import ZOO_NETS, report_zoo, run_zoo

        blas_threads = blas_info()[2]
        results = run_zoo(args.zoo or ZOO_NETS, (1,) if args.quick else (1, 10), args.iterations or (2 if args.quick else 10),
                          args.rounds or (1 if args.quick else 3), blas_threads or args.threads or os.cpu_count(),
                          with_torch=not args.no_torch)
        report_zoo(results, sys.stdout)
    else:
        results = run(args)
        report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
