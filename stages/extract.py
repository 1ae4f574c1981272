"""`stpipe extract`: manifest -> resumable Zarr feature store (backbone features, TV-L1 flow)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import config_to_dict
from pipeline.cpus import apply_threads
from pipeline.errors import full_disk_as_error
from pipeline.extraction import ExtractConfig, VideoJob
from pipeline.extraction.config import is_weights_file
from pipeline.extraction.decoders import place as place_decoding
from pipeline.extraction.models import (
    Models,
    load_meta_models,
    load_models,
    models_provenance,
    warm_flow_compile,
)
from pipeline.extraction.records import TASK
from pipeline.progress import Finished, Note, Progress, Started, emitter
from pipeline.store import Failure, FeatureStore, config_hash
from pipeline.store.lease import StoreLease
from pipeline.store.pack import write_pack
from pipeline.store.urls import store_errors

if TYPE_CHECKING:
    from pipeline.flow.compile_policy import CompileChoice


@dataclass
class ExtractResult:
    store: str
    total: int
    skipped: int  # already complete before this run
    done: int
    failed: int
    frames: int
    seconds: float
    failures: list[Failure] = field(default_factory=list)


@dataclass
class Plan:
    """What a run will do: the store (created or reopened) and the videos still to extract."""

    store: FeatureStore
    jobs: list[VideoJob]
    total: int
    flow_compile: CompileChoice | None = None  # TV-L1 compiled or eager, and why (set by `run`)


def plan(cfg: ExtractConfig, models: Models) -> Plan:
    """Read the manifest, create or reopen the store, and list the videos not yet complete."""
    from manifests.table import read_manifest

    manifest = read_manifest(cfg.manifest, root=cfg.root or None)
    if not manifest.entries:
        from pipeline.errors import ManifestError

        raise ManifestError(f"{cfg.manifest}: no videos in the manifest (a header and nothing else)")
    content = store_content(cfg)
    provenance = {
        "config": config_to_dict(cfg),
        "content": content,
        "config_hash": config_hash(content),
        "manifest_sha256": manifest.sha256(),
        "manifest": str(Path(cfg.manifest).absolute()),
        "classes": list(manifest.classes),
        **models_provenance(cfg, models),
    }
    provenance["config"] = {k: v for k, v in provenance["config"].items() if k in cfg.content_fields}
    store = FeatureStore.create(cfg.output, provenance=provenance, overwrite=cfg.overwrite,
                                storage_options=cfg.storage_options)
    store.remove_debris()  # a killed run's temp files and cut-short deletes (`run` holds the lease)
    done = store.complete_ids()
    jobs = [
        VideoJob(
            video_id=e.video_id,
            path=str(manifest.resolve(e)),
            label=e.label,
            label_index=manifest.label_index(e.label) if e.label is not None else -1,
            split=e.split,
            start=e.start,
            end=e.end,
            group=e.group,
        )
        for e in manifest.entries
        if e.video_id not in done
    ]
    return Plan(store, jobs, len(manifest.entries))


def already_finished(cfg: ExtractConfig) -> int | None:
    """The manifest's size when the store was made by this config and manifest and its up-to-date
    index marks every video complete; None when there may be work (or no store). Reads the manifest
    and the index only, so a re-run of a finished extraction costs no model loading."""
    from manifests.table import read_manifest
    from pipeline.errors import StoreError

    if cfg.overwrite:
        return None
    try:
        store = FeatureStore.open(cfg.output, storage_options=cfg.storage_options)
    except StoreError:
        return None
    manifest = read_manifest(cfg.manifest, root=cfg.root or None)
    meta = store.meta
    if (meta.get("config_hash") != config_hash(store_content(cfg)) or meta.get("manifest_sha256") != manifest.sha256()
            or not store.index_is_current()):
        return None  # a different config or manifest is refused (or the stale index rebuilt) on the full path
    index = store.index()
    complete = {str(vid) for vid, status in zip(index["video_id"], index["status"]) if status == "complete"}
    wanted = {e.video_id for e in manifest.entries}
    return len(wanted) if wanted and wanted <= complete else None


def store_content(cfg: ExtractConfig) -> dict:
    """What the store's config hash covers: `cfg.content()`, local files (weights, checkpoint) by absolute
    path, so a relative path resumes from the same folder and the absolute one from anywhere. A store made
    before paths were made absolute recorded the relative spelling; where that names the same file from
    here, it is kept, so resuming such a store is not taken for a new config."""
    from pipeline.errors import StoreError
    from pipeline.store.urls import absolute

    content = cfg.content()
    files = [name for name in ("weights", "backbone_checkpoint") if content[name] and is_weights_file(content[name])]
    if not files or cfg.overwrite:
        return content
    try:
        recorded = FeatureStore.open(cfg.output, storage_options=cfg.storage_options).meta.get("config", {})
    except StoreError:
        return content  # no store yet
    for name in files:
        old = recorded.get(name)
        if isinstance(old, str) and old != content[name] and absolute(old) == content[name]:
            content[name] = old
    return content


def run(cfg: ExtractConfig, progress: Progress | None = None,
        on_plan: Callable[[Plan], None] | None = None) -> ExtractResult:
    """Extract what the store still lacks. `on_plan(plan)` is called once the work is known (with
    `plan.flow_compile`, the TV-L1 compile decision); `progress` gets pipeline.progress events: status
    lines (Note), then the "extract" task, one unit per video (with its frames)."""
    emit = emitter(progress)
    shown = cfg.output  # the store as the user wrote it, for messages
    # once, on the driver: every executor and the store's record see the same absolute paths
    cfg = cfg.with_absolute_paths()
    finished = already_finished(cfg)
    if finished is not None:  # nothing to do: answered from the store's index, no model built (no torch)
        return ExtractResult(store=shown, total=finished, skipped=finished, done=0, failed=0, frames=0, seconds=0.0)
    if cfg.decoder == "nvdec" and not (cfg.executor == "ray" and cfg.ray_address):
        # a --decoder nvdec this host cannot give fails now, before any model or store write (an
        # embedded Ray's workers run on this host; a cluster's workers check when they start)
        from pipeline.device import pick_device

        place_decoding(cfg, pick_device(cfg.device))
    apply_threads()  # the backbone's threads: the CPUs this process may use (pipeline/cpus.py)
    # a Ray driver runs no model: it describes them (store provenance) and plans the flow compile from
    # metadata; each worker loads its own
    models = load_meta_models(cfg) if cfg.executor == "ray" else load_models(cfg)
    # one writing run per store (pipeline/store/lease.py); taken before --overwrite may delete anything
    # a 403 or a lost bucket mid-run: one line (outermost: the lease's release meets it too)
    with store_errors(shown), full_disk_as_error(shown), StoreLease(cfg.output, cfg.storage_options) as lease:
        work = plan(cfg, models)
        lease.check()  # --overwrite re-made the store (and the lease with it)
        if work.jobs:
            work.store.invalidate_index()  # renewed below; a kill in between leaves no stale index
        device, backbone, flow_method, flow_backbone = models
        if work.jobs and hasattr(flow_method, "compile"):  # torch TV-L1: compile only if it pays off
            from pipeline.extraction.flow_plan import choose_flow_compile

            work.flow_compile = choose_flow_compile(cfg, work.jobs, flow_method)
            flow_method.compile = work.flow_compile.compile
            cfg = replace(cfg, flow_compile="on" if flow_method.compile else "off")  # what the workers build
        if on_plan is not None:
            on_plan(work)
        _announce(work, emit, shown)
        if cfg.executor == "ray":
            from pipeline.distributed import run_extraction

            stats = run_extraction(cfg, work.jobs, progress=emit)
        else:
            # the generic solver's inductor kernels; CUDA's Triton solver JIT-compiles in seconds
            if cfg.flow_compile == "on" and work.jobs and getattr(flow_method, "engine", "") == "torch":
                warm_flow_compile(flow_method, emit)
            from pipeline.extraction.extractor import Extractor  # torch: only when there is work

            extractor = Extractor(cfg, work.store, device=device, backbone=backbone, flow_method=flow_method,
                                  flow_backbone=flow_backbone, progress=emit)
            try:
                stats = extractor.process(work.jobs)
            finally:
                extractor.close()
        emit(Finished(TASK))
        lease.check()
        work.store.write_index()
        write_pack(work.store)  # stage two's copy; kept when the complete set did not change
    return ExtractResult(
        store=shown,
        total=work.total,
        skipped=work.total - len(work.jobs),
        done=stats.done,
        failed=stats.failed,
        frames=stats.frames,
        seconds=stats.seconds,
        failures=stats.failures,
    )


def _announce(work: Plan, emit: Progress, shown: str) -> None:
    """Say what the run does (resumed videos, the TV-L1 compile decision) and start the "extract" task,
    whose units the extractor reports, one per video."""
    skipped = work.total - len(work.jobs)
    if skipped:
        emit(Note(f"resuming: {skipped}/{work.total} videos already complete in {shown}", source=""))
    flow = ""
    if work.flow_compile is not None:
        emit(Note(work.flow_compile.describe(), source=""))
        flow = f"flow {work.flow_compile.mode}"
    emit(Started(TASK, total=len(work.jobs), unit="video", detail=flow))
