"""Optional compiled kernels: the memory-bound steps numpy does in several passes, and implicit-GEMM convolution.

numpy stays the engine: a layer asks `kernels()` for the compiled library and uses its numpy
path whenever the answer is None. The C sources beside this file are compiled on first use
with the system C compiler (`cc`, or $CC) into a per-user cache, keyed by a hash of the sources,
the flags and the CPU, and loaded with ctypes (which releases the GIL during each call, so the
branch lanes and depthwise threads run kernels concurrently). Floating-point contraction is off,
so every sum is rounded as numpy rounds it; the implicit-GEMM convolution (conv.c) is the exception, its
sums run in its own fixed order, equal to numpy's to float32 rounding.

SIAMESE_ACCEL=0 turns the kernels off; without a C compiler they are off and `status()` says why.
"""
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

ENV = "SIAMESE_ACCEL"
SOURCES = sorted(Path(__file__).parent.glob("*.c"))
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-std=c99", "-shared", "-fPIC"]

_f32 = ctypes.POINTER(ctypes.c_float)
_i32 = INT32 = ctypes.POINTER(ctypes.c_int32)
_f64 = FLOAT64 = ctypes.POINTER(ctypes.c_double)
_i64 = INT64 = ctypes.POINTER(ctypes.c_long)
_int = ctypes.c_long
#: Every exported kernel and its argument types; the C side takes plain pointers and sizes.
SIGNATURES = {
    "max_pool_forward": [_f32, _f32, _i32] + [_int] * 11,
    "max_pool_backward": [_f32, _i32, _f32] + [_int] * 5,
    "max_pool_2x2_forward": [_f32, _f32, _i32, _int, _int],  # pool2x2.c: rows = planes * OH, and W
    "max_pool_2x2_backward": [_f32, _i32, _f32, _int, _int],
    # pool2x2.c, batch-last (C, H, W, N): rows = C * OH, then OW and N
    "max_pool_2x2_batch_last_forward": [_f32, _f32, _i32, _int, _int, _int],
    "max_pool_2x2_batch_last_backward": [_f32, _i32, _f32, _int, _int, _int],
    "channel_affine": [_f32] * 4 + [_int] * 3,  # affine.c: x, a, b, out, then outer, channels, inner
    "sgd_update": [_f32, _f32, _f32, _int, ctypes.c_float, ctypes.c_float, ctypes.c_float],  # sgd.c
    # depthwise.c: arrays, then N, C, m, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw and the channel range c0, c1
    "depthwise_forward": [_f32] * 4 + [_int] * 17,
    "depthwise_backward": [_f32] * 6 + [_f64, _f32] + [_int] * 17,
    # conv.c: arrays (the int64 offsets after the input), then O, L, oh, R, pitch; 0 from the first without AVX-512
    "conv_implicit_available": [],
    "conv_implicit_forward": [_f32, _f32, _i64, _f32, _f32] + [_int] * 5,
    "conv_implicit_weight_grad": [_f32, _f32, _f32, _i64, _f32] + [_int] * 5,  # the top gradient transposed, then as is
    "conv_implicit_data_grad": [_f32, _f32, _i64, _f32] + [_int] * 5,
    "conv_implicit_weight_grad_positions": [_f32, _f32, _i64, _f32] + [_int] * 5,
    # transpose.c: src, dst, then A, B, rows, cols and the strides sa, sb, si, da, db, dj (in floats)
    "transpose_copy": [_f32, _f32] + [_int] * 10,
}
RETURNS = {"conv_implicit_available": ctypes.c_int}


def enabled(env=None):
    value = (os.environ if env is None else env).get(ENV, "").strip().lower()
    return value not in ("0", "off", "no", "false")


def cache_dir(env=None):
    env = os.environ if env is None else env
    if env.get("SIAMESE_CACHE_DIR"):
        return Path(env["SIAMESE_CACHE_DIR"])
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "siamese"


def _cpu_signature():
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = [line for line in lines if line.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(wanted)))


def _compiler():
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _build(compiler, target):
    """Compile the sources into `target` (atomically: concurrent processes may build at once)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(handle)
    try:
        # -march=native first (the kernels vectorise for this CPU); a compiler that refuses it gets portable code.
        for flags in (FLAGS, [flag for flag in FLAGS if flag != "-march=native"]):
            result = subprocess.run([compiler, *flags, "-o", temporary, *map(str, SOURCES), "-lm"],
                                    capture_output=True, text=True)
            if not result.returncode:
                break
        if result.returncode:
            errors = [line for line in result.stderr.splitlines() if "error" in line] or result.stderr.splitlines()
            raise OSError((errors or ["failed"])[0].strip())
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


class Kernels:
    """The compiled library, its functions typed; arrays go in through `ptr`."""

    def __init__(self, path):
        self.path = path
        library = ctypes.CDLL(str(path))
        for name, argtypes in SIGNATURES.items():
            function = getattr(library, name)
            function.argtypes, function.restype = argtypes, RETURNS.get(name)
            setattr(self, name, function)

    @staticmethod
    def ptr(array, kind=_f32):
        """A C pointer to a C-contiguous array (refused otherwise: the kernels assume dense rows)."""
        if not array.flags.c_contiguous:
            raise ValueError("compiled kernels need C-contiguous arrays")
        return array.ctypes.data_as(kind)


@functools.lru_cache(maxsize=None)
def _load(folder, compiler):
    """(Kernels or None, a line saying which), built once per process for each cache folder and compiler."""
    if compiler is None:
        return None, "numpy only (no C compiler found: set CC or install gcc for the compiled kernels)"
    digest = hashlib.sha256()
    for path in SOURCES:
        digest.update(path.read_bytes())
    digest.update(" ".join([compiler, *FLAGS, _cpu_signature(), platform.machine()]).encode())
    name = f"kernels-{digest.hexdigest()[:16]}.so"
    # An unwritable cache folder (a read-only home) falls back to a per-user temporary folder.
    folders = [Path(folder), Path(tempfile.gettempdir()) / f"siamese-{os.getuid() if hasattr(os, 'getuid') else 0}"]
    problem = None
    for place in folders:
        target = place / name
        try:
            if not target.exists():
                _build(compiler, target)
            return Kernels(target), f"compiled kernels ({target})"
        except (OSError, AttributeError) as exc:
            problem = exc
            if isinstance(exc, OSError) and not isinstance(exc, PermissionError) and place.is_dir():
                break  # the folder was writable: the compiler itself failed, another folder will not help
    return None, f"numpy only (the compiled kernels could not be built with {compiler}: {problem})"


def kernels():
    """The compiled kernels, or None when they are off (SIAMESE_ACCEL=0) or cannot be built."""
    if not enabled():
        return None
    return _load(str(cache_dir()), _compiler())[0]


def status():
    """One line: which path the layers take, and why."""
    if not enabled():
        return f"numpy only ({ENV}=0)"
    return _load(str(cache_dir()), _compiler())[1]
