"""The benchmarks' yardsticks: a peak is never below what the machine was measured doing."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import machine  # noqa: E402

# The AMD EPYC of the report: AVX-512 run as two 256-bit halves, 2.60 GHz as described.
EPYC = {"model": "AMD EPYC", "ghz": 2.60, "cores": 2, "lanes": 8, "isa": "AVX-512", "native_bfloat16": True}


def test_the_nominal_peak_is_cores_clock_lanes_fma_units_and_two_flops():
    assert machine.nominal_peak_gflops(EPYC) == 2 * 2.60 * 8 * machine.FMA_UNITS * 2  # 166.4


def test_a_measured_rate_above_the_nominal_peak_makes_the_peak_unknown_never_over_100_percent():
    assert machine.peak_gflops(EPYC, [150.0]) == machine.nominal_peak_gflops(EPYC)
    assert machine.peak_gflops(EPYC, [150.0, 212.0]) is None  # TensorFlow's matmul on that EPYC
    assert machine.percent_of(212.0, machine.peak_gflops(EPYC, [212.0])) is None
    assert machine.format_percent(None) == "-"
    assert "peak unknown" in machine.describe_peak(EPYC, [212.0]) and "212" in machine.describe_peak(EPYC, [212.0])
    assert machine.peak_gflops({**EPYC, "ghz": 0.0}) is None  # no clock in the description
    assert machine.describe_peak(EPYC, [100.0]) == "peak 166 GFLOP/s"
