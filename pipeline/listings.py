"""What `stpipe heads`, `backbones` and `flows` list, without importing torch.

Filling a listing imports torch and the modules that register the entries (a second or two) and,
for heads, builds every head to count its parameters and multiply-adds (seconds more). So a
listing is kept as JSON in the user's cache dir (`$STPIPE_CACHE_DIR`, else
`$XDG_CACHE_HOME/stpipe`, else `~/.cache/stpipe`), keyed by the listing's options and a fingerprint
of what its rows depend on: stpipe's version, the source files of the package that registers the
entries and the installed versions of the libraries it reads. The listings at the CLI's defaults
ship with the package (listings_shipped.json, each with its fingerprint), so that the first call
in a fresh environment reads them instead of computing them when the fingerprint is the same;
`python -m stages.listings` writes that file again after a change to heads, backbones or flow
(tests/test_listings.py fails until it is). With plug-ins installed in the registry's entry-point
group, the listing is computed every time (a plug-in's code can change without its version). A
cache dir that cannot be read or written only makes a listing slower. What changes without the
code (where torch keeps weights and whether a weight file is there, which backbone families are
installed) is looked up at every call, by torch's rules, without importing torch. Entries a
script registers in its own process are not in a cached listing: these are for the CLI, whose
process has only built-in and plug-in entries.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pipeline

SHIPPED = Path(__file__).with_name("listings_shipped.json")


def cache_dir() -> Path:
    if os.environ.get("STPIPE_CACHE_DIR"):
        return Path(os.environ["STPIPE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stpipe"


@dataclass(frozen=True)
class Listing:
    """`compute()` (JSON-able), decided by `options`, the source of the pipeline subpackage `package`
    ("heads"), the installed versions of the distributions `libraries`, and the plug-ins in the
    entry-point group `plugins`."""

    name: str
    options: dict[str, Any]
    compute: Callable[[], Any]
    package: str
    libraries: Sequence[str] = ()
    plugins: str | None = None

    def fingerprint(self) -> str:
        digest = hashlib.sha256(json.dumps([pipeline.__version__, self.options], sort_keys=True).encode())
        for library in self.libraries:
            digest.update(f"{library}={_installed(library)};".encode())
        for source in sorted(Path(pipeline.__file__).parent.joinpath(self.package).glob("*.py")):
            digest.update(source.name.encode() + source.read_bytes())
        return digest.hexdigest()[:16]


def cached(listing: Listing) -> Any:
    """`listing.compute()` as JSON read back: from the cache when the same listing was made before,
    else from the shipped file when its fingerprint is the same."""
    if listing.plugins and _plugins(listing.plugins):
        return json.loads(json.dumps(listing.compute()))
    fingerprint = listing.fingerprint()
    path = cache_dir() / "listings" / f"{listing.name}-{fingerprint}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    shipped = _read_shipped().get(listing.name, {})
    text = json.dumps(shipped["value"] if shipped.get("fingerprint") == fingerprint else listing.compute())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)  # a listing made at the same time by another process is the same text
    except OSError:
        pass
    return json.loads(text)


def shipped(heads_options: dict[str, Any]) -> dict[str, Any]:
    """What listings_shipped.json holds: {listing name: {"fingerprint", "value"}}, computed now, for
    the heads listing with `heads_options` (the CLI's defaults) and the other two."""
    entries = {}
    for listing in (_heads(**heads_options), _backbones(), _flows()):
        if listing.plugins and _plugins(listing.plugins):
            raise RuntimeError(f"plug-ins are installed in {listing.plugins}: their entries must not ship")
        entries[listing.name] = {"fingerprint": listing.fingerprint(), "value": json.loads(json.dumps(listing.compute()))}
    return entries


def write_shipped(heads_options: dict[str, Any]) -> None:
    SHIPPED.write_text(json.dumps(shipped(heads_options), indent=1) + "\n")


def _read_shipped() -> dict[str, Any]:
    try:
        return json.loads(SHIPPED.read_text())
    except (OSError, ValueError):
        return {}


def _plugins(group: str) -> list[Any]:
    from importlib.metadata import entry_points

    return list(entry_points(group=group))


def _installed(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def torch_checkpoints() -> Path:
    """torch.hub.get_dir() / "checkpoints", by torch's rule (torch/hub.py), without importing torch."""
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home), "hub", "checkpoints")


# ---- the three listings ---------------------------------------------------------------------------


def _heads(*, num_classes: int, num_segments: int, feature_shape: Sequence[int], proj_dim: int) -> Listing:
    def compute() -> dict[str, Any]:
        from pipeline.heads import HEADS, complexity_table
        from pipeline.heads.recipes import head_recipe

        rows = complexity_table(num_classes=num_classes, num_segments=num_segments, feature_shape=feature_shape,
                                proj_dim=proj_dim)
        return {"rows": [{**row, "recipe": head_recipe(row["name"]).short()} for row in rows],
                "plugin_errors": dict(HEADS.plugin_errors)}

    options = dict(num_classes=num_classes, num_segments=num_segments, feature_shape=list(feature_shape),
                   proj_dim=proj_dim)
    return Listing("heads", options, compute, package="heads", libraries=("torch",), plugins="stpipe.heads")


def heads_listing(*, num_classes: int, num_segments: int, feature_shape: Sequence[int], proj_dim: int
                  ) -> dict[str, Any]:
    """{"rows": pipeline.heads.complexity_table's rows, each with its default "recipe" (one line),
    "plugin_errors": {entry point: reason}}."""
    return cached(_heads(num_classes=num_classes, num_segments=num_segments, feature_shape=feature_shape,
                         proj_dim=proj_dim))


def _backbones() -> Listing:
    def compute() -> dict[str, Any]:
        from pipeline.backbones import BACKBONES
        from pipeline.backbones.families import distribution
        from pipeline.backbones.weights import url_filename

        rows = []
        for entry in BACKBONES.names():
            spec = BACKBONES.meta(entry)
            members = [] if spec.weights_enum is None else list(spec.weights_enum)
            members.sort(key=lambda m: m is not spec.weights_enum.DEFAULT)
            rows.append(dict(name=entry, kind=spec.kind, source=spec.source, origin=BACKBONES.origin(entry),
                             weights=[[m.name, url_filename(m)] for m in members]))
        families = [[prefix, summary, distribution(prefix)] for prefix, summary in BACKBONES.families().items()]
        return {"rows": rows, "families": families, "plugin_errors": dict(BACKBONES.plugin_errors)}

    return Listing("backbones", {}, compute, package="backbones", libraries=("torch", "torchvision"),
                   plugins="stpipe.backbones")


def backbones_listing() -> dict[str, Any]:
    """{"rows": [{name, kind, source, origin, weights: [[member, file name], ...] DEFAULT first}],
    "checkpoints": torch's weight folder, "families": [[prefix, summary, installed version or None]],
    "plugin_errors": {...}}; `weight_cached(listing, file)` says whether a weight file is there now."""
    listing = cached(_backbones())
    families = [[prefix, summary, _installed(dist)] for prefix, summary, dist in listing["families"]]
    return {**listing, "families": families, "checkpoints": str(torch_checkpoints())}


def weight_cached(listing: dict[str, Any], file_name: str) -> bool:
    return Path(listing["checkpoints"], file_name).is_file()


def _flows() -> Listing:
    def compute() -> list[dict[str, Any]]:
        from pipeline.flow import FLOWS

        return [{"name": name, **FLOWS.meta(name)} for name in FLOWS.names()]

    return Listing("flows", {}, compute, package="flow")


def flows_listing() -> list[dict[str, Any]]:
    """[{name, kind, backend, preset?, extra?}] in registration order."""
    return cached(_flows())
