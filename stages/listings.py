"""`stpipe heads`, `backbones` and `flows`: what is registered, as lines of text.

The rows come from pipeline.listings, which ships them at these defaults and caches them (neither
imports torch); these functions only lay them out. `python -m stages.listings` writes the shipped
listings again (after a change to pipeline/heads, backbones or flow)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.config import arg
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class HeadsConfig:
    num_classes: int = arg(27, "Number of classes.", flag="--classes")
    num_segments: int = arg(8, "Segments (T) per clip.", flag="--segments")
    feature_shape: str = arg("1280", "Backbone features per segment: D (pooled) or CxHxW (spatial maps).")
    proj_dim: int = arg(256, "Width after the input projection (Köpüklü et al. use 256).")

    def __post_init__(self) -> None:
        for name in ("num_classes", "num_segments", "proj_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.shape()

    def shape(self) -> tuple[int, ...]:
        try:
            shape = tuple(int(v) for v in self.feature_shape.lower().split("x"))
        except ValueError:
            shape = ()
        if len(shape) not in (1, 3) or min(shape) < 1:
            raise ConfigError(f"--feature-shape: expected D (pooled) or CxHxW (spatial), e.g. 1280 or 1280x7x7; "
                              f"got {self.feature_shape!r}")
        return shape

    def listing_options(self) -> dict:
        return dict(num_classes=self.num_classes, num_segments=self.num_segments, feature_shape=self.shape(),
                    proj_dim=self.proj_dim)


def heads(cfg: HeadsConfig) -> list[str]:
    """The head table: parameters and multiply-adds per clip, projection and body apart, default recipe."""
    from pipeline.listings import heads_listing

    shape = cfg.shape()
    listing = heads_listing(**cfg.listing_options())
    lines = [f"classes {cfg.num_classes}, segments {cfg.num_segments}, features {'x'.join(map(str, shape))} per "
             f"segment, projection to {cfg.proj_dim}; MACs per clip"]
    header = ("head", "input", "proj params", "proj MACs", "head params", "head MACs", "default recipe", "note")
    table = [header]
    for r in listing["rows"]:
        if r["applicable"]:
            table.append((r["name"], r["input_kind"], f"{r['projection_params']:,}",
                          f"{r['projection_macs'] / 1e6:,.2f}M", f"{r['head_params']:,}",
                          f"{r['head_macs'] / 1e6:,.2f}M", r["recipe"], r["note"]))
        else:
            table.append((r["name"], r["input_kind"], "-", "-", "-", "-", r["recipe"], f"n/a: {r['note']}"))
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [c.ljust(w) if i < 2 or i == 6 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
    lines.append("default recipe: AdamW, half-cosine lr, what train-head/ablate/demo use for settings not given "
                 "(chosen by a recorded sweep, benchmarks/README.md); --recipe paper = the SGD recipe of Köpüklü et al.")
    return lines + [f"plug-in {plugin} failed to load: {why}" for plugin, why in listing["plugin_errors"].items()]


def backbones(name: str | None = None) -> list[str]:
    """The backbone table (default weights, whether they are cached, other weights), or one backbone's card."""
    if name:
        from pipeline.backbones.describe import describe_backbone

        return describe_backbone(name).lines()
    from pipeline.listings import backbones_listing, weight_cached

    listing = backbones_listing()
    lines = [f"{'name':<20} {'kind':<6} {'default weights':<34} cached  other weights"]
    for row in listing["rows"]:
        if not row["weights"]:
            own = row["source"] == "stpipe" and row["origin"] == "builtin"
            what = "(own init; tests)" if own else f"({row['origin']})"
            lines.append(f"{row['name']:<20} {row['kind']:<6} {what:<34} -")
            continue
        (default, default_file), *others = row["weights"]
        cached = "yes" if weight_cached(listing, default_file) else "no"
        marked = ", ".join(m + ("*" if weight_cached(listing, f) else "") for m, f in others)
        lines.append(f"{row['name']:<20} {row['kind']:<6} {default:<34} {cached:<7} {marked}")
    lines.append("* = weight file present in the torch cache ($TORCH_HOME/hub/checkpoints)")
    lines += [f"{prefix + ':NAME':<20} {summary}{'' if version else ' [not installed]'}"
              for prefix, summary, version in listing["families"]]
    return lines + [f"plug-in {plugin} failed to load: {why}" for plugin, why in listing["plugin_errors"].items()]


def flows() -> list[str]:
    """One line per optical-flow method: its preset (or backend) and the extra it needs."""
    from pipeline.listings import flows_listing

    lines = []
    for meta in flows_listing():
        preset = meta.get("preset")
        detail = ", ".join(f"{k}={v}" for k, v in preset.items()) if preset else f"backend {meta.get('backend')}"
        extra = f" (needs the '{meta['extra']}' extra)" if meta.get("extra") else ""
        lines.append(f"{meta['name']:14s} {detail}{extra}")
    return lines


if __name__ == "__main__":
    from pipeline.listings import write_shipped

    write_shipped(HeadsConfig().listing_options())
