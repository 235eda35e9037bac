"""User errors: wrong paths, layouts and values. The CLI prints them as one line, no traceback."""


class UserError(Exception):
    """A problem with the user's input. The message names the file (and line) and what was expected."""
