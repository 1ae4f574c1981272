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


if __name__ == "__main__":
    main()
