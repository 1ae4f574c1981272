"""Stage two: train temporal heads on cached features.

The pieces, in the order data flows through them:

    config.TrainHeadConfig      frozen config of what the user gave; `resolved()` fills the recipe
    identity                    whether a run dir holds "this" run (train-head, ablate, --select, finetune)
    data.load_split(store, split, streams=("rgb",), pooled=True, memory_budget_bytes=None) -> SplitData
                                a split as plain numpy: per stream one contiguous (views, frames, C[, H, W])
                                float16 array + per-video offsets/lengths, labels, ids (or, above the
                                budget, only the layout: batches then stream from Zarr)
    batches.segment_indices / train_plans / MemoryFeatures
                                TSN segment sampling and the batch gather, all tensor ops
    streaming.ZarrFeatures / iterate_batches
                                the same contract read from Zarr with a background prefetch thread
    loop.train(cfg, TrainData(train, val, classes, stats), run_dir=None) -> TrainResult
                                a head's recipe or the paper's SGD; resumable; no store access (data comes in)
    stats.compute_stats         per-channel mean/std of a loaded split; kept by the pack, store or run dir
    fusion.choose_weights       late fusion's rgb:flow weights, chosen on an inner split of the training videos
    metrics, reports, runs, model
                                accuracy/confusion, plots, run-dir rules and store signatures,
                                model specs and weights-only checkpoints
    trained.TrainedRun.open(run_dir)
                                a finished run for evaluate, predict and finetune: config, model, stats,
                                the check that a store is the one it was trained on

For many trials on one store (ablations): `stages.train_head.load_data(cfg, store)` once, put the
`TrainData` (numpy only, so it goes into Ray's object store zero-copy) wherever the trials run,
and call `loop.train(trial_cfg, data)` per trial; no trial re-reads the store.
"""
