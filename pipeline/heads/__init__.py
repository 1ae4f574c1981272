"""Temporal heads: stage two's models over cached per-segment backbone features.

The contract (trainer, CLI and benchmarks code against it):

    from pipeline.heads import HEADS, build_head, head_complexity, LateFusion

    head = build_head("trn_multiscale", num_classes=27, num_segments=8, in_dim=1280)
    logits = head(features)                       # (B, num_classes), not softmaxed

- `HEADS` is a `Registry("head")`. Each entry's meta (`HEADS.meta(name)`) has
  `input_kind` ("pooled": consumes (B, T, D); "spatial": consumes (B, T, C, H, W)),
  `min_segments`, `fixed_length` (True when the weights depend on T, so T must equal
  `num_segments`), `max_streams` (2 for st_resnet, else 1), `projects_to` ("classes" for TSN),
  a one-line `summary` and the `recipe` it trains with (pipeline.heads.recipes; None: the default).
- `build_head(name, *, num_classes, num_segments, in_dim, spatial=None | (H, W), dropout=0.5,
  proj_dim=256, streams=("rgb",), **options) -> Head`. Unknown names or options, too few segments
  or bad sizes raise HeadError (one line). `options` are the head's own (e.g. `hidden`, `ratio`,
  `relation_seed`); an unknown one lists the valid ones. `head.spec` holds the arguments, so
  `build_head(**head.spec)` rebuilds it.
- A Head owns its input projection: dropout on the backbone features, then Linear(D, proj_dim)
  for pooled heads or a per-frame 1x1 Conv2d(C, proj_dim) for spatial heads (Linear(D, classes)
  for TSN). `head.projection` and `head.body` are separate submodules, so parameters and MACs are
  reported apart (`head_complexity`). Also: `head.input_kind`, `head.streams`, `head.num_segments`,
  `head.in_dim` ({stream: D}), `head.spatial`.
- forward(x) takes float features of any float dtype (cast to the head's dtype). A pooled head
  given spatial maps averages them over (H, W) first; a spatial head given pooled features raises
  HeadError. For `fixed_length` heads (mlp, trn_multiscale) T must equal num_segments; all other
  heads are length-agnostic and accept any T >= min_segments (trn_multiscale needs T >= 2, every
  other head works from T = 1). The channel count must equal in_dim.
- Streams: heads are single-stream; `head.streams` names what forward expects (one name means a
  plain tensor, or a one-key dict). `build_head("st_resnet", ..., streams=("rgb", "flow"))` is
  ST-ResNet's two-stream form: forward takes {"rgb": x, "flow": y}, the second stream is the
  motion stream feeding residuals into the first, and the output averages the streams' scores;
  `head.stream_logits(x)` gives them per stream (ST-ResNet trains one loss per stream).
  `in_dim` may be a dict per stream. Late fusion of any other heads: `LateFusion({"rgb": h1,
  "flow": h2})` averages their logits.
- Heads are deterministic in eval mode (TRN's relations are fixed from `relation_seed` in eval and
  sampled from torch's RNG in training).

Modules: `classic` (mlp, tsn, trn_multiscale, rnn_tanh, rnn_relu, lstm, gru, blstm, convlstm,
fcn2d, fcn3d), `st_resnet`, `mtconv`, `s3dg`; each documents its initialisation and the choices
the papers leave open. Adding a head = one registered body builder in one module, here or in a
plug-in package (an entry point in the group `stpipe.heads` naming a module that calls
`register_head`; see docs/plugins.md).
"""

# Importing the head modules registers them, in this order (the order `stpipe heads` lists).
# isort: off
from pipeline.heads import classic, st_resnet, mtconv, s3dg  # noqa: F401
# isort: on
from pipeline.heads.base import HEADS, Head, LateFusion, build_head, register_head
from pipeline.heads.complexity import complexity_table, count_params, head_complexity

# plug-in heads: entry points in the group `stpipe.heads` (a module calling `register_head`),
# loaded on the first lookup or listing (pipeline/registry.py)
HEADS.use_plugins("stpipe.heads")

__all__ = [
    "HEADS",
    "Head",
    "LateFusion",
    "build_head",
    "register_head",
    "head_complexity",
    "complexity_table",
    "count_params",
]
