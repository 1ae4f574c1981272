"""Ablations: a grid of train-head trials on one store, run in-process or on Ray, and their report.

    grid.py     heads x segments x modality x seeds, `all` filtered by what the store allows
    shared.py   the store's features read once and shared by every trial
    runner.py   the scheduling loop (slots, retry once, progress) and the in-process executor
    results.py  trial records, results.csv, failures.json, resume detection
    report.py   summary.md (the Table 3 layout of Köpüklü et al.) and accuracy_vs_macs.png

The Ray executor lives in `pipeline.distributed` (the only module that imports Ray); the stage
`stages.ablate` ties these together.
"""

# names resolved on first use: the CLI reads AblateConfig's fields without importing torch
_MODULES = {"AblateConfig": "config", "Grid": "grid", "Skipped": "grid", "Trial": "grid", "expand_grid": "grid",
            "Outcome": "runner", "TrialUpdate": "runner"}


def __getattr__(name: str):
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)


__all__ = ["AblateConfig", "Grid", "Outcome", "Skipped", "Trial", "TrialUpdate", "expand_grid"]
