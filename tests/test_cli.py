import subprocess
import sys


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
