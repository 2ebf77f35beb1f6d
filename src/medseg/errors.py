"""One family of user-facing errors.

Every failure a user can act on is a ``MedsegError`` whose message is one sentence naming the thing
and what to do. The CLI prints it without a traceback (``--debug`` shows one).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MedsegError(Exception):
    """Base class: a problem the user can fix (bad path, bad file, bad config)."""


class DataError(MedsegError):
    """Missing folders, unreadable files, pairs that cannot be used."""


class ConfigError(MedsegError):
    """Unknown preset, unknown key, invalid value."""


class WeightsError(MedsegError):
    """Pretrained weights that cannot be downloaded or loaded."""


class CheckpointError(MedsegError):
    """A run folder or checkpoint that is missing or unusable."""


class ExportError(MedsegError):
    """An export that cannot be made or that fails its accuracy checks."""


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (its type name when it has none), at most 200 characters."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]


def did_you_mean(name: object, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to ``name``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class WriteError(MedsegError, OSError):
    """A file that cannot be written (disk full, file-size limit, read-only folder); earlier versions stay intact.

    Also an ``OSError``, so code that handles failed writes as such keeps working.
    """
