"""Where the checkout is, and the environment of a child process that must import this checkout's medseg.

Test files sit one or two folders below ``tests/``; they take paths from here, never from
``Path(__file__).parents[n]``, so that moving a test file changes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository
SRC = str(ROOT / "src")
SHARED = ROOT.parent / "shared"  # ../shared: data and field cases, never copied into the repository


def child_env(**extra: str) -> dict[str, str]:
    """os.environ for a subprocess: this checkout's ``src`` first on PYTHONPATH, no inherited torch.distributed
    rank variables (a child starts its own process group or none), plus ``extra`` variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}
