"""HDF5 files through h5py (the optional `hdf5` extra), laid out as Caffe lays them out.

- weights (`PREFIX_iter_N.caffemodel.h5`): /data/LAYER/0, /data/LAYER/1, ... one float32
  dataset per parameter blob in its own shape (shared parameters only under their owner),
  and /diff/LAYER/k with snapshot_diff;
- solver state (`.solverstate.h5`): iter and current_step (int, one element), learned_net
  (a string), /history/0, /history/1, ...;
- HDF5Data sources: a text file listing .h5 files, each holding one dataset per top name.
"""
from pathlib import Path

import numpy as np

from ..errors import SiameseError
from ..proto import caffe_pb2
from .files import atomic_path


def h5py_module(what="HDF5 files"):
    """h5py, or a SiameseError saying how to install it."""
    try:
        import h5py
    except ImportError:
        raise SiameseError(f'{what} need h5py, which is not installed; pip install -e ".[hdf5]"') from None
    return h5py


def _open(path, what):
    h5py = h5py_module(what)
    if not Path(path).is_file():
        raise SiameseError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise SiameseError(f"{path}: not a readable HDF5 file ({exc})") from None


def read_source_list(path):
    """The .h5 file names of an HDF5Data source (one per line, blank lines skipped)."""
    try:
        names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise SiameseError(f"{path}: no such file (the HDF5Data source lists one .h5 file per line)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SiameseError(f"{path}: cannot read the HDF5 file list: {exc}") from None
    if not names:
        raise SiameseError(f"{path}: lists no HDF5 files")
    return names


def load_datasets(path, names):
    """{name: float32 array} of the datasets `names` in file `path`, all with the same first dimension."""
    arrays = {}
    with _open(path, "HDF5Data layers") as handle:
        for name in names:
            if name not in handle or not hasattr(handle[name], "shape"):
                raise SiameseError(f'{path}: no dataset "{name}" (the HDF5Data layer reads one dataset per top '
                                   f"name); it holds {sorted(handle.keys())}")
            dataset = handle[name]
            if dataset.ndim < 1 or dataset.dtype.kind not in "fiub":
                raise SiameseError(f'{path}: dataset "{name}" is {dataset.dtype} of shape {dataset.shape}; '
                                   "HDF5Data needs numbers with at least one dimension")
            arrays[name] = np.asarray(dataset[...], np.float32)
    rows = {name: array.shape[0] for name, array in arrays.items()}
    if len(set(rows.values())) > 1:
        raise SiameseError(f"{path}: datasets have different numbers of rows {rows}; they must match")
    if not next(iter(rows.values())):
        raise SiameseError(f"{path}: datasets have no rows")
    return arrays


# ---- weights -------------------------------------------------------------------------------------
def write_net_weights(path, net, write_diff=False):
    """Caffe's Net::ToHDF5: /data/LAYER/k (owned parameters only) and, with write_diff, /diff/LAYER/k."""
    h5py = h5py_module("HDF5 snapshots")
    owned = set()
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        data = handle.create_group("data")
        diff = handle.create_group("diff") if write_diff else None
        for layer, lp in zip(net.layers, net.param.layer):
            if lp.type == "Split":
                continue
            group = data.create_group(lp.name)
            diff_group = diff.create_group(lp.name) if diff is not None else None
            for k, blob in enumerate(layer.blobs):
                if id(blob) not in owned:
                    owned.add(id(blob))
                    group.create_dataset(str(k), data=blob.data)
                if diff_group is not None:
                    diff_group.create_dataset(str(k), data=blob.diff)


def read_net_weights(path):
    """A NetParameter holding each layer's blobs from an HDF5 weights file (/data/LAYER/k)."""
    from ..blob import array_to_proto

    proto = caffe_pb2.NetParameter()
    with _open(path, "HDF5 weights") as handle:
        if "data" not in handle:
            raise SiameseError(f'{path}: no "data" group; not HDF5 weights written by Caffe or siamese')
        for name, group in handle["data"].items():
            layer = proto.layer.add(name=name)
            count = len(group)
            if sorted(group.keys()) != [str(k) for k in range(count)] and count:
                keys = sorted(group.keys(), key=lambda key: int(key) if key.isdigit() else -1)
                raise SiameseError(f'{path}: layer "{name}" has datasets {keys}; expected 0..{count - 1}')
            for k in range(count):
                layer.blobs.append(array_to_proto(np.asarray(group[str(k)][...], np.float32)))
    return proto


# ---- solver state --------------------------------------------------------------------------------
def write_solver_state(path, iteration, learned_net, current_step, history):
    h5py = h5py_module("HDF5 snapshots")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.create_dataset("iter", data=np.array([iteration], np.int32))
        handle.create_dataset("learned_net", data=np.bytes_(str(learned_net)))
        handle.create_dataset("current_step", data=np.array([current_step], np.int32))
        group = handle.create_group("history")
        for k, values in enumerate(history):
            group.create_dataset(str(k), data=values)


def read_solver_state(path):
    """A SolverState (iter, learned_net, current_step, history) from a .solverstate.h5 file."""
    from ..blob import array_to_proto

    state = caffe_pb2.SolverState()
    with _open(path, "HDF5 solver states") as handle:
        for name in ("iter", "current_step", "history"):
            if name not in handle:
                raise SiameseError(f'{path}: no "{name}" in it; not a solver state written by Caffe or siamese')
        state.iter = int(np.asarray(handle["iter"][...]).ravel()[0])
        state.current_step = int(np.asarray(handle["current_step"][...]).ravel()[0])
        if "learned_net" in handle:
            value = handle["learned_net"][()]
            state.learned_net = value.decode() if isinstance(value, bytes) else str(value)
        history = handle["history"]
        for k in range(len(history)):
            state.history.append(array_to_proto(np.asarray(history[str(k)][...], np.float32)))
    return state


def snapshot(solver):
    """Write the solver's HDF5 snapshot pair (Caffe's names: .caffemodel.h5, .solverstate.h5). Returns both paths."""
    model_path, state_path = (f"{path}.h5" for path in solver.snapshot_paths())
    solver.log(f"Snapshotting to HDF5 file {model_path}")
    write_net_weights(model_path, solver.net, solver.param.snapshot_diff)
    solver.log(f"Snapshotting solver state to HDF5 file {state_path}")
    try:
        write_solver_state(state_path, solver.iter, model_path, solver.current_step, solver.history)
    except BaseException:
        Path(model_path).unlink(missing_ok=True)  # never one file of a pair: the previous pair stays the newest
        raise
    return model_path, state_path
