"""Cores counted where Python has no CPU affinity and under a container's quota; TensorFlow's
thread pools sized to them by every command."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from glcic_tf import cpu

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cgroups(tmp_path, monkeypatch):
    """An empty cgroup file system (no quota) for this process, in the root cgroup."""
    monkeypatch.setattr(cpu, "CGROUP_ROOT", str(tmp_path))
    monkeypatch.setattr(cpu, "_own_cgroups", lambda: {})
    return tmp_path


def _write(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cores_are_counted_on_a_system_without_sched_getaffinity(cgroups, monkeypatch):
    # macOS and Windows: os.sched_getaffinity does not exist.
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.delattr(os, "process_cpu_count", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert cpu.usable_cores() == 6
    monkeypatch.setattr(os, "process_cpu_count", lambda: 3, raising=False)  # Python 3.13: the process's own
    assert cpu.usable_cores() == 3
    monkeypatch.setattr(os, "process_cpu_count", lambda: None, raising=False)  # undeterminable
    assert cpu.usable_cores() == 1


def test_affinity_without_a_quota(cgroups, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    _write(cgroups / "cpu.max", "max 100000\n")
    assert cpu.cgroup_cpu_limit() is None and cpu.usable_cores() == 64


@pytest.mark.parametrize("files, cores", [
    ({"cpu.max": "200000 100000\n"}, 2),                          # cgroup v2: 2 CPUs of a 64-core host
    ({"cpu.max": "150000 100000\n"}, 2),                          # 1.5 CPUs: rounded up
    ({"cpu.max": "50000 100000\n"}, 1),                           # half a CPU: at least one
    ({"cpu.max": "max 100000\n", "job/cpu.max": "max 100000\n", "job/task/cpu.max": "300000 100000\n"}, 3),  # the process's own cgroup
    ({"cpu.max": "max 100000\n", "job/cpu.max": "100000 100000\n", "job/task/cpu.max": "max 100000\n"}, 1),  # a parent's quota applies
    ({"cpu/cpu.cfs_quota_us": "400000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4),  # cgroup v1 (a container: its root)
    ({"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 64),  # v1, no quota
    ({"cpu,cpuacct/cpu.cfs_quota_us": "250000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 3),  # v1, the combined mount
    ({"cpu/job/task/cpu.cfs_quota_us": "200000\n", "cpu/job/task/cpu.cfs_period_us": "100000\n"}, 2),  # v1, a systemd slice's own
    ({"cpu/job/cpu.cfs_quota_us": "100000\n", "cpu/job/cpu.cfs_period_us": "100000\n"}, 1),  # v1, its parent's
    ({"cpu.max": "garbage\n"}, 64),                               # unreadable: ignored
])
def test_a_cgroup_quota_limits_the_cores(cgroups, monkeypatch, files, cores):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(cpu, "_own_cgroups", lambda: {"": "job/task", "cpu": "job/task", "cpuacct": "job/task"})
    for name, text in files.items():
        _write(cgroups / name, text)
    assert cpu.usable_cores() == cores


def test_every_command_gives_tensorflow_the_quota_not_the_hosts_cores(tmp_path):
    # A fresh process (thread pools are fixed once TensorFlow starts), quota of 1 CPU.
    _write(tmp_path / "cpu.max", "100000 100000\n")
    script = textwrap.dedent(f"""
        import sys
        import tensorflow as tf
        from glcic_tf import commands, cpu
        cpu.CGROUP_ROOT, cpu._own_cgroups = {str(tmp_path)!r}, lambda: {{}}
        def main(argv):
            print("threads", tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads())
            print("sum", float(tf.reduce_sum(tf.ones([3]))))
        sys.argv = ["glcic-test"]
        commands.run(main, "test command")
    """)
    env = {key: value for key, value in os.environ.items() if not key.startswith("TF_NUM_")}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "threads 1 1" in done.stdout and "sum 3.0" in done.stdout


def test_the_process_cgroups_are_read_from_every_line_and_never_outside_the_root(tmp_path, monkeypatch):
    listing = tmp_path / "cgroup"
    monkeypatch.setattr(cpu, "PROC_SELF_CGROUP", str(listing))
    listing.write_text("12:memory:/docker/abc\n4:cpu,cpuacct:/system.slice/job.service\n0::/user.slice/task\n")
    assert cpu._own_cgroups() == {"memory": "docker/abc", "cpu": "system.slice/job.service", "cpuacct": "system.slice/job.service", "": "user.slice/task"}
    listing.write_text("0::/../../outside\n")  # a process outside its cgroup namespace's root
    assert cpu._own_cgroups() == {"": ""}
    listing.write_text("0::/\n")
    assert cpu._own_cgroups() == {"": ""}
    monkeypatch.setattr(cpu, "PROC_SELF_CGROUP", str(tmp_path / "missing"))  # no /proc: macOS, Windows
    assert cpu._own_cgroups() == {}
