"""``train.compile``: ``torch.compile`` for the training step, kept only where this machine measures it faster.

``torch.compile`` (TorchInductor) fuses the element-wise work around the convolutions (normalisation,
activations, residual sums) into generated C++/OpenMP kernels. How much that buys depends on the network
and the CPU: issue 9 measured 1.2-1.8x eager training images/s for the MONAI UNet and DynUNet and 0.88-0.99x
for the SMP U-Net ResNet-34 on an AMD and an Intel AMX CPU (BENCHMARKS.md, ``bench/compile_step.py``). So
the choice is made per run, by measurement (:func:`choose_step_module`), before the first optimiser step:

1. time :data:`TIMED_STEPS` eager forward + backward passes of the first training batch (after one warm-up);
2. compile and time the first compiled pass (the compilation), then :data:`TIMED_STEPS` compiled passes;
3. train compiled when it is at least :data:`MIN_SPEEDUP` x eager (``auto``) or whenever it works (``on``).

The passes take no optimiser step (gradients are cleared after each), so the weights are unchanged; only
BatchNorm running statistics see the batch a few more times. The whole trial counts against the time
budget (about the compilation plus ten steps: 30-70 s on a 2-core CPU), so ``auto`` does not
compile a run expected to train for under :data:`MIN_BUDGET_S` (the time budget left, or the eager pass
time x the passes the run's epochs hold, whichever is shorter). A compiler that fails (no C++ compiler,
an unsupported operator) leaves the run eager with one log line. The compiled module is static in shape
(``dynamic=False``); the training loader then drops an epoch's short last batch so that no second
compilation is paid mid-run.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

#: Compiled passes must be at least this much faster than eager ones for ``auto`` to keep them.
MIN_SPEEDUP = 1.05
#: ``auto`` does not compile a run expected to train for less than this many seconds.
MIN_BUDGET_S = 300.0
#: Passes timed in each mode (after one warm-up pass, or the compiling pass).
TIMED_STEPS = 3


@dataclass(frozen=True)
class CompileTrial:
    """What the trial measured (seconds per forward + backward pass of one batch) and chose."""

    compiled: bool
    reason: str
    eager_s: float | None = None
    compiled_s: float | None = None
    compile_s: float | None = None

    def chosen_s(self) -> float | None:
        """Seconds per step of the module the run trains with."""
        return self.compiled_s if self.compiled else self.eager_s


def keep_compiled(setting: str, eager_s: float, compiled_s: float) -> bool:
    """Whether to train with the compiled module: ``on`` always, ``auto`` when >= MIN_SPEEDUP x eager."""
    return setting == "on" or eager_s >= MIN_SPEEDUP * compiled_s


def _timed_passes(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, criterion, rt, n: int) -> float:
    """Seconds per forward + backward pass over ``n`` passes; gradients are cleared after each."""
    t0 = time.monotonic()
    for _ in range(n):
        with rt.autocast():
            logits = net(x)
        criterion(logits, y).backward()
        net.zero_grad(set_to_none=True)
    return (time.monotonic() - t0) / max(n, 1)


def choose_step_module(setting: str, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, criterion, rt,
                       seconds_left: float | None, passes_left: int | None = None
                       ) -> tuple[torch.nn.Module, CompileTrial]:
    """The module to train with (``net`` or ``torch.compile(net)``) and the trial that chose it.

    ``setting``: ``train.compile`` (off | on | auto); ``x``: a normalised input batch (float, NCHW, on the
    run's device and memory format), ``y``: its target (float); ``criterion(logits, y)`` -> scalar loss;
    ``rt``: the run's :class:`~medseg.engine.runtime.Runtime`; ``seconds_left``: what remains of the time
    budget (None: unbounded); ``passes_left``: forward + backward passes the run's remaining epochs hold
    (None: unknown). Never raises for a compiler failure: the run goes on eager.
    """
    if setting == "off":
        return net, CompileTrial(False, "off (train.compile=off)")
    if setting == "auto" and seconds_left is not None and seconds_left < MIN_BUDGET_S:
        return net, CompileTrial(False, f"not tried: under {MIN_BUDGET_S / 60:g} min of the time budget left "
                                        f"({seconds_left / 60:.1f} min); compiling takes tens of seconds")
    was_training = net.training
    net.train()
    eager_s = None
    try:
        _timed_passes(net, x, y, criterion, rt, 1)  # warm-up: kernel selection, allocator
        eager_s = _timed_passes(net, x, y, criterion, rt, TIMED_STEPS)
        expected = min(math.inf if seconds_left is None else seconds_left,
                       math.inf if passes_left is None else eager_s * passes_left)
        if setting == "auto" and expected < MIN_BUDGET_S:
            return net, CompileTrial(False, f"not tried: the run is expected to train for about {expected:.0f} s "
                                            f"eager, under the {MIN_BUDGET_S:.0f} s where compiling can pay",
                                     eager_s=eager_s)
        compiled = torch.compile(net, dynamic=False)
        t0 = time.monotonic()
        _timed_passes(compiled, x, y, criterion, rt, 1)
        compile_s = time.monotonic() - t0
        compiled_s = _timed_passes(compiled, x, y, criterion, rt, TIMED_STEPS)
    except Exception as exc:  # noqa: BLE001 - any compiler failure leaves a working eager run
        net.zero_grad(set_to_none=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return net, CompileTrial(False, f"torch.compile failed ({type(exc).__name__}: {first[:200]}); "
                                        "training eager", eager_s=eager_s)
    finally:
        net.train(was_training)
    keep = keep_compiled(setting, eager_s, compiled_s)
    speed = (f"compiled steps {eager_s / compiled_s:.2f}x eager ({compiled_s:.3f} s against {eager_s:.3f} s per "
             f"batch of {len(x)}; compiling took {compile_s:.0f} s)")
    if keep:
        reason = f"{speed}: training compiled" + (" (train.compile=on)" if setting == "on" else "")
    else:
        reason = f"{speed}: under {MIN_SPEEDUP:g}x, training eager"
    trial = CompileTrial(keep, reason, eager_s, compiled_s, compile_s)
    return (compiled if keep else net), trial
