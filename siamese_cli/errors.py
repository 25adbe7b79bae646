"""The one exception type the CLI turns into a one-line message and exit status 2."""


class SiameseError(Exception):
    """Bad input from the user: a file, a flag or a definition that cannot be used.

    The message is a single line: what is wrong, where, and what to do.
    """

    exit_code = 2
