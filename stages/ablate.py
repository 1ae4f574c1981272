"""`stpipe ablate`: heads x segments x modality x [hyper-parameters] x seeds on one store, as parallel trials.

Writes into `out/`: ablation.yaml (the config), trials/<name>/ (one train-head run dir per trial, with
TensorBoard event files of its curves when tensorboard is installed),
results.csv (one row per trial), summary.md (the Table 3 layout of Köpüklü et al.), accuracy_vs_macs.png and,
when trials failed, failures.json. The store is read once; trials share the features (on Ray through
the object store, zero-copy). Re-running resumes: finished trials are read back, unfinished ones
continue from their last epoch, failed ones are tried again. Progress goes to `progress(event)` as
pipeline.progress events: the grid (Notes), then the "ablate" task, one unit per finished trial (the
Advanced event's `item` is the runner's TrialUpdate of the trial).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.ablation.config import AblateConfig
from pipeline.ablation.grid import Grid, Skipped, Trial, expand_grid
from pipeline.ablation.report import plot_accuracy_vs_macs, summary_markdown
from pipeline.ablation.results import (
    TrialRecord,
    finished_metrics,
    read_failures,
    read_results,
    write_failures,
    write_results,
)
from pipeline.ablation.runner import LocalExecutor, TrialUpdate, run_trials
from pipeline.ablation.shared import SharedFeatures, is_pooled, load_shared
from pipeline.config import config_to_dict, from_dict, read_yaml, save_config
from pipeline.errors import ConfigError, full_disk_as_error
from pipeline.heads.recipes import RECIPE_FIELDS
from pipeline.progress import Advanced, Finished, Note, Progress, Started, emitter
from pipeline.store import FeatureStore
from pipeline.store.urls import absolute, relative
from pipeline.training.identity import differences
from pipeline.training.session import run_head
from pipeline.training.tensorboard_events import epoch_curves

SETTINGS_FILE = "ablation.yaml"


@dataclass
class AblateResult:
    out: Path
    records: list[TrialRecord]
    skipped: list[Skipped]
    results: Path
    summary: Path
    plot: Path
    summary_text: str
    seconds: float
    load_seconds: float = 0.0
    shared_bytes: int = 0

    @property
    def failed(self) -> list[TrialRecord]:
        return [r for r in self.records if r.status == "failed"]


def train_trial(trial: Trial, shared: SharedFeatures, *, device: str, cfg: AblateConfig) -> dict[str, Any]:
    """One trial: a train-head run on the shared features; returns its metrics.json values."""
    trial_cfg = _trial_config(cfg, trial, device=device)
    data = shared.train_data(trial)
    if not trial_cfg.resolved().standardize:  # stats are loaded when any trial standardises (recipes do; `paper` does not)
        data.stats = {}
    with epoch_curves(trial_cfg.out, None) as progress:  # TensorBoard event files, when it is installed
        result = run_head(trial_cfg, progress=progress, data=data, signature=shared.signature(trial),
                          plots=cfg.trial_plots)
    return dict(result.metrics)


def _trial_config(cfg: AblateConfig, trial: Trial, device: str | None = None):
    """The train-head config of a trial (what the user gave), wherever it runs."""
    return cfg.trial_config(head=trial.head, segments=trial.segments, modality=trial.modality, seed=trial.seed,
                            out=str(trial_dir(cfg, trial)), device=device, params=trial.params)


def trial_dir(cfg: AblateConfig, trial: Trial) -> Path:
    return Path(absolute(cfg.out)) / "trials" / trial.name


def run(cfg: AblateConfig, progress: Progress | None = None) -> AblateResult:
    """Run (or resume) the ablation."""
    with full_disk_as_error(cfg.out):
        return _run(cfg, progress)


def _run(cfg: AblateConfig, progress: Progress | None) -> AblateResult:
    started = time.perf_counter()
    emit = emitter(progress)
    out = Path(cfg.out)  # as the user wrote it, for messages
    # once, on the driver: trials run in Ray workers whose working directory is not this one
    cfg = replace(cfg, store=absolute(cfg.store), out=absolute(cfg.out))
    store = FeatureStore.open(cfg.store, storage_options=cfg.storage_options or None)
    grid = expand_grid(cfg, store)
    _check_settings(cfg, out, store)
    records = []
    for trial in grid.trials:
        record = TrialRecord(trial, trial_dir(cfg, trial))
        metrics = None if cfg.overwrite else finished_metrics(record.run_dir, _trial_config(cfg, trial))
        if metrics is not None:
            record.status, record.metrics, record.resumed = "ok", metrics, True
        records.append(record)
    by_trial = {r.trial: r for r in records}
    # spatial heads first: the longest trials start early, so no slot idles behind one at the end
    todo = sorted((r.trial for r in records if r.status != "ok"), key=lambda t: is_pooled(t.head))
    _announce(grid, len(records) - len(todo), emit)
    paths = _paths(out)
    again = [name for name in read_failures(paths["failures"]) if name in {t.name for t in todo}]
    if again:
        emit(Note(f"trying again {len(again)} trial(s) that failed in the last run: {', '.join(again[:5])}"
                  + (" ..." if len(again) > 5 else "")))
    write_results(paths["results"], records)
    load_seconds, shared_bytes = 0.0, 0
    if todo:
        loading = time.perf_counter()
        todo_grid = Grid(trials=todo, skipped=grid.skipped, stream_shapes=grid.stream_shapes)
        shared = load_shared(store, todo_grid, val_split=cfg.train.get("val_split", "val"),
                             standardize=any(_trial_config(cfg, t).resolved().standardize for t in todo),
                             memory_budget_bytes=cfg.memory_budget_gb * 2**30, stats_dir=str(out),
                             storage_options=cfg.storage_options, progress=progress, skip_damaged=cfg.skip_damaged)
        load_seconds, shared_bytes = time.perf_counter() - loading, shared.nbytes
        emit(Note(f"features loaded once for every trial in {load_seconds:.1f} s ({shared_bytes / 2**20:.0f} MiB)"))
        fn = functools.partial(train_trial, cfg=cfg)

        def record_progress(event: Advanced) -> None:
            if event.item.kind == "start":
                by_trial[event.item.trial].status = "running"
            emit(replace(event, message=_trial_line(event.item)))

        context = _executor(cfg, fn, shared)
        del shared  # on Ray the object store holds the one copy; the driver keeps none
        with context as executor:
            finished = run_trials(todo, executor, max_retries=cfg.max_retries, total=len(records),
                                  already_done=len(records) - len(todo), progress=record_progress)
            for trial, outcome, attempts in finished:
                record = by_trial[trial]
                record.attempts = attempts
                record.status = "ok" if outcome.ok else "failed"
                record.metrics, record.error = (outcome.metrics, "") if outcome.ok else ({}, outcome.error)
                write_results(paths["results"], records)  # a killed run keeps every finished row
                write_failures(paths["failures"], records)
    emit(Finished("ablate"))
    write_results(paths["results"], records)
    write_failures(paths["failures"], records)
    rows = read_results(paths["results"])
    title = f"Ablation on {relative(cfg.store)}"
    text = summary_markdown(rows, heads=grid.heads, settings=grid.settings, skipped=grid.skipped, title=title,
                            val_split=cfg.train.get("val_split", "val"), seeds=cfg.seeds)
    paths["summary"].write_text(text)
    plot_accuracy_vs_macs(rows, paths["plot"], settings=grid.settings, title=title)
    return AblateResult(out=out, records=records, skipped=grid.skipped, results=paths["results"],
                        summary=paths["summary"], plot=paths["plot"], summary_text=text,
                        seconds=time.perf_counter() - started, load_seconds=load_seconds, shared_bytes=shared_bytes)


def _announce(grid: Grid, finished: int, emit: Progress) -> None:
    emit(Note(f"ablate: {len(grid.heads)} heads x {len(grid.settings)} settings -> {len(grid.trials)} trials"
              + (f" ({finished} finished earlier, not repeated)" if finished else ""), source=""))
    for skip in grid.skipped:
        where = f" at {skip.setting[0]} seg. {skip.setting[1]}" if skip.setting else ""
        emit(Note(f"  left out: {skip.head}{where}: {skip.reason}", source=""))
    emit(Started("ablate", total=len(grid.trials), done=finished, unit="trial"))


def _trial_line(u: TrialUpdate) -> str:
    grid = f" {u.trial.grid_label}" if u.trial.params else ""
    name = f"{u.trial.head} {u.trial.segments} seg. {u.trial.modality}{grid} seed {u.trial.seed}"
    if u.kind == "done":
        m = u.outcome.metrics
        line = f"  done    {name}: top-1 {m['val_top1']:.1%} ({m['epochs']} epochs, {u.outcome.seconds:.1f} s)"
        collapsed = [n for n in m.get("notes", []) if m.get("collapsed") and n.startswith("collapsed")]
        return line + "".join(f"\n    {n}" for n in collapsed)  # under the trial's line, as the summary marks it
    if u.kind in ("retry", "failed"):
        return f"  {u.kind:7s} {name} (attempt {u.attempt}): {u.outcome.error}"
    return ""


def _paths(out: Path) -> dict[str, Path]:
    return {"results": out / "results.csv", "summary": out / "summary.md", "plot": out / "accuracy_vs_macs.png",
            "failures": out / "failures.json"}


def _check_settings(cfg: AblateConfig, out: Path, store: FeatureStore) -> None:
    """Refuse to mix trials trained with other shared settings or on another store into one table."""
    path = out / SETTINGS_FILE
    mine = {"store_config_hash": store.meta.get("config_hash", ""), **cfg.settings()}
    if path.is_file() and not cfg.overwrite:
        saved = read_yaml(path).get("shared", {})
        # a recipe field saved but not given now was left to each head's recipe, or was an earlier
        # version's record of a probe trial's recipe: each trial's run keeps its own values
        diff = differences(saved, mine, follow=RECIPE_FIELDS)
        if diff:
            raise ConfigError(f"{out}: holds an ablation with different settings (differs in: {', '.join(diff)}); "
                              "use another -o or --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    save_config(_Saved(config=config_to_dict(cfg), shared=mine), path)


@dataclass(frozen=True)
class _Saved:
    config: dict[str, Any]
    shared: dict[str, Any]


def _executor(cfg: AblateConfig, fn, shared: SharedFeatures):
    import contextlib

    if cfg.executor == "ray":
        from pipeline.distributed import trial_executor

        return trial_executor(fn, shared, address=cfg.ray_address, cpus_per_trial=cfg.cpus_per_trial,
                              gpus_per_trial=cfg.gpus_per_trial, max_concurrent=cfg.max_concurrent)
    return contextlib.nullcontext(LocalExecutor(fn, shared, device=cfg.device, cpus_per_trial=cfg.cpus_per_trial))


def load_config(path: str | Path) -> AblateConfig:
    """The AblateConfig saved in an ablation folder's ablation.yaml."""
    return from_dict(AblateConfig, read_yaml(Path(path) / SETTINGS_FILE)["config"], source=str(path))
