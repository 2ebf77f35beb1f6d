"""`medseg plan`: catalogue, machine description, planner decisions on synthetic data, determinism, training."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from medseg.cli import app
from medseg.config import ModelConfig, build_config
from medseg.models import create_model
from medseg.plan.catalogue import CATALOGUE, FROM_SCRATCH
from medseg.plan.machine import Machine, probe_machine
from medseg.plan.planner import LETTERBOX_FLOOR, TARGET_EPOCHS, TARGET_STEPS, VAL_SHARE, make_plan
from medseg.plan.run import plan_data
from tests._dicom_factories import ct_slice
from tests._factories import save

SIDE = 256


def machine(speed: float = 40.0, device: str = "cpu", bf16: bool = False) -> Machine:
    """A machine description: training img/s at 128 px = speed / params (M), 256 px a quarter of it."""
    tp = {n.name: {"128": round(speed / n.params_m, 3), "256": round(speed / n.params_m / 4, 3)}
          for n in FROM_SCRATCH}
    return Machine(device, 2, "Test CPU", {"amx": False, "avx512_bf16": bf16, "avx512f": bf16, "avx2": True}, bf16,
                   3.0 if bf16 else 0.9, "Test GPU" if device == "cuda" else None, 80.0 if device == "cuda" else None,
                   "bf16" if bf16 else "fp32", bf16, tp)


def _lines(n_lines: int = 6, width: int = 1) -> np.ndarray:
    mask = np.zeros((SIDE, SIDE), np.uint8)
    for i in range(n_lines):
        y = 20 + i * (SIDE - 40) // n_lines
        mask[y : y + width, 10:-10] = 255
    return mask


def _blob(radius: int = 80) -> np.ndarray:
    yy, xx = np.mgrid[:SIDE, :SIDE]
    return (((yy - SIDE / 2) ** 2 + (xx - SIDE / 2) ** 2 <= radius**2) * 255).astype(np.uint8)


def _dataset(root: Path, mask: np.ndarray, *, grey: bool, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = mask.shape
        image = rng.integers(0, 256, (h, w) if grey else (h, w, 3), dtype=np.uint8)
        save(root / "images" / f"case{i}.png", image)
        save(root / "masks" / f"case{i}.png", mask)
    return root


@pytest.mark.parametrize("net", list(CATALOGUE.values()), ids=lambda n: n.name)
def test_catalogue_parameter_counts_are_what_the_networks_have(net):
    model = create_model(ModelConfig(**{**net.model, "encoder_weights": None}), load_weights=False)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(net.params_m, abs=0.01)


def test_monai_networks_take_odd_sizes_and_learn():
    for name in ("monai_unet16", "dynunet16"):
        model = create_model(ModelConfig(**CATALOGUE[name].model), load_weights=False).train()
        out = model(torch.randn(2, 3, 50, 70))
        assert out.shape == (2, 1, 50, 70)
        out.mean().backward()
        assert all(p.grad is not None for p in model.parameters())


def test_machine_description_round_trips_and_extrapolates_by_pixels(tmp_path):
    m = machine()
    (tmp_path / "m.json").write_text(m.to_json())
    again = Machine.load(tmp_path / "m.json")
    assert again == m
    ips128 = m.images_per_s("monai_unet16", 128)
    assert m.images_per_s("monai_unet16", 64) == pytest.approx(ips128 * 4)  # nearest measured side is 128
    assert m.images_per_s("monai_unet16", 512) == pytest.approx(m.images_per_s("monai_unet16", 256) / 4)


def test_probe_measures_this_machine():
    m = probe_machine([CATALOGUE["monai_unet16"]], device="cpu", sides=(32, 48), seconds=0.1, budget_s=30)
    assert m.cores >= 1 and m.cpu_model and set(m.cpu_flags) == {"amx", "avx512_bf16", "avx512f", "avx2"}
    assert m.bf16_speedup > 0 and m.precision in ("bf16", "fp32")
    assert m.throughput["monai_unet16"]["32"] > 0


def test_thin_lines_need_patches_and_are_not_shrunk(tmp_path):
    data = _dataset(tmp_path / "lines", _lines(), grey=True)
    result = plan_data(data, budget_min=10, machine=machine(), with_pretrained=False)
    fp = result.fingerprint
    assert fp.structure_width.median == 1.0
    assert result.plan.needs_patches
    assert result.plan.mode == "patches"
    assert result.plan.value("data.scale") == 1.0  # 1-px lines: native resolution
    assert result.config.train.augment == "grey"


def test_large_blobs_are_letterboxed_at_the_floor_side(tmp_path):
    data = _dataset(tmp_path / "blobs", _blob(), grey=False)
    result = plan_data(data, budget_min=10, machine=machine(), with_pretrained=False)
    assert not result.plan.needs_patches and result.plan.mode == "letterbox"
    assert result.config.data.image_size == LETTERBOX_FLOOR
    assert result.config.train.augment == "photo"
    assert result.config.loss.name == "dice_bce" and result.config.model.classes == 1


def test_network_follows_the_budget_and_the_machine(tmp_path):
    data = _dataset(tmp_path / "blobs", _blob(), grey=False)
    slow = plan_data(data, budget_min=2, machine=machine(speed=5.0), with_pretrained=False)
    fast = plan_data(data, budget_min=20, machine=machine(speed=400.0), with_pretrained=False)
    slow_params = CATALOGUE[f"{slow.config.model.arch}{slow.config.model.base_channels}"].params_m
    assert slow_params == min(n.params_m for n in FROM_SCRATCH)  # nothing reaches the target: the fastest
    assert (fast.config.model.arch, fast.config.model.base_channels) == ("dynunet", 32)  # largest reaching it
    steps = [c["steps"] for c in fast.plan.candidates if c["network"] == "dynunet32" and c["side"] == SIDE]
    assert steps and steps[0] >= TARGET_STEPS
    assert fast.config.train.time_budget_min == 20 and fast.config.train.patience > 15


def test_precision_follows_the_probe(tmp_path):
    data = _dataset(tmp_path / "blobs", _blob(), grey=False, n=3)
    fp32 = plan_data(data, machine=machine(bf16=False), with_pretrained=False).config.train
    bf16 = plan_data(data, machine=machine(bf16=True), with_pretrained=False).config.train
    assert (fp32.precision, fp32.channels_last) == ("fp32", "off")
    assert (bf16.precision, bf16.channels_last) == ("bf16", "on")


def test_multiclass_weights_and_sampler_from_class_frequencies(tmp_path):
    mask = np.zeros((SIDE, SIDE), np.uint8)
    mask[40:200, 40:200] = 1
    mask[100:106, 100:106] = 2  # a rare class
    data = _dataset(tmp_path / "mc", mask, grey=True, n=4)
    result = plan_data(data, machine=machine(), with_pretrained=False)
    cfg, freqs = result.config, result.fingerprint.classes
    assert cfg.model.classes == 3 and cfg.loss.name == "dice_ce"
    w = cfg.loss.class_weights
    assert w[2] > w[1] > w[0]
    # inverse square root of the fingerprint's class pixel shares, normalised to a mean share of 1
    assert w == pytest.approx([(sum(freqs.values()) / (3 * freqs[c])) ** 0.5 for c in range(3)], abs=1e-3)
    assert cfg.train.sampler == "class_balanced"


def test_dicom_ct_is_windowed_to_foreground_hu_percentiles_unless_the_user_gives_a_window(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        hu = rng.integers(-1000, -900, (64, 64))
        hu[16:48, 16:48] = rng.integers(20, 80, (32, 32))  # soft tissue in the foreground
        ct_slice(tmp_path / "images" / f"s{i}.dcm", (hu + 1024).astype(np.int16), z=float(i))
        mask = np.zeros((64, 64), np.uint8)
        mask[16:48, 16:48] = 255
        save(tmp_path / "masks" / f"s{i}.png", mask)
    result = plan_data(tmp_path, machine=machine(), with_pretrained=False)
    center, width = (float(v) for v in result.config.data.window.split(","))
    assert 40 <= center <= 60 and 50 <= width <= 62  # the 0.5-99.5 % of 20..79 HU, not the air around
    assert result.config.train.augment == "ct"
    mine = plan_data(tmp_path, machine=machine(), with_pretrained=False, overrides=["data.window=lung"])
    assert mine.config.data.window == "lung"


def test_plan_is_deterministic_for_the_same_data_and_machine(tmp_path):
    data = _dataset(tmp_path / "lines", _lines(width=3), grey=True)
    a = plan_data(data, machine=machine(), with_pretrained=False)
    b = plan_data(data, machine=machine(), with_pretrained=False)
    assert a.config == b.config and a.plan.candidates == b.plan.candidates
    strip = lambda text: [ln for ln in text.splitlines() if "planned in" not in ln.lower()]  # noqa: E731
    assert strip(a.yaml_text()) == strip(b.yaml_text())


def test_user_settings_win_over_the_plan(tmp_path):
    data = _dataset(tmp_path / "blobs", _blob(), grey=False, n=3)
    cfg = plan_data(data, machine=machine(), with_pretrained=False, overrides=["optim.lr=0.01",
                                                                             "train.batch_size=3"]).config
    assert cfg.optim.lr == 0.01 and cfg.train.batch_size == 3


def test_cli_writes_a_commented_plan_that_loads_as_a_config(tmp_path):
    data = _dataset(tmp_path / "blobs", _blob(), grey=False, n=4)
    (tmp_path / "m.json").write_text(machine().to_json())
    out = tmp_path / "p" / "plan.yaml"
    r = CliRunner().invoke(app, ["plan", str(data), "--machine", str(tmp_path / "m.json"), "--time-budget", "5",
                                 "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "structure width" in r.output and "model.arch" in r.output
    text = out.read_text()
    assert all("  # " in line for line in text.splitlines() if line.startswith("  "))  # every value says why
    cfg = build_config(file=out)
    assert cfg.train.time_budget_min == 5 and cfg.model.arch in ("monai_unet", "dynunet")
    assert yaml.safe_load(text)["data"]["image_size"] == cfg.data.image_size
    report = (out.parent / "plan_report.md").read_text()
    assert "## Choices" in report and "structure width" in report and "Test CPU" in report
    assert json.loads((out.parent / "machine.json").read_text())["cpu_model"] == "Test CPU"


@pytest.mark.slow
def test_train_without_preset_plans_then_trains_and_plan_trains_an_edited_plan(tiny_dataset, tmp_path,
                                                                                monkeypatch):
    (tmp_path / "m.json").write_text(machine(speed=2000.0).to_json())
    monkeypatch.setenv("MEDSEG_MACHINE", str(tmp_path / "m.json"))
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", str(tiny_dataset), "-o", str(run), "--epochs", "1",
                                 "--set", "train.precision=fp32"])
    assert r.exit_code == 0, r.output
    assert (run / "plan.yaml").is_file() and (run / "plan_report.md").is_file() and (run / "best.pt").is_file()
    trained = build_config(file=run / "config.yaml")
    assert trained.model.arch == build_config(file=run / "plan.yaml").model.arch
    assert trained.train.epochs == 1 and trained.train.precision == "fp32"
    edited = tmp_path / "edited.yaml"
    planned = yaml.safe_load((run / "plan.yaml").read_text())
    planned["model"].update(arch="monai_unet", base_channels=16)
    text = yaml.safe_dump(planned)
    edited.write_text(text)
    r = CliRunner().invoke(app, ["train", str(tiny_dataset), "-o", str(tmp_path / "run2"), "--plan", str(edited),
                                 "--epochs", "1", "--set", "train.precision=fp32", "--set", "data.image_size=64"])
    assert r.exit_code == 0, r.output
    model = build_config(file=tmp_path / "run2" / "config.yaml").model
    assert (model.arch, model.base_channels) == ("monai_unet", 16)
    assert (tmp_path / "run2" / "plan.yaml").read_text() == text
    r = CliRunner().invoke(app, ["train", str(tiny_dataset), "-o", str(tmp_path / "run3"), "--plan", str(edited),
                                 "--preset", "default"])
    assert r.exit_code != 0 and "not both" in str(r.exception)


def test_a_gpu_description_plans_a_larger_batch_and_network(tmp_path):
    data = _dataset(tmp_path / "blobs", _blob(), grey=False, n=40)
    cpu = plan_data(data, machine=machine(speed=20.0), with_pretrained=False).config
    gpu = plan_data(data, machine=machine(speed=4000.0, device="cuda"), with_pretrained=False).config
    assert (gpu.train.batch_size, gpu.train.precision, gpu.train.channels_last) == (16, "auto", "auto")
    assert cpu.train.batch_size == 8
    assert (gpu.model.arch, gpu.model.base_channels) == ("dynunet", 32) != (cpu.model.arch, cpu.model.base_channels)


def test_a_machine_description_without_catalogue_speeds_is_refused(tmp_path):
    from medseg.errors import ConfigError

    data = _dataset(tmp_path / "blobs", _blob(), grey=False, n=2)
    m = machine()
    m.throughput = {"someone_elses_net": {"128": 5.0}}
    with pytest.raises(ConfigError, match="no speed for any network"):
        plan_data(data, machine=m, with_pretrained=False)


def test_area_weighted_width_is_not_outvoted_by_a_ragged_outline(tmp_path):
    from medseg.data.layouts import find_pairs
    from medseg.plan.fingerprint import compute_fingerprint

    mask = _blob(radius=60)
    mask[::2, SIDE // 2 + 60 : SIDE // 2 + 64] = 0  # comb teeth on the right edge: many 1-px ridge pixels
    for x in range(SIDE // 2 + 60, SIDE // 2 + 90):
        mask[SIDE // 2 - 40 : SIDE // 2 + 40 : 3, x] = 255
    fp = compute_fingerprint(find_pairs(_dataset(tmp_path / "ragged", mask, grey=True, n=2)).pairs)
    assert fp.structure_width.median < 5  # the plain median sees the teeth
    assert fp.structure_width_area.median > 60  # weighted by area: the blob
    plan = plan_data(tmp_path / "ragged", machine=machine(), with_pretrained=False).plan
    assert not plan.needs_patches


def test_a_large_dataset_gets_a_network_that_sees_every_image_often_enough(tmp_path):
    """Same data description, 2000 images instead of 6: the network must reach TARGET_EPOCHS as well as
    TARGET_STEPS, so a smaller network than for the small dataset; validation stays within its share."""
    data = _dataset(tmp_path / "blobs", _blob(), grey=False)
    small = plan_data(data, budget_min=20, machine=machine(speed=400.0), with_pretrained=False)
    big_fp = dataclasses.replace(small.fingerprint, n_pairs=2000)
    m = machine(speed=400.0)
    big = make_plan(big_fp, m, 20, list(FROM_SCRATCH))
    arch, width = big.value("model.arch"), big.value("model.base_channels")
    chosen = CATALOGUE[f"{arch}{width}"]
    rows = [c for c in big.candidates if c["steps"] >= TARGET_STEPS and c["steps"] * 8 / 1600 >= TARGET_EPOCHS]
    assert rows and chosen.params_m == max(CATALOGUE[c["network"]].params_m for c in rows)
    assert chosen.params_m < CATALOGUE[f"{small.config.model.arch}{small.config.model.base_channels}"].params_m
    side = big.value("data.image_size")
    val_s = 400 / (3 * m.images_per_s(chosen.name, side))
    assert val_s / big.value("train.val_every_s") <= VAL_SHARE + 1e-6
