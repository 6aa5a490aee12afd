r"""Complete photographs in the browser: open a photo, paint the hole, press Complete, download.

    python app.py --model=/tmp/glcic_export            # an export, a train.py run folder or a checkpoint
    python app.py --server=localhost:8501               # tensorflow_model_server (REST; --protocol=grpc)
    glcic-app --model=runs/places2 --port=8080         # installed with pip install 'glcic-tf[cpu,app]'

Serves the page on http://127.0.0.1:7860 (--host and --port change it) and prints its address.
The network runs as in inpaint.py: on each hole's neighbourhood, the photo at its own size. See
glcic_tf/webapp/server.py for the endpoint the page uses (POST /complete), which scripts can use too.
"""

import os
import socket

from absl import flags, logging

from glcic_tf import commands
from glcic_tf.errors import UserError, one_line_errors

FLAGS = flags.FLAGS
commands.define_completion_flags()
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0 makes the page reachable from other machines).")
flags.DEFINE_integer("port", 7860, "Port to listen on.")
flags.DEFINE_integer("max_queue", 8, "Completions that may wait for the model; more are answered 503 (busy, try again).")
flags.DEFINE_integer("max_upload_mb", 50, "Refuse photo files larger than this many megabytes (masks: --max_pixels / 8 bytes plus 64 KB, at most this).")


def main(argv):
    del argv  # commands.run refuses positional arguments
    with one_line_errors():
        import uvicorn  # noqa: PLC0415 (an extra: the base install does not need it)

        from glcic_tf.webapp import server  # noqa: PLC0415

        if FLAGS.max_upload_mb <= 0 or FLAGS.max_pixels <= 0:
            raise UserError("--max_upload_mb and --max_pixels must be positive")
        if FLAGS.max_queue < 0:
            raise UserError(f"--max_queue must be 0 or more, not {FLAGS.max_queue}")
        try:  # first, so a busy port fails before the model loads; listening, so the address printed works at once
            listening = socket.create_server((FLAGS.host, FLAGS.port))
        except OSError as error:
            raise UserError(f"cannot listen on {FLAGS.host}:{FLAGS.port}: {os.strerror(error.errno) if error.errno else error} (try another --port)") from None
        completer = commands.completer_from_flags()
        described = FLAGS.model or f"TF Serving at {FLAGS.server} ({FLAGS.protocol}, model {FLAGS.model_name})"
        page = server.create_app(completer, FLAGS.max_pixels, FLAGS.max_upload_mb * 2**20, FLAGS.strategy, FLAGS.max_network_pixels, described, FLAGS.max_queue)
        web_server = server.PageServer(uvicorn.Config(page, log_level="warning"), page)
        shown = "127.0.0.1" if FLAGS.host in ("0.0.0.0", "") else FLAGS.host
        logging.info("completing with %s", described)
        print(f"glcic_tf page: http://{shown}:{listening.getsockname()[1]}  (Ctrl-C stops it)", flush=True)
        try:
            web_server.run(sockets=[listening])
        finally:
            getattr(completer, "close", lambda: None)()  # a TF Serving completer's gRPC channel


def run():
    try:
        import uvicorn  # noqa: F401, PLC0415
    except ImportError:
        raise SystemExit("error: the page needs the app extra: pip install 'glcic-tf[app]' (or -e '.[app]' in a clone)") from None
    commands.run(main, __doc__)


if __name__ == "__main__":
    run()
