r"""Where the completion network's inference time goes, row by row of Table 1, in one run.

    python benchmarks/layers.py [--side=512] [--repeats=3] [--output=layers.json]

Each row (convolution, its BatchNorm and ReLU; the output convolution and sigmoid) is timed on
its own input at the network's sizes for a side x side image, batch 1, float32, in
- TensorFlow, the Keras network of glcic_tf.models (as trained: separate BatchNorm);
- TensorFlow, the folded network that Inpainter runs here (glcic_tf.folded; its upsampling
  form is the one for the kernel family TensorFlow runs, printed with the machine);
- PyTorch, channels-last, inference mode (benchmarks/torch_peer.py),
each the best of --repeats calls after a warm-up, beside the row's GFLOP and the machine's limits.
"""

import json
import os
import re
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")  # one tf.function per row: retracing warnings are expected

from benchmarks import machine  # noqa: E402
from benchmarks.torch_peer import torch_network  # noqa: E402
from glcic_tf import folded, models  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("side", 512, "Image side (a multiple of 4).")
flags.DEFINE_integer("repeats", 3, "Timed calls per row (the best is kept).")
flags.DEFINE_string("output", None, "Also write the results as JSON here.")


def row_flops(side: int):
    """FLOPs of each row of Table 1 at side x side (the differences of the cumulative count)."""
    table, counts = models.COMPLETION_NETWORK, []
    for rows in range(1, len(table) + 1):
        counts.append(models.completion_flops(side, side, table[:rows]) - sum(counts))
    return counts


def row_names():
    return [f"{index:2d} {spec.kind} k{spec.kernel} d{spec.dilation} s{spec.stride} {spec.filters}" for index, spec in enumerate(models.COMPLETION_NETWORK, start=1)]


def keras_rows(network):
    """The Keras network's layers grouped by row of Table 1 (padding, convolution, BatchNorm, ReLU)."""
    rows = [[] for _ in models.COMPLETION_NETWORK]
    for layer in network.layers[1:]:
        match = re.match(r"(?:dilated_conv|deconv|conv)(\d+)", layer.name)
        rows[int(match.group(1)) - 1 if match else -1].append(layer)
    return [lambda x, group=group: _apply(group, x) for group in rows]


def _apply(layers, x):
    for layer in layers:
        x = layer(x, training=False) if "_bn" in layer.name else layer(x)
    return x


def time_rows(row_functions, x, repeats, compile_row):
    """Best time of each row on its own input (the previous row's output), and of all rows at once."""
    times = []
    for function in row_functions:
        run = compile_row(function)
        times.append(machine.best_time(lambda: run(x), repeats))
        x = run(x)
    return times


def tensorflow_times(row_functions, side, repeats):
    def compile_row(function):
        compiled = tf.function(function)
        return lambda x: compiled(x).numpy()

    whole = tf.function(lambda x: _chain(row_functions, x))
    x = tf.random.uniform((1, side, side, 4))
    return time_rows(row_functions, x, repeats, compile_row), machine.best_time(lambda: whole(x).numpy(), repeats)


def _chain(functions, x):
    for function in functions:
        x = function(x)
    return x


def torch_times(side, repeats):
    network, torch = torch_network()
    x = torch.rand(1, 4, side, side).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        rows = time_rows(list(network), x, repeats, lambda row: row)
        whole = machine.best_time(lambda: network(x), repeats)
    return rows, whole, torch.__version__


def main(argv):
    del argv
    machine.size_thread_pools()  # as the commands do: a container's quota, before TensorFlow's first op
    side, repeats = FLAGS.side, FLAGS.repeats
    rates = machine.matmul_rates()
    print(machine.describe(rates))
    print(f"folded network's upsampling here: {folded.default_upsampling()}")
    network = models.completion_network()
    keras_times, keras_whole = tensorflow_times(keras_rows(network), side, repeats)
    fast = folded.FoldedCompletionNetwork(network)
    folded_times, folded_whole = tensorflow_times([lambda x, i=i: fast.layer(i, x) for i in range(len(fast.specs))], side, repeats)
    torch_rows, torch_whole, torch_version = torch_times(side, repeats)

    flops = row_flops(side)
    print(f"\nTable 1 at {side}x{side}, batch 1, float32, ms per row (best of {repeats}); GFLOP/s of the folded row and of PyTorch's")
    print(f"{'row':<30}{'GFLOP':>7}{'TF keras':>10}{'TF folded':>11}{'PyTorch':>9}{'folded/PT':>11}{'folded GF/s':>12}{'PT GF/s':>9}")
    rows = []
    for name, f, k, fo, t in zip(row_names(), flops, keras_times, folded_times, torch_rows):
        rows.append({"row": name, "gflop": f / 1e9, "tf_keras_ms": 1e3 * k, "tf_folded_ms": 1e3 * fo, "torch_ms": 1e3 * t})
        print(f"{name:<30}{f / 1e9:>7.2f}{1e3 * k:>10.1f}{1e3 * fo:>11.1f}{1e3 * t:>9.1f}{fo / t:>11.2f}{f / fo / 1e9:>12.0f}{f / t / 1e9:>9.0f}")
    total = sum(flops)
    print(f"{'sum of rows':<30}{total / 1e9:>7.1f}{1e3 * sum(keras_times):>10.0f}{1e3 * sum(folded_times):>11.0f}{1e3 * sum(torch_rows):>9.0f}{sum(folded_times) / sum(torch_rows):>11.2f}")
    print(f"{'whole network':<30}{'':>7}{1e3 * keras_whole:>10.0f}{1e3 * folded_whole:>11.0f}{1e3 * torch_whole:>9.0f}{folded_whole / torch_whole:>11.2f}")
    best = max(rates.values())
    whole_rates = [total / seconds / 1e9 for seconds in (keras_whole, folded_whole, torch_whole)]
    print(f"whole network GFLOP/s: keras {whole_rates[0]:.0f}, folded {whole_rates[1]:.0f}, PyTorch "
          f"{whole_rates[2]:.0f}; {machine.describe_peak(machine.cpu_description(), [*rates.values(), *whole_rates])}, best matmul {best:.0f}")

    # One change at a time, whole network, same run.
    x = tf.random.uniform((1, side, side, 4))
    steps = {"Keras network as trained": keras_whole}
    for upsampling in folded.UPSAMPLINGS:
        chosen = " (Inpainter's here)" if upsampling == fast.upsampling else ""
        steps[f"BatchNorm folded, {upsampling} upsampling{chosen}"] = machine.best_time(
            (lambda run: lambda: run(x).numpy())(tf.function(folded.FoldedCompletionNetwork(network, upsampling=upsampling))), repeats)
    if machine.cpu_description()["native_bfloat16"] and machine.kernel_family() == "oneDNN":
        steps["... in bfloat16"] = machine.best_time(
            (lambda run: lambda: run(x).numpy())(tf.function(folded.FoldedCompletionNetwork(network, dtype=tf.bfloat16))), repeats)
    print(f"\nwhole network, one change at a time ({side} px): s/image, and over PyTorch's {torch_whole:.3f} s")
    for name, seconds in steps.items():
        print(f"{name:<50}{seconds:>8.3f}{seconds / torch_whole:>8.2f}")
    if FLAGS.output:
        with open(FLAGS.output, "w") as file:
            json.dump({"machine": machine.cpu_description(), "matmul_gflops": rates, "side": side, "rows": rows,
                       "whole_ms": {"tf_keras": 1e3 * keras_whole, "tf_folded": 1e3 * folded_whole, "torch": 1e3 * torch_whole},
                       "changes_seconds": steps, "torch": torch_version}, file, indent=2)


if __name__ == "__main__":
    app.run(main)
