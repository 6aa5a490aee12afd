"""The paper's training procedure (Algorithm 1): three phases of compiled steps, checkpointed.

Phase 1 (steps [0, T_C)): the completion network alone, hole MSE.
Phase 2 (steps [T_C, T_C + T_D)): the discriminators alone, BCE on real and completed images,
    with the completion network fixed (run as in phase 3, on each batch's BatchNorm statistics,
    with its moving statistics kept, so none of its variables change).
Phase 3 (steps [T_C + T_D, T_train)): each step updates the discriminators, then the
    completion network with MSE + alpha * GAN, both on the same batch.

Discriminators see the completion with the input's own pixels put back outside the hole, the
whole 256x256 image globally and the 128x128 box around the hole locally; real images are
seen with a random 128x128 box. Losses are in `glcic_tf.losses`.

Everything runs under a tf.distribute strategy (the default one on a single device). The
checkpoint holds both networks, both optimizers, the step and the phase. The input is one
global stream of numbered examples, a function of the seed alone (`glcic_tf.data`), so a
restarted run, on any number of workers, reads the images, crops and holes an uninterrupted run
would in the same steps, for folder and TFDS sources; with `deterministic` its weights are also
bit-identical. A resume with settings that change the computation is refused
(`check_resume_settings`). An update runs only when every replica's loss and gradients are
finite (`apply_update`).
"""

import contextlib
import dataclasses
import json
import os
import signal
import tempfile
import time
from typing import Callable, Dict, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from glcic_tf import architecture, data, losses, models, run_folder
from glcic_tf import validation as validation_lib
from glcic_tf.errors import UserError

# Paper, Training: T_C, T_D, T_train, alpha, batch size.
COMPLETION_STEPS = 90_000
DISCRIMINATOR_STEPS = 10_000
TOTAL_STEPS = 500_000
ALPHA = 0.0004
BATCH_SIZE = 96

# ADADELTA as in Torch's optim.adadelta, which the authors used: no learning-rate scaling
# (1.0), rho 0.9, epsilon 1e-6. Keras's defaults (0.001, 0.95, 1e-7) would train ~1000x slower.
OPTIMIZERS = {
    "adadelta": (keras.optimizers.Adadelta, {"learning_rate": 1.0, "rho": 0.9, "epsilon": 1e-6}),
    "adam": (keras.optimizers.Adam, {"learning_rate": 1e-4}),
}
STRATEGIES = ("default", "mirrored", "multi_worker")
MIXED_PRECISION_POLICIES = ("none", "mixed_bfloat16", "mixed_float16")  # Keras policies for training

_NOT_FINITE = "training loss or its gradients are NaN or infinite"


class TrainingDiverged(UserError):
    """A loss became NaN or infinite; the latest checkpoint is the last good one."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of a run; the defaults are the paper's."""

    source: str
    data_dir: Optional[str] = None
    batch_size: int = BATCH_SIZE
    completion_steps: int = COMPLETION_STEPS
    discriminator_steps: int = DISCRIMINATOR_STEPS
    total_steps: int = TOTAL_STEPS
    alpha: float = ALPHA
    optimizer: str = "adadelta"
    learning_rate: Optional[float] = None  # None: the optimizer's entry in OPTIMIZERS
    sizes: data.TrainingSizes = data.TrainingSizes()
    augmentations: data.Augmentations = data.Augmentations()  # none: the paper's protocol
    width: float = 1.0
    mean_pixel: Tuple[float, float, float] = models.PLACES2_MEAN_PIXEL
    seed: int = 0
    deterministic: bool = False
    shuffle_buffer: int = data.SHUFFLE_BUFFER
    checkpoint_every: int = 1000
    keep_checkpoints: int = 5
    log_every: int = 100
    summary_every: int = 100
    image_every: int = 1000
    init_checkpoint: Optional[str] = None
    mixed_precision: str = "none"
    validation: validation_lib.ValidationSettings = validation_lib.ValidationSettings()  # none: the paper had none

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {self.optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
        if self.mixed_precision not in MIXED_PRECISION_POLICIES:
            raise UserError(f"unknown mixed precision {self.mixed_precision!r}; choose one of {MIXED_PRECISION_POLICIES}")
        if self.mixed_precision == "mixed_bfloat16" and min(architecture.discriminator_last_conv_inputs(self.sizes.crop_size, self.sizes.local_size)) < 2:
            # TensorFlow 2.21's oneDNN bfloat16 filter gradient fills the kernel taps that see only
            # padding with garbage (1e37 and more: the update diverges at once); float32 gives 0.
            raise UserError(
                f"--mixed_precision=mixed_bfloat16 needs --crop_size above 32 and --local_size above 16 (here {self.sizes.crop_size} and "
                f"{self.sizes.local_size}): smaller, a discriminator's last convolution sees a 1x1 input, whose bfloat16 gradient "
                "TensorFlow's oneDNN kernels get wrong; use larger sizes or --mixed_precision=none"
            )
        if not 0 <= self.completion_steps <= self.completion_steps + self.discriminator_steps <= self.total_steps:
            raise UserError("need 0 <= completion_steps <= completion_steps + discriminator_steps <= total_steps")
        if min(self.batch_size, self.checkpoint_every, self.log_every, self.summary_every, self.image_every) < 1:
            raise UserError("batch size and every *_every interval must be positive")

    def phase_at(self, step: int) -> int:
        """The phase (1, 2 or 3) that step number `step` (counted from 0) belongs to."""
        if step < self.completion_steps:
            return 1
        return 2 if step < self.completion_steps + self.discriminator_steps else 3


def make_strategy(name: str) -> tf.distribute.Strategy:
    """default (one device), mirrored (this machine's devices) or multi_worker (TF_CONFIG)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")


def crop_patches(images, boxes, size: int) -> tf.Tensor:
    """The `size` x `size` patches of `images` (B, H, W, C) at the boxes' corners (B, [y, x, ...])."""
    rows = boxes[:, 0:1] + tf.range(size)
    cols = boxes[:, 1:2] + tf.range(size)
    patches = tf.gather(images, rows, axis=1, batch_dims=1)
    return tf.gather(patches, cols, axis=2, batch_dims=1)


def make_optimizer(name: str, learning_rate: Optional[float] = None, mixed_precision: str = "none"):
    """The optimizer `name` of OPTIMIZERS (its learning rate unless given), loss-scaled for float16."""
    cls, defaults = OPTIMIZERS[name]
    options = dict(defaults)
    if learning_rate is not None:
        options["learning_rate"] = learning_rate
    optimizer = cls(**options)
    if mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def apply_update(optimizer, tape, loss, variables) -> None:
    """One optimizer update from `loss` (recorded on `tape`), applied only if every replica agrees it is sound.

    Each replica checks its loss and its gradients, and the replicas agree (an all-reduce of the
    counts of failing replicas) before the optimizer changes anything: a NaN or infinite loss
    anywhere stops the step with an InvalidArgumentError naming _NOT_FINITE, and no replica
    updates (what the forward pass already did stays in memory: BatchNorm's moving statistics,
    and in phase 3 the discriminators' update; the run then stops without saving). Non-finite gradients do
    the same, except under float16 loss scaling (LossScaleOptimizer) while the scale is above 1,
    where they mean "scale too high": every replica's gradients are then made non-finite, so
    Keras's skip-and-lower-the-scale decision, which reads one replica's gradients before they
    are all-reduced, is the same for all. At a scale of 1 or less they are not an overflow of the
    scaling (Keras would halve it on to 0, and then apply 0 / 0): they stop the step as above.
    """
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    objective = loss
    if scaled:
        with tape:  # back on the tape: the scaling must be differentiated through
            objective = optimizer.scale_loss(loss)
    gradients = tape.gradient(objective, variables)
    local = tf.stack(
        [tf.reduce_all(tf.math.is_finite(loss)), tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients])]
    )
    failing = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(local, tf.float32))
    loss_finite, gradients_finite = failing[0] == 0, failing[1] == 0  # replicas whose loss / gradients are not finite
    if scaled:
        sound = loss_finite & (gradients_finite | (optimizer.dynamic_scale > 1.0))
    else:
        sound = loss_finite & gradients_finite
    check = tf.debugging.Assert(sound, [_NOT_FINITE, "loss finite on every replica:", loss_finite, "gradients finite:", gradients_finite])
    with tf.control_dependencies([check]):  # no update (nor the step count) can run before or without the check
        if scaled:
            gradients = [tf.where(gradients_finite, g, tf.constant(np.nan, g.dtype)) for g in gradients]
        else:
            gradients = [tf.identity(g) for g in gradients]
        optimizer.apply(gradients, variables)


def is_chief(strategy) -> bool:
    """Whether this process writes the run folder: the chief, or worker 0 of a cluster without one."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def _cluster_resolver(strategy):
    """The strategy's cluster when it spans several processes (TF_CONFIG), else None."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver if resolver is not None and resolver.cluster_spec().jobs else None


class _StopAgreed(Exception):
    """Every worker has saved at the step agreed after a stop request; the run returns."""


def _raise_stop_agreed():
    raise _StopAgreed()


@contextlib.contextmanager
def stop_on_signals(signals=(signal.SIGTERM, signal.SIGINT)):
    """Within the block, SIGTERM/SIGINT set the returned flag instead of killing the process."""
    requested = {"signal": None}

    def handler(number, _frame):
        requested["signal"] = signal.Signals(number).name

    previous = {number: signal.signal(number, handler) for number in signals}
    try:
        yield requested
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


class Trainer:
    """Builds the networks, optimizers, input and checkpoint of a run, and runs its steps."""

    def __init__(self, config: Config, model_dir: str, strategy: Optional[tf.distribute.Strategy] = None):
        self.config = config
        self.model_dir = model_dir
        self.strategy = strategy or tf.distribute.get_strategy()
        self.is_chief = is_chief(self.strategy)
        if self.is_chief:
            run_folder.check_folder(model_dir, "--model_dir")
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(config.seed)
        self._build_networks()
        self.checkpoint = tf.train.Checkpoint(
            step=self.step,
            phase=self.phase,
            completion=self.completion,
            discriminator=self.discriminator,
            completion_optimizer=self.completion_optimizer,
            discriminator_optimizer=self.discriminator_optimizer,
        )
        self.restored_from = self._restore()
        self.manager = self._checkpoint_manager()
        self._stop_reason: Callable[[], Optional[str]] = lambda: None  # set by run()
        self._preemption = self._preemption_handler()
        self.iterator = iter(self._input())
        self.validator = self._validator()
        self._steps = {phase: self.compiled_step(phase) for phase in (1, 2, 3)}

    # --- setup ---------------------------------------------------------------------------

    def _build_networks(self) -> None:
        """The two networks, their optimizers (with their slots), the step and the phase, in the
        strategy's scope and the run's mixed-precision policy."""
        config = self.config
        keras.mixed_precision.set_global_policy("float32" if config.mixed_precision == "none" else config.mixed_precision)
        with self.strategy.scope():
            self.completion = models.completion_network(config.width)
            self.discriminator = models.discriminator(config.sizes.crop_size, config.sizes.local_size, config.width)
            self.completion_optimizer = make_optimizer(config.optimizer, config.learning_rate, config.mixed_precision)
            self.discriminator_optimizer = make_optimizer(config.optimizer, config.learning_rate, config.mixed_precision)
            # The optimizers' slots now, in the scope: a first apply inside strategy.run fails (keras-team/keras#23085).
            self.completion_optimizer.build(self.completion.trainable_variables)
            self.discriminator_optimizer.build(self.discriminator.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.phase = tf.Variable(1, dtype=tf.int64, trainable=False, name="phase")
        keras.mixed_precision.set_global_policy("float32")

    def _checkpoint_manager(self) -> tf.train.CheckpointManager:
        """Under MultiWorkerMirroredStrategy every worker must save (saving can take part in
        collectives), but only the chief writes into model_dir; the others write a throwaway copy."""
        if self.is_chief:
            return tf.train.CheckpointManager(self.checkpoint, self.model_dir, max_to_keep=self.config.keep_checkpoints)
        self._scratch = tempfile.TemporaryDirectory(prefix="glcic_worker_checkpoint_")
        return tf.train.CheckpointManager(self.checkpoint, self._scratch.name, max_to_keep=1)

    def _input(self):
        """The run's input, continuing where the restored step left it (see data.training_dataset)."""
        config = self.config
        return data.distributed_training_dataset(
            self.strategy,
            config.batch_size,
            start_step=int(self.step.numpy()),
            source=config.source,
            seed=config.seed,
            data_dir=config.data_dir,
            sizes=config.sizes,
            shuffle_buffer=config.shuffle_buffer,
            augmentations=config.augmentations,
        )

    def _validator(self) -> Optional[validation_lib.Validator]:
        """Only the chief validates (the others go on to the next step and wait for it there)."""
        if not (self.is_chief and self.config.validation.enabled):
            return None
        return validation_lib.Validator(self.config.validation, self.model_dir, self.completion, run_settings(self.config), int(self.step.numpy()))

    def _restore(self) -> Optional[str]:
        """Every worker restores the latest checkpoint of `model_dir` (only the chief writes there).

        Strictly: a checkpoint that does not hold every variable of this run (another width,
        another glcic_tf version) is a one-line error, never a run with some weights at random.
        """
        latest = tf.train.latest_checkpoint(self.model_dir)
        if latest:
            run_folder.read_strictly(
                self.checkpoint,
                latest,
                "this run's networks and optimizers",
                "; to start from another run's completion network, pass it as --init_checkpoint with a new --model_dir",
            )
            logging.info("resuming from %s at step %d (phase %d)", latest, self.step.numpy(), self.phase.numpy())
            # The optimizers' learning rate is a checkpointed variable: the restore put the saved
            # one back. The run's own setting wins (it differs only with --allow_changed_settings).
            rate = self.config.learning_rate
            if rate is None:
                rate = OPTIMIZERS[self.config.optimizer][1]["learning_rate"]
            for optimizer in (self.completion_optimizer, self.discriminator_optimizer):
                optimizer.learning_rate.assign(rate)
        elif self.config.init_checkpoint:
            path = run_folder.resolve(self.config.init_checkpoint)
            run_folder.read_completion_network(self.completion, path)
            logging.info("completion network initialised from %s; discriminators start anew", path)
        return latest

    def _preemption_handler(self):
        """With several workers, TensorFlow's PreemptionCheckpointHandler stops them together.

        A stop request on any worker (SIGTERM or SIGINT, seen by `run`'s `stop_requested`) is
        shared through the cluster's coordination service; every worker then saves at the same
        step (with `save`, so only the chief writes into model_dir) and `run` returns. A worker
        that stopped alone would leave the others waiting in an all-reduce. One process needs
        none of this: `run` checks `stop_requested` itself.
        """
        resolver = _cluster_resolver(self.strategy)
        if resolver is None:
            return None
        termination = tf.distribute.experimental.TerminationConfig(
            termination_watcher_fn=lambda: self._stop_reason() is not None,
            exit_fn=_raise_stop_agreed,
            save_fn=lambda *args, **kwargs: self.save(),
        )
        # The handler restores the latest checkpoint of the folder it is given (the one just
        # read strictly, on every worker alike); it writes only through save_fn.
        reader = tf.train.CheckpointManager(self.checkpoint, self.model_dir, max_to_keep=None)
        return tf.distribute.experimental.PreemptionCheckpointHandler(resolver, reader, termination_config=termination)

    # --- the three steps -----------------------------------------------------------------

    def compiled_step(self, phase: int, jit_compile: bool = False) -> Callable:
        """One step of `phase` (Algorithm 1), compiled: the next batch of an iterator, the phase's
        step on every replica, the metrics summed over the replicas. `jit_compile` compiles each
        replica's step with XLA: benchmarks/training.py's trial only, never a run (XLA drops
        tf.debugging.Assert, so apply_update's finite check would not stop a NaN step, nor its
        checkpoint, and under MirroredStrategy it fails to reach the other replicas' variables)."""
        replica_step = {1: self._phase1, 2: self._phase2, 3: self._phase3}[phase]
        if jit_compile:
            replica_step = tf.function(replica_step, jit_compile=True, autograph=False)

        def step(iterator):
            batch = next(iterator)
            per_replica = self.strategy.run(replica_step, args=(batch,))
            return {
                name: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                for name, value in per_replica.items()
            }

        # No AutoGraph: the steps have no tensor-dependent Python control flow, and tracing
        # then never re-reads source files (which a code edit during a run would shift).
        return tf.function(step, autograph=False)

    def _mean(self, per_example):
        return tf.nn.compute_average_loss(per_example, global_batch_size=self.config.batch_size)

    def _apply(self, optimizer, tape, loss, model):
        apply_update(optimizer, tape, loss, model.trainable_variables)

    def complete(self, batch, training: bool):
        """The completion with the input's pixels put back outside the hole."""
        inputs = models.completion_input(batch["image"], batch["mask"], self.config.mean_pixel)
        completed = self.completion(inputs, training=training)
        return completed, models.composite(completed, batch["image"], batch["mask"])

    def _discriminate(self, images, boxes):
        """The discriminators' logits for whole images and their local boxes."""
        local = crop_patches(images, boxes, self.config.sizes.local_size)
        return self.discriminator([images, local], training=True)

    def _discriminator_update(self, batch, fake) -> Dict[str, tf.Tensor]:
        fake = tf.stop_gradient(fake)
        with tf.GradientTape() as tape:
            real_logit = self._discriminate(batch["image"], batch["real_local_box"])
            fake_logit = self._discriminate(fake, batch["local_box"])
            loss = self._mean(losses.discriminator_loss(real_logit, fake_logit))
        self._apply(self.discriminator_optimizer, tape, loss, self.discriminator)
        return {
            "discriminator_loss": loss,
            "d_real_mean": self._mean(tf.reshape(models.real_probability(real_logit), [-1])),
            "d_fake_mean": self._mean(tf.reshape(models.real_probability(fake_logit), [-1])),
        }

    def _phase1(self, batch):
        with tf.GradientTape() as tape:
            completed, _ = self.complete(batch, training=True)
            mse = self._mean(losses.hole_mse(completed, batch["image"], batch["mask"]))
        self._apply(self.completion_optimizer, tape, mse, self.completion)
        return {"mse": mse}

    def _phase2(self, batch):
        # The completion network as phase 3 runs it (BatchNorm on the batch's statistics), so the
        # discriminators learn on the completions they will judge next; its moving statistics
        # are put back, so none of its variables change (benchmarks/phase2_batchnorm.py: the two
        # modes' hole pixels differ by 0.055 after phase 1, by 0.27 on a new data set).
        statistics = self.completion.non_trainable_variables
        kept = [tf.identity(variable) for variable in statistics]
        with tf.control_dependencies(kept):
            _, fake = self.complete(batch, training=True)
        with tf.control_dependencies([fake]):
            restored = [variable.assign(value) for variable, value in zip(statistics, kept)]
        with tf.control_dependencies(restored):
            return self._discriminator_update(batch, tf.identity(fake))

    def _phase3(self, batch):
        with tf.GradientTape() as tape:
            completed, fake = self.complete(batch, training=True)
            with tape.stop_recording():
                metrics = self._discriminator_update(batch, fake)
            mse = self._mean(losses.hole_mse(completed, batch["image"], batch["mask"]))
            gan = self._mean(losses.completion_gan_loss(self._discriminate(fake, batch["local_box"])))
            joint = losses.joint_loss(mse, gan, self.config.alpha)
        self._apply(self.completion_optimizer, tape, joint, self.completion)
        return {"mse": mse, "gan_loss": gan, "joint_loss": joint, **metrics}

    # --- the loop ------------------------------------------------------------------------

    def run_step(self, phase: int, iterator=None) -> Dict[str, tf.Tensor]:
        """One compiled step of `phase` on the next batch of `iterator` (default: the run's input)."""
        return self._steps[phase](iterator or self.iterator)

    def _run_step_or_stop(self, phase: int) -> Dict[str, tf.Tensor]:
        """One step; with several workers, first a save and _StopAgreed if a stop was agreed."""
        if self._preemption is None:
            return self.run_step(phase)
        # The handler also reports a failed step to every worker, so none waits in a collective.
        return self._preemption.run(self.run_step, phase)

    def _validate(self, step: int, phase: int) -> None:
        """The chief's validation; one that fails is logged and training goes on."""
        try:
            self.validator.validate(step, phase)
        except Exception as error:  # noqa: BLE001 (a month-long run does not stop for its yardstick)
            logging.exception("validation at step %d failed, training goes on: %s", step, error)

    def save(self) -> Optional[str]:
        step = int(self.step.numpy())
        if self.manager.latest_checkpoint and self.manager.latest_checkpoint.endswith(f"-{step}"):
            return self.manager.latest_checkpoint
        path = self.manager.save(checkpoint_number=step)
        logging.info("saved checkpoint %s", path)
        return path

    def run(self, until_step: Optional[int] = None, stop_requested: Callable[[], Optional[str]] = lambda: None) -> Dict[str, float]:
        """Algorithm 1 from the restored step up to `until_step` (default: total_steps) or a stop
        request; returns the last metrics.

        Checkpoints every `checkpoint_every` steps and when it returns; with a validation source,
        validates every `validation.every` steps and at the last step (glcic_tf.validation). A NaN or infinite loss or
        gradient (on any replica) raises TrainingDiverged before that update is applied and
        without saving, so the latest checkpoint stays the last good one (see apply_update).
        """
        config = self.config
        until_step = min(until_step or config.total_steps, config.total_steps)
        self._stop_reason = stop_requested
        step = int(self.step.numpy())
        with _RunLog(self, until_step) as log:
            while step < until_step and not self._stopped_alone(step):
                # Phase 1: the completion network on the hole MSE; phase 2: the discriminators;
                # phase 3: the discriminators, then the completion network on MSE + alpha * GAN.
                phase = config.phase_at(step)
                values = self._step_or_agreed_stop(phase, step)
                if values is None:
                    break
                step += 1
                self.step.assign(step)
                self.phase.assign(config.phase_at(step) if step < config.total_steps else phase)
                log.after_step(step, phase, values)
                self._save_and_validate(step, phase)
            self.save()
        return log.metrics

    def _stopped_alone(self, step: int) -> bool:
        """Whether this one process was asked to stop (several workers agree through _preemption)."""
        reason = self._stop_reason()
        if reason and self._preemption is None:
            logging.info("%s received at step %d: saving and stopping", reason, step)
            return True
        return False

    def _step_or_agreed_stop(self, phase: int, step: int) -> Optional[Dict[str, tf.Tensor]]:
        """The step's metrics; None once every worker agreed to stop (and saved)."""
        try:
            return self._run_step_or_stop(phase)
        except _StopAgreed:
            reason = self._stop_reason()
            source = f"{reason} received" if reason else "another worker was asked to stop"
            logging.info("%s: every worker saved at step %d; stopping", source, step)
            return None
        except tf.errors.InvalidArgumentError as error:
            if _NOT_FINITE not in error.message:
                raise
            raise TrainingDiverged(
                f"the phase {phase} loss or its gradients became NaN or infinite at step {step}, before the update "
                f"was applied; nothing was saved after it, "
                f"so the latest checkpoint ({self.manager.latest_checkpoint or 'none'}) is the last good one: "
                f"lower the learning rate or check the data"
            ) from None

    def _save_and_validate(self, step: int, phase: int) -> None:
        """A validation step is a checkpoint step too, on every worker (saving may take part in
        collectives): a failing validation loses no steps, and the best is never ahead of the
        run's latest checkpoint."""
        config = self.config
        validating = config.validation.enabled and (step % config.validation.every == 0 or step == config.total_steps)
        if step % config.checkpoint_every == 0 or validating:
            self.save()
        if validating and self.validator:
            self._validate(step, phase)

    def preview_batch(self):
        """Four fixed examples, the same at every image summary, to watch one completion improve."""
        dataset = data.training_dataset(self.config.source, 4, self.config.seed + 1, self.config.data_dir, self.config.sizes)
        return next(iter(dataset))


class _RunLog:
    """What a run reports as it goes: the console's progress line every `log_every` steps,
    TensorBoard's scalars every `summary_every` and the preview every `image_every` (the chief's
    only), the last metrics."""

    def __init__(self, trainer: Trainer, until_step: int):
        self.trainer, self.config, self.until_step = trainer, trainer.config, until_step
        chief = trainer.is_chief
        self.writer = tf.summary.create_file_writer(os.path.join(trainer.model_dir, "train")) if chief else tf.summary.create_noop_writer()
        self.preview = trainer.preview_batch() if chief else None
        self.clock = _Throughput(self.config.batch_size)
        self.metrics: Dict[str, float] = {}

    def __enter__(self):
        self._default = self.writer.as_default()
        self._default.__enter__()
        return self

    def __exit__(self, *exception):
        self._default.__exit__(*exception)
        self.writer.flush()
        return False

    def after_step(self, step: int, phase: int, values: Dict[str, tf.Tensor]) -> None:
        config, last = self.config, step == self.until_step
        self.clock.tick()
        if step % config.summary_every == 0 or step % config.log_every == 0 or last:
            self.metrics = {name: float(value) for name, value in values.items()}
            rate = self.clock.rate()
            if step % config.summary_every == 0:
                for name, value in self.metrics.items():
                    tf.summary.scalar(f"phase{phase}/{name}", value, step=step)
                tf.summary.scalar("images_per_second", rate, step=step)
                tf.summary.scalar("phase", phase, step=step)
            if step % config.log_every == 0 or last:
                logging.info("%s", _progress_line(step, phase, config.total_steps, self.metrics, rate, config.batch_size))
        if self.preview is not None and (step % config.image_every == 0 or last):
            tf.summary.image("input | completion | target", preview_grid(self.trainer, self.preview), step=step)


def preview_grid(trainer: Trainer, batch) -> tf.Tensor:
    """One image, a row per example: input with the hole filled | completion | target."""
    _, completion = trainer.complete(batch, training=False)
    image, mask = batch["image"], batch["mask"]
    hole_filled = image * (1.0 - mask) + mask * tf.constant(trainer.config.mean_pixel, tf.float32)
    rows = tf.concat([hole_filled, completion, image], axis=2)  # (B, H, 3W, 3)
    return tf.reshape(rows, [1, -1, rows.shape[2], 3])


class _Throughput:
    """Images per second over the steps since the previous reading."""

    def __init__(self, batch_size):
        self.batch_size = batch_size
        self.start, self.steps, self.last_rate = time.perf_counter(), 0, 0.0

    def tick(self):
        self.steps += 1

    def rate(self) -> float:
        now = time.perf_counter()
        if self.steps:
            self.last_rate = self.steps * self.batch_size / max(now - self.start, 1e-9)
        self.start, self.steps = now, 0
        return self.last_rate


def _progress_line(step, phase, total_steps, metrics, rate, batch_size) -> str:
    seconds_left = (total_steps - step) * batch_size / rate if rate else float("nan")
    losses_text = " ".join(f"{name} {value:.4g}" for name, value in sorted(metrics.items()))
    return f"step {step}/{total_steps} phase {phase} | {losses_text} | {rate:.1f} img/s | {_duration(seconds_left)} left"


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if days else f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"


def _plain(config: Config) -> dict:
    """`config` as JSON's types (tuples become lists), as config.json holds it."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def run_settings(config: Config) -> dict:
    """What config.json holds for `config`: its settings, and the data's fingerprint (run_folder)."""
    return {**_plain(config), "data": data.fingerprint(config.source, config.data_dir)}


# Settings a resumed run may change: where the data are kept, how often it logs and saves, how
# long it runs, op determinism, how it validates, and what starts a run that has not started. Every other setting
# changes what the run computes (batch size: the data position; phase lengths: the phase
# boundaries; seed, source, sizes, augmentations: the data; optimizer, width, precision...).
CHANGEABLE_ON_RESUME = frozenset(
    {"data_dir", "total_steps", "checkpoint_every", "keep_checkpoints", "log_every", "summary_every", "image_every", "init_checkpoint", "deterministic", "validation"}
)


def _flat_settings(settings: dict, prefix: str = "") -> Dict[str, object]:
    flat = {}
    for name, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat_settings(value, f"{prefix}{name}."))
        else:
            flat[prefix + name] = value
    return flat


def comparable_settings(settings: dict) -> Dict[str, object]:
    """A config.json's settings, flat ("sizes.hole_range"), with what a setting's absence or
    spelling leaves implied made explicit: a key an older version did not write has the default
    of the code that wrote it (a setting is added with the behaviour before it as its default),
    and an unset learning rate is the optimizer's own."""
    flat = _flat_settings(_plain(Config(source="")))
    flat.update(_flat_settings(settings))
    if flat.get("learning_rate") is None and flat.get("optimizer") in OPTIMIZERS:
        flat["learning_rate"] = OPTIMIZERS[flat["optimizer"]][1]["learning_rate"]
    return flat


def changed_settings(config: Config, model_dir: str) -> list:
    """'name: then -> now' for each setting that changes what the run computes and differs from
    the run in `model_dir` (run_folder.changed_settings); empty when there is no run there."""
    return run_folder.changed_settings(model_dir, run_settings(config), comparable_settings, CHANGEABLE_ON_RESUME)


def check_resume_settings(config: Config, model_dir: str, allow_changes: bool = False) -> list:
    """Refuses (UserError, one line naming each difference) to resume the run in `model_dir` with
    settings that change what it computes, unless `allow_changes`; returns the differences."""
    changes = changed_settings(config, model_dir)
    if changes and not allow_changes:
        raise UserError(
            f"--model_dir {model_dir} holds a run with other settings ({'; '.join(changes)}): use the run's own "
            f"settings (its flags.txt), a new --model_dir, or --allow_changed_settings to resume with these"
        )
    if changes:
        logging.warning("resuming %s with changed settings, as --allow_changed_settings asks: %s", model_dir, "; ".join(changes))
    return changes
