"""Every order-aware head learns temporal order, and TSN cannot: a forward-vs-reverse task on tensors.

Each clip is T frames drifting along one fixed direction v of feature space (the same v for every
clip: frame t = a per-clip appearance + s_t * v + noise, s_t rising from -1 to 1), class 0 as
generated, class 1 the same frames in reverse order. Both classes hold exactly the same set of
frames, so order is the only signal: TSN's average of per-frame scores stays near chance, and a head
that can read order reaches >= 90%. Each head trains with its recipe's lr, weight decay, dropout,
temporal centring and projection width (pipeline.heads.recipes, AdamW, half-cosine lr) for a fixed
budget of steps.
"""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F

from pipeline.heads import HEADS, build_head
from pipeline.heads.recipes import head_recipe

SEGMENTS = 8
DIM = 16
SPATIAL = (2, 2)
STEPS = 100
BATCH = 32
ORDER_AWARE = ("mlp", "trn_multiscale", "rnn_tanh", "rnn_relu", "lstm", "gru", "blstm", "convlstm", "fcn2d",
               "fcn3d", "st_resnet", "mtconv", "s3dg")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny heads run fastest on one thread; two OpenMP threads wait at barriers on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def order_task(n: int, *, spatial: tuple[int, int] | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(clips (n, T, D[, H, W]), labels (n,)): label 1 = the clip's frames in reverse order."""
    shape = (DIM,) if spatial is None else (DIM, *spatial)
    direction = torch.randn(shape, generator=torch.Generator().manual_seed(1234))  # shared by all clips
    direction *= math.sqrt(direction.numel()) / direction.norm()  # unit variance per feature
    gen = torch.Generator().manual_seed(seed)
    drift = torch.linspace(-1, 1, SEGMENTS).view(1, SEGMENTS, *[1] * len(shape))
    clips = torch.randn(n, 1, *shape, generator=gen) + 0.5 * drift * direction
    clips = clips + torch.randn(n, SEGMENTS, *shape, generator=gen)
    labels = torch.arange(n) % 2
    clips[labels == 1] = clips[labels == 1].flip(1)
    return clips, labels


def train_and_score(name: str) -> tuple[float, float]:
    """(val top-1, seconds) of `name` trained on the order task with its recipe."""
    spatial = SPATIAL if HEADS.meta(name)["input_kind"] == "spatial" else None
    x, y = order_task(256, spatial=spatial, seed=1)
    x_val, y_val = order_task(256, spatial=spatial, seed=2)
    recipe = head_recipe(name)
    torch.manual_seed(0)
    head = build_head(name, num_classes=2, num_segments=SEGMENTS, in_dim=DIM, spatial=spatial,
                      proj_dim=min(recipe.proj_dim, 32), dropout=recipe.dropout,
                      temporal_center=recipe.temporal_center)
    optimizer = torch.optim.AdamW(head.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    started = time.perf_counter()
    head.train()
    for step in range(STEPS):
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr * 0.5 * (1 + math.cos(math.pi * step / STEPS))
        index = torch.randint(0, len(x), (BATCH,))
        loss = F.cross_entropy(head(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    with torch.no_grad():
        top1 = (head(x_val).argmax(1) == y_val).float().mean().item()
    return top1, time.perf_counter() - started


def test_order_task_has_the_same_frames_in_both_classes():
    x, y = order_task(64, spatial=None, seed=0)
    forward, backward = x[y == 0], x[y == 1]
    # a reversed clip is a clip of the same frames: per-frame statistics cannot tell the classes apart
    assert torch.equal(backward.flip(1).sort(1).values, backward.sort(1).values)
    for clips in (forward, backward.flip(1)):  # un-reversed, both classes drift the same way
        drift = (clips[:, -1] - clips[:, 0]).flatten(1).mean(0)
        assert drift.norm() > 0.5
    assert torch.allclose(forward.mean((0, 1)), forward.flip(1).mean((0, 1)))


def test_order_blind_tsn_stays_near_chance():
    top1, _ = train_and_score("tsn")
    assert 0.35 <= top1 <= 0.65, f"tsn reached {top1:.1%} on an order-only task"


@pytest.mark.parametrize("name", ORDER_AWARE)
def test_order_aware_head_learns_order(name):
    top1, seconds = train_and_score(name)
    assert top1 >= 0.9, f"{name}: {top1:.1%} on forward-vs-reverse after {STEPS} steps ({seconds:.1f} s)"


def test_every_registered_head_is_covered():
    assert set(HEADS.names()) == set(ORDER_AWARE) | {"tsn"}
