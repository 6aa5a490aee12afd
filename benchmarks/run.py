r"""All benchmarks in one run, as ratios taken on the same machine at the same time.

    pip install -e ".[cpu,bench]"       # adds torch==2.13.0 (CPU) for the PyTorch peer
    python benchmarks/run.py --output=benchmarks.json

Rows:
1. the machine's limits (benchmarks/machine.py): the float32 4096x4096 matrix product in
   TensorFlow, NumPy and PyTorch, and the float32 peak from the CPU's description where it can
   be known; every rate is also given as a percentage of the best matrix rate and of the peak
   ("-" where the peak is unknown);
2. completion-network inference at 256, 512 and 1024 px (batch 1, paper width): the Keras
   network as trained, the folded network that `Inpainter` runs (glcic_tf.folded), the exported
   SavedModel's serving_default (what TF Serving runs, with the padding and the composite),
   bfloat16 (Keras mixed_bfloat16 and the folded network, only where the processor has bfloat16
   natively; `--precision=auto` picks it where it is the faster), the export's LiteRT models
   (float32 and float16 weights) on the LiteRT interpreter with XNNPACK, as `inpaint.py
   --model=X.tflite` runs them (threads: the fastest count measured here, --litert_threads to
   fix it), and the same network in PyTorch (channels-last, inference mode), with each time
   over PyTorch's. FLOPs are Table 1's (models.completion_flops, 2 per multiply-add: 65.1 GFLOP
   at 256 px);
3. the page at --browser_size px (512): one completion of a photo whose hole's neighbourhood is
   the whole photo, pressed in headless Chromium (benchmarks/page_timing.py), on the page's server
   (app.py with the export's SavedModel) and in the browser (the export's in-browser page:
   onnxruntime-web's WASM with SIMD, threads as cross-origin isolation allows), each over the
   SavedModel's serving_default above, and what the browser loads first;
4. one training step of each phase at the paper's sizes (batch --train_batch_size), with FLOPs
   as 3x the forward passes involved (forward + backward);
5. the input pipeline on JPEG photographs with the paper's settings (benchmarks/pipeline.py).
Each time is the best of --repeats calls after a warm-up call, every way of one size (PyTorch's
too) interleaved, so that a slow spell of these noisy machines falls on all alike; 0.3 s of
sleep before each call lets the other framework's idle threads stop spinning.
benchmarks/layers.py times the network row by row against PyTorch.
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

from benchmarks import app_process, machine, page_timing, pipeline  # noqa: E402  (pipeline defines its flags too)
from benchmarks.torch_peer import torch_network  # noqa: E402
from glcic_tf import completers, export_lib, folded, inference, models, web_export  # noqa: E402
from glcic_tf.errors import UserError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["256", "512", "1024"], "Inference image sides.")
flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (the best is kept).")
flags.DEFINE_bool("torch", True, "Time the PyTorch peer (needs the bench extra).")
flags.DEFINE_bool("training", True, "Also time the training steps and the input pipeline.")
flags.DEFINE_bool("browser", True, "Also time the page at --browser_size px, on its server and in headless Chromium (needs chromium, playwright, tf2onnx and npm's onnxruntime-web; said and skipped without them).")
flags.DEFINE_integer("browser_size", 512, "The page's photo side.")
flags.DEFINE_integer("litert_threads", None, "LiteRT interpreter threads; default: the fastest of 1 to the usable cores, measured at 256 px.")


def _network_input(side):
    return tf.random.uniform((1, side, side, 4))


def tensorflow_inference(sizes, native_bfloat16: bool):
    """Seconds per image of each TensorFlow way to run the network, by (name, side)."""
    network = models.completion_network()
    runs = {
        "keras float32": tf.function(lambda x: network(x, training=False)),
        "folded float32": tf.function(inference.Inpainter(network).network),
        "folded float32, export's form": tf.function(folded.FoldedCompletionNetwork(network, upsampling=export_lib.EXPORT_UPSAMPLING)),
    }
    if native_bfloat16:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        bfloat16 = models.completion_network()
        keras.mixed_precision.set_global_policy("float32")
        bfloat16.set_weights(network.get_weights())
        runs["keras mixed_bfloat16"] = tf.function(lambda x: bfloat16(x, training=False))
        runs["folded bfloat16"] = tf.function(folded.FoldedCompletionNetwork(network, dtype=tf.bfloat16))
    results = {}
    peer = torch_network() if FLAGS.torch else None
    with tempfile.TemporaryDirectory() as folder:
        path = export_lib.export_saved_model(network, models.PLACES2_MEAN_PIXEL, folder, 1, max_request_pixels=max(sizes) ** 2)
        signature = tf.saved_model.load(path).signatures["serving_default"]
        litert = export_lib.export_litert(network, models.PLACES2_MEAN_PIXEL, folder, 1)
        threads = FLAGS.litert_threads or litert_threads(os.path.join(litert, export_lib.LITERT_FILES["float32"]))
        lite = {f"litert {precision} (XNNPACK, {threads} threads)": completers.LiteRTCompleter(os.path.join(litert, name), max(sizes) ** 2, threads)
                for precision, name in export_lib.LITERT_FILES.items()}
        for side in sizes:
            x = _network_input(side)
            image, mask = tf.random.uniform((1, side, side, 3)), tf.cast(tf.random.uniform((1, side, side, 1)) > 0.7, tf.float32)
            functions = {name: (lambda run=run: run(x).numpy()) for name, run in runs.items()}
            functions["export serving_default"] = lambda: signature(image=image, mask=mask)["inpainted"].numpy()
            for name, completer in lite.items():
                functions[name] = lambda completer=completer: completer(image.numpy(), mask.numpy())
            if peer:
                functions["torch"] = _torch_call(*peer, side)
            for name, seconds in machine.best_times(functions, FLAGS.repeats, pause=0.3).items():
                results[(name, side)] = seconds
    return results, peer[1].__version__ if peer else None


def litert_threads(path: str) -> int:
    """The interpreter thread count that completes 256x256 fastest here, of 1 to the usable cores
    (XNNPACK's default is one thread; more are not always faster on a shared machine)."""
    image, mask = tf.random.uniform((1, 256, 256, 3)).numpy(), tf.ones((1, 256, 256, 1)).numpy()
    candidates = {count: completers.LiteRTCompleter(path, 256 * 256, count) for count in range(1, machine.usable_cores() + 1)}
    times = machine.best_times({count: (lambda c=c: c(image, mask)) for count, c in candidates.items()}, FLAGS.repeats, pause=0.3)
    print("LiteRT threads at 256 px: " + ", ".join(f"{count}: {seconds:.3f} s" for count, seconds in times.items()))
    return min(times, key=times.get)


def _torch_call(network, torch, side):
    x = torch.rand(1, 4, side, side).to(memory_format=torch.channels_last)

    def call():
        with torch.inference_mode():
            network(x)

    return call


def main(argv):
    del argv
    machine.size_thread_pools()  # as the commands do: a container's quota, before TensorFlow's first op
    sizes = [int(side) for side in FLAGS.sizes]
    started = time.perf_counter()
    cpu, rates = machine.cpu_description(), machine.matmul_rates(torch=FLAGS.torch)
    best = max(rates.values())
    print(machine.describe(rates))
    print(f"Inpainter's upsampling here: {folded.default_upsampling()}, the export's: {export_lib.EXPORT_UPSAMPLING}; "
          f"--precision=auto computes in {folded.compute_dtype('auto').name}")

    bfloat16 = cpu["native_bfloat16"] and machine.kernel_family() == "oneDNN"  # Eigen's bfloat16 is ~9x slower
    measured, torch_version = tensorflow_inference(sizes, bfloat16)
    rows = inference_rows(measured, sizes, torch_version, best)
    page = page_rows(FLAGS.browser_size) if FLAGS.browser else None
    training_rows, pipeline_rate = training_and_pipeline(best) if FLAGS.training else ([], None)

    # One peak for every table, known only if no float32 rate measured here beats it (bfloat16
    # rows are no float32 rate: their "% peak" is left out).
    float32 = [*rates.values(), *(row["gflops"] for row in rows if "bfloat16" not in row["row"]), *(row["gflops"] for row in training_rows)]
    peak = machine.peak_gflops(cpu, float32)
    print(f"\n{machine.describe_peak(cpu, float32)}")
    print(f"{'inference, batch 1':<52}{'s/image':>9}{'GFLOP/s':>9}{'% peak':>8}{'% matmul':>10}{'x PyTorch':>12}")
    for row in rows:
        row["percent_peak"] = None if "bfloat16" in row["row"] else machine.percent_of(row["gflops"], peak)
        ratio = f"{row['tf_over_torch']:.2f}" if row["tf_over_torch"] else ""
        print(f"{row['row']:<52}{row['seconds']:>9.3f}{row['gflops']:>9.0f}{machine.format_percent(row['percent_peak']):>8}"
              f"{row['percent_best_matmul']:>9.0f}%{ratio:>12}")
    if not bfloat16:
        print("(no bfloat16 rows: this processor has no native bfloat16, AVX512_BF16 or AMX, or TensorFlow runs Eigen's kernels)")
    results = {"machine": cpu, "peak_gflops": peak, "matmul_gflops": rates, "inference": rows, "torch": torch_version}
    if page:
        print_page(page, {row["row"]: row["seconds"] for row in rows})
        results["page"] = page
    if FLAGS.training:
        print(f"\n{'training (batch ' + str(FLAGS.train_batch_size) + ')':<36}{'img/s':>9}{'GFLOP/s':>9}{'% peak':>8}{'% matmul':>10}")
        for row in training_rows:
            row["percent_peak"] = machine.percent_of(row["gflops"], peak)
            print(f"{row['phase']:<36}{row['images_per_second']:>9.2f}{row['gflops']:>9.0f}{machine.format_percent(row['percent_peak']):>8}"
                  f"{row['percent_best_matmul']:>9.0f}%")
        fastest = max(row["images_per_second"] for row in training_rows)
        print(f"\ninput pipeline: {pipeline_rate:.0f} img/s = {pipeline_rate / fastest:.0f}x the fastest training phase")
        results.update({"training": training_rows, "pipeline_images_per_second": pipeline_rate})
    print(f"\nwhole benchmark: {time.perf_counter() - started:.0f} s")
    if FLAGS.output:
        with open(FLAGS.output, "w") as file:
            json.dump(results, file, indent=2, default=float)


def inference_rows(measured, sizes, torch_version, best):
    """One row per way and size: seconds, GFLOP/s, % of the best matmul, time over PyTorch's."""
    peer = {side: seconds for (name, side), seconds in measured.items() if name == "torch"}
    inference_times = {key: seconds for key, seconds in measured.items() if key[0] != "torch"}
    rows = []
    for side in sizes:
        flops = models.completion_flops(side)
        timed = [(f"{'' if name.startswith('litert') else 'tf '}{name} {side}px", seconds, peer.get(side)) for (name, s), seconds in inference_times.items() if s == side]
        if side in peer:
            timed.append((f"torch {torch_version} float32 {side}px", peer[side], None))
        for name, seconds, reference in timed:
            gflops = flops / seconds / 1e9
            rows.append({"row": name, "gflop": flops / 1e9, "seconds": seconds, "gflops": gflops,
                         "percent_best_matmul": 100 * gflops / best, "tf_over_torch": seconds / reference if reference else None})
    return rows


def page_rows(side: int):
    """The page's completion of a `side` px photo on its server and in Chromium (see
    page_timing.time_completions), or None where this machine lacks what it needs (said)."""
    missing = [name for name, present in (("chromium", page_timing.chromium()), ("tf2onnx (the web extra)", _importable("tf2onnx")),
                                           ("playwright", _importable("playwright")), ("scikit-image", _importable("skimage"))) if not present]
    try:
        web_export.runtime_dir()
    except UserError:
        missing.append("onnxruntime-web (npm ci in web/)")
    if missing:
        print(f"(no page rows: this machine lacks {', '.join(missing)})")
        return None
    import cv2  # noqa: PLC0415
    from skimage import data  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as folder:
        network = models.completion_network()  # random weights: the cost does not depend on them
        export_lib.export_saved_model(network, models.PLACES2_MEAN_PIXEL, folder, 1)
        web_export.export_web(network, models.PLACES2_MEAN_PIXEL, folder, 1)
        photo = os.path.join(folder, "astronaut.png")
        cv2.imwrite(photo, cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_AREA)[..., ::-1])
        # A diagonal stroke from a quarter to three quarters: its neighbourhood (153 px) is the whole photo.
        stroke = ((side / 4, side / 4), (3 * side / 4, 3 * side / 4), max(4, side // 20))
        process = None
        try:
            process, url = app_process.start_app(folder)  # exits if app.py does
            timed = page_timing.time_completions(url, photo, (side, side), stroke, ("server", "browser"), max(1, FLAGS.repeats))
        except (Exception, SystemExit) as error:  # noqa: BLE001 (said; the rows measured before are still printed and written)
            print(f"(no page rows: {type(error).__name__}: {error})")
            return None
        finally:
            if process is not None:
                process.terminate()
                process.wait(30)
    return {"side": side, **timed}


def print_page(page, inference_seconds):
    """The page's rows: best seconds (and the range), each over serving_default's at that size."""
    side = page["side"]
    reference = inference_seconds.get(f"tf export serving_default {side}px")
    title = f"the page, {side}x{side} px (Chromium {page['chromium']})"
    print(f"\n{title:<52}{'s/image':>9}{'range':>16}{'x serving_default':>19}")
    for way, name in (("server", "on its server (POST /complete)"), ("browser", "in this browser (WASM SIMD, %d threads)" % page["threads"])):
        seconds = page[way]["seconds"]
        ratio = f"{min(seconds) / reference:.2f}" if reference else "-"
        print(f"{name:<52}{min(seconds):>9.3f}{f'{min(seconds):.2f}-{max(seconds):.2f}':>16}{ratio:>19}")
    loads = page["first_load_bytes"]
    print(f"first load: the page {loads['page'] / 1e3:.0f} KB, then {loads['browser'] / 1e6:.1f} MB more to complete in the browser (runtime and model)")


def _importable(module: str) -> bool:
    import importlib.util  # noqa: PLC0415

    return importlib.util.find_spec(module) is not None


def training_and_pipeline(best):
    """The training steps' rows (images/s, GFLOP/s as 3x the forward passes, % of the best matmul) and the pipeline's rate."""
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as model_dir:
        source = f"folder:{pipeline.jpeg_folder(folder)}"
        training = pipeline.training_rates(source, model_dir)
        pipeline_rate = pipeline.pipeline_rate(source)
    c, d = models.completion_flops(models.GLOBAL_SIZE), models.discriminator_flops()
    step_flops = {"phase1": 3 * c, "phase2": c + 3 * 2 * d, "phase3": 3 * c + 3 * 2 * d + 3 * d}
    rows = []
    for phase, rate in training.items():
        gflops = rate * step_flops[phase] / 1e9
        rows.append({"phase": phase, "images_per_second": rate, "gflops": gflops, "percent_best_matmul": 100 * gflops / best})
    return rows, pipeline_rate


if __name__ == "__main__":
    app.run(main)
