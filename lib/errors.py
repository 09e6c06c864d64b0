"""Errors a user can fix, and the one-line messages the ``e3relax`` command prints for them.

Library code raises :class:`UserError` (or a subclass) naming the input that caused the problem
(file, record, config key) and why; ``e3relax`` prints it as one line,
``e3relax <command>: error: <message>``, and exits with status 2 (``--debug`` shows the traceback).
:func:`user_message` turns the few foreign exceptions that are user errors too (a missing file, an
LMDB that is not one, a file that is a folder) into such a message, and anything else into None.

:class:`Interrupted` is raised by a training run stopped by SIGINT or SIGTERM after it saved its
state; its :attr:`~Interrupted.exit_status` is the conventional ``128 + signal number``.
"""
from __future__ import annotations

import signal

__all__ = ["UserError", "InputError", "MissingPathError", "Interrupted", "user_message"]


class UserError(Exception):
    """A problem with the user's input (file, record, option or config key); the message names it."""


class InputError(UserError, ValueError):
    """A value, file content or option that is invalid (also a ``ValueError``)."""


class MissingPathError(UserError, FileNotFoundError):
    """A path that does not exist (also a ``FileNotFoundError``)."""


class Interrupted(Exception):
    """A run stopped by a signal after saving what a resume needs.

    Attributes:
        signum: the signal (``signal.SIGINT`` or ``signal.SIGTERM``).
        message: one line saying where it stopped and how to resume.
    """

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = int(signum)
        self.message = message

    @property
    def exit_status(self) -> int:
        """``128 + signum``: 130 for SIGINT (Ctrl-C), 143 for SIGTERM."""
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


def _first_line(text: str) -> str:
    """The message of an exception re-raised from a DataLoader worker, without the worker traceback."""
    if "Original Traceback" in text:
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        last = lines[-1]
        _, sep, rest = last.partition(": ")
        return rest if sep else last
    return " ".join(text.split())


def user_message(exc: BaseException) -> str | None:
    """The one-line message for ``exc`` when it is a user error, else None (a bug: show the traceback)."""
    if isinstance(exc, UserError):
        return _first_line(str(exc))
    from e3relax.registry import RegistryError

    if isinstance(exc, RegistryError):  # unknown component or keyword: named by the registry
        return _first_line(str(exc))
    try:
        import lmdb
    except ImportError:  # pragma: no cover
        lmdb = None
    if lmdb is not None and isinstance(exc, lmdb.Error):
        return f"not a readable LMDB database ({_first_line(str(exc))})"
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        if exc.filename is None:
            return _first_line(str(exc))
        reason = {FileNotFoundError: "does not exist", IsADirectoryError: "is a folder, not a file",
                  NotADirectoryError: "is not a folder", PermissionError: "permission denied"}[type(exc)]
        return f"{exc.filename}: {reason}"
    return None
