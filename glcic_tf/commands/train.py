r"""Train the completion network and the discriminators with the paper's three phases.

    python train.py --flagfile=places2.flags --model_dir=runs/places2
    python train.py --flagfile=demo.flags --model_dir=/tmp/demo      # minutes on a CPU
    glcic-train ...  # the same command, as pip installs it (any folder)

Every default is the paper's. Starting again with the same --model_dir continues at the exact
step and phase, on any number of workers; settings that would change what the run computes are
refused unless --allow_changed_settings. SIGTERM or Ctrl-C saves a checkpoint and exits with status 0.
"""

from absl import flags, logging

from glcic_tf import commands, data, masks, metrics, models, run_folder, train_lib, validation
from glcic_tf.errors import UserError, one_line_errors

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "Folder for checkpoints, TensorBoard logs and the run's settings.")
flags.DEFINE_string("source", None, "Training images: tfds:NAME[:SPLIT], folder:PATH or sample:train.")
flags.DEFINE_string("data_dir", None, "Where tensorflow-datasets keeps prepared data sets (TFDS's default if unset).")
# Paper, Algorithm 1 and Training.
flags.DEFINE_integer("batch_size", train_lib.BATCH_SIZE, "Global batch size, split across replicas.")
flags.DEFINE_integer("completion_steps", train_lib.COMPLETION_STEPS, "T_C: phase 1 steps (completion network, MSE).")
flags.DEFINE_integer("discriminator_steps", train_lib.DISCRIMINATOR_STEPS, "T_D: phase 2 steps (discriminators only).")
flags.DEFINE_integer("total_steps", train_lib.TOTAL_STEPS, "T_train: all steps, phase 3 being the rest.")
flags.DEFINE_float("alpha", train_lib.ALPHA, "Weight of the GAN loss in the completion network's joint loss.")
flags.DEFINE_enum("optimizer", "adadelta", sorted(train_lib.OPTIMIZERS), "Optimizer of both networks.")
flags.DEFINE_float("learning_rate", None, "Learning rate; unset: 1.0 for adadelta (as Torch's), 1e-4 for adam.")
flags.DEFINE_integer("crop_size", data.CROP_SIZE, "Side of the square training crop (the global discriminator's input).")
flags.DEFINE_integer("min_edge", data.SHORTEST_EDGE_RANGE[0], "Smallest random size of the shortest edge before cropping.")
flags.DEFINE_integer("max_edge", data.SHORTEST_EDGE_RANGE[1], "Largest random size of the shortest edge before cropping.")
flags.DEFINE_integer("min_hole", masks.HOLE_SIDE_RANGE[0], "Smallest side of a training hole.")
flags.DEFINE_integer("max_hole", masks.HOLE_SIDE_RANGE[1], "Largest side of a training hole.")
flags.DEFINE_integer("local_size", data.LOCAL_SIZE, "Side of the local discriminator's patch.")
# Free-form holes (not the paper's, which are rectangles): see glcic_tf/masks.py, FreeForm.
_FREE_FORM = masks.FreeForm()
flags.DEFINE_enum("hole_shape", "rectangle", masks.HOLE_SHAPES, "Training holes: the paper's rectangles, brush strokes, or either per example.")
flags.DEFINE_float("free_form_probability", 0.5, "With --hole_shape=mixed: the probability of a free-form hole.")
flags.DEFINE_list("free_form_strokes", [str(v) for v in _FREE_FORM.strokes], "Strokes per free-form hole: min,max.")
flags.DEFINE_list("free_form_vertices", [str(v) for v in _FREE_FORM.vertices], "Vertices per stroke: min,max.")
flags.DEFINE_float("free_form_max_turn", _FREE_FORM.max_turn_degrees, "Largest turn between a stroke's segments, degrees.")
flags.DEFINE_list("free_form_length", [str(v) for v in _FREE_FORM.length], "Segment length as a fraction of the crop side: min,max.")
flags.DEFINE_list("free_form_width", [str(v) for v in _FREE_FORM.width], "Brush width as a fraction of the crop side: min,max.")
flags.DEFINE_list("free_form_coverage", [str(v) for v in _FREE_FORM.coverage], "Fraction of the crop a free-form hole covers: min,max.")
# Augmentations (not the paper's, off by default; see data.Augmentations).
_AUGMENT = data.Augmentations()
flags.DEFINE_bool("flip", _AUGMENT.flip, "Augmentation: mirror each training crop left-right with probability 1/2.")
flags.DEFINE_float("hue", _AUGMENT.hue, "Augmentation: rotate the hue by up to this fraction of a turn each way (0-0.5).")
flags.DEFINE_float("saturation", _AUGMENT.saturation, "Augmentation: scale the saturation by a random factor in [1-s, 1+s].")
flags.DEFINE_float("brightness", _AUGMENT.brightness, "Augmentation: add a random value in [-b, b] to every channel.")
flags.DEFINE_float("contrast", _AUGMENT.contrast, "Augmentation: scale the contrast by a random factor in [1-c, 1+c].")
flags.DEFINE_float("grayscale", _AUGMENT.grayscale, "Augmentation: probability of turning a training crop gray.")
flags.DEFINE_float("width", 1.0, "Channel-width factor of both networks (1.0 is the paper's).")
flags.DEFINE_list(
    "mean_pixel",
    [str(value) for value in models.PLACES2_MEAN_PIXEL],
    "R,G,B mean in [0, 1] that fills the hole (default: the authors' Places2 mean), or 'estimate' "
    "to measure it on the first 10,000 training images.",
)
flags.DEFINE_string("init_checkpoint", None, "Checkpoint (or run folder) whose completion network starts this run.")
# Validation during training (not the paper's; off without a source): see glcic_tf/validation.py.
_VALIDATION = validation.ValidationSettings()
flags.DEFINE_string("validation_source", None, "Held-out images to validate on (as --source), e.g. tfds:places365_small:validation; unset: no validation.")
flags.DEFINE_integer("validation_every", _VALIDATION.every, "Steps between validations (also at the last step).")
flags.DEFINE_integer("validation_images", _VALIDATION.num_images, "Validate on the first N images of --validation_source (or all it has if fewer; 0: all).")
flags.DEFINE_integer("validation_size", None, "Validation images are resized and centre-cropped to this square (default: --crop_size); 0: each at its own size.")
flags.DEFINE_enum("validation_protocol", _VALIDATION.protocol, sorted(masks.MASK_PROTOCOLS), "Validation holes, as evaluate.py's --mask_protocol.")
flags.DEFINE_integer("validation_seed", _VALIDATION.seed, "Seed of the validation holes, as evaluate.py's --seed.")
flags.DEFINE_enum("validation_metric", _VALIDATION.metric, sorted(metrics.METRICS), "The metric that chooses the best checkpoint (MODEL_DIR/best).")
# Running.
flags.DEFINE_integer("seed", 0, "Seed of the weights, crops and holes.")
flags.DEFINE_bool("deterministic", False, "TensorFlow's op determinism (slower): reruns give bit-identical weights.")
flags.DEFINE_integer("shuffle_buffer", data.SHUFFLE_BUFFER, "TFDS sources: encoded images per window shuffled together.")
flags.DEFINE_integer("checkpoint_every", 1000, "Steps between checkpoints (also saved on exit and SIGTERM).")
flags.DEFINE_integer("keep_checkpoints", 5, "Checkpoints kept in --model_dir.")
flags.DEFINE_integer("log_every", 100, "Steps between progress lines.")
flags.DEFINE_integer("summary_every", 100, "Steps between TensorBoard scalars.")
flags.DEFINE_integer("image_every", 1000, "Steps between TensorBoard preview images.")
flags.DEFINE_integer("stop_at_step", None, "Stop (with a checkpoint) at this step, before total_steps; run again to go on.")
flags.DEFINE_enum("strategy", "default", train_lib.STRATEGIES, "tf.distribute strategy: one device, this machine, or TF_CONFIG workers.")
flags.DEFINE_enum("mixed_precision", "none", train_lib.MIXED_PRECISION_POLICIES, "Keras mixed-precision policy (float16 adds loss scaling).")
flags.DEFINE_bool(
    "allow_changed_settings",
    False,
    "Resume a run with settings that change what it computes (batch size, phases, seed, source...); refused otherwise.",
)


def _pair(values, kind, name):
    try:
        low, high = (kind(value) for value in values)
    except ValueError:
        raise UserError(f"--{name} must be two numbers min,max, not {','.join(values)}") from None
    return low, high


def config_from_flags() -> train_lib.Config:
    """The flags as a train_lib.Config (validated there)."""
    if not FLAGS.source:
        raise UserError("--source is required (tfds:NAME[:SPLIT], folder:PATH or sample:train)")
    if FLAGS.mean_pixel == ["estimate"]:
        logging.info("estimating the mean pixel on %s", FLAGS.source)
        mean_pixel = data.estimate_mean_pixel(FLAGS.source, FLAGS.data_dir)
    else:
        try:
            mean_pixel = tuple(float(value) for value in FLAGS.mean_pixel)
        except ValueError:
            mean_pixel = ()
        if len(mean_pixel) != 3:
            raise UserError(f"--mean_pixel must be three numbers R,G,B or 'estimate', not {','.join(FLAGS.mean_pixel)}")
    try:
        free_form = masks.FreeForm(
            strokes=_pair(FLAGS.free_form_strokes, int, "free_form_strokes"),
            vertices=_pair(FLAGS.free_form_vertices, int, "free_form_vertices"),
            max_turn_degrees=FLAGS.free_form_max_turn,
            length=_pair(FLAGS.free_form_length, float, "free_form_length"),
            width=_pair(FLAGS.free_form_width, float, "free_form_width"),
            coverage=_pair(FLAGS.free_form_coverage, float, "free_form_coverage"),
        )
        sizes = data.TrainingSizes(
            FLAGS.crop_size,
            (FLAGS.min_edge, FLAGS.max_edge),
            (FLAGS.min_hole, FLAGS.max_hole),
            FLAGS.local_size,
            FLAGS.hole_shape,
            free_form,
            FLAGS.free_form_probability,
        )
        augmentations = data.Augmentations(
            FLAGS.flip, FLAGS.hue, FLAGS.saturation, FLAGS.brightness, FLAGS.contrast, FLAGS.grayscale
        )
        validation_settings = validation.ValidationSettings(
            FLAGS.validation_source,
            FLAGS.data_dir,
            FLAGS.validation_every,
            FLAGS.validation_images or None,
            FLAGS.validation_size,
            FLAGS.validation_protocol,
            FLAGS.validation_seed,
            FLAGS.validation_metric,
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    return train_lib.Config(
        source=FLAGS.source,
        data_dir=FLAGS.data_dir,
        batch_size=FLAGS.batch_size,
        completion_steps=FLAGS.completion_steps,
        discriminator_steps=FLAGS.discriminator_steps,
        total_steps=FLAGS.total_steps,
        alpha=FLAGS.alpha,
        optimizer=FLAGS.optimizer,
        learning_rate=FLAGS.learning_rate,
        sizes=sizes,
        augmentations=augmentations,
        width=FLAGS.width,
        mean_pixel=mean_pixel,
        seed=FLAGS.seed,
        deterministic=FLAGS.deterministic,
        shuffle_buffer=FLAGS.shuffle_buffer,
        checkpoint_every=FLAGS.checkpoint_every,
        keep_checkpoints=FLAGS.keep_checkpoints,
        log_every=FLAGS.log_every,
        summary_every=FLAGS.summary_every,
        image_every=FLAGS.image_every,
        init_checkpoint=FLAGS.init_checkpoint,
        mixed_precision=FLAGS.mixed_precision,
        validation=validation_settings,
    )


def main(argv):
    del argv  # commands.run refuses positional arguments
    with one_line_errors():
        if not FLAGS.model_dir:
            raise UserError("--model_dir is required")
        strategy = train_lib.make_strategy(FLAGS.strategy)  # before any other TensorFlow work
        if train_lib.is_chief(strategy):  # the other workers only read --model_dir
            run_folder.check_folder(FLAGS.model_dir, "--model_dir")
        config = config_from_flags()
        changes = train_lib.check_resume_settings(config, FLAGS.model_dir, FLAGS.allow_changed_settings)
        trainer = train_lib.Trainer(config, FLAGS.model_dir, strategy)
        if trainer.is_chief:
            step = int(trainer.step.numpy())
            settings = train_lib.run_settings(config)
            run_folder.record_start(FLAGS.model_dir, settings, step, FLAGS.flags_into_string(), strategy.num_replicas_in_sync, changes)
        with train_lib.stop_on_signals() as stop:
            trainer.run(FLAGS.stop_at_step, lambda: stop["signal"])
    logging.info("done at step %d; checkpoints and TensorBoard logs in %s", trainer.step.numpy(), FLAGS.model_dir)


def run():
    commands.run(main, __doc__)


if __name__ == "__main__":
    run()
