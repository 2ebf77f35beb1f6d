"""What this machine can do: cores, CPU model and flags, bf16 speed, CUDA, measured training images/s.

:func:`probe_machine` measures (a few seconds in all); a :class:`Machine` saved as JSON
(``Machine.to_json`` / ``Machine.load``) can be given instead, which makes a plan deterministic for the
same data and machine description (``medseg plan --machine FILE``).

Training speed is measured, not assumed: for each candidate network and each probe side, a few
forward+backward+AdamW steps of the plan's batch on random data at the precision and memory format a
run would use (:mod:`medseg.engine.runtime`), after one warm-up step; the fastest step counts. Other
sides are extrapolated from the nearest probed side in proportion to pixels (convolution cost is linear
in pixels), see :meth:`Machine.images_per_s`.
"""

from __future__ import annotations

import json
import logging
import platform
import time
import timeit
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medseg.engine.runtime import usable_cores
from medseg.errors import ConfigError

log = logging.getLogger(__name__)

#: input sides (px) at which training speed is measured (CPU; CUDA adds 512)
PROBE_SIDES = (128, 256)
#: images per probe step: the batch a CPU plan trains with (on a 2-core CPU with AMX, a batch of 2 ran
#: 0.7x the images/s of a batch of 8 for the MONAI UNet 32 at 256 px, which made the planner choose smaller
#: networks than the budget affords)
PROBE_BATCH = 8
#: seconds spent per measurement at most (after the warm-up step)
PROBE_SECONDS = 0.6
#: the whole speed probe stops measuring after this many seconds; later sides are extrapolated
PROBE_BUDGET_S = 20.0


@dataclass
class Machine:
    """A machine description. ``throughput``: network name -> {side (px, as a string key): training
    images/s}, measured at :data:`PROBE_SIDES` with ``precision``/``channels_last``."""

    device: str  # "cpu" or "cuda"
    cores: int
    cpu_model: str
    cpu_flags: dict[str, bool]  # amx, avx512_bf16, avx512f, avx2
    bf16_native: bool  # the CPU advertises native bf16 (torch.cpu checks)
    bf16_speedup: float | None  # fp32 time / bf16 time of a 1024x1024 matmul (CPU); None on CUDA
    cuda_name: str | None = None
    cuda_memory_gb: float | None = None
    precision: str = "fp32"
    channels_last: bool = False
    throughput: dict[str, dict[str, float]] = field(default_factory=dict)
    probe_seconds: float = 0.0

    def images_per_s(self, network: str, side: int) -> float:
        """Training images/s of ``network`` at ``side`` x ``side``: measured, or extrapolated from the
        nearest measured side by pixel count. Raises ConfigError when the network was not probed."""
        measured = {int(k): v for k, v in self.throughput.get(network, {}).items()}
        if not measured:
            raise ConfigError(f"the machine description has no speed for network {network!r}; probe it again "
                              "(medseg plan without --machine)")
        near = min(measured, key=lambda s: (abs(s - side), s))
        return measured[near] * (near / side) ** 2

    def summary_lines(self) -> list[str]:
        flags = ", ".join(k for k, v in self.cpu_flags.items() if v) or "none of amx/avx512/avx2"
        lines = [f"CPU: {self.cpu_model}, {self.cores} cores ({flags}); bf16 native: {self.bf16_native}"
                 + (f", bf16 matmul {self.bf16_speedup:.2f}x fp32" if self.bf16_speedup else "")]
        if self.cuda_name:
            lines.append(f"CUDA: {self.cuda_name}, {self.cuda_memory_gb:.0f} GB")
        lines.append(f"training on {self.device} in {self.precision}"
                     + (" channels_last" if self.channels_last else ""))
        for net, sides in self.throughput.items():
            speeds = ", ".join(f"{s} px {v:.1f} img/s" for s, v in sides.items())
            lines.append(f"  {net}: {speeds}")
        return lines

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> Machine:
        """Read a machine description written by :meth:`to_json`; ConfigError naming the file otherwise."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(**data)
        except (OSError, ValueError, TypeError) as err:
            raise ConfigError(f"machine description {path} cannot be read ({type(err).__name__}: {err})") from None


def cpu_info() -> tuple[str, dict[str, bool]]:
    """CPU model name and the flags that decide precision, from /proc/cpuinfo (Linux; else platform)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model, {"amx": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags,
                   "avx512f": "avx512f" in flags, "avx2": "avx2" in flags}


def bf16_matmul_speedup(n: int = 1024, reps: int = 3) -> float:
    """fp32 time / bf16 time of an n x n matmul on this CPU (best of ``reps``)."""
    import torch

    def best(dtype) -> float:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b  # warm-up
        return min(timeit.repeat(lambda: a @ b, number=1, repeat=reps))

    return round(best(torch.float32) / max(best(torch.bfloat16), 1e-9), 2)


def measure_training_speed(model_cfg: dict, side: int, *, device: str, precision: str, channels_last: bool,
                           batch: int, seconds: float = PROBE_SECONDS) -> float:
    """Training images/s of the network ``model_cfg`` at ``side`` px (random data, Dice-free BCE loss)."""
    import torch

    from medseg.config import ModelConfig
    from medseg.models import create_model, main_logits

    torch.manual_seed(0)
    model = create_model(ModelConfig(**{**model_cfg, "encoder_weights": None}), load_weights=False).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, side, side, device=device).to(memory_format=fmt)
    y = (torch.rand(batch, 1, side, side, device=device) > 0.5).float()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def step() -> None:
        with torch.autocast(device_type=device, dtype=dtype, enabled=dtype is not None):
            logits = main_logits(model(x)).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    step()
    sync()
    # each step timed on its own, the fastest kept (as timeit advises): a step slowed by something else
    # on the machine (page faults of a new model's memory, another process) says nothing of the network.
    # Two at least, so that one such step cannot decide alone.
    times: list[float] = []
    t0 = time.perf_counter()
    while len(times) < 2 or (time.perf_counter() - t0 < seconds and len(times) < 20):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    return round(batch / min(times), 3)


def probe_machine(networks, *, device: str = "auto", sides=None, seconds: float = PROBE_SECONDS,
                  budget_s: float = PROBE_BUDGET_S, progress: bool = False) -> Machine:
    """Describe this machine and measure each of ``networks`` (catalogue :class:`Network` objects) at each
    of ``sides``. ``device``: auto (CUDA when available), cpu or cuda (ConfigError when absent).

    Every network is measured at the smallest side; a larger side is measured only while its expected
    cost (two steps, from the smaller side's speed) fits what is left of ``budget_s``, and is otherwise
    left to :meth:`Machine.images_per_s` to extrapolate, so a slow CPU still plans in seconds."""
    import torch

    from medseg.engine.runtime import cpu_has_native_bf16

    t0 = time.perf_counter()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but torch sees no CUDA device")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, not {device!r}")
    model, flags = cpu_info()
    cores = usable_cores()
    native = cpu_has_native_bf16()
    cuda_name = cuda_gb = None
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        cuda_name, cuda_gb = props.name, round(props.total_memory / 2**30, 1)
        speedup = None
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        channels_last = True
    else:
        speedup = bf16_matmul_speedup()
        precision = "bf16" if native and speedup >= 1.3 else "fp32"
        channels_last = precision == "bf16"
    machine = Machine(device, cores, model, flags, native, speedup, cuda_name, cuda_gb, precision, channels_last)
    batch = PROBE_BATCH
    sides = sorted(sides or (PROBE_SIDES + ((512,) if device == "cuda" else ())))
    if networks:  # the first measurement would otherwise also pay for thread pools and kernel set-up
        measure_training_speed(networks[0].model, sides[0], device=device, precision=precision,
                               channels_last=channels_last, batch=1, seconds=0.0)
    deadline = time.perf_counter() + budget_s
    for i, side in enumerate(sides):
        for net in networks:
            speeds = machine.throughput.setdefault(net.name, {})
            if i > 0:
                if str(sides[i - 1]) not in speeds:
                    continue
                expected = 3 * batch / machine.images_per_s(net.name, side) + seconds
                if time.perf_counter() + expected > deadline:
                    continue
            ips = measure_training_speed(net.model, side, device=device, precision=precision,
                                         channels_last=channels_last, batch=batch, seconds=seconds)
            speeds[str(side)] = ips
            if progress:
                log.info("probe: %s at %d px: %.1f img/s", net.name, side, ips)
    machine.probe_seconds = round(time.perf_counter() - t0, 1)
    return machine
