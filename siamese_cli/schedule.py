"""Branch scheduling: independent branches of a net (the towers of a siamese net) run at once, one per core.

The layers of a net form a dependency graph (a layer depends on the layers that made the blobs it
reads). A layer that is an ancestor or a descendant of every other layer (the data layer, the
slice, the loss) runs alone; between two such layers, the weakly connected groups of the others
are independent branches. With `lanes` worker lanes, the branches are dealt out to lanes, each
lane runs its layers in net order in its own thread, and BLAS is limited to one thread per lane
so that both the matmuls and numpy's memory-bound steps (im2col, pooling, transposes) use every core.

Gradients stay bit-for-bit reproducible: parameters shared between lanes (the towers' common
weights) are accumulated by every lane but the last into a private diff, and these are added
into the shared diff after the lanes finish, in the order in which the plain backward pass
would have added them. When each layer adds its gradient once (the example's nets), the sums
are exactly those of the plain path run with one BLAS thread (with two, OpenBLAS splits each
matmul's sums differently, so the plain path itself differs in the last bits).

`SIAMESE_BRANCH_THREADS=1` (or 0) turns it off; any other number caps the lanes (default: the
number of CPUs, at most 2).
"""
import contextvars
import os
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from .blob import Blob

ENV = "SIAMESE_BRANCH_THREADS"
#: A branch with fewer top values than this (per pass) is not worth a thread of its own.
MIN_BRANCH_VALUES = 1 << 16
#: Layer types that may touch state other lanes see (user Python code; BatchNorm writes its shared
#: statistics in the forward pass): a run of layers holding one of them is not split into lanes.
SERIAL_TYPES = frozenset({"Python", "BatchNorm"})


def requested_lanes(env=None):
    """Lanes asked for by SIAMESE_BRANCH_THREADS, or the default: min(2, CPUs)."""
    value = (os.environ if env is None else env).get(ENV, "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            return 1
    return max(1, min(2, os.cpu_count() or 1))


def layer_dependencies(net):
    """For each layer, the set of earlier layers it must run after (readers before in-place writers too)."""
    writer, readers = {}, {}  # blob name -> last layer writing it; layers reading that version
    for name in net.param.input:
        writer[name], readers[name] = None, []
    deps = []
    for i, lp in enumerate(net.param.layer):
        mine = set()
        for name in lp.bottom:
            if writer.get(name) is not None:
                mine.add(writer[name])
            readers.setdefault(name, []).append(i)
        for name in lp.top:
            if writer.get(name) is not None:
                mine.add(writer[name])
            mine.update(r for r in readers.get(name, ()) if r != i)
            writer[name], readers[name] = i, []
        deps.append(mine)
    return deps


def plan_stages(net, lanes, min_values=MIN_BRANCH_VALUES):
    """[(kind, payload)]: ("layer", i) runs alone, ("lanes", [[layers of lane 0], ...]) runs its lanes at once."""
    n = len(net.layers)
    deps = layer_dependencies(net)
    ancestors = [0] * n
    for i in range(n):
        for d in deps[i]:
            ancestors[i] |= ancestors[d] | (1 << d)
    descendants = [0] * n
    for i in range(n):
        bits = ancestors[i]
        while bits:
            low = bits & -bits
            descendants[low.bit_length() - 1] |= 1 << i
            bits ^= low
    everyone = (1 << n) - 1
    alone = [(ancestors[i] | descendants[i] | (1 << i)) == everyone for i in range(n)]
    stages, run = [], []
    for i in range(n + 1):
        if i < n and not alone[i]:
            run.append(i)
            continue
        if run:
            stages.extend(_segment_stages(net, run, deps, lanes, min_values))
            run = []
        if i < n:
            stages.append(("layer", i))
    return stages


def _segment_stages(net, run, deps, lanes, min_values):
    """Stages for a run of layers between two layers that run alone: its branches, dealt out to lanes."""
    members = set(run)
    parent = {i: i for i in run}

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in run:
        for d in deps[i]:
            if d in members:
                parent[root(i)] = root(d)
    branches = {}
    for i in run:
        branches.setdefault(root(i), []).append(i)
    branches = list(branches.values())
    work = [sum(top.count for i in b for top in net.tops[i]) for b in branches]
    heavy = sum(w >= min_values for w in work)
    plain = any(net.param.layer[i].type in SERIAL_TYPES for i in run)
    if lanes < 2 or heavy < 2 or plain:
        return [("layer", i) for i in run]
    count = min(lanes, len(branches))
    loads, dealt = [0] * count, [[] for _ in range(count)]
    for w, branch in sorted(zip(work, branches), key=lambda pair: (-pair[0], pair[1][0])):
        k = loads.index(min(loads))
        loads[k] += w
        dealt[k].extend(branch)
    dealt = sorted((sorted(lane) for lane in dealt), key=lambda lane: lane[-1])
    return [("lanes", dealt)]


class _BlasThreads:
    """Sets the BLAS thread count for the duration of a parallel stage (threadpoolctl, when installed)."""

    def __init__(self):
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            self.controllers = []
        else:
            self.controllers = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
        self.saved = []

    def set(self, threads):
        self.saved = [c.num_threads for c in self.controllers]
        for controller in self.controllers:
            controller.set_num_threads(threads)

    def restore(self):
        for controller, threads in zip(self.controllers, self.saved):
            controller.set_num_threads(threads)


class BranchSchedule:
    """Runs a Net's forward and backward passes with its independent branches in parallel lanes."""

    def __init__(self, net, stages):
        self.net = net
        self.stages = stages
        self.lanes = max(len(payload) for kind, payload in stages if kind == "lanes")
        self._pool = ThreadPoolExecutor(max_workers=self.lanes - 1, thread_name_prefix="siamese-branch")
        self._blas = None
        self._private = {}  # (stage, lane, param Blob id) -> private Blob

    def lane_names(self):
        """The lanes of each parallel stage as layer names, for logs and tests."""
        names = [lp.name for lp in self.net.param.layer]
        return [[[names[i] for i in lane] for lane in payload] for kind, payload in self.stages if kind == "lanes"]

    def _parallel(self, lanes, run):
        if self._blas is None:
            self._blas = _BlasThreads()
        self._blas.set(max(1, (os.cpu_count() or 1) // len(lanes)))
        # Each lane runs in a copy of the caller's context, so numpy's error state (np.errstate) holds there too.
        futures = [self._pool.submit(contextvars.copy_context().run, run, lane) for lane in lanes[1:]]
        try:
            run(lanes[0])
        finally:
            wait(futures)  # no lane may still be running when an error reaches the caller
            self._blas.restore()
        for future in futures:
            future.result()

    def forward(self):
        """The forward pass; the loss summed in net order, as the plain pass sums it."""
        net = self.net
        losses = [0.0] * len(net.layers)

        def run(lane):
            for i in lane:
                losses[i] = net.forward_layer(i)

        for kind, payload in self.stages:
            if kind == "layer":
                losses[payload] = net.forward_layer(payload)
            else:
                self._parallel(payload, run)
        return sum(losses)

    def backward(self):
        net = self.net
        needs = net.layer_needs_backward

        zero = {}  # id(lane) -> the private diffs that lane clears first, in its own thread

        def run(lane):
            for diff in zero.get(id(lane), ()):
                diff.fill(0)
            for i in reversed(lane):
                if needs[i]:
                    net.backward_layer(i)

        for s in reversed(range(len(self.stages))):
            kind, payload = self.stages[s]
            if kind == "layer":
                if needs[payload]:
                    net.backward_layer(payload)
                continue
            swapped = self._swap_in(s, payload)
            zero.clear()
            for k, entries in zip(reversed(range(len(payload) - 1)), swapped):
                zero[id(payload[k])] = list({id(private): private.diff for _, _, _, private in entries}.values())
            try:
                self._parallel(payload, run)
            finally:
                self._swap_out(swapped)

    def _swap_in(self, s, lanes):
        """Give every lane but the last private diffs (cleared by `backward`) for the param Blobs another lane also uses.

        Returns, per lane from the second-to-last down to the first, the (layer, index, shared, private)
        swaps made; their diffs are added back in that order.
        """
        layers = self.net.layers
        used = [{id(blob) for i in lane for blob in layers[i].blobs} for lane in lanes]
        swapped = []
        for k in reversed(range(len(lanes) - 1)):
            elsewhere = set().union(*(u for j, u in enumerate(used) if j != k))
            entries, fresh = [], {}
            for i in lanes[k]:
                for index, shared in enumerate(layers[i].blobs):
                    if id(shared) not in elsewhere:
                        continue
                    private = fresh.get(id(shared))
                    if private is None:
                        private = self._private.setdefault((s, k, id(shared)), Blob((0,)))
                        if private.diff.shape != shared.diff.shape:
                            private.diff = np.zeros_like(shared.diff)
                        private.data = shared.data  # its diff is cleared by its lane, in parallel
                        fresh[id(shared)] = private
                    layers[i].blobs[index] = private
                    entries.append((layers[i], index, shared, private))
            swapped.append(entries)
        return swapped

    @staticmethod
    def _swap_out(swapped):
        """Restore the shared Blobs and add the private diffs, later lanes first (the plain pass's order)."""
        for entries in swapped:
            added = set()
            for layer, index, shared, private in entries:
                layer.blobs[index] = shared
                if id(private) not in added:
                    added.add(id(private))
                    shared.diff += private.diff

    def close(self):
        self._pool.shutdown(wait=True)


def branch_schedule(net, lanes=None, min_values=MIN_BRANCH_VALUES):
    """A BranchSchedule for `net`, or None when it has no independent branches worth running at once."""
    lanes = requested_lanes() if lanes is None else lanes
    if lanes < 2 or len(net.layers) < 3:
        return None
    stages = plan_stages(net, lanes, min_values)
    if not any(kind == "lanes" for kind, _ in stages):
        return None
    return BranchSchedule(net, stages)
