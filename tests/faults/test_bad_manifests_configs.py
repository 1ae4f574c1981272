"""Bad manifests and configs through the CLI: exit code 2, one stderr line naming the place, no
traceback, and nothing written (no store, no run dir)."""

from __future__ import annotations

import pytest

from cli import main
from pipeline.demo_data import CLASSES

HEADER = "video_id,path,label,split\n"
GOOD_ROW = "a,a.mp4,moving left,train\n"

MANIFESTS = {  # name -> (file name, bytes, what the line must say)
    "duplicate ids": ("m.csv", HEADER + GOOD_ROW + GOOD_ROW, "m.csv:3: duplicate video_id 'a' (first on line 2)"),
    "missing column": ("m.csv", "video_id,path,label\na,a.mp4,moving left\n", "m.csv:1: missing required column 'split'"),
    "unknown column": ("m.csv", "video_id,path,label,split,fps\na,a.mp4,moving left,train,12\n",
                       "m.csv:1: unknown column 'fps'"),
    "unknown label": ("m.csv", HEADER + "a,a.mp4,flying,train\n", "m.csv:2: label 'flying' is not in the class list"),
    "unknown split": ("m.csv", HEADER + "a,a.mp4,moving left,holdout\n", "m.csv:2: "),
    "start not a number": ("m.csv", "video_id,path,label,split,start\na,a.mp4,moving left,train,soon\n",
                           "m.csv:2: start must be a number of seconds, got 'soon'"),
    "end before start": ("m.csv", "video_id,path,label,split,start,end\na,a.mp4,moving left,train,5,2\n", "m.csv:2: "),
    "label of the wrong type": ("m.jsonl", '{"video_id": "a", "path": "a.mp4", "label": 5, "split": "train"}\n',
                                "m.jsonl:1: "),
    "id of the wrong type": ("m.jsonl", '{"video_id": 7, "path": "a.mp4", "label": "moving left", "split": "train"}\n',
                             "m.jsonl:1: "),
    "invalid JSON line": ("m.jsonl", '{"video_id": "a", "path": "a.mp4"\n', "m.jsonl:1: invalid JSON"),
    "wrong field count": ("m.csv", HEADER + "a,a.mp4,moving left\n", "m.csv:2: expected 4 fields, found 3"),
    "non-UTF-8 bytes": ("m.csv", HEADER.encode() + b"caf\xe9,a.mp4,moving left,train\n", "m.csv:2: not UTF-8 text (byte 0xe9"),
    "line break in an id": ("m.jsonl", '{"video_id": "a\\nb", "path": "a.mp4", "label": "moving left", "split": "train"}\n',
                            "m.jsonl:1: "),
    "header only": ("m.csv", HEADER, "m.csv: no videos in the manifest"),
    "empty file": ("m.csv", "", "m.csv:1: empty manifest"),
    "missing file": ("gone.csv", None, "gone.csv: file not found"),
    "unknown format": ("m.txt", HEADER + GOOD_ROW, "unknown manifest format '.txt'"),
}

CONFIGS = {  # name -> (YAML bytes, what the line must say)
    "unknown key": (b"backbone: tiny\nbach_size: 8\n", "cfg.yaml: unknown key 'bach_size' for ExtractConfig"),
    "wrong type": (b"batch_size: lots\n", "cfg.yaml: batch_size: expected an integer, got 'lots'"),
    "not one of the choices": (b"features: huge\n", "cfg.yaml: features: 'huge' is not one of"),
    "value out of range": (b"batch_size: -1\n", "batch_size must be >= 1 (or 0 for the device's default), got -1"),
    "another out of range": (b"flow_batch: -2\n", "flow_batch must be >= 1 (or 0 for the device's default), got -2"),
    "YAML syntax error": (b"backbone: tiny\nviews: [center\n", "cfg.yaml:3: invalid YAML"),
    "non-UTF-8 bytes": (b"backbone: caf\xe9\n", "cfg.yaml: not UTF-8 text"),
    "a list, not a mapping": (b"- backbone\n- tiny\n", "cfg.yaml: a config file must be a mapping"),
    "missing file": (None, "cfg.yaml: config file not found"),
}


def one_error_line(capfd, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capfd.readouterr()
    assert exc.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stpipe: error: "), err
    assert "Traceback" not in out + err
    return lines[0]


@pytest.mark.parametrize("name", MANIFESTS)
def test_bad_manifest(name, tmp_path, capfd):
    file_name, content, expected = MANIFESTS[name]
    manifest = tmp_path / file_name
    if content is not None:
        manifest.write_bytes(content.encode() if isinstance(content, str) else content)
        (tmp_path / f"{manifest.stem}.classes.txt").write_text("\n".join(CLASSES) + "\n")
    before = sorted(tmp_path.iterdir())
    line = one_error_line(capfd, ["extract", "-m", str(manifest), "-o", str(tmp_path / "out" / "s.zarr"),
                                  "--backbone", "tiny", "--weights", "none", "--executor", "local"])
    assert expected in line, line
    assert sorted(tmp_path.iterdir()) == before  # no store, not even an empty folder


@pytest.mark.parametrize("name", CONFIGS)
def test_bad_extract_config(name, tmp_path, capfd):
    content, expected = CONFIGS[name]
    config = tmp_path / "cfg.yaml"
    if content is not None:
        config.write_bytes(content)
    (tmp_path / "m.csv").write_text(HEADER + GOOD_ROW)
    before = sorted(tmp_path.iterdir())
    line = one_error_line(capfd, ["extract", "-m", str(tmp_path / "m.csv"), "-o", str(tmp_path / "s.zarr"),
                                  "--config", str(config)])
    assert expected in line, line
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize("content, expected", [
    (b"head: mlp\nepochz: 3\n", "cfg.yaml: unknown key 'epochz' for TrainHeadConfig"),
    (b"epochs: many\n", "cfg.yaml: epochs: expected an integer, got 'many'"),
    (b"modality: sound\n", "cfg.yaml: modality: 'sound' is not one of"),
    (b"lr: -1\n", "lr must be > 0"),
])
def test_bad_train_head_config(content, expected, tmp_path, capfd):
    from store_fixtures import make_store

    make_store(str(tmp_path / "s.zarr"), per_class={"train": 2, "val": 1})
    (tmp_path / "cfg.yaml").write_bytes(content)
    line = one_error_line(capfd, ["train-head", "-s", str(tmp_path / "s.zarr"), "-o", str(tmp_path / "run"),
                                  "--config", str(tmp_path / "cfg.yaml")])
    assert expected in line, line
    assert not (tmp_path / "run").exists()


def test_train_head_on_a_missing_or_foreign_store(tmp_path, capfd):
    line = one_error_line(capfd, ["train-head", "-s", str(tmp_path / "nope.zarr"), "-o", str(tmp_path / "run")])
    assert "nope.zarr: no feature store here" in line and not (tmp_path / "run").exists()
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    line = one_error_line(capfd, ["train-head", "-s", str(tmp_path / "plain"), "-o", str(tmp_path / "run")])
    assert "not an stpipe feature store" in line and not (tmp_path / "run").exists()
