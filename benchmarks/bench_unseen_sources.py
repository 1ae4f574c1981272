"""Issue 35: what lifts accuracy on footage from sources no training clip comes from.

Reads a store made from `stpipe demo-data --from ... --val-sources N` (pooled rgb features).
Without --final (the dev protocol, used to choose): leave-one-source-out over the *training* split's
sources (train on the others, with their own standardisation stats, score the held-out one; final-epoch
top-1, mean over folds and seeds). The store's val is never read.
With --final (the report): train on a per-class 75% of the training clips; score the other 25%
("same-source": clips of the training sources) and the store's val ("unseen-source") with the same
final-epoch model.

    python benchmarks/bench_unseen_sources.py --store fdu.zarr --heads mlp,lstm --variants base,c75,c1
    python benchmarks/bench_unseen_sources.py --store fdu.zarr --heads mlp,lstm --seeds 0,1,2 --final
    python benchmarks/bench_unseen_sources.py --store fdu.zarr --heads lstm --aug swap:1.0

Variants: the head's recipe (base) or it with temporal_center 0.75 / 1.0 (c75 / c1), dropout 0.8 (d8),
weight decay 0.5 (wd), half the epochs (ep_half). --aug KIND:P adds a training-only feature
augmentation (prototypes, not in the library): noise (Gaussian, std P on standardised features),
swap (with probability P a clip's temporal mean is replaced by another clip's), chdrop (whole channels
dropped with probability P), mixup (Beta(P, P) mix with a clip of the same class). Lines go to stdout,
rows to --out (JSON lines).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import replace

import numpy as np
import torch

from pipeline.splits import groups_of
from pipeline.store import FeatureStore
from pipeline.training.config import TrainHeadConfig
from pipeline.training.features import load_features
from pipeline.training.loop import TrainData, evaluate, make_source, train
from pipeline.training.select import subset

AUG = {"kind": "", "p": 0.0}


def _install_aug():
    import pipeline.training.loop as loop
    real = loop.iterate_batches

    def wrapped(source, plans, **kw):
        training = plans and plans[0].positions is not None
        for x, y in real(source, plans, **kw):
            if training and AUG["kind"]:
                x = {k: augment(v, y) for k, v in x.items()}
            yield x, y

    loop.iterate_batches = wrapped


def same_class_perm(y):
    perm = torch.empty_like(y)
    for c in y.unique():
        idx = torch.nonzero(y == c).flatten()
        perm[idx] = idx[torch.randperm(len(idx))]
    return perm


def augment(x, y):
    kind, p = AUG["kind"], AUG["p"]
    if kind == "noise":
        return x + p * torch.randn_like(x)
    if kind == "swap":  # replace each clip's static part (temporal mean) by another clip's
        mean = x.mean(1, keepdim=True)
        perm = torch.randperm(len(x))
        keep = (torch.rand(len(x), 1, 1) >= p).float()
        return x - (1 - keep) * (mean - mean[perm])
    if kind == "chdrop":  # drop whole channels of a clip (same for all frames)
        mask = (torch.rand(x.shape[0], 1, x.shape[2]) >= p).float() / (1 - p)
        return x * mask
    if kind == "mixup":
        lam = torch.distributions.Beta(p, p).sample((len(x), 1, 1))
        perm = same_class_perm(y)
        return lam * x + (1 - lam) * x[perm]
    raise ValueError(kind)


VARIANTS = {
    "base": {},
    "c1": {"temporal_center": 1.0},
    "c75": {"temporal_center": 0.75},
    "d8": {"dropout": 0.8},
    "wd": {"weight_decay": 0.5},
    "ep_half": "half",
}


def stats_of(split):
    out = {}
    for name, d in split.streams.items():
        rows = np.concatenate([np.arange(o, o + n) for o, n in zip(d.offsets, d.lengths)])
        x = d.frames[:, rows].reshape(-1, *d.frame_shape).astype(np.float64)
        out[name] = (x.mean(0).astype(np.float32), x.std(0).astype(np.float32))
    return out


def cfg_for(store, head, seed, variant, extra):
    base = TrainHeadConfig(store=store, head=head, seed=seed, device="cpu", **extra)
    v = VARIANTS.get(variant, {})
    if v == "half":
        return replace(base, epochs=max(3, base.epochs // 2))
    if isinstance(v, dict) and v:
        return TrainHeadConfig(store=store, head=head, seed=seed, device="cpu", **{**extra, **v})
    return base


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--store", required=True)
    p.add_argument("--heads", required=True)
    p.add_argument("--variants", default="base")
    p.add_argument("--seeds", default="0")
    p.add_argument("--final", action="store_true")
    p.add_argument("--out", default="")
    p.add_argument("--aug", default="")
    a = p.parse_args()
    if a.aug:
        AUG["kind"], AUG["p"] = a.aug.split(":")[0], float(a.aug.split(":")[1])
        _install_aug()
    torch.set_num_threads(1)
    extra = {}
    store = FeatureStore.open(a.store)
    with tempfile.TemporaryDirectory() as d:
        feats = load_features(store, uses=[(("rgb",), True)], splits=("train", "val"),
                              memory_budget_bytes=4 * 2**30, standardize=True, stats_dir=d)
    data = feats.train_data(("rgb",), True)
    groups = groups_of(store.index(), data.train.keys)
    sources = sorted(set(groups))
    print("train sources", sources, "load", os.getloadavg(), flush=True)
    folds = []
    if a.final:  # same-source val: a per-class 25% of train clips (not by source); unseen: the store's val
        rng = np.random.default_rng(123)
        labels = data.train.labels
        held = np.zeros(len(labels), bool)
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            held[rng.choice(idx, len(idx) // 4, replace=False)] = True
        tr = subset(data.train, np.flatnonzero(~held), "inner-train")
        same = subset(data.train, np.flatnonzero(held), "same")
        folds.append(("same", TrainData(train=tr, val=same, classes=data.classes, stats=stats_of(tr))))
    else:
        for g in sources:
            tr = subset(data.train, np.flatnonzero(groups != g), "inner-train")
            va = subset(data.train, np.flatnonzero(groups == g), "inner-val")
            folds.append((g, TrainData(train=tr, val=va, classes=data.classes, stats=stats_of(tr))))
    rows = []
    for head in a.heads.split(","):
        for variant in a.variants.split(","):
            accs = []
            for seed in [int(s) for s in a.seeds.split(",")]:
                for name, fd in folds:
                    cfg = cfg_for(a.store, head, seed, variant, extra)
                    r = train(cfg, fd)
                    acc = r.history[-1]["val_top1"]
                    best = max(h["val_top1"] for h in r.history)
                    if a.final:  # "best" slot carries the unseen-source val top-1 of the same final model
                        src = make_source(data.val, device=torch.device("cpu"), num_segments=cfg.segments,
                                          stats=fd.stats, max_batch=256)
                        best = evaluate(r.model, src, views=1, batch_size=256)["top1"]
                    accs.append((acc, best))
                    rows.append({"head": head, "variant": variant, "seed": seed, "fold": name, "top1": acc,
                                 "best": best})
            fin, bst = np.array(accs).T
            if a.final:
                print(f"{head:15s} {variant:8s} same {100 * fin.mean():5.1f} ± {100 * fin.std():.1f}  unseen "
                      f"{100 * bst.mean():5.1f} ± {100 * bst.std():.1f}  " + " ".join(f"{100 * x:.1f}" for x in bst),
                      flush=True)
            else:
                print(f"{head:15s} {variant:8s} final {100 * fin.mean():5.1f} best {100 * bst.mean():5.1f}  "
                      + " ".join(f"{100 * x:.0f}" for x in fin), flush=True)
    if a.out:
        with open(a.out, "a") as f:
            for r in rows:
                f.write(json.dumps({**r, "aug": a.aug, "final": a.final}) + "\n")


if __name__ == "__main__":
    main()
