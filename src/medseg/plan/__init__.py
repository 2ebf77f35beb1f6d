"""Planning from the data: the dataset fingerprint (what the data is), the machine probe (what this
machine can do), the network catalogue and the planner (fingerprint + machine + budget -> config).

``medseg.plan(DATA, budget_min=20)`` plans: this package is callable and runs
:func:`medseg.plan.run.plan_data`, returning a :class:`~medseg.plan.run.PlanResult` (``.config`` is
the Config to train, ``.write("plan.yaml")`` writes the plan and its report).
"""

from __future__ import annotations

import inspect
import sys
import types

from medseg.plan.run import plan_data


class _CallableModule(types.ModuleType):
    """``medseg.plan`` is both this package and the API function ``medseg.plan(...)`` (= plan_data)."""

    __call__ = staticmethod(plan_data)


sys.modules[__name__].__class__ = _CallableModule
# help(medseg.plan) documents the call as well: Args, Returns, Raises, Example of plan_data
__doc__ = f"{__doc__}\nmedseg.plan(...):\n\n{inspect.cleandoc(plan_data.__doc__ or '')}\n"
__all__ = ["plan_data"]
