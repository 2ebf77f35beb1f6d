"""The package imports one way: no import cycle, and no import against the order of the layers.

Every ``import medseg.x`` / ``from medseg.x import y`` in ``src/medseg`` counts, at module level or
inside a function (a function-level import still ties the two modules together; it only hides the
cycle until the function runs). Relative imports are resolved the same way. Imports under
``if TYPE_CHECKING:`` are for type checkers only, never run, and do not count.

The layers, lowest first; a module may import its own layer and the layers below it, never above::

    _version, errors, _compat, registry,  leaves: version string, error types, import order, Registry,
    progress                               progress bars (one switch: --quiet, terminal or not)
    io                                     files in and out by kind (formats, images, DICOM, labels, writes)
    data, convert                          discovery, checks, splits, samples, augmentations; DICOM -> PNG
    models                                 architectures, encoder weights
    losses, metrics                        training objectives; per-image scores and their accumulators
    config                                 pydantic settings, validated against the registries below it
                                           (architectures, encoders, losses, augmentations)
    catalog                                the ``medseg models`` table (builds configs and models)
    engine                                 training loop, checkpoints, runtime, distributed, CV plan
    inference                              Predictor, TTA, sliding windows, post-processing, tuning
    evaluation                             evaluate, statistics, report, QC calibration, cross-validation
    export                                 ONNX export, parity checks, quantisation
    plan                                   fingerprint + probe + budget -> a Config
    serve                                  HTTP service, DICOM node
    medseg (the package API), demo, cli, cli_style, __main__

A package-level cycle (``engine`` -> ``inference`` -> ``engine``) or a module-level one
(``io.dicom`` <-> ``io.images``) fails the test, naming the imports that close it; so does an import
upwards (``engine.train`` importing ``inference.sliding``), naming file and line. A new top-level
module or package must be given a layer here.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests._paths import ROOT

SRC = ROOT / "src" / "medseg"

LAYERS: list[set[str]] = [
    {"_version", "errors", "_compat", "registry", "progress"},
    {"io"},
    {"data", "convert"},
    {"models"},
    {"losses", "metrics"},
    {"config"},
    {"catalog"},
    {"engine"},
    {"inference"},
    {"evaluation"},
    {"export"},
    {"plan"},
    {"serve"},
    {"medseg", "demo", "cli", "cli_style", "__main__"},
]


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, dotted
    target: str  # imported module, dotted
    where: str  # file:line of the import


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _runtime_nodes(node: ast.AST):
    """Every node of ``node``'s tree except the bodies of ``if TYPE_CHECKING:`` blocks."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            yield from (n for c in child.orelse for n in (c, *_runtime_nodes(c)))
            continue
        yield child
        yield from _runtime_nodes(child)


def import_edges(root: Path = SRC) -> list[Edge]:
    """Every medseg -> medseg import in the package at ``root`` (module and function level)."""
    modules = _modules(root)
    edges = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:  # ``import medseg.io.files`` -> medseg.io.files
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.append(Edge(name, target, f"{path.relative_to(root.parent)}:{node.lineno}"))
    return edges


def group(module: str) -> str:
    """``medseg.data.layouts`` -> ``data``; ``medseg`` -> ``medseg``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _describe(cycle: list[str], edges: Iterable[Edge], key) -> str:
    members = set(cycle)
    shown = sorted({f"{e.where}: {e.source} -> {e.target}" for e in edges
                    if key(e.source) in members and key(e.target) in members and key(e.source) != key(e.target)})
    return " <-> ".join(cycle) + "\n    " + "\n    ".join(shown)


def problems(root: Path = SRC) -> list[str]:
    """Everything wrong with the imports of the package at ``root``, one readable line block each."""
    edges = import_edges(root)
    layer_of = {name: i for i, names in enumerate(LAYERS) for name in names}
    out = [f"{name} (in {root}) has no layer in tests/cli/test_import_layers.LAYERS"
           for name in sorted({group(m) for m in _modules(root)} - set(layer_of))]
    upward = [e for e in edges if layer_of.get(group(e.target), -1) > layer_of.get(group(e.source), len(LAYERS))]
    out += [f"{e.where}: {e.source} imports {e.target}, a higher layer ({group(e.target)} above {group(e.source)})"
            for e in upward]
    packages: dict[str, set[str]] = {}
    for e in edges:
        if group(e.source) != group(e.target):
            packages.setdefault(group(e.source), set()).add(group(e.target))
    out += ["package cycle " + _describe(c, edges, group) for c in find_cycles(packages)]
    modules: dict[str, set[str]] = {}
    for e in edges:
        modules.setdefault(e.source, set()).add(e.target)
    out += ["module cycle " + _describe(c, edges, lambda m: m) for c in find_cycles(modules)]
    return out


def test_no_import_cycle_and_no_import_against_the_layers():
    found = problems()
    assert not found, "imports go against tests/cli/test_import_layers.py:\n" + "\n".join(found)


def test_the_check_catches_an_upward_import_and_a_cycle(tmp_path):
    root = tmp_path / "medseg"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__"))
    files = root / "io" / "files.py"
    files.write_text(files.read_text(encoding="utf-8") + "\n\ndef _late():\n    from medseg.engine import train\n",
                     encoding="utf-8")
    found = problems(root)
    assert any("medseg.io.files imports medseg.engine" in p and "a higher layer" in p for p in found)
    assert any(p.startswith("package cycle") and "io" in p.split("\n")[0] and "engine" in p for p in found)
    assert any(p.startswith("module cycle") and "medseg.io.files" in p for p in found)


def test_the_check_catches_a_cycle_inside_a_package(tmp_path):
    root = tmp_path / "medseg"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "data" / "pairs.py").write_text(
        (root / "data" / "pairs.py").read_text(encoding="utf-8") + "\nfrom medseg.data import layouts  # noqa\n",
        encoding="utf-8")
    found = problems(root)
    first_lines = [set(p.split("\n")[0].split()) for p in found if p.startswith("module cycle")]
    assert any({"medseg.data.layouts", "medseg.data.pairs"} <= names for names in first_lines), found
    assert not any("higher layer" in p for p in found)


def test_a_new_top_level_module_needs_a_layer(tmp_path):
    root = tmp_path / "medseg"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "newthing.py").write_text("X = 1\n", encoding="utf-8")
    assert any("newthing" in p and "has no layer" in p for p in problems(root))


def test_type_checking_imports_do_not_count(tmp_path):
    root = tmp_path / "medseg"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__"))
    files = root / "io" / "files.py"
    files.write_text(files.read_text(encoding="utf-8") + "\n\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
                     "    from medseg.serve import app\nelse:\n    from medseg.engine import train\n", encoding="utf-8")
    found = problems(root)
    assert not any("medseg.serve" in p for p in found)
    assert any("medseg.io.files imports medseg.engine" in p for p in found)  # the else branch runs
