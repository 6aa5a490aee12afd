r"""The page under load: N clients posting phone photos with small holes, for a bounded time each.

    python benchmarks/page_load.py                              # 1, 8, 32, 64 clients, 20 s each
    python benchmarks/page_load.py --clients=8,64 --seconds=10 --model=quickstart_output/export

Starts `app.py --model=... --port=0` (by default a SavedModel of the paper-width network with
random weights: the cost does not depend on them) and, for each number of clients, runs that
many threads, each posting a phone-size photo (a 4000x3000 JPEG, about 1 MB) with one small hole
to POST /complete again and again for --seconds, as the page would. Meanwhile it asks for the
page itself (GET /) twice a second and reads the server's memory from /proc. Prints one row
per number of clients: completions per second, their latency (p50, p99), how many were told
the server is busy (503), other failures, GET / latency (p50, max) and the server's resident
memory (the most sampled, and the process's peak so far). Completions per second are counted
over the run's time to its last reply, since posts started before the end are waited for.
"""

import http.client
import os
import statistics
import sys
import tempfile
import threading
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import app_process  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "What app.py serves; unset: an export of the paper-width network with random weights.")
flags.DEFINE_list("clients", ["1", "8", "32", "64"], "Numbers of clients, one run each.")
flags.DEFINE_float("seconds", 20, "How long each run posts.")
flags.DEFINE_integer("max_queue", 8, "app.py's --max_queue.")
flags.DEFINE_integer("hole", 64, "The hole's side in pixels.")

BOUNDARY = b"glcicloadboundary"


def phone_photo_form():
    """(boundary, body) of the page's form: a 4000x3000 JPEG and a mask with one square hole."""
    import cv2  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    from skimage import data  # noqa: PLC0415

    photo = cv2.resize(data.astronaut(), (4000, 3000), interpolation=cv2.INTER_CUBIC)
    photo_jpeg = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    mask = np.zeros((3000, 4000), np.uint8)
    mask[1500 : 1500 + FLAGS.hole, 2000 : 2000 + FLAGS.hole] = 255
    mask_png = cv2.imencode(".png", mask)[1].tobytes()
    parts = [
        (b'name="image"; filename="phone.jpg"', photo_jpeg),
        (b'name="mask"; filename="mask.png"', mask_png),
        (b'name="postprocess"', b"false"),
    ]
    body = b"".join(b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; " + d + b"\r\n\r\n" + v + b"\r\n" for d, v in parts)
    return body + b"--" + BOUNDARY + b"--\r\n"


def start_app(model):
    process, address = app_process.start_app(model, f"--max_queue={FLAGS.max_queue}")
    return process, int(address.rsplit(":", 1)[1])


def memory_mb(pid):
    """(resident, peak resident) of process `pid` in MB, from /proc."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            fields[name] = value.split()[0] if value.split() else "0"
    return int(fields.get("VmRSS", 0)) / 1024, int(fields.get("VmHWM", 0)) / 1024


def post(port, body):
    """(status, seconds) of one POST /complete."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.request("POST", "/complete", body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY.decode()}"})
        reply = connection.getresponse()
        reply.read()
        return reply.status, time.perf_counter() - start
    except OSError:
        return None, time.perf_counter() - start
    finally:
        connection.close()


def get_page(port):
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.request("GET", "/")
        connection.getresponse().read()
    finally:
        connection.close()
    return time.perf_counter() - start


def run_level(port, pid, clients, body):
    """One row: `clients` threads posting for FLAGS.seconds, the page and memory sampled."""
    results, page_seconds, resident = [], [], []
    start = time.perf_counter()
    end = start + FLAGS.seconds
    lock = threading.Lock()

    def client():
        while time.perf_counter() < end:
            result = post(port, body)
            with lock:
                results.append(result)
            if result[0] == 503:
                time.sleep(0.5)  # as the page's user would, a moment later

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    while time.perf_counter() < end:
        page_seconds.append(get_page(port))
        resident.append(memory_mb(pid)[0])
        time.sleep(0.5)
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start  # to the last reply: posts started before the end count
    completed = [seconds for status, seconds in results if status == 200]
    busy = sum(status == 503 for status, _ in results)
    failed = len(results) - len(completed) - busy
    quantile = lambda values, q: statistics.quantiles(values, n=100)[q - 1] if len(values) >= 2 else (values[0] if values else float("nan"))  # noqa: E731
    return (
        f"| {clients} | {len(completed) / elapsed:.2f} | {quantile(completed, 50):.2f} | {quantile(completed, 99):.2f} | {busy} | {failed} "
        f"| {1000 * statistics.median(page_seconds):.0f} | {1000 * max(page_seconds):.0f} | {max(resident):.0f} | {memory_mb(pid)[1]:.0f} |"
    )


def main(argv):
    del argv
    body = phone_photo_form()
    with tempfile.TemporaryDirectory() as folder:
        model = FLAGS.model
        if model is None:
            from glcic_tf import export_lib, models  # noqa: PLC0415

            model = os.path.join(folder, "export")
            export_lib.export_saved_model(models.completion_network(), models.PLACES2_MEAN_PIXEL, model, 1)
        process, port = start_app(model)
        try:
            post(port, body)  # warm up
            print(f"photo 4000x3000 JPEG ({len(body) / 2**20:.1f} MB form), one {FLAGS.hole}x{FLAGS.hole} hole, --max_queue={FLAGS.max_queue}, {FLAGS.seconds:g} s per row")
            print("| clients | completions/s | p50 s | p99 s | 503s | failed | GET / p50 ms | GET / max ms | RSS max MB | RSS peak MB |")
            print("|---|---|---|---|---|---|---|---|---|---|")
            for clients in FLAGS.clients:
                print(run_level(port, process.pid, int(clients), body), flush=True)
        finally:
            process.terminate()
            process.wait(60)


if __name__ == "__main__":
    app.run(main)
