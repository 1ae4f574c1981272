"""Manifest schema, reading/validation, writing and the `stpipe manifest` commands (no assets needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from manifests import (
    Manifest,
    VideoEntry,
    canonical_split,
    classes_path,
    read_class_list,
    read_manifest,
    textio,
    write_manifest,
)
from pipeline.errors import ManifestError

EXAMPLES = Path(__file__).resolve().parent.parent / "manifests" / "examples"
HEADER = "video_id,path,label,split\n"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def manifest_error(path: Path, **kwargs) -> str:
    with pytest.raises(ManifestError) as info:
        read_manifest(path, **kwargs)
    return str(info.value)


def tricky_manifest() -> Manifest:
    entries = [
        VideoEntry("a/b", "videos/a b.mp4", "wave, hand", "train"),
        VideoEntry("../x", "/abs/x.mp4", 'say "hi"', "train", start=0, end=2.5),
        VideoEntry("ünïcode ✓", "frames/ü", "wave, hand", "val", start=1.25),
        VideoEntry("-starts-with-dash", "t.mp4", None, "test", end=3),
    ]
    return Manifest(entries=entries, classes=['say "hi"', "wave, hand"])


# ---- schema -----------------------------------------------------------------------------------


def test_entry_rejects_bad_fields():
    for kwargs, message in [
        (dict(video_id="", path="p", label="a", split="train"), "empty video_id"),
        (dict(video_id="a\nb", path="p", label="a", split="train"), "line break"),
        (dict(video_id="a\x00", path="p", label="a", split="train"), "NUL"),
        (dict(video_id="a", path="", label="a", split="train"), "empty path"),
        (dict(video_id="a", path="p", label="", split="train"), "empty label"),
        (dict(video_id="a", path="p", label="x", split="validation"), "did you mean 'val'"),
        (dict(video_id="a", path="p", label=None, split="train"), "has no label"),
        (dict(video_id="a", path="p", label="x", split="train", start=3, end=3), "before end"),
        (dict(video_id="a", path="p", label="x", split="train", start=-1), ">= 0"),
        (dict(video_id="a", path="p", label="x", split="train", end=float("nan")), "finite"),
        (dict(video_id="a", path="p", label="x", split="train", start=True), "number of seconds"),
        (dict(video_id=7, path="p", label="x", split="train"), "must be a string"),
    ]:
        with pytest.raises(ManifestError, match=message):
            VideoEntry(**kwargs)


def test_entry_times_are_floats():
    entry = VideoEntry("a", "p", "x", "train", start=1, end=2)
    assert (entry.start, entry.end) == (1.0, 2.0) and isinstance(entry.start, float)


def test_manifest_helpers(tmp_path):
    m = tricky_manifest()
    assert m.label_index('say "hi"') == 0 and m.label_index("wave, hand") == 1
    with pytest.raises(ManifestError, match="not in the class list"):
        m.label_index("nope")
    assert [e.video_id for e in m.by_split("train")] == ["a/b", "../x"]
    assert [e.video_id for e in m.by_split("test")] == ["-starts-with-dash"]
    with pytest.raises(ManifestError, match="unknown split"):
        m.by_split("validation")
    rooted = Manifest(entries=m.entries, classes=m.classes, root=tmp_path)
    assert rooted.resolve(m.entries[0]) == tmp_path / "videos/a b.mp4"
    assert rooted.resolve(m.entries[1]) == Path("/abs/x.mp4")
    assert {s: sum(c.values()) for s, c in m.counts().items()} == {"train": 2, "val": 1, "test": 1}
    assert m.counts()["test"][None] == 1


def test_manifest_rejects_duplicates_and_unknown_labels():
    entry = VideoEntry("a", "p", "x", "train")
    with pytest.raises(ManifestError, match="duplicate video_id 'a'"):
        Manifest(entries=[entry, entry], classes=["x"])
    with pytest.raises(ManifestError, match="listed twice"):
        Manifest(entries=[entry], classes=["x", "x"])
    with pytest.raises(ManifestError, match="label 'x' is not in the class list"):
        Manifest(entries=[entry], classes=["y"])
    with pytest.raises(ManifestError, match="label 'x'"):
        Manifest(entries=[entry], classes=["x"]).with_classes(["y"])


def test_sha256_is_stable_content_hash(tmp_path):
    m = tricky_manifest()
    shuffled = Manifest(entries=m.entries[::-1], classes=m.classes, root=tmp_path)
    assert m.sha256() == shuffled.sha256()
    assert m.sha256() != m.with_classes(m.classes[::-1]).sha256()  # class order defines indices
    changed = Manifest(entries=[*m.entries[:-1], VideoEntry("-starts-with-dash", "t.mp4", None, "test", end=4)],
                       classes=m.classes)
    assert m.sha256() != changed.sha256()


def test_rebased_keeps_videos_in_place(tmp_path):
    m = Manifest(entries=tricky_manifest().entries, classes=tricky_manifest().classes, root=tmp_path / "data")
    moved = m.rebased(tmp_path / "out" / "deep")
    for old, new in zip(m.entries, moved.entries):
        assert moved.resolve(new).resolve() == m.resolve(old).resolve()
    assert moved.entries[0].path == "../../data/videos/a b.mp4"
    assert moved.entries[1].path == "/abs/x.mp4"


def test_canonical_split_aliases():
    assert [canonical_split(s) for s in ("train", "Training", "validation", "validate", "val", "testing")] == [
        "train", "train", "val", "val", "val", "test"]
    with pytest.raises(ManifestError, match="unknown split 'dev'"):
        canonical_split("dev")


# ---- reading and writing ----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_round_trip(tmp_path, suffix):
    m = tricky_manifest()
    path = tmp_path / "sub" / f"m{suffix}"
    write_manifest(m, path)
    assert classes_path(path) == tmp_path / "sub" / "m.classes.txt"
    assert read_class_list(classes_path(path)) == m.classes
    back = read_manifest(path)
    assert back.entries == m.entries and back.classes == m.classes
    assert back.source == path and back.root == (tmp_path / "sub").absolute()
    assert back.sha256() == m.sha256()
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.classes.txt", f"m{suffix}"]  # no temp files


def test_written_csv_is_plain(tmp_path):
    m = Manifest(entries=[VideoEntry("a", "a.mp4", "x", "train")], classes=["x"])
    write_manifest(m, tmp_path / "m.csv")
    assert (tmp_path / "m.csv").read_bytes() == b"video_id,path,label,split\na,a.mp4,x,train\n"
    timed = Manifest(entries=[VideoEntry("a", "a.mp4", "x", "train", start=2, end=3.5)], classes=["x"])
    write_manifest(timed, tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text().splitlines()[1] == "a,a.mp4,x,train,2,3.5"
    write_manifest(timed, tmp_path / "t.jsonl")
    assert json.loads((tmp_path / "t.jsonl").read_text()) == {
        "video_id": "a", "path": "a.mp4", "label": "x", "split": "train", "start": 2, "end": 3.5}


def test_examples_read_the_same_in_both_formats():
    csv_m = read_manifest(EXAMPLES / "tiny.csv")
    jsonl_m = read_manifest(EXAMPLES / "tiny.jsonl")
    assert csv_m.entries == jsonl_m.entries and csv_m.classes == ["waving", "clapping"]
    assert csv_m.sha256() == jsonl_m.sha256()
    assert csv_m.label_index("clapping") == 1
    assert csv_m.by_split("test")[0].label is None
    assert csv_m.entries[1].start == 1.5 and csv_m.entries[1].end == 4.0
    assert csv_m.entries[2].video_id == "clapping, slow"


def test_crlf_bom_and_any_column_order(tmp_path):
    path = write(tmp_path / "m.csv", "\ufeffsplit,label,path,video_id\r\ntrain,x,a.mp4,a\r\n\r\ntest,,b.mp4,b\r\n")
    m = read_manifest(path)
    assert [(e.video_id, e.label, e.split) for e in m.entries] == [("a", "x", "train"), ("b", None, "test")]
    assert m.classes == ["x"]


def test_class_list_precedence(tmp_path):
    path = write(tmp_path / "m.csv", HEADER + "a,a.mp4,b_class,train\nb,b.mp4,a_class,train\n")
    assert read_manifest(path).classes == ["a_class", "b_class"]  # sorted labels
    assert read_manifest(path, classes=["b_class", "a_class", "c"]).classes == ["b_class", "a_class", "c"]
    given = write(tmp_path / "given.txt", "c\nb_class\na_class\n")
    assert read_manifest(path, classes=given).classes == ["c", "b_class", "a_class"]
    write(classes_path(path), "b_class\na_class\n")
    assert read_manifest(path).classes == ["b_class", "a_class"]  # the sidecar wins
    assert read_manifest(path, classes=["b_class", "a_class"]).classes == ["b_class", "a_class"]
    message = manifest_error(path, classes=given)
    assert "differs from the sidecar" in message and "given.txt" in message


def test_root_and_check_exists(tmp_path):
    data = tmp_path / "data"
    write(data / "videos" / "a.mp4", b"\x00")
    (data / "frames" / "b").mkdir(parents=True)
    write(data / "frames" / "b" / "00001.jpg", b"\xff")
    text = HEADER + "a,videos/a.mp4,x,train\nb,frames/b,x,train\nc,videos/c.mp4,x,val\nd,videos/d.mp4,x,val\n"
    path = write(tmp_path / "m.csv", text)
    read_manifest(path, root=data)  # existence is not checked by default
    message = manifest_error(path, root=data, check_exists=True)
    assert message == f"{path}:4: video not found: {data.absolute() / 'videos/c.mp4'} (and 1 more missing)"
    ok = write(tmp_path / "ok.csv", HEADER + "a,videos/a.mp4,x,train\nb,frames/b,x,train\n")
    assert len(read_manifest(ok, root=data, check_exists=True)) == 2
    inside = write(data / "m.csv", HEADER + "a,videos/a.mp4,x,train\n")
    assert read_manifest(inside, check_exists=True).resolve(read_manifest(inside).entries[0]).is_file()


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("video_id,path,split\na,a.mp4,train\n", 1, "missing required column 'label'"),
        ("video_id,path,label,split,lable\n", 1, "unknown column 'lable'"),
        ("video_id,path,label,split,split\n", 1, "column 'split' appears twice"),
        (HEADER + "a,a.mp4,x,train\n,b.mp4,x,train\n", 3, "empty video_id"),
        (HEADER + "a,a.mp4,x,train\nb,,x,train\n", 3, "empty path"),
        (HEADER + "a,a.mp4,x,train\n\nb,b.mp4,x,train\na,c.mp4,x,val\n", 5, "duplicate video_id 'a' (first on line 2)"),
        (HEADER + "a,a.mp4,x,validation\n", 2, "unknown split 'validation' (expected train, val or test; did you mean 'val'?)"),
        (HEADER + "a,a.mp4,x,dev\n", 2, "unknown split 'dev'"),
        (HEADER + "a,a.mp4,,train\n", 2, "train entry 'a' has no label"),
        (HEADER + "a,a.mp4,x,train,extra\n", 2, "expected 4 fields, found 5"),
        (HEADER + 'a,a.mp4,x,train\n"b\nc",b.mp4,x,train\n', 3, "contains a line break"),
        (HEADER + 'a,"a.mp4,x,train\n', 2, "malformed CSV"),
        ("video_id,path,label,split,start,end\na,a.mp4,x,train,abc,\n", 2, "start must be a number of seconds, got 'abc'"),
        ("video_id,path,label,split,start,end\na,a.mp4,x,train,5,4\n", 2, "start 5.0 must be before end 4.0"),
        ("video_id,path,label,split,start,end\na,a.mp4,x,train,-1,\n", 2, "finite number of seconds >= 0"),
        ("video_id,path,label,split,start,end\na,a.mp4,x,train,,inf\n", 2, "finite number of seconds >= 0"),
        ("", 1, "empty manifest"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path / "bad.csv", text)
    error = manifest_error(path)
    assert error.startswith(f"{path}:{line}: ") and message in error, error


@pytest.mark.parametrize(
    "lines, line, message",
    [
        (['{"video_id": "a", "path": "a.mp4", "label": "x", "split": "train"}', "{not json"], 2, "invalid JSON"),
        (['["a", "a.mp4", "x", "train"]'], 1, "expected a JSON object, found list"),
        (['{"video_id": "a", "path": "a.mp4", "split": "train"}'], 1, "missing required column 'label'"),
        (['{"video_id": "a", "path": "a.mp4", "label": "x", "split": "train", "fps": 3}'], 1, "unknown column 'fps'"),
        (['{"video_id": "a", "path": "a.mp4", "label": "x", "split": "train", "start": "1"}'], 1,
         "start must be a number of seconds, got '1'"),
        (['{"video_id": 12, "path": "a.mp4", "label": "x", "split": "train"}'], 1, "video_id must be a string"),
        (["", '{"video_id": "a", "path": "a.mp4", "label": "x", "split": "train", "end": -2}'], 2, ">= 0"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, lines, line, message):
    path = write(tmp_path / "bad.jsonl", "\n".join(lines) + "\n")
    error = manifest_error(path)
    assert error.startswith(f"{path}:{line}: ") and message in error, error


def test_label_not_in_class_list_names_line_and_source(tmp_path):
    path = write(tmp_path / "m.csv", HEADER + "a,a.mp4,x,train\nb,b.mp4,y,val\n")
    write(classes_path(path), "x\n")
    assert manifest_error(path) == f"{path}:3: label 'y' is not in the class list ({classes_path(path)})"


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = write(tmp_path / "m.csv", HEADER.encode() + b"a,a.mp4,x,train\nb,b\xe9.mp4,x,train\n")
    assert manifest_error(path).startswith(f"{path}:3: not UTF-8 text (byte 0xe9")
    nul = write(tmp_path / "n.csv", HEADER.encode() + b"a,a\x00.mp4,x,train\n")
    assert manifest_error(nul).startswith(f"{nul}:2: ")


def test_file_level_errors(tmp_path):
    assert manifest_error(tmp_path / "missing.csv") == f"{tmp_path / 'missing.csv'}: file not found"
    assert "unknown manifest format '.tsv'" in manifest_error(write(tmp_path / "m.tsv", HEADER))
    bad_classes = write(tmp_path / "c.txt", "a\nb\na\n")
    with pytest.raises(ManifestError, match=r"c.txt:3: class 'a' is listed twice \(first on line 1\)"):
        read_class_list(bad_classes)
    with pytest.raises(ManifestError, match=r"c2.txt:2: class name ' b' has leading or trailing whitespace"):
        read_class_list(write(tmp_path / "c2.txt", "a\n b\n"))


def test_write_failure_writes_nothing(tmp_path, monkeypatch):
    m = tricky_manifest()
    target = tmp_path / "m.csv"
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(textio.os, "replace", failing_replace)
    with pytest.raises(ManifestError, match="cannot write"):
        write_manifest(m, target)
    assert calls and list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    with pytest.raises(ManifestError, match="unknown manifest format"):
        write_manifest(m, tmp_path / "m.txt")
    assert list(tmp_path.iterdir()) == []


# ---- CLI ----------------------------------------------------------------------------------------


def test_cli_check_prints_counts(stpipe):
    code, out, err = stpipe(["manifest", "check", EXAMPLES / "tiny.csv"])
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].endswith("5 entries, 2 classes, sha256 " + read_manifest(EXAMPLES / "tiny.csv").sha256()[:16])
    assert lines[2].split() == ["waving", "1", "1", "0"]
    assert lines[4].split() == ["(no", "label)", "0", "0", "1"]
    assert lines[5].split() == ["total", "2", "2", "1"]


def test_cli_check_errors_are_one_line(tmp_path, stpipe):
    path = write(tmp_path / "m.csv", HEADER + "a,a.mp4,x,train\n")
    code, _, err = stpipe(["manifest", "check", path, "--exists"])
    assert code == 2 and err == f"stpipe: error: {path}:2: video not found: {tmp_path.absolute() / 'a.mp4'}\n"
    write(tmp_path / "a.mp4", b"")
    code, out, _ = stpipe(["manifest", "check", path, "--exists"])
    assert code == 0 and "all paths exist" in out


def test_cli_from_folder_and_convert_folder(tmp_path, stpipe):
    for name in ("dog/a.mp4", "dog/b.avi", "cat/c.webm"):
        write(tmp_path / "tree" / name, b"")
    out = tmp_path / "out" / "m.csv"
    code, stdout, _ = stpipe(["manifest", "from-folder", tmp_path / "tree", "-o", out, "--split", "val"])
    assert code == 0 and "wrote 3 entries (val 3), 2 classes" in stdout
    m = read_manifest(out, check_exists=True)  # paths are relative to the manifest's folder
    assert [(e.video_id, e.path, e.label) for e in m.entries] == [
        ("cat/c", "../tree/cat/c.webm", "cat"), ("dog/a", "../tree/dog/a.mp4", "dog"), ("dog/b", "../tree/dog/b.avi", "dog")]
    assert m.classes == ["cat", "dog"] and {e.split for e in m.entries} == {"val"}


def test_cli_convert_failure_writes_nothing(tmp_path, stpipe):
    labels = write(tmp_path / "jester-v1-labels.csv", "Swiping Left\nThumb Up\n")
    train = write(tmp_path / "jester-v1-train.csv", "1;Thumb Up\n2;Thumb Down\n")
    out = tmp_path / "out" / "j.csv"
    code, _, err = stpipe(["manifest", "convert", "jester", "-a", labels, "-a", train, "-o", out])
    assert code == 2 and err == f"stpipe: error: {train}:2: label 'Thumb Down' is not in the labels file\n"
    assert not out.parent.exists()
    code, _, err = stpipe(["manifest", "convert", "jester", "-a", tmp_path, "--fold", "2", "-o", out])
    assert code == 2 and "--fold does not apply to format 'jester'" in err
    code, _, err = stpipe(["manifest", "convert", "nope", "-a", tmp_path, "-o", out])
    assert code == 2 and "unknown manifest format 'nope'; known:" in err and "kinetics" in err


def test_cli_convert_with_class_list(tmp_path, stpipe):
    write(tmp_path / "jester-v1-labels.csv", "Swiping Left\nThumb Up\n")
    write(tmp_path / "jester-v1-train.csv", "1;Thumb Up\n2;Swiping Left\n")
    classes = write(tmp_path / "mine.txt", "Thumb Up\nSwiping Left\nExtra\n")
    out = tmp_path / "j.jsonl"
    code, stdout, _ = stpipe(["manifest", "convert", "jester", "-a", tmp_path, "--classes", classes, "-o", out])
    assert code == 0 and "wrote 2 entries (train 2), 3 classes" in stdout
    assert read_manifest(out).classes == ["Thumb Up", "Swiping Left", "Extra"]
    assert (tmp_path / "j.classes.txt").read_text() == "Thumb Up\nSwiping Left\nExtra\n"
