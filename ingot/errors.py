"""The one error type users see: a single line that names the problem."""


class IngotError(Exception):
    """A problem with user input (model files, artefact, flags) or the host.

    The CLI prints ``str(err)`` on one line and exits non-zero; it never shows a traceback
    for these.
    """
