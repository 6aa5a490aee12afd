"""A run folder (train.py's --model_dir): its checkpoints and the files that describe the run.

- Checkpoints: the latest one found (`resolve`), read strictly (`read_strictly`: every variable
  of what is read, a whole run or a completion network, must be there;
  `tf.train.Checkpoint.read(...).expect_partial()` alone would leave unmatched weights at their
  random initial values without a word, so a checkpoint of another architecture would load
  "successfully" and complete images with noise), the folder checked writable first.
- `config.json`: the settings of the latest start (the width and mean pixel that completers
  read) and a fingerprint of the data, written by `write_config` only; `flags.txt`: the flags of
  the latest start; `settings_history.jsonl`: one line per start (time, step, replicas, what
  changed, settings).
- `best/`: the best validated checkpoint, a run folder of its own: the completion network with
  the step, score and metric it was chosen by, its own `config.json`, and `validation.json`
  (its scores, for people).

Resuming compares the stored settings with the new ones (`changed_settings`); which settings may
change is the trainer's to say (`train_lib.CHANGEABLE_ON_RESUME`). Validation's own files
(`validation.csv`, the TensorBoard runs) are glcic_tf.validation's.
"""

import json
import os
import tempfile
import time
from typing import Callable, Dict, Iterable, Optional, Tuple

import tensorflow as tf
from absl import logging

from glcic_tf.errors import UserError

CONFIG = "config.json"
FLAGS_TEXT = "flags.txt"
SETTINGS_HISTORY = "settings_history.jsonl"
BEST_FOLDER = "best"
BEST_DESCRIPTION = "validation.json"


# --- Checkpoints ------------------------------------------------------------------------


def resolve(path: str) -> str:
    """A checkpoint prefix from a run folder (its latest checkpoint) or a checkpoint prefix."""
    if tf.io.gfile.isdir(path):
        checkpoint = tf.train.latest_checkpoint(path)
        if checkpoint is None:
            raise UserError(f"{path} holds no checkpoint (expected what train.py writes into --model_dir)")
        return checkpoint
    if not tf.io.gfile.exists(path + ".index"):
        raise UserError(f"{path} is neither a run folder nor a checkpoint (no {os.path.basename(path)}.index)")
    return path


def check_folder(path: str, flag: str) -> None:
    """Fails before any compute if `path` (given as `flag`) cannot be created and written as a folder."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{flag} {path} is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UserError(f"{flag} {path} cannot be written: {error.strerror}") from None


def read_strictly(checkpoint: tf.train.Checkpoint, path: str, what: str, hint: str = "") -> None:
    """Reads `path` into `checkpoint`; every variable `checkpoint` tracks must be found there.

    Values in the file that `checkpoint` does not track are ignored. A missing variable, or one
    of another shape, is a one-line UserError naming `what` was expected.
    """
    try:
        status = checkpoint.read(path)
        status.expect_partial().assert_existing_objects_matched()
    except (tf.errors.NotFoundError, ValueError, tf.errors.InvalidArgumentError) as error:
        raise UserError(f"cannot load {what} from {path}: {str(error).splitlines()[0]}") from None
    except AssertionError:
        raise UserError(
            f"{path} does not hold {what} (a checkpoint of another architecture or width, or written "
            f"by an older glcic_tf whose layers differ){hint}"
        ) from None


def read_completion_network(network, checkpoint: str, **others) -> None:
    """Loads `network` (and any other trackables given, e.g. step=) from `checkpoint`.

    Anything else the checkpoint holds (discriminators, optimizers) is ignored; a weight of
    `network` that the checkpoint lacks, or of another shape, is a one-line UserError.
    """
    read_strictly(tf.train.Checkpoint(completion=network, **others), checkpoint, "this completion network's weights")


# --- The run's settings --------------------------------------------------------------------


def write_json(path: str, value) -> None:
    """`value` as JSON at `path`, written under another name and renamed: never half a file."""
    with open(path + ".tmp", "w") as file:
        json.dump(value, file, indent=2)
    os.replace(path + ".tmp", path)


def write_config(model_dir: str, settings: Dict) -> None:
    """The run's config.json (the one writer of it): `settings` are a train_lib.Config as a
    dict, with the data's fingerprint under "data" where known."""
    write_json(os.path.join(model_dir, CONFIG), settings)


def read_config(model_dir: str) -> Optional[Dict]:
    """The run's config.json, or None if there is none."""
    path = os.path.join(model_dir, CONFIG)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as file:
        return json.load(file)


def record_start(model_dir: str, settings: Dict, step: int, flags_text: str = "", replicas: int = 1, changes: Iterable[str] = ()) -> None:
    """The settings of this start: config.json and flags.txt (the current ones) and one line more
    in settings_history.jsonl, so a run resumed with changed settings keeps what each start used."""
    write_config(model_dir, settings)
    if flags_text:
        with open(os.path.join(model_dir, FLAGS_TEXT), "w") as file:
            file.write(flags_text)
    entry = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "step": step,
        "replicas": replicas,
        "changed": list(changes),
        "config": {name: value for name, value in settings.items() if name != "data"},
        "flags": flags_text,
    }
    with open(os.path.join(model_dir, SETTINGS_HISTORY), "a") as file:
        file.write(json.dumps(entry) + "\n")


def changed_settings(model_dir: str, settings: Dict, comparable: Callable[[Dict], Dict], changeable: Iterable[str]) -> list:
    """'name: then -> now' for each setting that differs from the run in `model_dir` (its
    config.json) and is not under one of the `changeable` names; empty when there is no run to
    resume there. `comparable` turns a config.json's settings into flat ones ("sizes.hole_range")
    with what their absence or spelling leaves implied made explicit. A folder's path is compared
    through the data's fingerprint when both sides have one. A checkpoint without config.json is
    one difference: nothing to check it against."""
    if not tf.train.latest_checkpoint(model_dir):
        return []
    stored = read_config(model_dir)
    if stored is None:
        return [f"{CONFIG}: missing (the checkpoint's settings are unknown)"]
    then, now = comparable(stored), comparable(settings)
    if then.get("data.kind") == "folder" and now.get("data.kind") == "folder":  # a moved folder is the same data if its files are
        del then["source"], now["source"]
    changeable = set(changeable)
    return [
        f"{name}: {json.dumps(then.get(name))} -> {json.dumps(now.get(name))}"
        for name in sorted(then.keys() | now.keys())
        if name.split(".")[0] not in changeable and then.get(name) != now.get(name)
        and not (name.startswith("data.") and name not in then)  # a run written before fingerprints
    ]


# --- The best validated checkpoint -------------------------------------------------------


def best_path(model_dir: str) -> str:
    """The folder of a run's best validated checkpoint (a run folder of its own)."""
    return os.path.join(model_dir, BEST_FOLDER)


def _best_checkpoint(network, step, value, metric) -> tf.train.Checkpoint:
    return tf.train.Checkpoint(completion=network, step=step, value=value, metric=metric)


def read_best(model_dir: str) -> Optional[Tuple[int, float, str]]:
    """(step, value, metric) of the run's best checkpoint, read from the checkpoint itself (written
    atomically); None if there is none. A best/ that train.py did not write is a UserError."""
    latest = tf.train.latest_checkpoint(best_path(model_dir))
    if not latest:
        return None
    try:
        reader = tf.train.load_checkpoint(latest)
        metric = reader.get_tensor("metric/.ATTRIBUTES/VARIABLE_VALUE").decode()
        step = int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))
        value = float(reader.get_tensor("value/.ATTRIBUTES/VARIABLE_VALUE"))
    except (tf.errors.OpError, ValueError) as error:
        raise UserError(
            f"{latest} is not a best checkpoint that train.py wrote (no score in it: {str(error).splitlines()[0]}); "
            f"move {best_path(model_dir)} away and start again"
        ) from None
    return step, value, metric


def repair_best_description(model_dir: str, step: int, value: float, metric: str) -> bool:
    """Writes best/validation.json again if it describes another step than the best checkpoint's
    (a crash between the two); returns whether it did."""
    description = os.path.join(best_path(model_dir), BEST_DESCRIPTION)
    try:
        with open(description) as file:
            described = json.load(file).get("step")
    except (OSError, ValueError):
        described = None
    if described == step:
        return False
    logging.info("%s described another step: written again for step %d", description, step)
    write_json(description, {"step": step, "metric": metric, "value": value, "metrics": {metric: value}})
    return True


def save_best(model_dir: str, network, step: int, metric: str, means: Dict[str, float], run_settings: Dict, validation_settings: Dict) -> str:
    """`network` as the run's best checkpoint, chosen at `step` by `metric` (its value in
    `means`); returns the checkpoint's path. config.json goes first: what loads best/ reads the
    width from it."""
    folder = best_path(model_dir)
    os.makedirs(folder, exist_ok=True)
    value = means[metric]
    checkpoint = _best_checkpoint(network, tf.Variable(step, dtype=tf.int64), tf.Variable(value, dtype=tf.float64), tf.Variable(metric))
    write_config(folder, run_settings)
    path = tf.train.CheckpointManager(checkpoint, folder, max_to_keep=1).save(checkpoint_number=step)
    write_json(
        os.path.join(folder, BEST_DESCRIPTION),
        {"step": step, "metric": metric, "value": value, "metrics": means, "settings": validation_settings},
    )
    return path
