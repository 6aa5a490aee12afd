"""The machine's own yardsticks, printed beside every benchmark figure.

These 2-core machines differ a lot (one measured a 300 GFLOP/s float32 matmul, another 68), so
figures compare only within one run on one machine. Two yardsticks:
- `matmul_rates`: the float32 4096x4096 matrix product of every library here (TensorFlow,
  NumPy's BLAS, PyTorch); the best of them is what a well-tuned kernel reaches on this machine,
  and the yardstick every table uses;
- `peak_gflops`: cores x clock x float32 FMA lanes x 2 FMA units x 2 FLOPs, from the CPU's own
  description (/proc/cpuinfo). The description gives the base clock (under a hypervisor often
  nothing else), not the turbo clock the cores run at, and not every core's FMA units: where
  anything measured runs faster than that figure, the figure is wrong and the peak is unknown
  (None), never a percentage above 100.

On an AVX2-only processor TensorFlow turns its oneDNN ops off and runs Eigen's kernels; on an
AVX-512 machine `TF_ENABLE_ONEDNN_OPTS=0` takes that path (ONEDNN_MAX_CPU_ISA=AVX2 does not: it
keeps oneDNN on with AVX2 instructions, a path no AVX2-only machine takes). `describe` prints
which kernel family ran.
"""

import os
import time
from typing import Callable, Dict, Iterable, Optional

from glcic_tf.cpu import cpuinfo, kernel_family, size_thread_pools, usable_cores  # noqa: F401  (size_thread_pools for the benchmarks)
from glcic_tf.cpu import flags as cpu_flags

# FMA units per core: two on Intel server cores since Skylake-SP and on AMD since Zen 2.
FMA_UNITS = 2
_AVX2_LIMITS = ("AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX", "SSE41")


def best_time(function, repeats: int) -> float:
    """The best of `repeats` timed calls, after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def best_times(functions: Dict[str, Callable[[], object]], repeats: int, pause: float = 0.0) -> Dict[str, float]:
    """The best of `repeats` timed calls of each function, the functions' calls interleaved
    (a, b, c, a, b, c, ...) after one warm-up call each: a slow spell of this noisy machine
    then falls on every function alike, not on whichever ran during it. `pause` seconds of
    sleep before each call let the previous call's idle threads stop spinning (TensorFlow's
    and PyTorch's OpenMP threads both spin a while after their work)."""
    for function in functions.values():
        function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            time.sleep(pause)
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def cpu_description() -> Dict[str, object]:
    """Model, clock, cores this process may use, float32 lanes per FMA and native bfloat16."""
    info = cpuinfo()
    flags = cpu_flags()
    limited = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _AVX2_LIMITS
    # AMD's AVX-512 before Zen 5 executes as two 256-bit halves: 8 lanes per FMA unit.
    avx512 = "avx512f" in flags and not limited and info.get("vendor_id") != "AuthenticAMD"
    lanes = 16 if avx512 else 8 if {"avx2", "fma"} <= flags else 4
    return {
        "model": info.get("model name", "unknown"),
        "ghz": float(info.get("cpu MHz", 0)) / 1000,
        "cores": usable_cores(),
        "lanes": lanes,
        "isa": ("AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE")
        + (" limited to AVX2" if limited and "avx512f" in flags else ""),
        "native_bfloat16": bool({"avx512_bf16", "amx_bf16"} & flags) and not limited,
    }


def nominal_peak_gflops(cpu: Optional[Dict[str, object]] = None) -> float:
    """cores x GHz x float32 lanes x FMA units x 2 (an FMA is two FLOPs), at the described clock."""
    cpu = cpu or cpu_description()
    return cpu["cores"] * cpu["ghz"] * cpu["lanes"] * FMA_UNITS * 2


def peak_gflops(cpu: Optional[Dict[str, object]] = None, measured: Iterable[float] = ()) -> Optional[float]:
    """The processor's float32 peak, or None where it cannot be known: no clock in its
    description, or a measured rate (GFLOP/s) above the nominal figure, which shows that the
    cores run faster than described (turbo clocks, more FMA units)."""
    nominal = nominal_peak_gflops(cpu)
    if nominal <= 0 or any(rate > nominal for rate in measured):
        return None
    return nominal


def percent_of(gflops: float, reference: Optional[float]) -> Optional[float]:
    """gflops as a percentage of reference, None where the reference is unknown."""
    return 100 * gflops / reference if reference else None


def format_percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.0f}%"


def matmul_rates(n: int = 4096, repeats: int = 5, torch: bool = True) -> Dict[str, float]:
    """GFLOP/s of an n x n float32 matrix product in TensorFlow, NumPy and (if installed) PyTorch."""
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    flops = 2 * n**3
    a = tf.random.uniform((n, n))
    matmul = tf.function(lambda x: tf.matmul(x, x))
    rates = {"tensorflow": flops / best_time(lambda: matmul(a).numpy(), repeats) / 1e9}
    b = np.random.default_rng(0).random((n, n), dtype=np.float32)
    rates["numpy"] = flops / best_time(lambda: b @ b, repeats) / 1e9
    if torch:
        try:
            import torch as pytorch  # noqa: PLC0415
        except ImportError:
            return rates
        c = pytorch.from_numpy(b)
        rates["pytorch"] = flops / best_time(lambda: c @ c, repeats) / 1e9
    return rates


def roofline_gflops(n: int = 4096) -> float:
    """The float32 GFLOP/s of an n x n tf.matmul (a quick yardstick for benchmarks of their own)."""
    return matmul_rates(n, torch=False)["tensorflow"]


def describe_peak(cpu: Dict[str, object], measured: Iterable[float] = ()) -> str:
    """The peak as a phrase: its figure, or why it is unknown."""
    measured = list(measured)
    peak, nominal = peak_gflops(cpu, measured), nominal_peak_gflops(cpu)
    if peak is not None:
        return f"peak {peak:.0f} GFLOP/s"
    if nominal <= 0:
        return "peak unknown (no clock in the CPU's description)"
    return (f"peak unknown (the nominal {nominal:.0f} GFLOP/s at the described {cpu['ghz']:.2f} GHz is below the measured "
            f"{max(measured):.0f}: the cores run faster than described)")


def describe(rates: Optional[Dict[str, float]] = None) -> str:
    """One line: the processor, its peak and the matrix rates, to print beside every figure."""
    cpu = cpu_description()
    line = (
        f"machine: {cpu['model']}, {cpu['cores']} cores at {cpu['ghz']:.2f} GHz, {cpu['isa']} "
        f"({cpu['lanes']} float32 lanes x {FMA_UNITS} FMA units), native bfloat16: {'yes' if cpu['native_bfloat16'] else 'no'}; "
        f"{describe_peak(cpu, (rates or {}).values())}; TensorFlow kernels: {kernel_family()}"
    )
    if rates:
        line += "; float32 matmul 4096: " + ", ".join(f"{name} {rate:.0f}" for name, rate in rates.items()) + " GFLOP/s"
    return line
