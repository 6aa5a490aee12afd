r"""Start-up on a folder of a million photographs: time to the first batch and to the first step.

    python benchmarks/folder_startup.py                                  # 1,000,000 files
    python benchmarks/folder_startup.py --repo=/tmp/older_checkout       # the same, another version

The folder holds --files hard links (so it costs no disk) to the sample photographs saved as
JPEG, 10,000 to a sub-folder as Places365-Challenge's are by category. Two measurements, each in
a fresh process:
1. `data.training_dataset(folder, 96, ...)` with the paper's settings until its first batch:
   seconds and peak resident memory (the input start-up alone);
2. `train.py --flagfile=places2.flags --source=folder:...` until its first progress line
   (`--stop_at_step=1 --log_every=1`), with --train_batch_size images per step so that the
   step itself (seconds on a CPU at the paper's width) does not hide the start-up: seconds.
--repo measures another checkout of glcic_tf (for a before/after table) with the same folder.
"""

import json
import os
import shutil
import subprocess
import sys
import time

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_integer("files", 1_000_000, "Image files in the folder.")
flags.DEFINE_string("folder", "/tmp/glcic_folder_startup", "Where the folder of hard links goes (made once, reused).")
flags.DEFINE_string("repo", os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "The glcic_tf checkout to measure.")
flags.DEFINE_integer("train_batch_size", 8, "Batch of the train.py measurement.")
flags.DEFINE_string("child", None, "Internal: measure the input start-up in this process.")

PER_FOLDER = 10_000
LINKS_PER_FILE = 50_000


def make_folder(folder: str, files: int) -> str:
    """`files` hard links to the sample photographs as JPEG, in sub-folders of PER_FOLDER."""
    marker = os.path.join(folder, f".complete_{files}")
    if os.path.exists(marker):
        return folder
    from PIL import Image  # noqa: PLC0415

    from glcic_tf import sample_data  # noqa: PLC0415

    originals = os.path.join(folder, "_originals")
    os.makedirs(originals, exist_ok=True)
    photos = []
    for split in ("train", "test"):  # the sample photographs as JPEG (quality 90)
        split_folder = os.path.join(sample_data.ensure_sample_data(), split)
        for name in sorted(os.listdir(split_folder)):
            photos.append(os.path.join(originals, os.path.splitext(name)[0] + ".jpg"))
            Image.open(os.path.join(split_folder, name)).convert("RGB").save(photos[-1], quality=90)
    for index in range(files):
        sub = os.path.join(folder, "images", f"{index // PER_FOLDER:04d}")
        if index % PER_FOLDER == 0:
            os.makedirs(sub, exist_ok=True)
        target = os.path.join(sub, f"{index:08d}.jpg")
        if not os.path.exists(target):
            os.link(_original(photos, index), target)
    open(marker, "w").close()
    return folder


def _original(photos, index: int) -> str:
    """The photograph file that link number `index` points to: a file system allows some 65,000
    links to one file, so every LINKS_PER_FILE rounds use a fresh copy of the photographs."""
    photo = photos[index % len(photos)]
    copy = index // (len(photos) * LINKS_PER_FILE)
    if copy == 0:
        return photo
    path = os.path.join(os.path.dirname(photo), str(copy), os.path.basename(photo))
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copyfile(photo, path)
    return path


def measure_input_start_up(folder: str) -> dict:
    import resource  # noqa: PLC0415

    import tensorflow as tf  # noqa: PLC0415, F401

    from glcic_tf import data  # noqa: PLC0415

    logging.info("measuring glcic_tf from %s", os.path.dirname(os.path.dirname(data.__file__)))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    next(iter(data.training_dataset(f"folder:{folder}", 96, seed=0)))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"first_batch_s": seconds, "peak_mb": peak, "added_mb": peak - baseline}


def main(argv):
    del argv
    if FLAGS.child:
        sys.path.insert(0, FLAGS.repo)  # the checkout measured, before this one's
        print(json.dumps(measure_input_start_up(FLAGS.child)))
        return
    from benchmarks.machine import roofline_gflops  # noqa: PLC0415

    print(f"machine: {os.cpu_count()} cores, float32 matmul {roofline_gflops():.0f} GFLOP/s (tf.matmul 4096x4096)")
    start = time.perf_counter()
    images = os.path.join(make_folder(FLAGS.folder, FLAGS.files), "images")
    print(f"folder of {FLAGS.files} hard links ready in {time.perf_counter() - start:.0f} s; measuring {FLAGS.repo}")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": FLAGS.repo}
    # Warm: the folder was just made or listed, so its directories and files are in the page
    # cache, which favours a version that opens every file (a cold or network disk costs more).
    child = subprocess.run(
        [sys.executable, os.path.abspath(__file__), f"--child={images}", f"--repo={FLAGS.repo}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=FLAGS.repo,
    )
    if child.returncode:
        sys.exit(child.stderr[-3000:])
    row = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"input start-up: first batch of 96 after {row['first_batch_s']:.1f} s, peak memory {row['peak_mb']:.0f} MB (+{row['added_mb']:.0f} MB)")
    model_dir = os.path.join(FLAGS.folder, f"run_{int(time.time())}")
    command = [
        sys.executable, os.path.join(FLAGS.repo, "train.py"), "--flagfile=places2.flags",  # found by name (glcic_tf/flagfiles), or in the repo's root (older checkouts)
        f"--source=folder:{images}", f"--model_dir={model_dir}", f"--batch_size={FLAGS.train_batch_size}",
        "--stop_at_step=1", "--log_every=1",
    ]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=FLAGS.repo)
    first_step = None
    for line in process.stdout:
        if first_step is None and "step 1/" in line:
            first_step = time.perf_counter() - start
    process.wait()
    print(f"train.py (places2.flags, batch {FLAGS.train_batch_size}): first step done {first_step:.1f} s after start" if first_step else "train.py failed")


if __name__ == "__main__":
    app.run(main)
