"""Stage deps cannot drift: every project module a ``dvc.yaml`` stage runs is among that stage's deps.

The import closure of ``python -m stages.<name>`` is read statically (``ast``): every ``import`` and
``from ... import`` of a ``cnn`` or ``stages`` module, at any depth (lazy imports inside functions count:
the stage may run them), followed transitively through the project's files.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cnn", "stages")


def module_file(name: str) -> Path | None:
    """The project file of module ``name`` (a package's ``__init__.py``), or None outside the project."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, module: str) -> set[str]:
    """Every module ``path`` imports (absolute and relative, with the parents of dotted names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # submodules imported by name
    # importing a.b.c runs a/__init__.py and a/b/__init__.py first
    return {".".join(name.split(".")[:i]) for name in found for i in range(1, name.count(".") + 2)}


def import_closure(module: str) -> set[Path]:
    """The project files that running ``python -m <module>`` may import."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(imported_modules(path, name))
    return seen


def stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def listed(deps: list[str], path: Path) -> bool:
    """Whether ``path`` is a dep itself or inside a folder listed as a dep."""
    rel = path.relative_to(ROOT).as_posix()
    return any(rel == d.rstrip("/") or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", sorted(stages()))
def test_every_module_a_stage_imports_is_among_its_deps(stage):
    spec = stages()[stage]
    module = re.match(r"python -m ([\w.]+)", spec["cmd"]).group(1)
    deps = [d for d in spec.get("deps", []) if "${" not in d]
    closure = import_closure(module)
    assert closure, f"{stage}: {module} not found"
    missing = sorted(p.relative_to(ROOT).as_posix() for p in closure if not listed(deps, p))
    assert not missing, f"dvc.yaml stage {stage} runs but does not depend on: {', '.join(missing)}"


def test_the_plot_stage_depends_on_the_numpy_kernels_it_runs_for_feature_maps():
    closure = import_closure("stages.plot")
    kernels = [k for k in sorted((ROOT / "cnn" / "kernels").glob("*.py")) if k in closure]
    assert kernels and ROOT / "cnn" / "layers.py" in closure
    assert all(listed(stages()["plot"]["deps"], k) for k in [*kernels, ROOT / "cnn" / "layers.py"])


def test_the_closure_follows_imports_made_inside_functions():
    """A guard on the checker itself: a function-level import counts."""
    assert ROOT / "cnn" / "pipeline" / "viz.py" in import_closure("stages.plot")  # imported inside a function
    assert ROOT / "cnn" / "model.py" in import_closure("stages.train_numpy")
