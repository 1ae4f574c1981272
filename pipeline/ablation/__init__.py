"""Ablations: a grid of train-head trials on one store, run in-process or on Ray, and their report.

    grid.py     heads x segments x modality x seeds, `all` filtered by what the store allows
    shared.py   the store's features read once and shared by every trial
    runner.py   the scheduling loop (slots, retry once, progress) and the in-process executor
    results.py  trial records, results.csv, failures.json, resume detection
    report.py   summary.md (seed 000's Table 3 layout) and accuracy_vs_macs.png

The Ray executor lives in `pipeline.distributed` (the only module that imports Ray); the stage
`stages.ablate` ties these together.
"""

from pipeline.ablation.config import AblateConfig
from pipeline.ablation.grid import Grid, Skipped, Trial, expand_grid
from pipeline.ablation.runner import Outcome, TrialUpdate

__all__ = ["AblateConfig", "Grid", "Outcome", "Skipped", "Trial", "TrialUpdate", "expand_grid"]
