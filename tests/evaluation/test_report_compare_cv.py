"""End to end on the tiny run: evaluate with intervals and QC, the HTML report in Chromium, compare,
predict --tta writing qc.csv, and a two-fold cross-validation with its ensemble."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli import app
from tests.conftest import TINY


@pytest.fixture(scope="module")
def evaluated(tiny_run, tiny_dataset, tmp_path_factory) -> Path:
    from medseg.evaluation.report import write_report

    out = tmp_path_factory.mktemp("report") / "report.html"
    write_report(tiny_run, tiny_dataset, split="val", out=out, qc=True, worst=3,
                 overrides=["infer.tta_scales=[1.0]"])
    return out


def test_evaluate_summary_has_intervals_surface_and_pixel_scores(evaluated):
    summary = json.loads((evaluated.parent / "eval_val" / "summary.json").read_text())
    for key in ("dice", "iou", "hd95", "assd", "nsd", "failure_rate", "auc_roc", "average_precision", "ece"):
        lo, hi = summary["ci95"][key]
        assert lo <= summary[key] <= hi, key
    assert summary["bootstrap"]["resamples"] >= 1000
    assert 0.0 <= summary["auc_roc"] <= 1.0 and summary["surface_unit"] == "px"
    assert summary["qc"]["n_images"] == summary["n_images"] == 4
    with open(evaluated.parent / "eval_val" / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"hd95", "nsd", "qc_score", "qc_flag"} <= set(rows[0])
    assert all(np.isfinite(float(r["hd95"])) for r in rows)


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    return path


def test_report_renders_in_chromium_with_every_image_loaded(evaluated):
    playwright = pytest.importorskip("playwright.sync_api")
    text = evaluated.read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text  # offline, self-contained
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(evaluated.as_uri())
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth])")
        headings = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
        cells = page.eval_on_selector_all("td", "els => els.map(e => e.textContent)")
        browser.close()
    alts = [a for a, _, _ in images]
    assert all(complete and width > 0 for _, complete, width in images), images
    for alt in ("Dice histogram", "HD95 box plot", "reliability diagram", "failure flag scatter", "training curves"):
        assert alt in alts
    assert sum(1 for a in alts if "_dice" in a) == 3  # the worst-k gallery
    for h in ("Metrics", "Failure flag", "Training curves", "Config", "Data report"):
        assert any(h in x for x in headings), h
    assert "Dice" in cells and any(c.startswith("[") for c in cells)  # intervals in the table


def test_compare_two_prediction_folders(tiny_run, tiny_dataset, tmp_path):
    runner = CliRunner()
    a, b = tmp_path / "a", tmp_path / "b"
    assert runner.invoke(app, ["predict", str(tiny_run), str(tiny_dataset / "images"), "--out", str(a)]).exit_code == 0
    b.mkdir()
    for i, png in enumerate(sorted(a.glob("*.png"))):  # B: A's masks, every other one emptied
        shutil.copy(png, b / png.name)
        if i % 2:
            from PIL import Image

            Image.fromarray(np.zeros_like(np.asarray(Image.open(png)))).save(b / png.name)
    result = runner.invoke(app, ["compare", str(a), str(b), str(tiny_dataset), "--split", "all",
                                 "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    cmp = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert cmp["n_images"] == 24
    dice = cmp["metrics"]["dice"]
    assert dice["mean_diff"] < 0 and dice["better"] == "A"
    assert "dice: A" in result.output and "Wilcoxon" in result.output


def test_predict_tta_writes_qc_csv_with_the_calibrated_flag(tiny_run, tiny_dataset, evaluated, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("best.pt", "config.yaml"):
        shutil.copy(tiny_run / name, run / name)
    shutil.copy(evaluated.parent / "eval_val" / "qc.json", run / "qc.json")
    out = tmp_path / "pred"
    result = CliRunner().invoke(app, ["predict", str(run), str(tiny_dataset / "images"), "--out", str(out), "--tta",
                                      "--set", "infer.tta_scales=[1.0]"])
    assert result.exit_code == 0, result.output
    with open(out / "qc.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24 and set(rows[0]) == {"image", "qc_score", "flagged"}
    threshold = json.loads((run / "qc.json").read_text())["threshold"]
    assert all(int(r["flagged"]) == (float(r["qc_score"]) >= threshold) for r in rows)
    assert not list(out.glob("*_uncertainty.png"))  # only with --uncertainty


def test_two_fold_cross_validation_and_its_ensemble(tiny_dataset, tmp_path):
    from medseg.engine.cv import read_plan
    from medseg.evaluation.crossval import summarise_cv, train_cv
    from medseg.inference.predictor import Predictor

    run = tmp_path / "cv"
    overrides = [o for o in TINY if not o.startswith("train.epochs")] + ["train.epochs=1"]
    train_cv(tiny_dataset, run, folds=2, fold=1, overrides=overrides, progress=False)  # one fold, its own process
    first = json.loads((run / "cv_summary.json").read_text())
    assert first["folds_done"] == [1]
    train_cv(tiny_dataset, run, folds=2, overrides=overrides, progress=False)  # fold 1 kept, fold 0 trained
    plan = read_plan(run)
    summary = summarise_cv(run, tiny_dataset)
    assert summary["folds_done"] == [0, 1]
    test_ids = {line.split(",")[0] for line in (tiny_dataset / "split.csv").read_text().splitlines()[1:]
                if line.endswith(",test")}
    assert not test_ids & set(plan["assignment"])  # the test split stays out of the folds
    assert sum(f["n_images"] for f in summary["folds"]) == len(plan["assignment"]) == 20
    for i in (0, 1):
        splits = dict(line.split(",") for line in (run / f"fold_{i}" / "splits.csv").read_text().splitlines()[1:])
        assert {c for c, s in splits.items() if s == "val"} == {c for c, f in plan["assignment"].items() if f == i}
        own = json.loads((run / f"fold_{i}" / "postprocess.json").read_text())  # each fold tuned on its own val
        assert own["n_images"] == sum(f == i for f in plan["assignment"].values())
    oof = json.loads((run / "eval_oof" / "summary.json").read_text())
    assert oof["n_images"] == 20 and "dice" in oof["ci95"]
    predictor = Predictor.load(run)
    assert len(predictor.members) == 2 and predictor.config.infer.threshold == plan["infer"]["threshold"]
    image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(next((tiny_dataset / "images").iterdir())))
    mean = np.mean([m.predict_proba(image) for m in predictor.members], axis=0)
    assert np.allclose(predictor.predict_proba(image), mean, atol=1e-5)
