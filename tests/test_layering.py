"""shared/DESIGN.md's import rules, each a check over the whole source tree (cli.py, pipeline/,
stages/, manifests/), each file parsed once.

Imports go one way: cli.py -> stages -> pipeline (+ manifests). Only cli.py prints; only the
pipeline.distributed package imports Ray; a stage does not import another stage (the demo, which
runs the verbs in order, is the one composition of stages); no modules import each other, directly
or round a loop.

A rule is a function of the parsed tree that returns its violations as "file:line: what". An import
is every import statement, lazy ones inside functions and TYPE_CHECKING blocks included (a reader
follows them just the same), relative ones resolved, and every `importlib.import_module` /
`__import__` call: a constant name counts as that module, an f-string as every module its constant
prefix can lead to (`f"pipeline.backbones.{name}"`: any module under pipeline.backbones).
An import names the module it reads (`from pipeline.flow import kernels` is pipeline.flow.kernels);
the package `__init__` Python runs on the way is not counted, or every package that imports its
submodules would be a circle.

The self-test builds a tiny fake tree, checks that it passes, then seeds one break per rule into it
and checks that the rule reports that break at its file and line.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages", "manifests")
RANK = {"cli": 2, "stages": 1, "pipeline": 0, "manifests": 0}  # a module imports only its rank or lower
OUTPUT_LIBRARIES = ("click", "tqdm", "rich")
STREAMS = ("stdout", "stderr", "__stdout__", "__stderr__")

# The exceptions, each needed today (test_every_exception_is_still_needed):
# the demo is a script of other verbs: (importer, imported) stage pairs
STAGE_COMPOSITION = frozenset({("stages.demo", "stages.extract"), ("stages.demo", "stages.ablate")})
# a generator run by hand (`python -m pipeline.flow.median_codegen`), not library code
PRINT_ALLOWED = frozenset({"pipeline.flow.median_codegen"})
# circles allowed for now (none)
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()


@dataclass(frozen=True)
class Import:
    line: int
    name: str  # dotted; "a.b.*" for a name built at run time from "a.b." and something else


@dataclass(frozen=True)
class Module:
    name: str
    file: str  # relative to the tree's root
    tree: ast.Module
    imports: tuple[Import, ...]


def parse_tree(root: Path) -> dict[str, Module]:
    paths = [root / "cli.py"] if (root / "cli.py").is_file() else []
    for package in PACKAGES:
        paths += sorted((root / package).rglob("*.py"))
    modules = {}
    for path in paths:
        parts = path.relative_to(root).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        tree = ast.parse(path.read_text(), str(path))
        base = name if is_package else name.rpartition(".")[0]
        modules[name] = Module(name, path.relative_to(root).as_posix(), tree, tuple(_imports(tree, base)))
    return modules


def _imports(tree: ast.Module, package: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (Import(node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            for alias in node.names:
                yield Import(node.lineno, base if alias.name == "*" else f"{base}.{alias.name}")
        elif isinstance(node, ast.Call) and node.args and _is_dynamic_import(node.func):
            name = _constant_prefix(node.args[0])
            if name:
                yield Import(node.lineno, name)


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module" and isinstance(func.value, ast.Name) and func.value.id == "importlib"
    return isinstance(func, ast.Name) and func.id in ("import_module", "__import__")


def _constant_prefix(arg: ast.expr) -> str | None:
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        head = arg.values[0].value.rpartition(".")[0]
        return f"{head}.*" if head else None
    return None


def _top(name: str) -> str:
    return name.split(".")[0]


def _where(module: Module, line: int) -> str:
    return f"{module.file}:{line}"


# -- the rules ----------------------------------------------------------------------------------------


def one_way(modules: dict[str, Module]) -> list[str]:
    """cli.py -> stages -> pipeline (+ manifests): nothing imports cli.py, pipeline and manifests import no stage."""
    return [
        f"{_where(m, i.line)}: {m.name} imports {i.name}: imports go cli.py -> stages -> pipeline (+ manifests)"
        for m in modules.values() for i in m.imports
        if _top(i.name) in RANK and RANK[_top(i.name)] > RANK[_top(m.name)]
    ]


def stage_imports_stage(modules: dict[str, Module], allowed=STAGE_COMPOSITION) -> list[str]:
    """One stage never imports another (the demo's composition aside)."""
    out = []
    for m in modules.values():
        if _top(m.name) != "stages" or m.name == "stages":
            continue
        own = ".".join(m.name.split(".")[:2])
        for i in m.imports:
            parts = i.name.split(".")
            if parts[0] != "stages" or len(parts) < 2:
                continue
            target = f"stages.{parts[1]}"
            if target != own and (own, target) not in allowed:
                what = "a stage named at run time" if parts[1] == "*" else target
                out.append(f"{_where(m, i.line)}: {own} imports {what}: one stage never imports another")
    return out


def ray_outside_distributed(modules: dict[str, Module]) -> list[str]:
    """Only the pipeline.distributed package imports Ray."""
    return [
        f"{_where(m, i.line)}: {m.name} imports {i.name}: only pipeline.distributed imports Ray"
        for m in modules.values() if not (m.name + ".").startswith("pipeline.distributed.")
        for i in m.imports if _top(i.name) == "ray"
    ]


def output_outside_cli(modules: dict[str, Module], allowed=PRINT_ALLOWED) -> list[str]:
    """Only cli.py prints: no print(), sys.stdout/sys.stderr, click, tqdm or rich anywhere else."""
    out = []
    for m in modules.values():
        if m.name == "cli" or m.name in allowed:
            continue
        found = [(i.line, f"imports {i.name}") for i in m.imports
                 if _top(i.name) in OUTPUT_LIBRARIES or i.name in {f"sys.{s}" for s in STREAMS}]
        for node in ast.walk(m.tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                found.append((node.lineno, "calls print()"))
            elif (isinstance(node, ast.Attribute) and node.attr in STREAMS
                  and isinstance(node.value, ast.Name) and node.value.id == "sys"):
                found.append((node.lineno, f"uses sys.{node.attr}"))
        out += [f"{_where(m, line)}: {m.name} {what}: stages return results, cli.py renders them"
                for line, what in sorted(found)]
    return out


def import_graph(modules: dict[str, Module]) -> dict[str, dict[str, int]]:
    """module -> {module it imports: line of the first such import}."""
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for m in modules.values():
        for i in m.imports:
            for target in _resolve(i.name, modules):
                if target != m.name:
                    graph[m.name].setdefault(target, i.line)
    return graph


def _resolve(name: str, modules: dict[str, Module]) -> list[str]:
    if name.endswith(".*"):
        return [other for other in modules if other.startswith(name[:-1])]
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return [name] if name else []


def import_cycles(modules: dict[str, Module]) -> list[set[str]]:
    """Each set of modules that import each other, directly or round loops (a strongly connected component)."""
    graph = import_graph(modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = {stack.pop()}
            while node not in component:
                component.add(stack.pop())
            if len(component) > 1:
                components.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    return components


def _loop(graph: dict[str, dict[str, int]], start: str, within: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside `within` (breadth first)."""
    paths = {target: [start, target] for target in graph[start] if target in within}
    while start not in paths:
        paths = {t: path + [t] for node, path in paths.items() for t in graph[node] if t in within and t not in paths}
    return paths[start]


def no_import_cycle(modules: dict[str, Module], known=KNOWN_CYCLES) -> list[str]:
    """No modules import each other, directly or round a loop."""
    graph = import_graph(modules)
    out = []
    for component in import_cycles(modules):
        if frozenset(component) in known:
            continue
        loop = _loop(graph, min(component), component)
        others = sorted(component - set(loop))
        more = f" (and {', '.join(others)} round other loops)" if others else ""
        out.append(f"{_where(modules[loop[0]], graph[loop[0]][loop[1]])}: import circle {' -> '.join(loop)}{more}")
    return out


RULES = (one_way, stage_imports_stage, ray_outside_distributed, output_outside_cli, no_import_cycle)


# -- the source tree ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree() -> dict[str, Module]:
    return parse_tree(ROOT)


def test_the_tree_is_found(tree):
    expected = {"cli", "pipeline.store", "stages.extract", "stages.demo", "pipeline.distributed", "manifests.schema"}
    assert expected <= set(tree)


def test_the_tree_keeps_every_rule(tree):
    report = [f"{rule.__doc__}\n" + "\n".join(violations) for rule in RULES if (violations := rule(tree))]
    if report:
        pytest.fail("\n\n".join(report), pytrace=False)


def test_every_exception_is_still_needed(tree):
    """An exception the tree no longer needs is removed, so that it cannot hide a new break."""
    composed = {tuple(v.split(": ")[1].split(" imports ")) for v in stage_imports_stage(tree, allowed=())}
    assert not STAGE_COMPOSITION - composed, "remove these from STAGE_COMPOSITION"
    printing = {v.split(": ")[1].split()[0] for v in output_outside_cli(tree, allowed=())}
    assert not PRINT_ALLOWED - printing, "remove these from PRINT_ALLOWED"
    assert not KNOWN_CYCLES - {frozenset(c) for c in import_cycles(tree)}, "remove these from KNOWN_CYCLES"


# -- the rules themselves: a clean fake tree passes, each seeded break is reported --------------------

FAKE_TREE = {
    "cli.py": "import sys\nimport click\nfrom stages import demo, extract\nprint('done')\nsys.stderr.write('!')\n",
    "stages/__init__.py": "",
    "stages/extract.py": "from pipeline.store import Store\n",
    "stages/pack.py": "import importlib\nfrom pipeline import store\n",
    "stages/demo.py": "from stages import extract\n",
    "pipeline/__init__.py": "",
    "pipeline/store.py": "import importlib\nimport json\n",
    "pipeline/flow.py": "from pipeline.store import Store\n",
    "pipeline/distributed/__init__.py": "import ray\nfrom pipeline.flow import run\n",
    "pipeline/distributed/trials.py": "def start():\n    from ray.util.queue import Queue\n",
    "manifests/__init__.py": "from pipeline.store import Store\n",
}

SEEDED_BREAKS = [  # (rule, file, code appended, where it is reported, a word the report names)
    (stage_imports_stage, "stages/pack.py", "from . import extract", "stages/pack.py:3", "stages.extract"),
    (stage_imports_stage, "stages/pack.py", "def f():\n    from stages.demo import run", "stages/pack.py:4",
     "stages.demo"),
    (stage_imports_stage, "stages/pack.py", "importlib.import_module(f'stages.{name}')", "stages/pack.py:3",
     "a stage named at run time"),
    (output_outside_cli, "pipeline/store.py", "import sys\nsys.stdout.write('x')", "pipeline/store.py:4",
     "sys.stdout"),
    (output_outside_cli, "stages/extract.py", "print('x')", "stages/extract.py:2", "print()"),
    (output_outside_cli, "manifests/__init__.py", "import click", "manifests/__init__.py:2", "click"),
    (output_outside_cli, "pipeline/flow.py", "from tqdm import tqdm", "pipeline/flow.py:2", "tqdm"),
    (ray_outside_distributed, "pipeline/store.py", "import ray", "pipeline/store.py:3", "ray"),
    (ray_outside_distributed, "stages/pack.py", "def f():\n    from ray.util import queue", "stages/pack.py:4",
     "ray.util.queue"),
    (one_way, "pipeline/store.py", "importlib.import_module('stages.x')", "pipeline/store.py:3", "stages.x"),
    (one_way, "pipeline/flow.py", "from stages import extract", "pipeline/flow.py:2", "stages.extract"),
    (one_way, "stages/pack.py", "import cli", "stages/pack.py:3", "cli"),
    # a circle is reported at the import that leaves its alphabetically first module
    (no_import_cycle, "pipeline/store.py", "def f():\n    from pipeline.flow import run", "pipeline/flow.py:1",
     "pipeline.flow -> pipeline.store -> pipeline.flow"),
    (no_import_cycle, "pipeline/store.py", "from . import distributed", "pipeline/distributed/__init__.py:2",
     "pipeline.distributed -> pipeline.flow -> pipeline.store -> pipeline.distributed"),
    (no_import_cycle, "pipeline/store.py", "importlib.import_module(f'pipeline.{name}')",
     "pipeline/distributed/__init__.py:2", "pipeline.store -> pipeline.distributed"),
]


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_clean_fake_tree_passes(tmp_path):
    _write(tmp_path, FAKE_TREE)
    modules = parse_tree(tmp_path)
    assert len(modules) == len(FAKE_TREE)
    assert {rule.__name__: rule(modules) for rule in RULES} == {rule.__name__: [] for rule in RULES}


def test_each_rule_catches_its_seeded_breaks(tmp_path):
    """Each break alone in a copy of the clean fake tree: its rule reports it once, at its file and line."""
    missed = []
    for n, (rule, file, code, where, word) in enumerate(SEEDED_BREAKS):
        root = tmp_path / str(n)
        _write(root, {**FAKE_TREE, file: FAKE_TREE[file] + code + "\n"})
        violations = rule(parse_tree(root))
        if not (len(violations) == 1 and violations[0].startswith(f"{where}: ") and word in violations[0]):
            missed.append(f"{rule.__name__} on {code!r} in {file}: expected one report at {where} naming {word!r}, "
                          f"got {violations}")
    if missed:
        pytest.fail("\n".join(missed), pytrace=False)
