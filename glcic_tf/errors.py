"""The one exception type for problems a user can fix (a wrong path, an unprepared data set...).

Entry points print its message as a single line and exit with status 1, never a traceback.
"""

import contextlib
import sys


class UserError(Exception):
    """A bad input or setting; the message says what is wrong and what to do."""


class ImageTooLarge(UserError):
    """An image over the pixel limit (the page answers it with HTTP 413)."""


class ModelRefused(UserError):
    """A model that refused its input (its own pixel limit, a size its runtime cannot take):
    the message says what it refused."""


class ServiceUnavailable(UserError):
    """A model server that does not answer, or fails on its side (the page answers HTTP 503:
    try again later); what the server refuses as a bad request is a plain UserError (400)."""


@contextlib.contextmanager
def one_line_errors():
    """For entry points: a UserError inside becomes `error: <message>` on stderr and exit status 1."""
    try:
        yield
    except UserError as error:
        sys.exit(f"error: {error}")  # printed once, on stderr
