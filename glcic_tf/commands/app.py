r"""Complete photographs in the browser: open a photo, paint the hole, press Complete, download.

    python app.py --model=/tmp/glcic_export            # an export, a train.py run folder or a checkpoint
    python app.py --server=localhost:8501               # tensorflow_model_server (REST; --protocol=grpc)
    glcic-app --model=runs/places2 --port=8080         # installed with pip install 'glcic-tf[cpu,app]'

Serves the page on http://127.0.0.1:7860 (--host and --port change it) and prints its address.
Listening on any other address than this machine's own (--host=0.0.0.0, a LAN address), it
needs a token, --token or a random one printed in the address (`?token=...`).
The network runs as in inpaint.py: on each hole's neighbourhood, the photo at its own size. See
glcic_tf/webapp/server.py for the endpoint the page uses (POST /complete), which scripts can use too.

Where export.py wrote an in-browser page beside the SavedModel (--formats=savedmodel,web), the
page also offers to complete in the browser, the photo never sent (--web_export names another
such folder, or none).
"""

import os
import secrets
import sys

from absl import flags, logging

from glcic_tf import commands, completers, web_export
from glcic_tf.errors import UserError, one_line_errors
from glcic_tf.webapp.settings import PageSettings

DEFAULTS = PageSettings()

FLAGS = flags.FLAGS
commands.define_completion_flags()
commands.define_photo_flags()
commands.define_old_name("strategy", "tiling")
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on, IPv4 or IPv6 (0.0.0.0 or :: makes the page reachable from other machines: then it needs a token).")
flags.DEFINE_string("token", None, "A secret every request must carry (?token= in the page's address); when --host is not loopback and this is not given, a random one is printed.")
flags.DEFINE_integer("port", 7860, "Port to listen on.")
flags.DEFINE_string(
    "web_export",
    "auto",
    "An in-browser page export.py wrote (--formats=web: EXPORT_DIR or EXPORT_DIR/web/VERSION) whose model the page offers to run "
    "in the browser, the photo never sent; auto: the one beside --model's export, if there is one; none: not offered.",
)
flags.DEFINE_integer("max_queue", DEFAULTS.max_queue, "Completions that may wait for the model; more are answered 503 (busy, try again).")
flags.DEFINE_integer(
    "max_upload_mb", DEFAULTS.max_upload_bytes // 2**20, "Refuse photo files larger than this many megabytes (masks: --max_pixels / 8 bytes plus 64 KB, at most this)."
)


def main(argv):
    del argv  # commands.run refuses positional arguments
    with one_line_errors():
        from glcic_tf.webapp import server  # noqa: PLC0415 (uvicorn and starlette: an extra the base install does not need)

        if FLAGS.max_upload_mb <= 0 or FLAGS.max_pixels <= 0:
            raise UserError("--max_upload_mb and --max_pixels must be positive")
        if FLAGS.max_queue < 0:
            raise UserError(f"--max_queue must be 0 or more, not {FLAGS.max_queue}")
        if FLAGS.token is not None and not FLAGS.token.strip():
            raise UserError("--token must not be empty")
        # First, so a busy port fails before the model loads; listening, so the address printed works at once.
        listening = server.listening_socket(FLAGS.host, FLAGS.port)
        token = FLAGS.token or (None if server.is_loopback(FLAGS.host) else secrets.token_urlsafe(16))
        # Before the model loads: a wrong folder is said at once.
        browser_folder = web_export.offered_by_the_page(FLAGS.web_export, FLAGS.model and completers.saved_model_folder(FLAGS.model))
        completer = commands.completer_from_flags()
        # Without a token the page is on loopback: only requests addressed to this machine's names.
        hosts = None if token else ("127.0.0.1", "localhost", "::1", FLAGS.host)
        settings = PageSettings(
            max_pixels=FLAGS.max_pixels,
            max_upload_bytes=FLAGS.max_upload_mb * 2**20,
            max_queue=FLAGS.max_queue,
            # Room for a long queue, the uploads arriving and as many connections besides.
            max_connections=max(DEFAULTS.max_connections, 2 * (FLAGS.max_queue + server.REMOTE_SLOTS + DEFAULTS.max_uploads)),
            token=token,
            allowed_hosts=hosts,
            tiling=FLAGS.tiling,
            max_network_pixels=FLAGS.max_network_pixels,
            description=server.model_description(FLAGS.model, FLAGS.server, FLAGS.protocol, FLAGS.model_name),
            browser_folder=browser_folder and str(browser_folder),
        )
        # The server keeps half of them for connections; what is past max_connections is room for a flood's young ones.
        _open_files_for(8 * settings.max_connections)
        page = server.create_app(completer, settings)
        # Bounded connections (request-less ones closed, room made); told to stop, within settings.stop_seconds + 1 s.
        web_server = server.PageServer(page)
        logging.info("completing with %s", FLAGS.model or f"TF Serving at {FLAGS.server}")
        if browser_folder:
            logging.info("offering completion in the browser with %s", browser_folder)
        address = server.page_address(FLAGS.host, listening.getsockname()[1])
        print(f"glcic_tf page: http://{address}{f'/?token={token}' if token else ''}  (Ctrl-C stops it)", flush=True)
        try:
            web_server.run(sockets=[listening])
        finally:
            getattr(completer, "close", lambda: None)()  # a TF Serving completer's gRPC channel
            if page.state.stopping.is_set():
                # Ctrl-C (SIGTERM has ended the process already): completions still running past
                # the stop were answered 503, their threads are not waited for, and neither is the
                # interpreter's teardown (half a second with TensorFlow loaded), nor a traceback printed.
                if page.state.page.running:
                    logging.warning("stopped with %d completions still running, not waited for", page.state.page.running)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(130)  # as an interrupted process


def _open_files_for(wanted: int) -> None:
    """Raise this process's soft limit of open files to `wanted` if it is lower and the hard limit
    allows (often 1024 of a much larger hard limit); left as it is where that cannot be done."""
    try:
        import resource  # noqa: PLC0415 (Unix only)

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard))
    except (ImportError, OSError, ValueError):
        pass


def run():
    try:
        import uvicorn  # noqa: F401, PLC0415
    except ImportError:
        raise SystemExit("error: the page needs the app extra: pip install 'glcic-tf[app]' (or -e '.[app]' in a clone)") from None
    commands.run(main, __doc__)


if __name__ == "__main__":
    run()
