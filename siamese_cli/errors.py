"""The one exception type the CLI turns into a one-line message and exit status 2."""


class SiameseError(Exception):
    """Bad input from the user: a file, a flag or a definition that cannot be used.

    The message is a single line: what is wrong, where, and what to do.
    """

    exit_code = 2

    def __str__(self):
        # A file name read from a file may hold a line break; the message stays one line whatever it quotes.
        return super().__str__().replace("\r", "\\r").replace("\n", "\\n")
