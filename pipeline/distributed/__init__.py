"""The Ray layer: the only package that imports Ray.

`session` starts an embedded local Ray or joins a cluster; `extract` runs stage one on actors,
`finetune` stage three on Ray Train, `trials` the ablation's trials as tasks. Each imports Ray
lazily, so `import pipeline.distributed` costs nothing where Ray is not used.
"""

from pipeline.distributed.extract import (
    CALL_BATCHES,
    CALL_FRAMES,
    VIDEOS_PER_CALL,
    run_extraction,
    videos_per_call,
    warm_flow_compile_on_nodes,
)
from pipeline.distributed.finetune import run_finetune
from pipeline.distributed.session import ray_session
from pipeline.distributed.trials import TrialExecutor, trial_executor

__all__ = ["CALL_BATCHES", "CALL_FRAMES", "VIDEOS_PER_CALL", "TrialExecutor", "ray_session", "run_extraction",
           "run_finetune", "trial_executor", "videos_per_call", "warm_flow_compile_on_nodes"]
