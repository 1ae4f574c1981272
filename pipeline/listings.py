"""What `stpipe heads`, `backbones` and `flows` list, without importing torch when asked again.

Filling a listing imports torch and the modules that register the entries (a second or two) and,
for heads, builds every head to count its parameters and multiply-adds (seconds more). So a
listing is computed once and kept as JSON in the user's cache dir (`$STPIPE_CACHE_DIR`, else
`$XDG_CACHE_HOME/stpipe`, else `~/.cache/stpipe`), keyed by the listing's options and a fingerprint
of what its rows depend on: stpipe's version, the source files of the package that registers the
entries, the installed versions of the libraries it reads, and the environment variables that say
where torch keeps weights. With plug-ins installed in the registry's entry-point group, the listing
is computed every time (a plug-in's code can change without its version). A cache dir that cannot
be read or written only makes a listing slower. What changes without the code (is a weight file in
the torch cache?) is looked up at every call. Entries a script registers in its own process are
not in a cached listing: these are for the CLI, whose process has only built-in and plug-in entries.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pipeline

TORCH_CACHE_ENV = ("TORCH_HOME", "XDG_CACHE_HOME", "HOME")  # torch.hub.get_dir() reads these


def cache_dir() -> Path:
    if os.environ.get("STPIPE_CACHE_DIR"):
        return Path(os.environ["STPIPE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stpipe"


def cached(name: str, options: dict[str, Any], compute: Callable[[], Any], *, package: str,
           libraries: Sequence[str] = (), env: Sequence[str] = (), plugins: str | None = None) -> Any:
    """`compute()` (JSON-able) as JSON read back, from the cache when the same listing was made before.

    package: the pipeline subpackage whose source decides the rows ("heads"); libraries: distributions
    whose versions do; env: environment variables that do; plugins: the registry's entry-point group."""
    if plugins and _plugins(plugins):
        return json.loads(json.dumps(compute()))
    path = cache_dir() / "listings" / f"{name}-{_fingerprint(options, package, libraries, env)}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    text = json.dumps(compute())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)  # a listing made at the same time by another process is the same text
    except OSError:
        pass
    return json.loads(text)


def _plugins(group: str) -> list[Any]:
    from importlib.metadata import entry_points

    return list(entry_points(group=group))


def _fingerprint(options: dict[str, Any], package: str, libraries: Sequence[str], env: Sequence[str]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256(json.dumps([pipeline.__version__, options, [os.environ.get(v) for v in env]],
                                       sort_keys=True, default=str).encode())
    for library in libraries:
        try:
            digest.update(f"{library}={version(library)};".encode())
        except PackageNotFoundError:
            digest.update(f"{library} absent;".encode())
    for source in sorted(Path(pipeline.__file__).parent.joinpath(package).glob("*.py")):
        digest.update(source.name.encode() + source.read_bytes())
    return digest.hexdigest()[:16]


# ---- the three listings ---------------------------------------------------------------------------


def heads_listing(*, num_classes: int, num_segments: int, feature_shape: Sequence[int], proj_dim: int
                  ) -> dict[str, Any]:
    """{"rows": pipeline.heads.complexity_table's rows, each with its default "recipe" (one line),
    "plugin_errors": {entry point: reason}}."""

    def compute() -> dict[str, Any]:
        from pipeline.heads import HEADS, complexity_table
        from pipeline.heads.recipes import head_recipe

        rows = complexity_table(num_classes=num_classes, num_segments=num_segments, feature_shape=feature_shape,
                                proj_dim=proj_dim)
        return {"rows": [{**row, "recipe": head_recipe(row["name"]).short()} for row in rows],
                "plugin_errors": dict(HEADS.plugin_errors)}

    options = dict(num_classes=num_classes, num_segments=num_segments, feature_shape=list(feature_shape),
                   proj_dim=proj_dim)
    return cached("heads", options, compute, package="heads", libraries=("torch",), plugins="stpipe.heads")


def backbones_listing() -> dict[str, Any]:
    """{"rows": [{name, kind, source, origin, weights: [[member, file name], ...] DEFAULT first}],
    "checkpoints": torch's weight folder, "families": [[prefix, summary, installed version]],
    "plugin_errors": {...}}; `weight_cached(listing, file)` says whether a weight file is there now."""

    def compute() -> dict[str, Any]:
        import torch

        from pipeline.backbones import BACKBONES
        from pipeline.backbones.families import available
        from pipeline.backbones.weights import url_filename

        rows = []
        for entry in BACKBONES.names():
            spec = BACKBONES.meta(entry)
            members = [] if spec.weights_enum is None else list(spec.weights_enum)
            members.sort(key=lambda m: m is not spec.weights_enum.DEFAULT)
            rows.append(dict(name=entry, kind=spec.kind, source=spec.source, origin=BACKBONES.origin(entry),
                             weights=[[m.name, url_filename(m)] for m in members]))
        families = [[prefix, summary, "torchvision" if prefix == "torchvision" else available(prefix)]
                    for prefix, summary in BACKBONES.families().items()]
        return {"rows": rows, "checkpoints": str(Path(torch.hub.get_dir()) / "checkpoints"), "families": families,
                "plugin_errors": dict(BACKBONES.plugin_errors)}

    return cached("backbones", {}, compute, package="backbones", env=TORCH_CACHE_ENV, plugins="stpipe.backbones",
                  libraries=("torch", "torchvision", "timm", "open_clip_torch"))


def weight_cached(listing: dict[str, Any], file_name: str) -> bool:
    return Path(listing["checkpoints"], file_name).is_file()


def flows_listing() -> list[dict[str, Any]]:
    """[{name, kind, backend, preset?, extra?}] in registration order."""

    def compute() -> list[dict[str, Any]]:
        from pipeline.flow import FLOWS

        return [{"name": name, **FLOWS.meta(name)} for name in FLOWS.names()]

    return cached("flows", {}, compute, package="flow")
