"""scripts/bench.py --mpi: data-parallel training over MPI ranks against one process, on the example net.

Times one process of batch 64 (2 BLAS threads, and 1) against `mpiexec -n 2` ranks of batch 32 with one
thread each, in child processes alternating round by round; the bytes and time of the gradient
Allreduce; and a model of the scaling to 8 and 64 ranks from the measured compute and communication.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def mpi_child(train_db, test_db, batch, iterations):
    """One process or one MPI rank: train `iterations` at `batch` per rank after a warm-up; rank 0 prints
    JSON with the iteration time, the time inside the gradient Allreduce (waiting for the slower rank
    included), and the Allreduce alone on ranks already in step (the communication)."""
    import numpy as np
    from bench import solver_param
    from siamese_cli.log import CaffeLog
    from siamese_cli.parallel import SingleProcess, launched_size
    from siamese_cli.solvers import make_solver as build

    ranks = SingleProcess()
    if launched_size() > 1:
        from siamese_cli.parallel.mpi import MPIRanks
        ranks = MPIRanks()
    param = solver_param(train_db, test_db)
    for layer in param.net_param.layer:
        if layer.type == "Data":
            layer.data_param.batch_size = batch
    solver = build(param, log=CaffeLog(open(os.devnull, "w")), parallel=ranks)
    result = {"ranks": ranks.size, "batch": batch}
    try:
        if ranks.size > 1:
            ranks.attach(solver)
        solver.step(10)
        if ranks.size > 1:
            ranks.comm.Barrier()
            ranks.reductions, ranks.reduce_seconds = 0, 0.0
        start = time.perf_counter()
        solver.step(iterations)
        result["iteration_ms"] = (time.perf_counter() - start) / iterations * 1e3
        if ranks.size > 1:
            from mpi4py import MPI
            result["reduce_ms"] = ranks.reduce_seconds / ranks.reductions * 1e3
            result["reduce_bytes"] = int(ranks._buffer.nbytes)
            for name, size in (("allreduce_ms", ranks._buffer.size), ("latency_ms", 1)):
                buffer = np.ones(size, np.float32)
                times = []
                for _ in range(30):
                    ranks.comm.Barrier()
                    start = time.perf_counter()
                    ranks.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
                    times.append(time.perf_counter() - start)
                result[name] = statistics.median(times) * 1e3
    finally:
        solver.close()
    if ranks.is_root:
        print("mpi_result " + json.dumps(result), flush=True)


def _mpi_round(command, threads):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    for line in done.stdout.splitlines():
        if line.startswith("mpi_result "):
            return json.loads(line.split(" ", 1)[1])
    raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def scaling_model(compute_ms, allreduce_ms, latency_ms, nbytes, ranks):
    """Weak scaling (batch per rank fixed) with a ring Allreduce: 2(N-1) steps of latency, and each rank
    sends and receives 2(N-1)/N of the buffer. The latency is that of a 4-byte allreduce on 2 ranks, the
    bandwidth what is left of the 2-rank allreduce (2 steps, the whole buffer) after 2 latencies.
    Speed-up over one rank: N t_c / t_N."""
    seconds_per_byte = max(allreduce_ms - 2 * latency_ms, 0.0) / nbytes
    comm = 2 * (ranks - 1) * latency_ms + 2 * (ranks - 1) / ranks * nbytes * seconds_per_byte
    return comm, ranks * compute_ms / (compute_ms + comm)


# A network between hosts, for the model: 10 Gb/s Ethernet with TCP (bandwidth, one-message latency).
NETWORK = {"name": "10 GbE", "gbytes_per_s": 1.25, "latency_ms": 0.05}


def network_model(compute_ms, nbytes, ranks, gbytes_per_s, latency_ms):
    """The ring model with a given network's bandwidth and latency instead of the measured ones."""
    return scaling_model(compute_ms, 2 * latency_ms + nbytes / (gbytes_per_s * 1e6), latency_ms, nbytes, ranks)


def run_mpi(args):
    """1 process of batch 64 with 2 BLAS threads (and with 1) against 2 ranks of batch 32 with one thread
    each, alternating round by round; the allreduce per iteration; the modelled scaling to 8 and 64 ranks."""
    from bench import build_dbs, cpu_model

    mpiexec = Path(sys.executable).parent / "mpiexec"
    if not mpiexec.exists():
        raise SystemExit('bench --mpi needs mpiexec beside this Python: pip install -e ".[mpi]"')
    iterations = args.iterations or (5 if args.quick else 100)
    rounds = args.rounds or (1 if args.quick else 3)
    results = {"machine": f"{cpu_model()}, {os.cpu_count()} logical CPUs", "iterations": iterations}
    with tempfile.TemporaryDirectory(prefix="siamese-bench-") as scratch:
        workdir = Path(args.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        train_db, test_db, _, _ = build_dbs(workdir, args.quick)
        script = Path(__file__).resolve().parent / "bench.py"
        child = [sys.executable, str(script), "--mpi-child", str(train_db), str(test_db)]
        single, single_thread, double = [], [], []
        for _ in range(rounds):
            single.append(_mpi_round(child + ["64", str(iterations)], threads=2))
            single_thread.append(_mpi_round(child + ["64", str(iterations)], threads=1))
            double.append(_mpi_round([str(mpiexec), "-n", "2"] + child + ["32", str(iterations)], threads=1))
    one = [r["iteration_ms"] for r in single]
    two = [r["iteration_ms"] for r in double]
    results["one_process_ms_rounds"] = one
    results["one_process_one_thread_ms_rounds"] = [r["iteration_ms"] for r in single_thread]
    results["two_ranks_ms_rounds"] = two
    results["speedup_rounds"] = [a / b for a, b in zip(one, two)]
    results["speedup"] = statistics.median(results["speedup_rounds"])
    for key in ("reduce_ms", "allreduce_ms", "latency_ms"):
        results[key + "_rounds"] = [r[key] for r in double]
    nbytes = double[0]["reduce_bytes"]
    results["reduce_bytes"] = nbytes
    allreduce = statistics.median(results["allreduce_ms_rounds"])
    latency = statistics.median(results["latency_ms_rounds"])
    compute = statistics.median(t - r["reduce_ms"] for t, r in zip(two, double))
    results["compute_ms_per_rank"] = compute
    results["model"] = {}
    for ranks in (2, 8, 64):
        comm, speedup = scaling_model(compute, allreduce, latency, nbytes, ranks)
        results["model"][ranks] = {"comm_ms": comm, "iteration_ms": compute + comm, "speedup": speedup,
                                   "efficiency": speedup / ranks}
    results["network"] = dict(NETWORK, model={})
    for ranks in (8, 64):
        comm, speedup = network_model(compute, nbytes, ranks, NETWORK["gbytes_per_s"], NETWORK["latency_ms"])
        results["network"]["model"][ranks] = {"comm_ms": comm, "iteration_ms": compute + comm, "speedup": speedup,
                                              "efficiency": speedup / ranks}
    return results


def report_mpi(results, out=sys.stdout):
    def line(name, value):
        out.write(f"{name}: {value}\n")

    def spread(values, unit=" ms", digits=2):
        return (f"median {statistics.median(values):.{digits}f}{unit} "
                f"(rounds: {', '.join(f'{v:.{digits}f}' for v in values)})")

    line("machine", results["machine"])
    line("one process, batch 64, 2 BLAS threads", spread(results["one_process_ms_rounds"]))
    line("one process, batch 64, 1 BLAS thread", spread(results["one_process_one_thread_ms_rounds"]))
    line("2 MPI ranks, batch 32 each, 1 BLAS thread each", spread(results["two_ranks_ms_rounds"]))
    line("speed-up of 2 ranks over one process", spread(results["speedup_rounds"], "x"))
    line("gradient allreduce", f"{results['reduce_bytes']} bytes per iteration (one float32 buffer)")
    line("  time in the solver's allreduce (waits for the slower rank)", spread(results["reduce_ms_rounds"]))
    line("  allreduce alone, ranks in step", spread(results["allreduce_ms_rounds"]))
    line("  allreduce of 4 bytes (latency)", spread(results["latency_ms_rounds"], digits=4))
    line("compute per rank per iteration", f"{results['compute_ms_per_rank']:.2f} ms")
    network = results["network"]
    for name, models in (("measured links", results["model"]),
                         (f"{network['name']}, {network['gbytes_per_s']} GB/s, {network['latency_ms'] * 1e3:.0f} us",
                          network["model"])):
        for ranks, model in models.items():
            line(f"model, {ranks} ranks, {name}",
                 f"allreduce {model['comm_ms']:.2f} ms, iteration {model['iteration_ms']:.2f} ms, "
                 f"speed-up {model['speedup']:.1f}x over one rank ({model['efficiency']:.0%})")
