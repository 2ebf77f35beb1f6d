"""``medseg plan`` / ``medseg.plan(...)``: fingerprint the data, probe the machine, plan, write the plan.

The plan is a normal config YAML (``medseg train DATA --plan plan.yaml`` or ``--config plan.yaml``
trains it) where every value carries a comment saying why; ``plan_report.md`` beside it holds the
fingerprint, the machine (with its measured speeds, so they are cached with the plan), every
(network, side) weighed with its optimiser steps, and the settings waiting for config fields that do
not exist yet.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medseg.config import Config, parse_overrides, validate
from medseg.data.source import DataSource
from medseg.plan.catalogue import candidates
from medseg.plan.fingerprint import Fingerprint, compute_fingerprint
from medseg.plan.machine import Machine, probe_machine
from medseg.plan.planner import Plan, make_plan

log = logging.getLogger(__name__)

#: environment variable naming a machine description (JSON) that `medseg train` plans with instead of probing
MACHINE_ENV = "MEDSEG_MACHINE"
#: the budget planned for when none is given (minutes)
DEFAULT_BUDGET_MIN = 20.0
SECTIONS = ("data", "model", "loss", "optim", "train", "infer")


@dataclass
class PlanResult:
    """A plan and what it was made from. ``config``: the validated Config (plan + the user's settings)."""

    config: Config
    plan: Plan
    fingerprint: Fingerprint
    machine: Machine
    budget_min: float
    seconds: float  # wall time of fingerprint + probe + planning
    user: dict[str, Any]

    def yaml_text(self) -> str:
        """The plan as config YAML, each value with a comment saying why."""
        whys = {c.key: c.why for c in self.plan.choices}
        data = self.config.model_dump(mode="json")
        lines = [f"# medseg plan: {self.fingerprint.n_pairs} images, {self.machine.device} "
                 f"({self.machine.cpu_model}), budget {self.budget_min:g} min; planned in {self.seconds:.1f} s",
                 "# train it: medseg train DATA --plan THIS_FILE   (edit any value first; see plan_report.md)",
                 f"name: {yaml.safe_dump(data['name']).splitlines()[0]}",
                 f"description: {yaml.safe_dump(data['description'], width=10_000).splitlines()[0]}"]
        planned = self.plan.config_dict()
        for section in SECTIONS:
            keys = set(planned.get(section, {})) | set(self.user.get(section) or {})
            if not keys:
                continue
            lines.append(f"{section}:")
            for key in [k for k in data[section] if k in keys]:
                value = yaml.safe_dump(data[section][key], default_flow_style=True, width=10_000).strip()
                value = value.removesuffix("\n...").removesuffix("...").strip()
                why = "your setting" if key in (self.user.get(section) or {}) else whys.get(f"{section}.{key}", "")
                lines.append(f"  {key}: {value}  # {why}")
        return "\n".join(lines) + "\n"

    def report_text(self) -> str:
        """plan_report.md: the fingerprint, the machine, each choice and the figure behind it."""
        out = ["# Training plan", "", f"Planned in {self.seconds:.1f} s for a budget of {self.budget_min:g} min; "
               f"mode: **{self.plan.mode}**.", "", "## Dataset fingerprint", ""]
        out += [f"- {line}" for line in self.fingerprint.summary_lines()]
        out += ["", "## Machine", ""] + [f"- {line}" for line in self.machine.summary_lines()]
        out += ["", "## Choices", "", "| setting | value | why |", "|---|---|---|"]
        out += [f"| `{c.key}` | `{c.value}` | {c.why} |" for c in self.plan.choices]
        out += ["", "## Candidates weighed", "", "| network | parameters (M) | side | img/s | optimiser steps |",
                "|---|---|---|---|---|"]
        out += [f"| {c['network']} | {c['params_m']} | {c['side']} | {c['img_per_s']} | {c['steps']} |"
                for c in self.plan.candidates]
        out += ["", "## Machine description (JSON; `medseg plan --machine FILE` reuses it)", "", "```json",
                self.machine.to_json().strip(), "```", ""]
        return "\n".join(out)

    def write(self, path: str | Path) -> Path:
        """Write the plan YAML to ``path`` and ``plan_report.md`` + ``machine.json`` beside it."""
        from medseg.io.files import write_text_atomic

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, self.yaml_text())
        write_text_atomic(path.parent / "plan_report.md", self.report_text())
        write_text_atomic(path.parent / "machine.json", self.machine.to_json())
        return path

    def summary_lines(self) -> list[str]:
        lines = [f"plan ({self.plan.mode}), budget {self.budget_min:g} min, planned in {self.seconds:.1f} s:"]
        lines += [f"  {c.key} = {c.value}: {c.why}" for c in self.plan.choices]
        return lines


def plan_data(data: DataSource | str | Path, *, budget_min: float | None = None, device: str = "auto",
              overrides: list[str] | dict[str, Any] | None = None,
              machine: Machine | str | Path | None = None, with_pretrained: bool | None = None,
              max_images: int = 400, progress: bool = False) -> PlanResult:
    """Plan training of a dataset on this machine: fingerprint, machine probe, planner.

    Args:
        data: a :class:`~medseg.data.source.DataSource`, or a dataset folder (or manifest .csv) as for
            ``medseg train``.
        budget_min: training budget in minutes (default :data:`DEFAULT_BUDGET_MIN`, or the
            ``train.time_budget_min`` of ``overrides``).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        overrides: the user's settings (``["data.invert_masks=true"]`` or a nested dict); they go over the
            plan and are never changed by it; ``data.invert_masks`` is also used for the fingerprint.
        machine: a :class:`~medseg.plan.machine.Machine` or its JSON file instead of probing: the same
            data and machine description always give the same plan.
        with_pretrained: None looks for local encoder weights; True/False forces it.
        max_images: images sampled for the fingerprint.

    Returns:
        A :class:`PlanResult`: ``.config`` (a validated Config), ``.plan`` (each choice and why),
        ``.fingerprint``, ``.machine``, ``.seconds``; ``.write(path)`` writes the plan YAML, plan_report.md
        and machine.json.

    Raises:
        DataError: no readable image/mask pair.
        ConfigError: an invalid override, device or machine file.

    Example::

        planned = medseg.plan("data/drive", budget_min=20)
        planned.write("plans/drive.yaml")       # + plans/plan_report.md, plans/machine.json
        medseg.train("data/drive", "runs/drive", config="plans/drive.yaml")
    """
    from medseg.config import _merge

    t0 = time.perf_counter()
    user = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    validate(user)  # names and values are checked before any data is read
    invert = bool((user.get("data") or {}).get("invert_masks", False))
    budget = float(budget_min or (user.get("train") or {}).get("time_budget_min") or DEFAULT_BUDGET_MIN)
    index = DataSource.of(data).find()
    fingerprint = compute_fingerprint(index.pairs, max_images=max_images, invert_masks=invert, progress=progress)
    networks = candidates(with_pretrained)
    if machine is None:
        machine = probe_machine(networks, device=device, progress=progress)
    elif not isinstance(machine, Machine):
        machine = Machine.load(machine)
    networks = [n for n in networks if n.name in machine.throughput]
    if not networks:
        from medseg.errors import ConfigError

        raise ConfigError(f"the machine description has no speed for any network of the catalogue "
                          f"({', '.join(n.name for n in candidates(with_pretrained))}); plan without --machine "
                          "to probe this machine")
    plan = make_plan(fingerprint, machine, budget, networks, user=user)
    config = validate(_merge(_merge({"name": "plan", "description": _describe(plan, fingerprint, machine)},
                                    plan.config_dict()), user))
    return PlanResult(config, plan, fingerprint, machine, budget, round(time.perf_counter() - t0, 1), user)


def _describe(plan: Plan, fp: Fingerprint, machine: Machine) -> str:
    model = plan.config_dict().get("model", {})
    width = f", base {model['base_channels']}" if model.get("base_channels") else ""
    return (f"planned: {model.get('arch')}{width}, {plan.mode} {plan.value('data.image_size')} px, "
            f"{fp.modality} data on {machine.device}")


def plan_into_run(out: str | Path, data: DataSource, *, overrides: list[str] | None = None) -> Path:
    """``medseg train DATA`` without --preset/--config: plan, write ``out/plan.yaml`` (+ report), return it.

    The machine is probed unless the environment variable ``MEDSEG_MACHINE`` names a machine description."""
    machine = os.environ.get(MACHINE_ENV) or None
    result = plan_data(data, overrides=overrides, machine=machine, progress=True)
    for line in result.summary_lines():
        log.info("%s", line)
    return result.write(Path(out) / "plan.yaml")


def copy_plan_into_run(plan_file: str | Path, out: str | Path) -> None:
    """``--plan FILE``: keep the plan trained (and its plan_report.md when beside it) in the run folder."""
    from medseg.errors import ConfigError
    from medseg.io.files import write_text_atomic

    plan_file, out = Path(plan_file), Path(out)
    if not plan_file.is_file():
        raise ConfigError(f"plan file {plan_file} does not exist")
    out.mkdir(parents=True, exist_ok=True)
    if plan_file.resolve() != (out / "plan.yaml").resolve():
        write_text_atomic(out / "plan.yaml", plan_file.read_text(encoding="utf-8"))
        report = plan_file.parent / "plan_report.md"
        if report.is_file():
            write_text_atomic(out / "plan_report.md", report.read_text(encoding="utf-8"))
