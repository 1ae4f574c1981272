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


if __name__ == "__main__":
    main()
