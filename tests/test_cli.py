import re
import subprocess
import sys
from pathlib import Path

import pytest


def test_help_lists_commands(stpipe):
    code, out, _ = stpipe(["--help"])
    assert code == 0 and "demo-data" in out


def test_user_error_is_one_clean_line(tmp_path, stpipe):
    code, _, err = stpipe(["demo-data", "-o", str(tmp_path), "--frames", "1"])
    assert code == 2
    assert err.strip() == "stpipe: error: frames must be >= 2, got 1"


def test_unknown_config_key_names_the_key(tmp_path, stpipe):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("frames: 4\nframez: 3\n")
    code, _, err = stpipe(["demo-data", "--config", str(cfg), "-o", str(tmp_path / "o")])
    assert code == 2 and "unknown key 'framez'" in err and "Traceback" not in err


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "stpipe" in result.stdout


HEAVY = ("torch", "torchvision", "timm", "zarr", "ray", "cv2", "av", "matplotlib")


def test_help_and_every_verbs_help_import_nothing_heavy():
    """--help answers at once: the options are made from the configs, whose modules import no torch."""
    code = (
        "import sys, cli\n"
        "from click.testing import CliRunner\n"
        "runs = [['--help']] + [[v, '--help'] for v in cli.cli.commands]"
        " + [['manifest', v, '--help'] for v in cli.manifest_group.commands]\n"
        "codes = {' '.join(a): CliRunner().invoke(cli.cli, a).exit_code for a in runs}\n"
        f"print(len(runs), [c for c in codes.values() if c], [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stderr
    count, failed, heavy = result.stdout.strip().split(" ", 2)
    assert int(count) > 20 and (failed, heavy) == ("[]", "[]"), result.stdout


@pytest.mark.parametrize("verb, cls, name", [
    ("finetune", "pipeline.finetune.config:FinetuneConfig", "amp"),
    ("finetune", "pipeline.finetune.config:FinetuneConfig", "lr"),
    ("extract", "pipeline.extraction.config:ExtractConfig", "backbone"),
    ("train-head", "pipeline.training.config:TrainHeadConfig", "batch_size"),
    ("ablate", "pipeline.ablation.config:AblateConfig", "seeds"),
    ("evaluate", "stages.evaluate:EvaluateConfig", "split"),
])
def test_help_shows_the_dataclass_default(stpipe, verb, cls, name):
    import dataclasses
    import importlib

    module, attr = cls.split(":")
    field = {f.name: f for f in dataclasses.fields(getattr(importlib.import_module(module), attr))}[name]
    default = field.default
    shown = ("on" if default else "off") if isinstance(default, bool) else (
        ",".join(map(str, default)) if isinstance(default, tuple) else f"{default:g}" if isinstance(default, float)
        else str(default))
    code, out, _ = stpipe([verb, "--help"])
    text = " ".join(out.split())  # click wraps the help
    flag = "--" + name.replace("_", "-")
    assert code == 0 and re.search(rf"{flag}\b[^\[]*\[default: {re.escape(shown)}\]", text), (flag, shown)
