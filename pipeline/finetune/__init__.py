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

from pipeline.finetune.config import FinetuneConfig
from pipeline.finetune.loop import Dist, evaluate, train_worker
from pipeline.finetune.model import FinetuneModel, build_finetune_model, fuse
from pipeline.finetune.source import Setup, VideoRef, prepare
from pipeline.finetune.st_resnet import STResNetTrunks, TemporalConv, collapse_to_2d

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
