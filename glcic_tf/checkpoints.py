"""Run folders: finding their checkpoint, checking they can be written, and reading checkpoints
strictly (every variable of what is read, a whole run or a completion network, must be there).

`tf.train.Checkpoint.read(...).expect_partial()` alone would leave unmatched weights at their
random initial values without a word, so a checkpoint of another architecture (another glcic_tf
version, another width) would load "successfully" and complete images with noise.
"""

import os
import tempfile

import tensorflow as tf

from glcic_tf.errors import UserError


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
