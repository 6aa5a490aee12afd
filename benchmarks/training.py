r"""One training step of glcic_tf's Trainer against a PyTorch peer of the same step, in one run.

    pip install -e ".[cpu,bench]"       # adds torch==2.13.0 (CPU) for the PyTorch peer
    python benchmarks/training.py [--cases=demo:1,demo:3,paper:1,paper:3] [--steps=N] [--repeats=3] \
        [--jit] [--breakdown] [--paper_batch_size=2] [--output=training.json]
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/training.py ...   # Eigen's kernels, as on AVX2-only machines

A case is SCALE:PHASE. Scales:
- demo: the sizes of glcic_tf/flagfiles/demo.flags, read from it (width 0.25, 128 crops, 64
  local patches, batch 16, Adam at 5e-4, mixed holes and its augmentations);
- paper: Table 1 and 2 at width 1.0, 256 crops, 128 local patches, the paper's holes, a small
  batch (--paper_batch_size, CPU time), Adam at the demo's rate (not the paper's ADADELTA:
  the peer uses torch.optim.Adam).
Phases 1 and 3 of Trainer.run_step (Algorithm 1; phase 2 is phase 3 without the completion
network's update). Each row, images per second of
- TF: `trainer.run_step(phase, iterator)` on a cached iterator of one batch (as
  benchmarks/pipeline.py), so only the step uses the cores;
- TF pipeline: the same step on the Trainer's own input (`trainer.iterator`, from sample:train,
  scikit-image's photographs): lower than TF when the input pipeline is on the critical path;
- TF jit (--jit): the Trainer's replica steps compiled with XLA (jit_compile), cached batch;
- PyTorch: the same step in PyTorch (benchmarks/torch_peer.py), channels-last, model.train(),
  torch.optim.Adam, on the same batch, with torch.set_num_threads(cpu.usable_cores());
and TF/PyTorch, the TF step's time over PyTorch's (above 1: TF is slower). Every method is
timed --steps steps at a time, --repeats times interleaved with the others (these machines are
noisy), after warm-up steps; the best is kept. Blocks of steps last seconds, so the few
milliseconds one framework's idle threads spin after its calls (why benchmarks/run.py does not
interleave single calls of the two) do not reach the other's block. --breakdown also times the completion network
alone (forward in training mode; forward + backward without the optimizer) in both frameworks.
"""

import json
import os
import sys
import tempfile
import time
from typing import Callable, Dict, NamedTuple

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")

from benchmarks import machine, torch_peer  # noqa: E402
from glcic_tf import commands, cpu, data, losses, models, train_lib  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("cases", ["demo:1", "demo:3", "paper:1", "paper:3"], "SCALE:PHASE cases, scale demo or paper, phase 1 or 3.")
flags.DEFINE_integer("steps", None, "Timed steps per repeat (default: 10 at demo scale, 5 at paper scale).")
flags.DEFINE_integer("warmup", 2, "Untimed steps per method before timing (the first traces).")
flags.DEFINE_integer("repeats", 3, "Timed runs of --steps steps per method (the best is kept).")
flags.DEFINE_integer("paper_batch_size", 2, "Batch size at paper scale (CPU time and memory).")
flags.DEFINE_bool("jit", False, "Also time the TF step compiled with XLA (jit_compile=True).")
flags.DEFINE_bool("pipeline", True, "Also time the TF step on the Trainer's own input pipeline.")
flags.DEFINE_bool("breakdown", False, "Also time the completion network's forward and forward + backward alone.")
flags.DEFINE_string("output", None, "Also write the results as JSON here.")

SOURCE = "sample:train"


class Scale(NamedTuple):
    width: float
    batch_size: int
    steps: int
    learning_rate: float
    alpha: float
    sizes: data.TrainingSizes
    augmentations: data.Augmentations


def demo_flags() -> Dict[str, str]:
    """--name=value of glcic_tf/flagfiles/demo.flags ("true" for a bare --name)."""
    values = {}
    with open(commands.flagfile_path("demo.flags")) as file:
        for line in file:
            line = line.strip()
            if line.startswith("--"):
                name, _, value = line[2:].partition("=")
                values[name] = value or "true"
    return values


def scales() -> Dict[str, Scale]:
    demo = demo_flags()
    assert demo["optimizer"] == "adam", "the PyTorch peer runs Adam, as demo.flags"
    number = lambda name: float(demo.get(name, 0))  # noqa: E731
    return {
        "demo": Scale(
            float(demo["width"]),
            int(demo["batch_size"]),
            10,
            float(demo["learning_rate"]),
            float(demo["alpha"]),
            data.TrainingSizes(
                int(demo["crop_size"]),
                (int(demo["min_edge"]), int(demo["max_edge"])),
                (int(demo["min_hole"]), int(demo["max_hole"])),
                int(demo["local_size"]),
                demo.get("hole_shape", "rectangle"),
            ),
            data.Augmentations("flip" in demo, number("hue"), number("saturation"), number("brightness"), number("contrast"), number("grayscale")),
        ),
        "paper": Scale(1.0, FLAGS.paper_batch_size, 5, float(demo["learning_rate"]), train_lib.ALPHA, data.TrainingSizes(), data.Augmentations()),
    }


def seconds_per_step(step: Callable, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        result = step()
    result()  # the last step's loss, as a number: everything has run
    return (time.perf_counter() - start) / steps


def best_times(methods: Dict[str, Callable], steps: int) -> Dict[str, float]:
    """Seconds per step of each method: warm-up, then --repeats runs of `steps` steps, interleaved."""
    for step in methods.values():
        for _ in range(FLAGS.warmup):
            step()()
    best = {name: float("inf") for name in methods}
    for _ in range(FLAGS.repeats):
        for name, step in methods.items():
            best[name] = min(best[name], seconds_per_step(step, steps))
    return best


# --- TensorFlow ------------------------------------------------------------------------


def trainer(scale: Scale, model_dir: str) -> train_lib.Trainer:
    config = train_lib.Config(
        source=SOURCE,
        batch_size=scale.batch_size,
        optimizer="adam",
        learning_rate=scale.learning_rate,
        alpha=scale.alpha,
        sizes=scale.sizes,
        augmentations=scale.augmentations,
        width=scale.width,
        checkpoint_every=10**9,
    )
    return train_lib.Trainer(config, model_dir)


def tf_step(trainer_: train_lib.Trainer, phase: int, iterator=None, jit_compile: bool = False) -> Callable:
    """One step of `phase`; with `jit_compile`, the XLA trial: the same replica step compiled by
    XLA (not offered to runs: see Trainer.compiled_step)."""
    compiled = trainer_.compiled_step(phase, jit_compile=True) if jit_compile else None

    def step():
        values = compiled(iterator or trainer_.iterator) if compiled else trainer_.run_step(phase, iterator)
        return lambda: float(values["mse"])

    return step


# --- PyTorch ---------------------------------------------------------------------------


class TorchPeer:
    """Phases 1 and 3 of Trainer in PyTorch on one fixed batch (a dict of TF tensors)."""

    def __init__(self, scale: Scale, batch):
        import torch  # noqa: PLC0415
        from torch.nn import functional  # noqa: PLC0415

        self.torch, self.functional, self.alpha = torch, functional, scale.alpha
        torch.set_num_threads(cpu.usable_cores())
        torch.manual_seed(0)
        self.format = torch.channels_last
        sizes = scale.sizes
        self.local_size = sizes.local_size
        self.completion = torch_peer.completion_network(scale.width).train().to(memory_format=self.format)
        self.discriminator = torch_peer.discriminator(sizes.crop_size, sizes.local_size, scale.width).train().to(memory_format=self.format)
        self.completion_optimizer = torch.optim.Adam(self.completion.parameters(), lr=scale.learning_rate)
        self.discriminator_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=scale.learning_rate)
        nchw = lambda name: torch.from_numpy(batch[name].numpy()).permute(0, 3, 1, 2).contiguous(memory_format=self.format)  # noqa: E731
        self.image, self.mask = nchw("image"), nchw("mask")
        self.mean = torch.tensor(models.PLACES2_MEAN_PIXEL).view(1, 3, 1, 1)
        self.local_boxes = [(int(y), int(x)) for y, x in batch["local_box"].numpy()[:, :2]]
        self.real_boxes = [(int(y), int(x)) for y, x in batch["real_local_box"].numpy()[:, :2]]
        self.ones = torch.ones(scale.batch_size, 1)
        self.zeros = torch.zeros(scale.batch_size, 1)

    def _input(self):
        centred = (self.image - self.mean) * (1.0 - self.mask)
        return self.torch.cat([centred, self.mask], dim=1).contiguous(memory_format=self.format)

    def _crop(self, images, boxes):
        size = self.local_size
        return self.torch.stack([images[i, :, y : y + size, x : x + size] for i, (y, x) in enumerate(boxes)]).contiguous(memory_format=self.format)

    def _mse(self, completed):
        return (self.mask * (completed - self.image)).square().mean()  # losses.hole_mse, averaged over the batch

    def _bce(self, logit, target):
        return self.functional.binary_cross_entropy_with_logits(logit, target)

    def phase1(self):
        mse = self._mse(self.completion(self._input()))
        self.completion_optimizer.zero_grad(set_to_none=True)
        mse.backward()
        self.completion_optimizer.step()
        return mse.item

    def phase3(self):
        completed = self.completion(self._input())
        fake = self.torch.where(self.mask > 0.5, completed, self.image)  # models.composite
        # The discriminators' update on real images and the detached completions.
        detached = fake.detach()
        real_logit = self.discriminator(self.image, self._crop(self.image, self.real_boxes))
        fake_logit = self.discriminator(detached, self._crop(detached, self.local_boxes))
        discriminator_loss = self._bce(real_logit, self.ones) + self._bce(fake_logit, self.zeros)
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        discriminator_loss.backward()
        self.discriminator_optimizer.step()
        # The completion network's joint loss, through the updated discriminators (whose weights
        # get no gradient, as TF's tape.gradient asks for the completion network's only).
        self.discriminator.requires_grad_(False)
        gan = self._bce(self.discriminator(fake, self._crop(fake, self.local_boxes)), self.ones)
        joint = self._mse(completed) + self.alpha * gan
        self.completion_optimizer.zero_grad(set_to_none=True)
        joint.backward()
        self.completion_optimizer.step()
        self.discriminator.requires_grad_(True)
        return joint.item

    def step(self, phase: int) -> Callable:
        return self.phase1 if phase == 1 else self.phase3

    def forward(self):
        with self.torch.no_grad():
            out = self.completion(self._input())
        return lambda: float(out[0, 0, 0, 0])

    def forward_backward(self):
        self.completion.zero_grad(set_to_none=True)
        mse = self._mse(self.completion(self._input()))
        mse.backward()
        return mse.item


def tf_completion_pieces(trainer_: train_lib.Trainer, batch) -> Dict[str, Callable]:
    """The completion network alone: forward in training mode; forward + gradients, no update."""
    network, mean = trainer_.completion, trainer_.config.mean_pixel
    image, mask = batch["image"], batch["mask"]

    @tf.function(autograph=False)
    def forward():
        return network(models.completion_input(image, mask, mean), training=True)

    @tf.function(autograph=False)
    def forward_backward():
        with tf.GradientTape() as tape:
            mse = tf.reduce_mean(losses.hole_mse(network(models.completion_input(image, mask, mean), training=True), image, mask))
        return mse, tape.gradient(mse, network.trainable_variables)

    def run_forward():
        out = forward()
        return lambda: float(out[0, 0, 0, 0])

    def run_forward_backward():
        mse, _ = forward_backward()
        return lambda: float(mse)

    return {"forward": run_forward, "forward_backward": run_forward_backward}


# --- the run ---------------------------------------------------------------------------


def parse_cases(cases):
    parsed = []
    for case in cases:
        name, _, phase = case.partition(":")
        if name not in ("demo", "paper") or phase not in ("1", "3"):
            raise app.UsageError(f"--cases: {case!r} is not demo|paper:1|3")
        parsed.append((name, int(phase)))
    return parsed


def run_scale(name: str, scale: Scale, phases, steps: int) -> list:
    rows = []
    with tempfile.TemporaryDirectory() as model_dir, tempfile.TemporaryDirectory() as jit_dir:
        tf_trainer = trainer(scale, model_dir)
        jit_trainer = trainer(scale, jit_dir) if FLAGS.jit else None
        cached = data.training_dataset(SOURCE, scale.batch_size, seed=0, sizes=scale.sizes, augmentations=scale.augmentations).take(1).cache().repeat()
        batch = next(iter(cached))
        peer = TorchPeer(scale, batch)
        for phase in phases:
            methods = {"tf": tf_step(tf_trainer, phase, iter(cached))}
            if FLAGS.pipeline:
                methods["tf_pipeline"] = tf_step(tf_trainer, phase)  # the Trainer's own input
            if jit_trainer:
                methods["tf_jit"] = tf_step(jit_trainer, phase, iter(cached), jit_compile=True)
            methods["torch"] = peer.step(phase)
            logging.info("timing %s phase %d (batch %d, %d steps x %d)", name, phase, scale.batch_size, steps, FLAGS.repeats)
            seconds = best_times(methods, steps)
            row = {"case": name, "phase": phase, "batch_size": scale.batch_size, "width": scale.width,
                   "crop_size": scale.sizes.crop_size, "local_size": scale.sizes.local_size, "steps": steps,
                   "seconds_per_step": seconds, "images_per_second": {k: scale.batch_size / v for k, v in seconds.items()},
                   "tf_over_torch": seconds["tf"] / seconds["torch"]}
            if "tf_jit" in seconds:
                row["tf_jit_over_tf"] = seconds["tf_jit"] / seconds["tf"]
            if "tf_pipeline" in seconds:
                row["tf_pipeline_over_tf"] = seconds["tf_pipeline"] / seconds["tf"]
            rows.append(row)
        if FLAGS.breakdown:
            pieces = {f"tf_{k}": v for k, v in tf_completion_pieces(tf_trainer, batch).items()}
            pieces.update(torch_forward=peer.forward, torch_forward_backward=peer.forward_backward)
            logging.info("timing %s completion network pieces", name)
            seconds = best_times(pieces, steps)
            rows.append({"case": name, "phase": "completion network", "batch_size": scale.batch_size, "seconds": seconds})
    return rows


def print_table(rows):
    columns = [("case", 7), ("phase", 6), ("batch", 6), ("TF img/s", 10), ("TF pipeline", 12), ("TF jit", 8),
               ("PyTorch", 9), ("TF/PyTorch", 11), ("jit/TF", 8), ("pipeline/TF", 12)]
    print("".join(f"{title:>{width}}" if i > 1 else f"{title:<{width}}" for i, (title, width) in enumerate(columns)))
    for row in rows:
        if "images_per_second" not in row:
            continue
        rate, blank = row["images_per_second"], ""
        fmt = lambda value, width, digits=2: f"{value:>{width}.{digits}f}" if value is not None else f"{blank:>{width}}"  # noqa: E731
        print(f"{row['case']:<7}{row['phase']:<6}{row['batch_size']:>6}{fmt(rate['tf'], 10)}{fmt(rate.get('tf_pipeline'), 12)}"
              f"{fmt(rate.get('tf_jit'), 8)}{fmt(rate['torch'], 9)}{fmt(row['tf_over_torch'], 11)}"
              f"{fmt(row.get('tf_jit_over_tf'), 8)}{fmt(row.get('tf_pipeline_over_tf'), 12)}")
    pieces = [row for row in rows if "seconds" in row]
    if pieces:
        print("\ncompletion network alone, ms per batch (forward in training mode; forward + backward, no update):")
        print(f"{'case':<7}{'batch':>6}{'TF fwd':>9}{'PT fwd':>9}{'TF/PT':>7}{'TF f+b':>9}{'PT f+b':>9}{'TF/PT':>7}{'TF bwd':>9}{'PT bwd':>9}{'TF/PT':>7}")
        for row in pieces:
            s = {k: 1e3 * v for k, v in row["seconds"].items()}
            tb, pb = s["tf_forward_backward"] - s["tf_forward"], s["torch_forward_backward"] - s["torch_forward"]
            print(f"{row['case']:<7}{row['batch_size']:>6}{s['tf_forward']:>9.0f}{s['torch_forward']:>9.0f}{s['tf_forward'] / s['torch_forward']:>7.2f}"
                  f"{s['tf_forward_backward']:>9.0f}{s['torch_forward_backward']:>9.0f}{s['tf_forward_backward'] / s['torch_forward_backward']:>7.2f}"
                  f"{tb:>9.0f}{pb:>9.0f}{tb / pb:>7.2f}")


def main(argv):
    del argv
    machine.size_thread_pools()  # as the commands do: a container's quota, before TensorFlow's first op
    started = time.perf_counter()
    cases = parse_cases(FLAGS.cases)
    all_scales = scales()
    rates = machine.matmul_rates()
    print(machine.describe(rates))
    import torch  # noqa: PLC0415

    print(f"TensorFlow {tf.__version__}, PyTorch {torch.__version__} with {cpu.usable_cores()} threads; "
          f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', '(unset)')}")
    rows = []
    for name in dict.fromkeys(name for name, _ in cases):
        scale = all_scales[name]
        rows += run_scale(name, scale, [phase for n, phase in cases if n == name], FLAGS.steps or scale.steps)
    print(f"\none training step, images per second (best of {FLAGS.repeats} runs; TF/PyTorch, jit/TF and pipeline/TF are time ratios, "
          "above 1 = slower than the reference)")
    print_table(rows)
    seconds = time.perf_counter() - started
    print(f"\nwhole benchmark: {seconds:.0f} s")
    if FLAGS.output:
        with open(FLAGS.output, "w") as file:
            json.dump({"machine": machine.cpu_description(), "kernel_family": machine.kernel_family(), "matmul_gflops": rates,
                       "tensorflow": tf.__version__, "torch": torch.__version__, "threads": cpu.usable_cores(),
                       "scales": {name: {**s._asdict(), "sizes": str(s.sizes), "augmentations": str(s.augmentations)} for name, s in all_scales.items()},
                       "rows": rows, "seconds": seconds}, file, indent=2, default=str)


if __name__ == "__main__":
    app.run(main)
