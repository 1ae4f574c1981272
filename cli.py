"""The `stpipe` command line. The only place that parses arguments, prints, and exits."""

from __future__ import annotations

import sys

import click

from pipeline import __version__
from pipeline.errors import StpipeError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="stpipe")
def cli() -> None:
    """stpipe: cache video features and TV-L1 flow once, then train temporal heads in seconds."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: StpipeError becomes one clean line on stderr and its exit code."""
    try:
        cli.main(args=argv, prog_name="stpipe", standalone_mode=False)
    except StpipeError as exc:
        click.echo(f"stpipe: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("stpipe: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("stpipe: interrupted; re-run the same command to resume", err=True)
        sys.exit(130)


# ---- commands -------------------------------------------------------------------------------
# Each command group lives in its own section below, in the order of the pipeline.


# ---- demo data ----


@cli.command("demo-data")
@click.option("-o", "--out", default="demo-data", show_default=True, help="Output folder.")
@click.option("--videos-per-class", type=int, default=None, help="Videos per class (default 24).")
@click.option("--frames", type=int, default=None, help="Frames per video (default 16).")
@click.option("--size", type=int, default=None, help="Frame side in pixels (default 112).")
@click.option("--seed", type=int, default=None, help="Random seed (default 0).")
@click.option("--digits", default=None, help="Path to digits.png (default: $STPIPE_ASSETS/images/digits.png, else shapes).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file.")
def demo_data_cmd(out, videos_per_class, frames, size, seed, digits, config_file):
    """Write a small labelled video set whose classes depend on temporal order."""
    from pipeline.config import build_config, save_config
    from pipeline.demo_data import DemoDataConfig, generate

    overrides = dict(out=out, videos_per_class=videos_per_class, frames=frames, size=size, seed=seed, digits=digits)
    cfg = build_config(DemoDataConfig, config_file, overrides)
    result = generate(cfg)
    save_config(cfg, f"{cfg.out}/demo-data.yaml")
    click.echo(f"wrote {result.num_videos} videos ({result.glyphs}) and {result.manifest}")


# ---- heads ----


def _feature_shape(ctx, param, value: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in value.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise click.BadParameter(f"expected D (pooled) or CxHxW (spatial), e.g. 1280 or 1280x7x7; got {value!r}")
    return shape


@cli.command("heads")
@click.option("--classes", "num_classes", type=click.IntRange(min=1), default=27, show_default=True,
              help="Number of classes.")
@click.option("--segments", "num_segments", type=click.IntRange(min=1), default=8, show_default=True,
              help="Segments (T) per clip.")
@click.option("--feature-shape", default="1280", show_default=True, callback=_feature_shape,
              help="Backbone features per segment: D (pooled) or CxHxW (spatial maps).")
@click.option("--proj-dim", type=click.IntRange(min=1), default=256, show_default=True,
              help="Width after the input projection (seed 000 uses 256).")
def heads_cmd(num_classes, num_segments, feature_shape, proj_dim):
    """List the temporal heads with parameters and multiply-adds per clip.

    Projection (dropout + Linear / 1x1 conv to --proj-dim) and head body are counted apart; MACs
    come from torch's flop counter (matmuls and convolutions). Example, seed 000's Table 3 setting:

      stpipe heads --classes 27 --segments 8 --feature-shape 1024x7x7
    """
    from pipeline.heads import complexity_table

    rows = complexity_table(num_classes=num_classes, num_segments=num_segments,
                            feature_shape=feature_shape, proj_dim=proj_dim)
    shape = "x".join(map(str, feature_shape))
    click.echo(f"classes {num_classes}, segments {num_segments}, features {shape} per segment, "
               f"projection to {proj_dim}; MACs per clip")
    header = ("head", "input", "proj params", "proj MACs", "head params", "head MACs", "note")
    table = [header]
    for r in rows:
        if r["applicable"]:
            table.append((r["name"], r["input_kind"], f"{r['projection_params']:,}",
                          f"{r['projection_macs'] / 1e6:,.2f}M", f"{r['head_params']:,}",
                          f"{r['head_macs'] / 1e6:,.2f}M", r["note"]))
        else:
            table.append((r["name"], r["input_kind"], "-", "-", "-", "-", f"n/a: {r['note']}"))
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        click.echo("  ".join(cells + [row[-1]]).rstrip())


if __name__ == "__main__":
    main()
