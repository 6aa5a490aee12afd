"""The one exception type for problems a user can fix (a wrong path, an unprepared data set...).

Entry points print its message as a single line and exit with status 1, never a traceback.
"""


class UserError(Exception):
    """A bad input or setting; the message says what is wrong and what to do."""
