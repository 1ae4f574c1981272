"""Stage three: fine-tune backbone(s) and head end to end from the videos (Ray-free core).

    from pipeline.finetune import FinetuneConfig, prepare, train_worker, Dist
    setup = prepare(FinetuneConfig(run="runs/trn", manifest="jester.csv", out="runs/trn-ft"))
    state = train_worker(setup, run_dir="runs/trn-ft", dist=Dist())    # one in-process worker

`stages/finetune.py` wraps this (run dir, exports, metrics) and `pipeline/distributed/`
(`run_finetune`) runs the same `train_worker` on Ray Train workers.

Modules: `config` (FinetuneConfig), `source` (head run + store + manifest -> a picklable Setup,
with the bad-input checks), `data` (decoded clips, TSN segment sampling, sharding of global
batches), `augment` (multi-scale corner crops, flips, flow handling), `model` (backbones + head,
late fusion, partial BN, exports), `st_resnet` (motion residuals, eq. 5 temporal filters),
`loop` (training, evaluation, checkpoints, resume).
"""

# names resolved on first use: the CLI reads FinetuneConfig's fields without importing torch
_MODULES = {"FinetuneConfig": "config", "Dist": "loop", "evaluate": "loop", "train_worker": "loop",
            "FinetuneModel": "model", "build_finetune_model": "model", "fuse": "model", "Setup": "source",
            "VideoRef": "source", "prepare": "source", "STResNetTrunks": "st_resnet", "TemporalConv": "st_resnet",
            "collapse_to_2d": "st_resnet"}


def __getattr__(name: str):
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)


__all__ = [
    "Dist",
    "FinetuneConfig",
    "FinetuneModel",
    "STResNetTrunks",
    "Setup",
    "TemporalConv",
    "VideoRef",
    "build_finetune_model",
    "collapse_to_2d",
    "evaluate",
    "fuse",
    "prepare",
    "train_worker",
]
