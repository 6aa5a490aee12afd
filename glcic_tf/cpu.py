"""What this CPU offers TensorFlow: the cores this process may use, its instruction set, and
which kernel family (oneDNN or Eigen) TensorFlow runs on it.

Portable: `os.sched_getaffinity` exists only on Linux (and a few Unixes); elsewhere the count is
the machine's. A Linux container's CPU quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`) is
not in its affinity, nor in TensorFlow's own thread-pool sizes: `size_thread_pools` gives
TensorFlow the quota, so a container of 2 CPUs on a 64-core host does not run 64 threads.
"""

import functools
import os
import sys
from typing import Dict

from absl import logging

# How the network's arithmetic may run (glcic_tf.folded): "auto" is bfloat16 where this processor
# computes it faster (AMX), float32 elsewhere.
PRECISIONS = ("auto", "float32", "bfloat16")

# Where Linux mounts the cgroup file systems (a parameter for the tests).
CGROUP_ROOT = "/sys/fs/cgroup"


# This process's cgroups (a parameter for the tests).
PROC_SELF_CGROUP = "/proc/self/cgroup"


def _own_cgroups() -> dict:
    """This process's cgroup folder by hierarchy, from /proc/self/cgroup ("ID:CONTROLLERS:/path"
    lines): "" for cgroup v2 ("0::/path"), each v1 controller ("cpu", "cpuacct") by name; ""
    as the path for the root, and for a path outside this namespace's root ("/../..")."""
    folders = {}
    try:
        with open(PROC_SELF_CGROUP) as file:
            lines = file.read().splitlines()
    except OSError:
        return folders
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        raw = parts[2].strip()
        path = "" if ".." in raw.split("/") else os.path.normpath("/" + raw).lstrip("/")
        for controller in parts[1].split(",") if parts[1] else [""]:
            folders[controller] = path
    return folders


def _ancestors(folder: str):
    """`folder`, its parent, ... up to "" (a quota set on a parent applies too)."""
    while True:
        yield folder
        if not folder:
            return
        folder = os.path.dirname(folder)


def _read(path: str):
    try:
        with open(path) as file:
            return file.read().split()
    except OSError:
        return None


def cgroup_cpu_limit():
    """The CPUs a cgroup quota allows (rounded up), or None without a quota.

    The tightest of: cgroup v2's `cpu.max` from this process's own cgroup up to the root (a
    quota set on a parent applies too), and cgroup v1's `cpu.cfs_quota_us` over
    `cpu.cfs_period_us`, likewise, under the `cpu` (or `cpu,cpuacct`) mount. Inside a container
    its own cgroup is the mount's root; on a host, a systemd slice's path below it.
    """
    limits = []
    own = _own_cgroups()
    for folder in _ancestors(own.get("", "")):
        fields = _read(os.path.join(CGROUP_ROOT, folder, "cpu.max"))
        if fields and len(fields) == 2 and fields[0] != "max":
            limits.append((fields[0], fields[1]))
    for mount in ("cpu", "cpu,cpuacct"):
        for folder in _ancestors(own.get("cpu", "")):
            quota = _read(os.path.join(CGROUP_ROOT, mount, folder, "cpu.cfs_quota_us"))
            period = _read(os.path.join(CGROUP_ROOT, mount, folder, "cpu.cfs_period_us"))
            if quota and period and quota[0] != "-1":
                limits.append((quota[0], period[0]))
    cpus = []
    for quota, period in limits:
        try:
            if int(period) > 0 and int(quota) > 0:
                cpus.append(max(1, -(-int(quota) // int(period))))
        except ValueError:
            continue
    return min(cpus) if cpus else None


def usable_cores() -> int:
    """The CPUs this process can keep busy: its CPU affinity where the system has one (Linux),
    else the machine's count, further limited by a cgroup CPU quota."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        cores = len(affinity(0))
    else:  # macOS, Windows: Python 3.13's process_cpu_count honours Windows' affinity
        cores = (getattr(os, "process_cpu_count", None) or os.cpu_count)() or 1
    limit = cgroup_cpu_limit()
    return min(cores, limit) if limit else cores


def size_thread_pools() -> int:
    """Give TensorFlow's intra-op and inter-op pools `usable_cores()` threads, unless set already
    (TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS or an earlier call); returns the count.

    TensorFlow sizes its pools from the CPU affinity, not from a container's quota: under a
    quota of 2 on a 64-core host it ran 64 threads time-sliced onto 2 CPUs. Call it before
    TensorFlow runs its first op (the commands do); later it can only log that it is too late.
    Before TensorFlow is imported, the two variables are set for it to read when it starts, and
    it is not imported here: a command that completes with a LiteRT model never loads it.
    """
    cores = usable_cores()
    if "tensorflow" not in sys.modules:
        for variable in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
            os.environ.setdefault(variable, str(cores))
        return cores
    import tensorflow as tf  # noqa: PLC0415  (imported already: its pools are set through its config)

    try:
        if not os.environ.get("TF_NUM_INTRAOP_THREADS") and not tf.config.threading.get_intra_op_parallelism_threads():
            tf.config.threading.set_intra_op_parallelism_threads(cores)
        if not os.environ.get("TF_NUM_INTEROP_THREADS") and not tf.config.threading.get_inter_op_parallelism_threads():
            tf.config.threading.set_inter_op_parallelism_threads(cores)
    except RuntimeError:  # TensorFlow already running: its pools are fixed for this process
        logging.warning("TensorFlow was initialised before its thread pools could be sized to %d cores", cores)
    return cores


@functools.lru_cache(maxsize=1)
def cpuinfo() -> Dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ("model name", "flags", ...); empty where
    there is none (macOS, Windows). Read once: the processor does not change under a process."""
    info = {}
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def flags() -> set:
    """The processor's feature flags (/proc/cpuinfo on Linux; empty elsewhere)."""
    return set(cpuinfo().get("flags", "").split())


def onednn_on() -> bool:
    """Whether TensorFlow runs its oneDNN kernels here (else Eigen's).

    TensorFlow 2.21 turns them on by default only on x86 processors with AVX-512 VNNI, BF16 or
    AMX (and similar); elsewhere, or with TF_ENABLE_ONEDNN_OPTS=0, it runs Eigen's. No public
    API says which, so this asks TensorFlow's own check.
    """
    try:
        from tensorflow.python.util import _pywrap_util_port  # noqa: PLC0415
    except ImportError:  # a TensorFlow without it: the documented switch decides
        return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").lower() not in ("0", "false")
    return bool(_pywrap_util_port.IsMklEnabled())


def kernel_family() -> str:
    """"oneDNN" or "Eigen": which convolution kernels TensorFlow runs here."""
    return "oneDNN" if onednn_on() else "Eigen"
