"""Cross-validation folds: grouped (one patient never on both sides) and stratified by foreground size.

Groups are the values of a manifest column (``group_by``, e.g. ``patient_id`` or ``lesion_id``) or,
without one, each case on its own. Groups are ordered by their mean foreground fraction and dealt in
strata of K: within a stratum (shuffled with ``seed``) the group with the most images goes to the
fold with the fewest images so far. Each fold thus gets about 1/K of the images and of every size
stratum (as scikit-learn's StratifiedGroupKFold aims for), and a group lands in exactly one fold.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from medseg.data.pairs import Pair
from medseg.errors import DataError


def group_of(pair: Pair, group_by: str | None) -> str:
    """The pair's group: its value in manifest column ``group_by`` (DataError when blank), else its case id."""
    if group_by is None:
        return pair.case_id
    value = pair.attr(group_by.lower())
    if value is None:
        raise DataError(f"case {pair.case_id} has no value in column '{group_by}' (--group-by); give every row one "
                        "or group by another column")
    return value


def assign_folds(pairs: list[Pair], k: int, *, fg_fraction: dict[str, float], group_by: str | None = None,
                 seed: int = 0) -> dict[str, int]:
    """{case id: fold 0..k-1}; ``fg_fraction`` maps case ids to their foreground share (0..1).

    Raises DataError when there are fewer groups than folds.
    """
    if k < 2:
        raise DataError(f"cross-validation needs at least 2 folds, got {k}")
    members: dict[str, list[str]] = defaultdict(list)
    for p in sorted(pairs, key=lambda p: p.case_id):
        members[group_of(p, group_by)].append(p.case_id)
    if len(members) < k:
        raise DataError(f"{len(members)} group(s) cannot fill {k} folds; use fewer folds")
    rng = np.random.default_rng(seed)
    names = sorted(members)
    size = np.array([np.mean([fg_fraction.get(c, 0.0) for c in members[g]]) for g in names])
    order = [names[i] for i in np.lexsort((rng.random(len(names)), size))]
    load = np.zeros(k, dtype=int)
    out: dict[str, int] = {}
    for start in range(0, len(order), k):
        stratum = order[start:start + k]
        rng.shuffle(stratum)
        stratum.sort(key=lambda g: -len(members[g]))  # stable: ties keep the shuffled order
        free = list(range(k))
        for g in stratum:
            fold = min(free, key=lambda f: (load[f], f))
            free.remove(fold)
            load[fold] += len(members[g])
            for case in members[g]:
                out[case] = fold
    return out
