"""pycaffe's process-wide switches (mode, device, random seed), kept here so the engine has none."""
import sys

import numpy as np


class _Settings:
    seed = None
    drawn = 0
    gpu_notice_given = False


def set_mode_cpu():
    """The toolkit always computes on the CPU."""


def _cpu_notice(call):
    if not _Settings.gpu_notice_given:
        _Settings.gpu_notice_given = True
        print(f"caffe.{call}: this toolkit computes on the CPU; carrying on there", file=sys.stderr)


def set_mode_gpu():
    _cpu_notice("set_mode_gpu()")


def set_device(device_id):
    _cpu_notice(f"set_device({int(device_id)})")


def set_random_seed(seed):
    """Seed the initialisation of nets and solvers created afterwards (a solver's own random_seed wins)."""
    _Settings.seed, _Settings.drawn = int(seed), 0


def next_seed():
    """The seed for the next net or solver: None (fresh entropy) until set_random_seed, then a
    sequence drawn from that seed, so a script repeats exactly and two nets still differ."""
    if _Settings.seed is None:
        return None
    _Settings.drawn += 1
    return int(np.random.SeedSequence([_Settings.seed, _Settings.drawn]).generate_state(1)[0] % 2**31)
