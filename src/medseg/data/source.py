"""Where a dataset is: one :class:`DataSource`, built once (by the CLI or the caller) and passed everywhere."""

from __future__ import annotations

import json
import logging
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from medseg.errors import DataError

log = logging.getLogger(__name__)

DATA_SOURCE_FILE = "data_source.json"
_KEYS = ("data", "images", "masks", "manifest")  # in data_source.json; "data" is ``root``


@dataclass(frozen=True)
class DataSource:
    """Where the image/mask pairs are (how masks are read, e.g. inverted, is the run's ``data`` config).

    The layouts of :func:`~medseg.data.layouts.find_pairs`: ``root``, a data folder in any layout it
    finds (``images/`` + ``masks/``, ISIC folders, side by side, class folders, DICOM series, a
    ``manifest.csv`` inside) or a manifest ``.csv``; ``images`` + ``masks``, two explicit folders; or
    ``manifest``, a CSV ``image,mask[,split][,roi]`` with paths relative to it. A ``root`` given with the
    others lends its ``split.csv``. ``DataSource()`` (false in a boolean test) means "not given".

    Raises:
        DataError: when built with only one of ``images`` and ``masks`` (``--masks`` without ``--images``).
            A path that does not exist is reported by :meth:`find`.
    """

    root: Path | None = None
    images: Path | None = None
    masks: Path | None = None
    manifest: Path | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) is not None:
                object.__setattr__(self, f.name, Path(getattr(self, f.name)))
        if (self.images is None) != (self.masks is None):
            raise DataError("give both an images folder and a masks folder (--images and --masks), or neither")

    @classmethod
    def of(cls, data: DataSource | str | Path | None) -> DataSource:
        """``data`` as a DataSource: a path is a data folder (or manifest .csv), None the empty source."""
        return data if isinstance(data, DataSource) else cls(root=data)

    def __bool__(self) -> bool:
        return any(v is not None for v in astuple(self))

    def __str__(self) -> str:  # the main path, for messages and summaries
        return str(self.root or self.images or self.manifest or "")

    def find(self):
        """The :class:`~medseg.data.layouts.DataIndex` of the pairs (DataError: a path missing, no pair)."""
        from medseg.data.layouts import find_pairs

        return find_pairs(self.root, images=self.images, masks=self.masks, manifest=self.manifest)

    def record(self, run_dir: Path) -> None:
        """Write the absolute paths to ``RUN/data_source.json``, read back by :meth:`or_recorded`."""
        from medseg.io.files import write_text_atomic

        paths = {k: str(v.resolve()) for k, v in zip(_KEYS, astuple(self), strict=True) if v is not None}
        write_text_atomic(Path(run_dir) / DATA_SOURCE_FILE, json.dumps(paths, indent=2) + "\n")

    def or_recorded(self, run: str | Path) -> DataSource:
        """This source or, when empty, the one recorded in the folder of ``run`` (a run folder or checkpoint).

        Raises DataError when neither exists (an unreadable record counts as none).
        """
        if self:
            return self
        run_dir = Path(run) if Path(run).is_dir() else Path(run).parent
        path, recorded = run_dir / DATA_SOURCE_FILE, DataSource()
        try:
            recorded = DataSource(*map(json.loads(path.read_text()).get, _KEYS)) if path.is_file() else recorded
        except (ValueError, AttributeError, TypeError, DataError):
            pass
        if not recorded:
            raise DataError(f"no data given and {run_dir} records none (runs from older versions); pass the data "
                            "folder as DATA")
        log.info("using the data the run was trained on: %s", recorded)
        return recorded
