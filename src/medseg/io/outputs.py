"""Never write over an input: the rule every command that writes follows.

A command refuses (:class:`OutputError`, before any work) when a file it would write is one of the
files it reads, or when two inputs would be written to the same output name (``a.png`` and ``a.jpg``
both give the mask ``a.png``). It never renames silently: the user chooses another ``--out``.
Paths are compared after resolving symbolic links, so ``photos/`` and ``./photos/../photos`` are
one folder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from medseg.errors import MedsegError


@dataclass
class BatchResult:
    """What a command that works through many inputs did: ``medseg predict`` (images or DICOM series),
    ``medseg convert``. One input's failure never stops the rest; it is listed here instead."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (input, one sentence naming it)
    skipped: list[Path] = field(default_factory=list)  # outputs already complete (restartable prediction)
    notes: list[str] = field(default_factory=list)  # warnings that did not stop anything
    qc: list[tuple[str, float]] = field(default_factory=list)  # (file name, failure-flag score) with --qc
    n_frames: int = 0  # DICOM frames predicted

    def merge(self, other: BatchResult) -> BatchResult:
        """This result with ``other``'s lists appended (the shares of several processes)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


class OutputError(MedsegError):
    """A write that would replace an input, or two inputs that would share one output file."""


def _key(path: Path) -> Path:
    return Path(path).expanduser().resolve()


def check_outputs(planned: Mapping[Path, Path] | Iterable[tuple[Path, Path]], *, inputs: Iterable[Path] = (),
                  what: str = "output") -> None:
    """Refuse a plan of writes ``{input: output}`` that overwrites an input or merges two inputs.

    ``planned`` maps each input file to the file written for it (the main output; call again for
    side files such as overlays). ``inputs`` lists further files the command reads (a checkpoint,
    a reference series). Raises :class:`OutputError` naming the first conflict; writes nothing.
    """
    items = list(planned.items() if isinstance(planned, Mapping) else planned)
    read = {_key(p): Path(p) for p, _ in items}
    read.update({_key(p): Path(p) for p in inputs})
    seen: dict[Path, Path] = {}
    for source, target in items:
        key = _key(target)
        if key in read:
            raise OutputError(f"{what} {target} would overwrite the input {read[key]}; medseg never writes over "
                              "its inputs: choose another --out folder")
        if key in seen:
            raise OutputError(f"{seen[key]} and {source} would both be written to {target}; rename one of them "
                              "or predict them into different --out folders")
        seen[key] = Path(source)


def check_not_input(target: Path, inputs: Iterable[Path], *, what: str = "output") -> None:
    """Refuse writing ``target`` (a file, or a folder the command writes into) when it is one of ``inputs``.

    Commands that convert a whole folder (``medseg convert``) use it on the folder: their ``--out``
    may not be the folder they read, so nothing is written among the sources.
    """
    key = _key(target)
    for p in inputs:
        if _key(p) == key:
            raise OutputError(f"{what} {target} is also an input; medseg never writes over its inputs: choose "
                              "another --out")
