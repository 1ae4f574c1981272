"""Held-out splits that keep a manifest's groups whole, and the leak check for the splits users give.

A group (the manifest's optional `group` column) names what several videos share: UCF101's
`g08` (clips cut from one longer video), HMDB51's source video, a Kinetics YouTube id, the footage
a `demo-data --from` clip was cut from. Near-duplicates on both sides of a split make its score
measure memory, so every split stpipe makes itself holds out whole groups (`held_out`), and a
split given to it is checked (`shared_groups`, `leak_note`). A video without a group ("") is a
group of its own, so data without groups splits per video, as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def held_out(labels: Sequence[int] | np.ndarray, groups: Sequence[str] | np.ndarray | None = None, *,
             fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the videos to hold out: per class about `fraction` of its videos (at least one;
    none of a class with a single video), whole groups at a time, drawn from `seed`.

    Stratified as far as groups allow: each class takes groups, in a seeded order, that keep its
    held-out count within its share (or, when none fits, the first group that keeps a training
    video); a group is never taken when that would leave any class it holds without a training video.
    """
    labels = np.asarray(labels)
    n = len(labels)
    names = [""] * n if groups is None else [str(g) for g in groups]
    _, gid = np.unique([f"g{g}" if g else f"v{i}" for i, g in enumerate(names)], return_inverse=True)
    gid = gid.reshape(-1)
    rng = np.random.default_rng([seed, 2026])
    rank = rng.permutation(int(gid.max()) + 1 if n else 0)  # a group's place in the draw order
    by_group = np.argsort(gid, kind="stable")
    starts = np.searchsorted(gid[by_group], np.arange(len(rank) + 1))
    classes, y = np.unique(labels, return_inverse=True)
    y = y.reshape(-1)
    left = np.bincount(y, minlength=len(classes))  # training videos each class still has
    held_n = np.zeros(len(classes), dtype=np.int64)
    taken = np.zeros(len(rank), dtype=bool)

    def take(g: int, limit: int | None, c: int) -> bool:
        members = by_group[starts[g]:starts[g + 1]]
        touched, counts = np.unique(y[members], return_counts=True)
        if np.any(left[touched] - counts < 1):
            return False
        if limit is not None and held_n[c] + counts[touched == c].sum() > limit:
            return False
        taken[g] = True
        left[touched] -= counts
        held_n[touched] += counts
        return True

    for c in range(len(classes)):
        total = int((y == c).sum())
        if total < 2:
            continue
        target = max(1, round(total * fraction))
        candidates = np.unique(gid[y == c])
        candidates = candidates[np.argsort(rank[candidates])]
        for g in candidates:
            if held_n[c] >= target:
                break
            if not taken[g]:
                take(int(g), target, c)
        if held_n[c] == 0:  # every group overshoots the share: the first one that keeps a training video
            next((g for g in candidates if not taken[g] and take(int(g), None, c)), None)
    return taken[gid]


def shared_groups(groups: Sequence[str] | np.ndarray, splits: Sequence[str] | np.ndarray,
                  first: str = "train", second: str = "val") -> list[str]:
    """The groups (sorted) that videos of split `first` and of split `second` both have ("" is none)."""
    pairs = list(zip(np.asarray(groups).tolist(), np.asarray(splits).tolist()))  # the index may hold StringDType
    a = {str(g) for g, s in pairs if s == first}
    b = {str(g) for g, s in pairs if s == second}
    return sorted((a & b) - {""})


def leak_note(shared: list[str], first: str = "train", second: str = "val") -> str:
    """One line saying that `second` shares groups with `first` (its score measures what was trained on)."""
    examples = ", ".join(repr(g) for g in shared[:3]) + (" ..." if len(shared) > 3 else "")
    return (f"split {second!r} shares {len(shared)} group(s) with {first!r} ({examples}): its score measures "
            f"sources the head trained on; hold whole groups out (README: groups)")


def index_leak(index: Mapping[str, np.ndarray], first: str = "train", second: str = "val") -> list[str]:
    """`shared_groups` of a store's index (complete videos only)."""
    complete = index["status"] == "complete"
    return shared_groups(index["group"][complete], index["split"][complete], first, second)


def groups_of(index: Mapping[str, np.ndarray], keys: np.ndarray) -> np.ndarray:
    """The group of each store key (a store's index, as `FeatureStore.index()` gives it)."""
    group = {str(k): str(g) for k, g in zip(index["key"].tolist(), index["group"].tolist())}
    return np.array([group.get(str(key), "") for key in np.asarray(keys).tolist()], dtype=str)
