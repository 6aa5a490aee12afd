r"""A phone-size photograph with small holes: the whole image versus crops around the holes.

    python benchmarks/large_photo.py                     # 4000x3000, 1 and 5 holes of 128x128
    python benchmarks/large_photo.py --output=large.json

The paper-width completion network (random weights: the cost does not depend on them) completes
a 4000x3000 photograph through `glcic_tf.photos.inpaint`, as `inpaint.py` does, once with
`--tiling=whole` (the network on all 12 M pixels) and once with `crop` (the holes'
neighbourhoods only), with one hole and with five spread over the image. Each measurement runs
in a fresh process, so its peak resident memory is its own: the table gives the process's peak
and the part the completion added on top of the loaded model. Seconds are those of the first
call (what one `inpaint.py` run pays) and of a second call on the same image.
"""

import json
import os
import resource
import subprocess
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_integer("height", 3000, "Photograph height.")
flags.DEFINE_integer("width", 4000, "Photograph width.")
flags.DEFINE_integer("hole", 128, "Side of each square hole.")
flags.DEFINE_list("holes", ["1", "5"], "Hole counts to measure.")
flags.DEFINE_list("tilings", ["whole", "crop"], "Tilings (glcic_tf.tiling) to measure.")
flags.DEFINE_string("output", None, "Also write the results here as JSON.")
flags.DEFINE_string("child", None, "Internal: measure one 'tiling,holes' case in this process.")


def hole_mask(height, width, count, side):
    """`count` square holes: the centre first, then towards the four corners."""
    import numpy as np  # noqa: PLC0415

    centres = [(height // 2, width // 2), (height // 5, width // 5), (height // 5, 4 * width // 5), (4 * height // 5, width // 5), (4 * height // 5, 4 * width // 5)]
    mask = np.zeros((height, width, 1), np.float32)
    for y, x in centres[:count]:
        mask[y - side // 2 : y + side // 2, x - side // 2 : x + side // 2] = 1.0
    return mask


def measure(tiling: str, holes: int) -> dict:
    """One case in this process: seconds of two calls and memory."""
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from glcic_tf import inference, models, photos  # noqa: PLC0415

    inpainter = inference.Inpainter(models.completion_network(), max_network_pixels=FLAGS.height * FLAGS.width)
    inpainter(tf.zeros([1, 64, 64, 3]), tf.zeros([1, 64, 64, 1]))  # the one trace, before measuring
    image = np.random.default_rng(0).integers(0, 256, (FLAGS.height, FLAGS.width, 3), dtype=np.uint8)
    mask = hole_mask(FLAGS.height, FLAGS.width, holes, FLAGS.hole)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        photos.inpaint(inpainter, image, mask, tiling=tiling, max_network_pixels=FLAGS.height * FLAGS.width)
        seconds.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"tiling": tiling, "holes": holes, "first_s": seconds[0], "second_s": seconds[1], "peak_mb": peak, "added_mb": peak - baseline}


def main(argv):
    del argv
    if FLAGS.child:
        tiling, holes = FLAGS.child.split(",")
        print(json.dumps(measure(tiling, int(holes))))
        return
    from benchmarks.machine import roofline_gflops  # noqa: PLC0415

    print(f"machine: {os.cpu_count()} cores, float32 matmul {roofline_gflops():.0f} GFLOP/s (tf.matmul 4096x4096)")
    print(f"{FLAGS.width}x{FLAGS.height} photograph, {FLAGS.hole}x{FLAGS.hole} holes, paper-width network\n")
    print("| holes | tiling | first call (s) | second call (s) | peak memory (MB) | added by the completion (MB) |")
    print("|---|---|---|---|---|---|")
    results = []
    for holes in (int(h) for h in FLAGS.holes):
        for tiling in FLAGS.tilings:
            argv = [sys.executable, os.path.abspath(__file__), f"--child={tiling},{holes}", f"--height={FLAGS.height}", f"--width={FLAGS.width}", f"--hole={FLAGS.hole}"]
            child = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            if child.returncode != 0:
                print(f"| {holes} | {tiling} | failed (exit {child.returncode}): {child.stderr.strip().splitlines()[-1:]} | | | |")
                continue
            row = json.loads(child.stdout.strip().splitlines()[-1])
            results.append(row)
            print(f"| {holes} | {tiling} | {row['first_s']:.2f} | {row['second_s']:.2f} | {row['peak_mb']:.0f} | {row['added_mb']:.0f} |", flush=True)
    for holes in (int(h) for h in FLAGS.holes):
        by = {row["tiling"]: row for row in results if row["holes"] == holes}
        if "whole" in by and "crop" in by:
            print(f"{holes} hole(s): crop is {by['whole']['second_s'] / by['crop']['second_s']:.0f}x faster than whole (second calls)")
    if FLAGS.output:
        with open(FLAGS.output, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    app.run(main)
