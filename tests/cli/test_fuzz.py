"""The fuzz corpus (tests/fuzz_corpus.py) through `data check`, `predict`, `convert` and `train --config`:
no traceback, the documented exit code (0 done, 1 nothing usable or a data check with errors, 2 a
user error), every refused file named, the rest of the batch done, nothing half-written."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from medseg.cli import app
from medseg.errors import MedsegError
from tests._paths import ROOT
from tests.fuzz_corpus import make_corpus

OUTCOMES: Counter[str] = Counter()  # (kind, expectation, outcome), printed at the end of the module


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_run):
    root = tmp_path_factory.mktemp("fuzz")
    return root, make_corpus(root, checkpoint=tiny_run / "best.pt")


def invoke(*args: str) -> tuple[int, str]:
    """(exit code as `medseg` gives it, output); fails the test on anything but a clean exit."""
    result = CliRunner().invoke(app, list(args))
    root = logging.getLogger()
    for handler in list(root.handlers):  # the CLI logs to the runner's stream, closed now
        if getattr(getattr(handler, "stream", None), "closed", False):
            root.removeHandler(handler)
    text = result.output
    if result.exception is not None and not isinstance(result.exception, (SystemExit, MedsegError)):
        raise AssertionError(f"medseg {' '.join(args)} raised {type(result.exception).__name__}: "
                             f"{result.exception}") from result.exception
    assert "Traceback" not in text
    if isinstance(result.exception, MedsegError):
        return 2, text + f"\nerror: {result.exception}"
    return result.exit_code, text


def assert_whole(folder: Path) -> list[Path]:
    """No temporary or partial file under ``folder``; every PNG decodes, every JSON parses."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(".") or p.name.endswith(".tmp")], files
    for p in files:
        if p.suffix == ".png":
            with Image.open(p) as im:
                im.load()
        elif p.suffix == ".json":
            json.loads(p.read_text())
    return files


def judge(case, refused: bool, output: str) -> None:
    """Check one case against its expectation and count the outcome."""
    outcome = "refused, named" if refused else "used"
    OUTCOMES[(case.kind, case.expect, outcome)] += 1
    if refused:
        assert case.path.name in output, f"{case.name} ({case.path.name}) was refused without being named"
    if case.expect == "ok":
        assert not refused, f"{case.name} ({case.path.name}) should have been used"
    elif case.expect == "error":
        assert refused, f"{case.name} ({case.path.name}) should have been refused"


def test_data_check_names_every_broken_image_and_mask(corpus):
    from medseg.data.check import check_pairs
    from medseg.data.layouts import find_pairs

    root, cases = corpus
    code, text = invoke("data", "check", str(root / "data"))
    assert code == 1  # errors were found, and said
    report = check_pairs(find_pairs(root / "data"))
    bad = {p.path for p in report.problems if p.fatal}
    assert {"control_0", "control_1"} <= {p.case_id for p in report.good}
    for case in cases:
        if case.kind in ("image", "mask"):
            judge(case, case.path in bad, text)


def test_predict_skips_broken_images_and_writes_the_rest(corpus, tiny_run):
    root, cases = corpus
    out = root / "predicted"
    code, text = invoke("predict", str(tiny_run), str(root / "data" / "images"), "--out", str(out), "--overlay")
    assert code == 0
    written = {p.stem for p in assert_whole(out)}
    for case in cases:
        if case.kind == "image":
            refused = any(line.startswith("skipped") and f"/{case.path.name} " in line for line in text.splitlines())
            judge(case, refused, text)
            assert (case.path.stem in written) == (not refused)
    assert {"control_0", "control_0_overlay"} <= written


def test_convert_and_predict_dicom_name_every_broken_file(corpus, tiny_run):
    root, cases = corpus
    code, text = invoke("convert", "dicom", str(root / "dicom"), str(root / "png"))
    assert code == 0
    converted = {p.stem for p in assert_whole(root / "png") if p.suffix == ".png"}
    dicom = [c for c in cases if c.kind == "dicom"]
    for case in dicom:
        refused = case.path.stem not in converted
        judge(case, refused, text)
    code, predicted = invoke("predict", str(tiny_run), str(root / "dicom"), "--out", str(root / "dicom_masks"))
    assert code == 0
    masks = {p.stem for p in assert_whole(root / "dicom_masks")}
    for case in dicom:
        assert (case.path.stem in masks) == (case.path.stem in converted)
        if case.path.stem not in masks:
            assert case.path.name in predicted
    code, text = invoke("predict", str(tiny_run), str(root / "dicom" / "round0"), "--out", str(root / "seg"),
                        "--format", "dicom-seg")  # every slice is a series of its own: one SEG per usable slice
    assert code == 0
    assert len(assert_whole(root / "seg")) == sum(c.path.parent.name == "round0" and c.path.stem in converted
                                                  for c in dicom)


def test_convert_labels_names_every_broken_label_file(corpus):
    root, cases = corpus
    code, text = invoke("convert", "labels", str(root / "labels" / "volumes"), "--reference",
                        str(root / "reference" / "ct"), "--out", str(root / "vol_masks"))
    assert code == 0 and len(assert_whole(root / "vol_masks")) == 3
    code2, text2 = invoke("convert", "labels", str(root / "labels" / "labelme"), "--reference", str(root / "reference"),
                          "--out", str(root / "lm_masks"))
    assert code2 == 0 and [p.name for p in assert_whole(root / "lm_masks")] == ["photo.png"]
    for case in cases:
        if case.kind == "label":
            output = text if case.path.parent.name == "volumes" else text2
            refused = any(line.startswith("skipped") and case.path.name in line for line in output.splitlines())
            judge(case, refused, output)


def test_bad_configs_are_refused_naming_the_file(corpus):
    root, cases = corpus
    for case in cases:
        if case.kind == "config":
            code, text = invoke("train", str(root / "data"), "--config", str(case.path), "--out", str(root / "run"))
            judge(case, code == 2, text)
            assert code == 2, text
    assert not (root / "run").exists()


def test_broken_model_files_are_refused_naming_them(corpus):
    root, cases = corpus
    image = root / "data" / "images" / "control_0.png"
    for case in cases:
        if case.kind == "model":
            code, text = invoke("predict", str(case.path), str(image), "--out", str(root / "model_out"))
            judge(case, code == 2, text)
            assert code == 2, text
    assert not (root / "model_out").exists()


@pytest.mark.parametrize("what", ["config", "model"])
def test_the_real_command_exits_2_without_a_traceback(corpus, what):
    root, cases = corpus
    case = next(c for c in cases if c.kind == what)
    args = (["train", str(root / "data"), "--config", str(case.path), "--out", str(root / "run2")] if what == "config"
            else ["predict", str(case.path), str(root / "data" / "images" / "control_0.png"), "--out", str(root / "o")])
    out = subprocess.run([sys.executable, "-c", "from medseg.cli import main; main()", *args], capture_output=True,
                         text=True, timeout=300, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: ") and case.path.name in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_zz_report_counts(corpus):
    """Not a check: prints how the corpus ended (pytest -s shows it)."""
    total = Counter()
    for (kind, expect, outcome), n in sorted(OUTCOMES.items()):
        print(f"fuzz {kind:7s} expected {expect:6s} -> {outcome}: {n}")
        total[outcome] += n
    print(f"fuzz total: {sum(total.values())} runs of {len(corpus[1])} inputs; {dict(total)}")
