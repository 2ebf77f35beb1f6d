"""Progress bars: one switch for every long loop in medseg.

A bar is drawn only when the caller asks for one (``progress=True``), the user did not pass
``--quiet``, and it has somewhere to go: a terminal on stderr, or a Jupyter notebook. A log redirected
to a file or a pipe (``medseg train ... 2> train.log``, a scheduler, CI) gets the log lines only,
never thousands of carriage-return updates. ``MEDSEG_PROGRESS=1`` in the environment draws bars into a
redirected stream too (for a log watched with ``tail -f``); ``--quiet`` still wins.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

_state = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    """``--quiet``: no progress bar anywhere, whatever callers ask for."""
    _state["quiet"] = quiet


def bars_shown() -> bool:
    """True when a bar would be visible: not quiet, and stderr is a terminal, this is a notebook, or
    ``MEDSEG_PROGRESS=1`` asks for bars anyway."""
    if _state["quiet"]:
        return False
    if os.environ.get("MEDSEG_PROGRESS", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    notebook = any("notebook" in cls.__module__ for cls in tqdm.__mro__)
    return notebook or bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``, disabled unless ``enabled`` and :func:`bars_shown`."""
    return tqdm(iterable, disable=not (enabled and bars_shown()), **kwargs)


write = tqdm.write  # a line above any bar that is being drawn
