"""User errors: wrong paths, layouts and values. The CLI prints them as one line, no traceback."""


class UserError(Exception):
    """A problem with the user's input. The message names the file (and line) and what was expected."""


def first_line(error: Exception, limit: int = 200) -> str:
    """A library's error as one short line for a UserError message (its type name when it says nothing)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:limit]
