"""shared/DESIGN.md's import rules, checked over the source tree (every import, lazy ones included).

Imports go one way: cli.py -> stages -> pipeline (+ manifests). Only cli.py prints; only the
pipeline.distributed package imports Ray; a stage does not import another stage (the demo, which
runs the verbs in order, and the ablation, a grid of train-head runs, are the compositions of stages).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages", "manifests")
# (importer, imported) stage pairs that are allowed: the demo is a script of other verbs; each
# ablation trial is one train-head run (its run dir, config and metrics exactly as `stpipe train-head`'s)
STAGE_COMPOSITION = {("stages.demo", "stages.extract"), ("stages.demo", "stages.ablate"),
                     ("stages.demo", "stages.demo_data"), ("stages.ablate", "stages.train_head")}
# a generator run by hand (`python -m pipeline.flow.median_codegen`), not library code
PRINT_ALLOWED = {"pipeline.flow.median_codegen"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _top(name: str) -> str:
    return name.split(".")[0]


MODULES = _modules()


def test_the_tree_is_found():
    assert "pipeline.store" in MODULES and "stages.extract" in MODULES and "pipeline.distributed" in MODULES


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_one_way(module):
    imports = _imports(MODULES[module])
    layer = _top(module)
    bad = sorted(i for i in imports if _top(i) == "cli")
    if layer in ("pipeline", "manifests"):
        bad += sorted(i for i in imports if _top(i) == "stages")
    if layer == "stages":
        own = module.split(".")[:2]
        for name in imports:
            parts = name.split(".")
            if parts[0] != "stages" or len(parts) < 2:
                continue
            target = ".".join(parts[:2])
            if target in MODULES and parts[:2] != own and (module, target) not in STAGE_COMPOSITION:
                bad.append(name)
    assert not bad, f"{module} imports {bad}: imports go cli.py -> stages -> pipeline (shared/DESIGN.md)"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_distributed_package_imports_ray(module):
    if module == "pipeline.distributed" or module.startswith("pipeline.distributed."):
        return
    ray_imports = sorted(i for i in _imports(MODULES[module]) if _top(i) == "ray")
    assert not ray_imports, f"{module} imports {ray_imports}: only pipeline.distributed imports Ray"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_libraries_and_stages_do_not_print(module):
    if module in PRINT_ALLOWED:
        return
    tree = ast.parse(MODULES[module].read_text())
    prints = [node.lineno for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"]
    assert not prints, f"{module} prints (lines {prints}): stages return results, cli.py renders them"


def test_a_break_is_caught(tmp_path):
    """The checker itself: a pipeline module importing a stage is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from stages import extract\n    import ray\n")
    assert {"stages", "stages.extract", "ray"} <= _imports(bad)
