"""Shared test setup: quiet TensorFlow, two logical CPUs for tf.distribute, sample photographs."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The `sample:` sources' cache, this process's own (and its subprocesses'): the user's
# ~/.cache is left alone, and parallel test processes do not share one.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="glcic_tests_cache_")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], True)

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Generated-input tests (fuzz_test.py): a short derandomized run in the suite, the same inputs
# on every run; a long random one with --hypothesis-profile=fuzz. Their fixtures span a whole run
# on purpose (a memory bound over all examples), hence the health check left out.
_FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("suite", max_examples=300, derandomize=True, database=None, **_FUZZ)
settings.register_profile("fuzz", max_examples=3000, **_FUZZ)
settings.load_profile("suite")

# Two logical CPU devices, so MirroredStrategy tests have two replicas on a one-CPU machine.
# This must happen before TensorFlow initialises its devices, hence here.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture(scope="session")
def sample_folder(tmp_path_factory):
    """glcic_tf.sample_data written once: <folder>/train and <folder>/test."""
    from glcic_tf import sample_data

    folder = tmp_path_factory.mktemp("sample_data")
    sample_data.write_sample_data(str(folder))
    return folder


@pytest.fixture(scope="session")
def trained_run(sample_folder, tmp_path_factory):
    """A train.py-style run folder (checkpoint + config.json) of a tiny network, 3 phase-1 steps."""
    import tiny
    from glcic_tf import run_folder, train_lib

    folder = tmp_path_factory.mktemp("trained_run")
    config = tiny.config(f"folder:{sample_folder}/train", completion_steps=3, discriminator_steps=0, total_steps=3)
    train_lib.Trainer(config, str(folder)).run()
    run_folder.write_config(str(folder), train_lib.run_settings(config))
    return folder


@pytest.fixture(scope="session")
def export_base(trained_run, tmp_path_factory):
    """export.py's layout of the trained run: versions 1 and 3 (the highest is served)."""
    from glcic_tf import completers, export_lib

    network, mean_pixel, _ = completers.load_completion_network(str(trained_run))
    base = tmp_path_factory.mktemp("served")
    export_lib.export_saved_model(network, mean_pixel, str(base), 1)
    export_lib.export_saved_model(network, mean_pixel, str(base), 3)
    return base


@pytest.fixture(scope="session")
def two_replicas():
    """One MirroredStrategy over the two logical CPUs for the whole session: a second one in the
    same process would reuse its collective keys, and collectives of the two then collide."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
