"""The viewer page in a real headless Chromium (Debian's `chromium`, driven by Playwright for Python).

Playwright's own browser download is not used: `executable_path` points at the Debian binary, which
`.ci/run` installs. The test skips, with the reason, only when that browser cannot be started.
"""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medseg.cli import app as cli
from medseg.inference.predictor import Predictor
from medseg.serve.app import create_app
from medseg.serve.settings import ServeSettings
from tests._dicom_factories import ct_slice
from tests._serve_helpers import TOKEN, UvicornThread, wait_ready

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium; .ci/run installs it)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        except Exception as err:  # noqa: BLE001 - any launch failure means no browser here
            pytest.skip(f"chromium at {CHROMIUM} cannot start: {str(err).splitlines()[0]}")
        yield b
        b.close()


def real_or_synthetic_image(tmp_path: Path) -> Path:
    """A validation image of ISIC 2018 from ../shared/data, else a synthetic dermoscopy-like one."""
    from tests.conftest import SHARED_DATA

    isic = SHARED_DATA / "isic2018_256"
    split = isic / "split.csv"
    if split.is_file():
        with split.open() as f:
            rows = [r for r in csv.DictReader(f) if r.get("split") == "val"]
        for row in rows:
            candidates = list((isic / "images").glob(f"{Path(row[next(iter(row))]).stem}.*"))
            if candidates:
                return candidates[0]
    from medseg.data.synthetic import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "synthetic", n_train=1, n_val=0, n_test=0, size=120, seed=7)
    return sorted((data / "images").iterdir())[0]


def test_viewer_overlays_thresholds_and_downloads_the_mask_of_medseg_predict(browser, tiny_run, tmp_path):
    image = real_or_synthetic_image(tmp_path)
    (tmp_path / "in").mkdir()
    shutil.copy(image, tmp_path / "in" / image.name)
    result = CliRunner().invoke(cli, ["predict", str(tiny_run), str(tmp_path / "in"), "--out", str(tmp_path / "cli")],
                                catch_exceptions=False)
    for handler in list(logging.root.handlers):
        if getattr(getattr(handler, "stream", None), "closed", False):
            logging.root.removeHandler(handler)
    assert result.exit_code == 0, result.output
    expected = (tmp_path / "cli" / f"{image.stem}.png").read_bytes()
    width, height = Image.open(image).size
    predictor = Predictor.load(tiny_run)
    q = np.clip(np.rint(predictor.predict_proba(image) * 255), 0, 255)  # the probability PNG's values

    app = create_app(predictor, ServeSettings(token=TOKEN, model_path=str(tiny_run)))
    with UvicornThread(app) as server:
        import httpx

        with httpx.Client(base_url=server.url) as http:
            wait_ready(http.get)
        page = browser.new_page(accept_downloads=True)
        segment_calls = []
        page.on("request", lambda r: segment_calls.append(r.url) if "/v1/segment" in r.url else None)
        page.goto(server.url + "/")
        page.wait_for_selector("#status[data-state=error]")  # no token yet: the page asks for it
        assert "token" in page.inner_text("#status")
        page.fill("#token", TOKEN)
        page.click("#connect")
        page.wait_for_selector("#model:has-text('@')")
        assert page.inner_text("#legend").strip() == "foreground"

        page.set_input_files("#file", str(image))
        page.wait_for_selector("#status[data-state=done]", timeout=120_000)
        size = page.eval_on_selector("#overlay", "c => [c.width, c.height]")
        assert size == [width, height] == page.eval_on_selector("#image", "c => [c.width, c.height]")
        shown = page.eval_on_selector("#overlay", "c => c.getBoundingClientRect().width")
        assert shown > 0 and page.is_visible("#overlay")
        timing = page.inner_text("#timing")
        assert "ms" in timing and f"{width} x {height} px" in timing
        fg = int(page.get_attribute("#overlay", "data-foreground"))
        assert fg == int((q > 0.5 * 255).sum())  # the overlay is the probabilities at the run's threshold

        with page.expect_download() as download:
            page.click("#download")
        assert Path(download.value.path()).read_bytes() == expected  # the mask of `medseg predict`

        # the threshold moves in the browser only: the overlay follows, the model is not called again
        page.eval_on_selector("#threshold", "el => { el.value = 20; el.dispatchEvent(new Event('input')); }")
        assert int(page.get_attribute("#overlay", "data-foreground")) == int((q > 0.2 * 255).sum())
        page.eval_on_selector("#opacity", "el => { el.value = 80; el.dispatchEvent(new Event('input')); }")
        assert page.eval_on_selector("#overlay", "c => c.style.opacity") == "0.8"
        page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)
        assert len(segment_calls) == 1

        # a DICOM file: the server renders the windowed frame for the page
        pixels = np.random.default_rng(2).integers(0, 400, (40, 56)).astype(np.int16)
        ct = ct_slice(tmp_path / "ct.dcm", pixels, window=(40, 400))
        page.set_input_files("#file", str(ct))
        page.wait_for_selector("#status[data-state=done]", timeout=120_000)
        assert page.eval_on_selector("#overlay", "c => [c.width, c.height]") == [56, 40]
        assert len(segment_calls) == 2
        page.close()
