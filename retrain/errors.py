"""The one exception type the command line turns into a one-line message."""


class UserError(Exception):
    """A problem with the user's input or set-up: reported in one line, never as a traceback."""
