"""The one error type for bad input: the CLI prints its message and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (a file, a folder, an option). The message names it and says what is wrong."""


def is_whole_number(text: str) -> bool:
    """True when ``int(text)`` reads ``text``: ASCII digits only (``str.isdigit`` accepts '²', which int refuses)."""
    return text.isascii() and text.isdecimal()
