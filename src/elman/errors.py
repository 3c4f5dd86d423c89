"""The one exception type the command line turns into a one-line message."""


class ElmanError(Exception):
    """A problem with the user's input or environment, worded for the user.

    The CLI prints ``elman: error: <message>`` and exits non-zero; it never
    shows a traceback for these.
    """
