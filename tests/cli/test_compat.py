"""torchvision import: the shim applies only when the extension really fails to load."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from medseg import _compat


def test_import_works_without_shim_when_extension_loads(monkeypatch):
    monkeypatch.setattr(_compat, "TORCHVISION_SHIMMED", False)
    fake = types.ModuleType("torchvision")
    calls = []

    def importer(name):
        calls.append(name)
        return fake

    assert _compat.import_torchvision(importer) is fake
    assert calls == ["torchvision"]
    assert _compat.TORCHVISION_SHIMMED is False


def test_missing_operator_error_triggers_schemas_and_retry(monkeypatch):
    monkeypatch.setattr(_compat, "TORCHVISION_SHIMMED", False)
    defined = []
    monkeypatch.setattr(_compat, "_define_schemas", lambda: defined.append(True))
    monkeypatch.setattr(_compat, "_forget_partial_import", lambda: None)
    fake = types.ModuleType("torchvision")
    attempts = iter([RuntimeError("operator torchvision::nms does not exist"), fake])

    def importer(name):
        result = next(attempts)
        if isinstance(result, Exception):
            raise result
        return result

    assert _compat.import_torchvision(importer) is fake
    assert defined == [True]


def test_other_runtime_errors_are_not_swallowed():
    def importer(name):
        raise RuntimeError("something else entirely")

    with pytest.raises(RuntimeError, match="something else"):
        _compat.import_torchvision(importer)


def test_real_import_in_a_fresh_interpreter():
    """On this machine (CPU torch + CUDA torchvision wheel) the shim is needed; elsewhere it is not."""
    code = (
        "import importlib.util, torch\n"
        "from medseg._compat import import_torchvision\n"
        "import medseg._compat as c\n"
        "tv = import_torchvision()\n"
        "import timm, segmentation_models_pytorch\n"
        "from torchvision.transforms import functional\n"
        "try:\n"
        "    torch.ops.load_library(importlib.util.find_spec('torchvision._C').origin)\n"
        "    loads = True\n"
        "except Exception:\n"
        "    loads = False\n"
        "print(c.TORCHVISION_SHIMMED, loads)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    shimmed, loads = out[-2] == "True", out[-1] == "True"
    assert shimmed != loads, "the shim must be applied exactly when the extension cannot load"


@pytest.mark.parametrize("args", [["models", "--encoders", "resnet1*"], ["models", "--download", "not-an-encoder"]])
def test_commands_that_import_timm_first_work_in_a_fresh_interpreter(args):
    """`medseg models --encoders/--download` import timm before anything else; the shim must come first."""
    import subprocess
    import sys

    code = "import sys; from medseg.cli import main; sys.argv = ['medseg', *sys.argv[1:]]; main()"
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in result.stderr and "torchvision::nms" not in result.stderr, result.stderr
    if args[1] == "--encoders":
        assert result.returncode == 0 and "resnet18" in result.stdout
    else:
        assert result.returncode != 0 and "not-an-encoder" in (result.stdout + result.stderr)
