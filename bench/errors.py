"""The one exception type for bad user input: the CLI prints its message on one line and exits 2."""


class UserError(Exception):
    """Input the user can fix (unknown name, malformed option, missing file); say how in the message."""
