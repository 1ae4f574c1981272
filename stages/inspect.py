"""`stpipe inspect STORE`: a feature store's counts, shapes, dtypes, bytes, config and failures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.config import STORAGE_OPTIONS, arg


@dataclass(frozen=True)
class InspectConfig:
    store: str = arg("", positional=True, required=True)
    storage_options: dict[str, Any] = arg(help=STORAGE_OPTIONS, factory=dict)


def run(cfg: InspectConfig) -> dict[str, Any]:
    """pipeline.store.summarize of the store (JSON-able)."""
    from pipeline.store import FeatureStore, summarize

    return summarize(FeatureStore.open(cfg.store, storage_options=cfg.storage_options or None))


def lines(summary: dict[str, Any]) -> list[str]:
    """The summary as `stpipe inspect` shows it."""
    meta = summary["meta"]
    backbone = meta.get("backbone") or {}
    out = [f"store     {summary['url']}  (created {meta.get('created')}, stpipe format {meta.get('version')})",
           f"videos    {summary['complete']} complete, {summary['incomplete']} incomplete, "
           f"{summary['failed']} failed; by split: {summary['splits']}"]
    groups = summary["groups"]
    if groups["count"]:
        leaks = "; ".join(f"leak: {split} shares {len(shared)} with train ({', '.join(shared[:3])}"
                          f"{' ...' if len(shared) > 3 else ''})" for split, shared in groups["leaks"].items())
        out.append(f"groups    {groups['count']}" + (f"; {leaks}" if leaks else "; splits group-disjoint"))
    out.append(f"backbone  {backbone.get('name')} weights={backbone.get('weights')} features={backbone.get('features')}")
    flow = meta.get("flow")
    out.append(f"flow      {flow['method'] + ' bound=' + str(flow['bound']) + ' ' + flow['quantisation'] if flow else 'none'}")
    out.append(f"classes   {len(meta.get('classes', []))}")
    if meta.get("origin"):
        out.append(f"origin    {meta['origin']}")
    out += [f"array     {name}: {info['dtype']} dims={info['dims']} e.g. {info['shape_example']}"
            for name, info in summary["arrays"].items()]
    if summary.get("bytes"):
        out.append(f"bytes     {summary['bytes']}")
    packs = summary.get("pack") or {}
    out.append("pack      " + (", ".join(f"{name} {state}" for name, state in packs.items()) or "none")
               + ("  (run `stpipe pack` for stage two's fast reads)" if set(packs.values()) != {"fresh"} else ""))
    return out + [f"failed    {f['video_id']}: {f['error']} (attempts: {f['attempts']})" for f in summary["failures"]]
