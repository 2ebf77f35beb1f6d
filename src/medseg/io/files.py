"""Atomic writes: a temporary file in the same folder, then ``os.replace``.

A process killed half-way never leaves a truncated checkpoint, mask or report behind. The file that
lands gets the mode an ordinary ``open(path, "w")`` would give under the process's umask (0644 under
umask 0022), not the 0600 of :func:`tempfile.mkstemp`, so group members, web servers or PACS bridges
running as another user can read the outputs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

from medseg.errors import WriteError

TEMP_SUFFIX = ".tmp"


def temp_prefix(name: str) -> str:
    """Temporary files for ``name`` are ``.<name>.<random>.tmp`` in the same folder."""
    return f".{name}."


def current_umask() -> int:
    """The process's umask, read without changing it where /proc says it (Linux), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    The final file has the umask's default mode (see the module docstring).
    Raises :class:`~medseg.errors.WriteError` (one sentence) when the folder cannot be written or the
    disk fills up; the temporary file is removed and an earlier ``path`` is left untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=TEMP_SUFFIX, dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise write_error(path, err) from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())  # the mode open(..., "w") gives a new file
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, err) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_error(path: Path, err: OSError) -> WriteError:
    """One sentence for a failed write: which file, why (disk full, size limit, read-only, ...)."""
    reason = err.strerror or str(err) or type(err).__name__
    return WriteError(f"cannot write {path} ({reason}); any earlier {path.name} is left unchanged")


def remove_stale_temps(folder: str | Path, names: Iterable[str] | None = None) -> int:
    """Delete temporary files left by writers killed half-way (``.<name>.*.tmp``); returns how many.

    ``names``: only the temporaries of these file names (default: every one in ``folder``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    wanted = None if names is None else {temp_prefix(n) for n in names}
    removed = 0
    for p in folder.iterdir():
        if not (p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX)) or (
                wanted is not None and p.name[: p.name.rfind(".", 0, -len(TEMP_SUFFIX)) + 1] not in wanted):
            continue
        p.unlink(missing_ok=True)
        removed += 1
    return removed


def write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result into place atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of the file at ``path`` (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
