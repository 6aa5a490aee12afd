r"""All benchmarks in one run, as ratios taken on the same machine at the same time.

    pip install -e ".[cpu,bench]"       # adds torch==2.13.0 (CPU) for the PyTorch peer
    python benchmarks/run.py --output=benchmarks.json

Rows:
1. roofline: the best float32 matrix-multiply rate (GFLOP/s) of a 4096x4096 tf.matmul, measured
   first; every other rate is given as a percentage of it;
2. completion-network inference at 256, 512 and 1024 px (batch 1, paper width): float32 and
   mixed_bfloat16 in TensorFlow, and the same network in PyTorch (channels-last, inference mode)
   with the ratio TensorFlow / PyTorch time. FLOPs are counted from Table 1 (2 per multiply-add);
3. one training step of each phase at the paper's sizes (batch --train_batch_size), with FLOPs
   estimated as 3x the forward passes involved (forward + backward);
4. the input pipeline on JPEG photographs with the paper's settings (benchmarks/pipeline.py).
Each time is the best of --repeats calls after a warm-up call (these machines are noisy).
"""

import json
import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import machine, pipeline  # noqa: E402  (pipeline defines its flags too)
from benchmarks.machine import roofline_gflops  # noqa: E402
from glcic_tf import models  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["256", "512", "1024"], "Inference image sides.")
flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (the best is kept).")
flags.DEFINE_bool("torch", True, "Time the PyTorch peer (needs the bench extra).")


def best_time(function, repeats=None):
    return machine.best_time(function, repeats or FLAGS.repeats)


def completion_flops(side: int) -> float:
    """Forward FLOPs of Table 1 on a side x side input (2 per multiply-add)."""
    total, size, channels = 0, side, 4
    for spec in models.COMPLETION_NETWORK:
        size = size * 2 if spec.kind == "deconv" else size // spec.stride
        total += 2 * spec.kernel**2 * channels * spec.filters * size * size
        channels = spec.filters
    return total


def discriminator_flops(global_size=models.GLOBAL_SIZE, local_size=models.LOCAL_SIZE) -> float:
    total = 0
    for size, filters in ((global_size, models.GLOBAL_DISCRIMINATOR_FILTERS), (local_size, models.LOCAL_DISCRIMINATOR_FILTERS)):
        channels = 3
        for out in filters:
            size //= models.DISCRIMINATOR_STRIDE
            total += 2 * models.DISCRIMINATOR_KERNEL**2 * channels * out * size * size
            channels = out
        total += 2 * channels * size * size * models.DISCRIMINATOR_FC_UNITS
    return total + 2 * 2 * models.DISCRIMINATOR_FC_UNITS


def tensorflow_inference(sizes):
    float32 = models.completion_network()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    bfloat16 = models.completion_network()
    keras.mixed_precision.set_global_policy("float32")
    bfloat16.set_weights(float32.get_weights())
    results = {}
    for name, network in (("float32", float32), ("mixed_bfloat16", bfloat16)):
        run = tf.function(lambda x, n=network: n(x, training=False), input_signature=[tf.TensorSpec([None, None, None, 4])])
        for side in sizes:
            x = tf.random.uniform((1, side, side, 4))
            results[(name, side)] = best_time(lambda: run(x).numpy())
    return results


def torch_network():
    """Table 1 in PyTorch (random weights), channels-last, in inference mode."""
    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415

    layers, channels = [], 4
    for index, spec in enumerate(models.COMPLETION_NETWORK, start=1):
        last = index == len(models.COMPLETION_NETWORK)
        if spec.kind == "deconv":
            conv = nn.ConvTranspose2d(channels, spec.filters, spec.kernel, stride=2, padding=1, bias=False)
        else:
            padding = spec.dilation * (spec.kernel - 1) // 2
            conv = nn.Conv2d(channels, spec.filters, spec.kernel, spec.stride, padding, spec.dilation, bias=last)
        layers.append(conv)
        layers += [nn.Sigmoid()] if last else [nn.BatchNorm2d(spec.filters, eps=models.BN_EPSILON), nn.ReLU()]
        channels = spec.filters
    # Same architecture and sizes as the Keras network; the time does not depend on the weights.
    return nn.Sequential(*layers).eval().to(memory_format=torch.channels_last), torch


def torch_inference(sizes):
    network, torch = torch_network()
    results = {}
    with torch.inference_mode():
        for side in sizes:
            x = torch.rand(1, 4, side, side).to(memory_format=torch.channels_last)
            results[side] = best_time(lambda: network(x))
    return results, torch.__version__


def main(argv):
    del argv
    sizes = [int(side) for side in FLAGS.sizes]
    started = time.perf_counter()
    roofline = roofline_gflops()
    print(f"roofline: float32 matmul 4096x4096 = {roofline:.0f} GFLOP/s on {os.cpu_count()} cores")

    inference = tensorflow_inference(sizes)
    peer, torch_version = torch_inference(sizes) if FLAGS.torch else ({}, None)
    rows = []
    print(f"\n{'inference':<34}{'s/image':>10}{'GFLOP/s':>10}{'% roofline':>12}{'TF/PyTorch':>12}")
    for side in sizes:
        flops = completion_flops(side)
        for name in ("float32", "mixed_bfloat16"):
            seconds = inference[(name, side)]
            ratio = seconds / peer[side] if side in peer else None
            rows.append({"row": f"tf {name} {side}px", "seconds": seconds, "gflops": flops / seconds / 1e9,
                         "percent_roofline": 100 * flops / seconds / 1e9 / roofline, "tf_over_torch": ratio})
        if side in peer:
            rows.append({"row": f"torch {torch_version} float32 {side}px", "seconds": peer[side], "gflops": flops / peer[side] / 1e9,
                         "percent_roofline": 100 * flops / peer[side] / 1e9 / roofline, "tf_over_torch": None})
    for row in rows:
        ratio = f"{row['tf_over_torch']:.2f}" if row["tf_over_torch"] else ""
        print(f"{row['row']:<34}{row['seconds']:>10.3f}{row['gflops']:>10.0f}{row['percent_roofline']:>11.0f}%{ratio:>12}")

    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as model_dir:
        source = f"folder:{pipeline.jpeg_folder(folder)}"
        training = pipeline.training_rates(source, model_dir)
        pipeline_rate = pipeline.pipeline_rate(source)
    c, d = completion_flops(models.GLOBAL_SIZE), discriminator_flops()
    step_flops = {"phase1": 3 * c, "phase2": c + 3 * 2 * d, "phase3": 3 * c + 3 * 2 * d + 3 * d}
    print(f"\n{'training (batch ' + str(FLAGS.train_batch_size) + ')':<34}{'img/s':>10}{'GFLOP/s':>10}{'% roofline':>12}")
    training_rows = []
    for phase, rate in training.items():
        gflops = rate * step_flops[phase] / 1e9
        training_rows.append({"phase": phase, "images_per_second": rate, "gflops": gflops, "percent_roofline": 100 * gflops / roofline})
        print(f"{phase:<34}{rate:>10.2f}{gflops:>10.0f}{100 * gflops / roofline:>11.0f}%")
    print(f"\ninput pipeline: {pipeline_rate:.0f} img/s = {pipeline_rate / max(training.values()):.0f}x the fastest training phase")
    print(f"\nwhole benchmark: {time.perf_counter() - started:.0f} s")
    if FLAGS.output:
        with open(FLAGS.output, "w") as file:
            json.dump({"roofline_gflops": roofline, "inference": rows, "training": training_rows,
                       "pipeline_images_per_second": pipeline_rate, "torch": torch_version}, file, indent=2)


if __name__ == "__main__":
    app.run(main)
