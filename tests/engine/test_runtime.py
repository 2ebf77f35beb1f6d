from __future__ import annotations

import torch

from medseg.engine import runtime as R


def test_auto_uses_bf16_and_channels_last_only_with_native_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(R, "cpu_has_native_bf16", lambda: True)
    rt = R.resolve_runtime()
    assert (rt.precision, rt.channels_last) == ("bf16", True)
    monkeypatch.setattr(R, "cpu_has_native_bf16", lambda: False)
    rt = R.resolve_runtime()
    assert (rt.precision, rt.channels_last) == ("fp32", False)


def test_forced_choices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(R, "cpu_has_native_bf16", lambda: True)
    assert R.resolve_runtime("fp32").precision == "fp32"
    assert R.resolve_runtime("fp32", "on").channels_last is True
    monkeypatch.setattr(R, "cpu_has_native_bf16", lambda: False)
    assert R.resolve_runtime("bf16").precision == "bf16"


def test_autocast_runs_a_convolution():
    rt = R.resolve_runtime()
    conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=rt.memory_format())
    with rt.autocast():
        y = conv(torch.randn(1, 3, 8, 8).to(memory_format=rt.memory_format()))
    assert y.shape == (1, 4, 6, 6)
