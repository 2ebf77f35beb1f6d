"""Device, precision and memory format, decided once at run time (never assumed).

- CUDA: fp16 autocast with a gradient scaler (bf16 when the GPU supports it), channels_last.
- CPU with native bf16 (AVX512-BF16 or AMX): bf16 autocast + channels_last, about 3x fp32 here.
- Any other CPU: fp32, contiguous.
``precision`` and ``channels_last`` in the config force a choice.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


def cpu_has_native_bf16() -> bool:
    """True when this CPU runs bf16 matrix maths natively (AVX512-BF16 or AMX)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in checks:
        fn = getattr(torch.cpu, name, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # noqa: BLE001 - older torch or unusual platform
            continue
    return False


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None = fp32
    channels_last: bool
    use_scaler: bool = False

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def describe(self) -> str:
        layout = "channels_last" if self.channels_last else "contiguous"
        threads = f", {torch.get_num_threads()} threads" if self.device.type == "cpu" else ""
        return f"{self.device.type} {self.precision} {layout}{threads}"


def resolve_runtime(precision: str = "auto", channels_last: str = "auto", device: str | None = None) -> Runtime:
    """Pick device, autocast dtype and memory format for this machine."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        dtype = {"auto": torch.float16, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]
        if precision == "bf16" and not bf16_ok:
            log.warning("this GPU has no bf16; using fp16")
            dtype = torch.float16
        cl = channels_last != "off"
        return Runtime(dev, dtype, cl, use_scaler=dtype == torch.float16)
    native = cpu_has_native_bf16()
    if precision == "auto":
        dtype = torch.bfloat16 if native else None
    elif precision == "bf16":
        if not native:
            log.warning("this CPU has no native bf16: bf16 will run, but slower than fp32")
        dtype = torch.bfloat16
    elif precision == "fp16":
        log.warning("fp16 autocast on CPU is slow and unsupported by most kernels; using fp32")
        dtype = None
    else:
        dtype = None
    cl = {"on": True, "off": False, "auto": dtype is not None}[channels_last]
    return Runtime(dev, dtype, cl)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads, default all cores this process may use."""
    torch.set_num_threads(max(1, threads or usable_cores()))
