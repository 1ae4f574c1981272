"""Converters on every real annotation sample in ../shared/annotations (annotations_dir fixture),
plus small hand-written fixtures for edge cases and errors (those need no assets)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from manifests import CONVERTERS, convert, read_manifest, write_manifest
from manifests.converters.ssv2 import template_to_class
from pipeline.errors import ConfigError, ManifestError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def raw_lines(path: Path) -> list[str]:
    """Non-blank lines of a file, decoded independently of the converters."""
    return [line for line in path.read_bytes().decode("utf-8").splitlines() if line.strip()]


def error_of(name: str, sources, **options) -> str:
    with pytest.raises(ManifestError) as info:
        convert(name, sources, **options)
    return str(info.value)


def splits(manifest) -> dict[str, int]:
    return {split: sum(c.values()) for split, c in manifest.counts().items()}


def test_registry_lists_every_format():
    assert sorted(CONVERTERS.names()) == ["folder", "hmdb51", "jester", "kinetics", "ssv2", "ucf101"]


# ---- Jester -------------------------------------------------------------------------------------


def test_jester_real_files(annotations_dir, tmp_path):
    folder = annotations_dir / "jester"
    m = convert("jester", [folder])
    names = raw_lines(folder / "jester-v1-labels.csv")
    assert len(names) == 27 and m.classes == sorted(names)  # TRN/TSM index: sorted names
    assert splits(m) == {"train": 200, "val": 200, "test": 200}
    first = m.entries[0]
    assert (first.video_id, first.path, first.label, first.split) == ("34870", "34870", "Drumming Fingers", "train")
    train_lines = raw_lines(folder / "jester-v1-train.csv")
    assert [(e.video_id, e.label) for e in m.by_split("train")] == [tuple(x.split(";")) for x in train_lines]
    assert [e.video_id for e in m.by_split("test")] == raw_lines(folder / "jester-v1-test.csv")
    assert all(e.label is None for e in m.by_split("test"))
    assert m.by_split("val")[0].label == "Thumb Up"
    file_order = convert("jester", [folder], class_order="file")
    assert file_order.classes == names and file_order.classes[0] == "Swiping Left"
    assert m.label_index("Doing other things") == 0 and file_order.label_index("Doing other things") == 26
    # a round trip through the canonical file keeps everything
    write_manifest(m, tmp_path / "jester.csv")
    assert read_manifest(tmp_path / "jester.csv").sha256() == m.sha256()


def test_jester_copy_with_added_header_is_refused(annotations_dir):
    message = error_of("jester", [annotations_dir / "jester" / "as_found_torchstream"])
    assert message.endswith("jester-v1-train.csv:1: video id 'video' is not an integer "
                            "(a header line? the official files have none)")


def test_jester_errors(tmp_path):
    labels = write(tmp_path / "jester-v1-labels.csv", "Thumb Up\nThumb Down\n")
    bad = write(tmp_path / "x" / "jester-v1-train.csv", "1;Thumb Up\n2 Thumb Down\n")
    assert error_of("jester", [labels, bad]) == f"{bad}:2: expected '<id>;<label>', found '2 Thumb Down'"
    dup = write(tmp_path / "y" / "jester-v1-validation.csv", "7;Thumb Up\n\n7;Thumb Down\n")
    assert error_of("jester", [labels, dup]) == f"{dup}:3: duplicate video_id '7' (first at {dup}:1)"
    assert "no Jester labels file" in error_of("jester", [dup])
    other = write(tmp_path / "notes.csv", "x\n")
    assert "not a Jester annotation file" in error_of("jester", [labels, other])
    assert "not found" in error_of("jester", [tmp_path / "missing"])
    with pytest.raises(ConfigError, match="--class-order 'random'"):
        convert("jester", [labels, dup], class_order="random")


# ---- Something-Something v2 ---------------------------------------------------------------------


def test_ssv2_real_files(annotations_dir):
    folder = annotations_dir / "ssv2"
    m = convert("ssv2", [folder])
    labels = json.loads((folder / "something-something-v2-labels.json").read_text(encoding="utf-8"))
    assert len(m.classes) == 174 and all(m.label_index(name) == int(i) for name, i in labels.items())
    assert m.classes[0] == "Approaching something with your camera"
    assert splits(m) == {"train": 0, "val": 200, "test": 200}
    val = json.loads((folder / "something-something-v2-validation.json").read_text(encoding="utf-8"))
    assert [(e.video_id, e.label) for e in m.by_split("val")] == [
        (o["id"], o["template"].replace("[", "").replace("]", "")) for o in val]
    assert m.entries[0].path == "74225.webm" and m.entries[0].label == "Spinning something that quickly stops spinning"
    assert all(e.label is None for e in m.by_split("test")) and m.by_split("test")[0].video_id == "1420"
    frames = convert("ssv2", [folder], path_template="{id}")
    assert frames.entries[0].path == "74225"


def test_ssv2_crlf_variant_reads_identically(annotations_dir):
    crlf = annotations_dir / "ssv2" / "crlf_variant_human2bot"
    assert b"\r\n" in (crlf / "something-something-v2-validation.json").read_bytes()
    lf = annotations_dir / "ssv2"
    a = convert("ssv2", [crlf])
    b = convert("ssv2", [lf / "something-something-v2-labels.json", lf / "something-something-v2-validation.json"])
    assert len(a) == 200 and a.sha256() == b.sha256()
    assert not any("\r" in e.video_id or "\r" in e.label for e in a.entries)


def test_ssv2_quirks_excerpt(annotations_dir):
    folder = annotations_dir / "ssv2"
    excerpt = folder / "something-something-v2-validation.EXCERPT-quirks.json"
    m = convert("ssv2", [folder / "something-something-v2-labels.json", excerpt])
    assert len(m) == 14 and splits(m)["val"] == 14
    label = {e.video_id: e.label for e in m.entries}
    assert label["191800"] == "Something falling like a rock"  # [Something] with a capital S
    assert label["92355"] == "Something falling like a feather or paper"
    assert label["113563"] == "Turning something upside down"  # UTF-8 in the free-text label
    assert label["118062"] == "Spinning something so it continues spinning"  # backslash-quote placeholder
    assert label["141732"] == "Putting something, something and something on the table"
    assert label["149956"] == "Tipping something with something in it over, so something in it falls out"
    assert label["77719"] == "Putting number of something onto something"
    assert label["84962"] == "Taking one of many similar things on the table"
    assert label["14004"] == "Touching (without moving) part of something"
    assert label["44212"] == "Putting something similar to other things that are already on the table"
    assert label["119911"] == "Pretending to take something from somewhere"


def test_ssv2_errors(tmp_path):
    labels = write(tmp_path / "something-something-v2-labels.json", '{\n "Moving something":"0",\n "Holding something":"1"\n}\n')
    val = write(tmp_path / "v" / "something-something-v2-validation.json",
                '[\n{"id":"1","template":"Moving [something]"},\n{"id":"2","template":"Dropping [something]"}\n]\n')
    assert error_of("ssv2", [labels, val]) == (
        f"{val}:3: template 'Dropping [something]' -> 'Dropping something' is not in the labels file")
    broken = write(tmp_path / "b" / "something-something-v2-validation.json", '[\n{"id":"1",\n "template": }\n]\n')
    assert error_of("ssv2", [labels, broken]).startswith(f"{broken}:3: invalid JSON")
    no_id = write(tmp_path / "n" / "something-something-v2-test.json", '[\n{"id":"1"},\n{"name":"2"}\n]\n')
    assert error_of("ssv2", [labels, no_id]).startswith(f"{no_id}:3: expected an object with an \"id\"")
    gap = write(tmp_path / "g" / "something-something-v2-labels.json", '{\n "A":"0",\n "B":"2"\n}\n')
    assert "index 1 missing" in error_of("ssv2", [gap, val])
    twice = write(tmp_path / "t" / "something-something-v2-labels.json", '{\n "A":"0",\n "B":"0"\n}\n')
    assert error_of("ssv2", [twice, val]) == f"{twice}:3: index 0 is used twice (also line 2)"
    dup_key = write(tmp_path / "d" / "something-something-v2-labels.json", '{\n "A":"0",\n "A":"1"\n}\n')
    assert error_of("ssv2", [dup_key, val]) == f"{dup_key}:3: duplicate key 'A' (first on line 2)"
    assert template_to_class("[Something] in [number of] [part]") == "Something in number of part"


# ---- UCF101 -------------------------------------------------------------------------------------


def test_ucf101_real_files(annotations_dir):
    folder = annotations_dir / "ucf101" / "ucfTrainTestlist"
    assert (folder / "classInd.txt").read_bytes().endswith(b"YoYo\r\n")
    m = convert("ucf101", [folder])
    assert len(m.classes) == 101 and m.classes[0] == "ApplyEyeMakeup" and m.classes[-1] == "YoYo"
    assert m.label_index("HandstandPushups") == 36  # classInd line "37 HandstandPushups"
    assert splits(m) == {"train": 200, "val": 0, "test": 200}
    first = m.entries[0]
    assert (first.video_id, first.path, first.label) == (
        "v_ApplyEyeMakeup_g08_c01", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup")
    assert not any("\r" in e.path or "\r" in e.video_id or " " in e.path for e in m.entries)
    test_lines = raw_lines(folder / "testlist01.txt")
    assert [e.path for e in m.by_split("test")] == test_lines
    assert all(e.label == e.path.split("/")[0] for e in m.by_split("test"))
    with pytest.raises(ManifestError, match="no UCF101 trainlist02.txt or testlist02.txt"):
        convert("ucf101", [folder], fold=2)


def test_ucf101_handstand_pushups_casing(annotations_dir):
    folder = annotations_dir / "ucf101" / "ucfTrainTestlist"
    m = convert("ucf101", [folder / "classInd.txt", folder / "trainlist01.EXCERPT-HandstandPushups.txt",
                           folder / "testlist01.EXCERPT-HandstandPushups.txt"])
    assert splits(m) == {"train": 20, "val": 0, "test": 20}
    assert {e.label for e in m.entries} == {"HandstandPushups"}
    assert all(e.video_id.startswith("v_HandStandPushups_") for e in m.entries)
    assert m.entries[0].path == "HandstandPushups/v_HandStandPushups_g08_c01.avi"
    last = convert("ucf101", [folder / "classInd.txt", folder / "trainlist01.EXCERPT-last20.txt"])
    assert len(last) == 20 and {m.label_index(e.label) for e in last.entries} == {100}
    stems = convert("ucf101", [folder / "classInd.txt", folder / "testlist01.txt"], path_template="{class}/{stem}")
    assert stems.entries[0].path == "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01"


def test_ucf101_errors(tmp_path):
    class_ind = write(tmp_path / "classInd.txt", "1 Archery\r\n2 YoYo\r\n")
    wrong = write(tmp_path / "a" / "trainlist01.txt", "Archery/v_Archery_g01_c01.avi 1\r\nYoYo/v_YoYo_g01_c01.avi 1\r\n")
    assert error_of("ucf101", [class_ind, wrong]) == f"{wrong}:2: index 1 is 'Archery' but the folder is 'YoYo'"
    unknown = write(tmp_path / "b" / "testlist01.txt", "Archery/v_Archery_g01_c01.avi\r\nBowling/v_B.avi\r\n")
    assert error_of("ucf101", [class_ind, unknown]) == f"{unknown}:2: class folder 'Bowling' is not in classInd.txt"
    out_of_range = write(tmp_path / "c" / "trainlist01.txt", "YoYo/v_YoYo_g01_c01.avi 3\r\n")
    assert "class index '3' is not in 1..2" in error_of("ucf101", [class_ind, out_of_range])
    flat = write(tmp_path / "d" / "trainlist01.txt", "v_YoYo_g01_c01.avi 2\r\n")
    assert "expected '<Class>/<video>.avi [<index>]'" in error_of("ucf101", [class_ind, flat])
    gap = write(tmp_path / "e" / "classInd.txt", "1 Archery\r\n3 YoYo\r\n")
    assert error_of("ucf101", [gap, flat]) == f"{gap}:2: index 3 out of order (expected 2)"
    with pytest.raises(ConfigError, match="--fold 0"):
        convert("ucf101", [tmp_path], fold=0)


# ---- HMDB51 -------------------------------------------------------------------------------------


def test_hmdb51_real_split1(annotations_dir):
    folder = annotations_dir / "hmdb51" / "testTrainMulti_7030_splits"
    m = convert("hmdb51", [folder])
    files = sorted(folder.glob("*_test_split1.txt"))
    codes = [line.rsplit(None, 1)[1] for f in files for line in raw_lines(f)]
    assert len(codes) == 6766 and codes.count("0") == 1666
    assert splits(m) == {"train": codes.count("1"), "val": 0, "test": codes.count("2")} == {
        "train": 3570, "val": 0, "test": 1530}
    assert len(m.classes) == 51 and m.classes == sorted(m.classes) and m.classes[0] == "brush_hair"
    assert {"climb_stairs", "shoot_gun", "wave"} <= set(m.classes)
    assert not any(e.video_id != e.video_id.strip() or e.path.endswith(" ") for e in m.entries)
    by_id = {e.video_id: e for e in m.entries}
    geena = by_id["Geena_und_die_Radschl_ge___;-)_cartwheel_f_cm_np1_fr_med_2"]
    assert (geena.label, geena.split, geena.path) == (
        "cartwheel", "train", "cartwheel/Geena_und_die_Radschl_ge___;-)_cartwheel_f_cm_np1_fr_med_2.avi")
    assert by_id["Goalkeeper_Training_Day_#_2_catch_f_cm_np1_ba_bad_3"].split == "test"
    assert by_id["Brushing_Her_Hair__[_NEW_AUDIO_]_UPDATED!!!!_brush_hair_h_cm_np1_fr_goo_0"].label == "brush_hair"
    assert "jenny_~_rad_cartwheel_f_cm_np1_ri_med_0" not in by_id  # code 0: not in this split
    counts = m.counts()
    assert all(counts["train"][c] == 70 and counts["test"][c] == 30 for c in m.classes)


def test_hmdb51_other_folds(annotations_dir):
    folder = annotations_dir / "hmdb51" / "testTrainMulti_7030_splits"
    for fold in (2, 3):
        m = convert("hmdb51", [folder], fold=fold)
        assert m.classes == ["brush_hair"] and splits(m) == {"train": 70, "val": 0, "test": 30}
    assert convert("hmdb51", [folder / "brush_hair_test_split2.txt"]).sha256() == convert(
        "hmdb51", [folder], fold=2).sha256()
    mixed = error_of("hmdb51", [folder / "brush_hair_test_split1.txt", folder / "cartwheel_test_split1.txt",
                                folder / "brush_hair_test_split2.txt"])
    assert mixed.startswith("HMDB51 files from different splits")


def test_hmdb51_errors(tmp_path):
    bad = write(tmp_path / "run_test_split1.txt", "a_run.avi 1 \nb_run.avi 3 \n")
    assert error_of("hmdb51", [bad]) == f"{bad}:2: expected '<video>.avi <0|1|2>', found 'b_run.avi 3 '"
    assert "not a HMDB51 annotation file" in error_of("hmdb51", [write(tmp_path / "split_readme.txt", "x\n")])
    assert "no HMDB51 *_test_split2.txt files" in error_of("hmdb51", [tmp_path], fold=2)


# ---- Kinetics -----------------------------------------------------------------------------------


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    "relative, split",
    [
        ("kinetics-400/kinetics-400_val.csv", "val"),
        ("kinetics-400/kinetics-400_test.csv", "test"),
        ("kinetics-400/kinetics-400_val.EXCERPT-quirks.csv", "val"),
        ("kinetics-600/kinetics-600_val.csv", "val"),
        ("kinetics-600/kinetics-600_test.csv", "test"),
        ("kinetics-600/kinetics-600_val.EXCERPT-quirks.csv", "val"),
        ("kinetics-700/validate.csv", "val"),
        ("kinetics-700/test.csv", "test"),
    ],
)
def test_kinetics_real_csv(annotations_dir, relative, split):
    path = annotations_dir / "kinetics" / relative
    rows = csv_rows(path)
    m = convert("kinetics", [path])
    assert len(m) == len(rows) == len(raw_lines(path)) - 1
    assert {e.split for e in m.entries} == {split}
    for entry, row in zip(m.entries, rows):
        clip = f"{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}"
        assert entry.video_id == clip and entry.start is None and entry.end is None
        assert entry.label == (row.get("label") or None)
        assert entry.path == f"{row.get('label') or 'test'}/{clip}.mp4"
    assert m.classes == sorted({row["label"] for row in rows if row.get("label")})


def test_kinetics_quirks(annotations_dir):
    k = annotations_dir / "kinetics"
    k400 = convert("kinetics", [k / "kinetics-400/kinetics-400_val.EXCERPT-quirks.csv"])
    assert b'"massaging person\'s head"' in (k / "kinetics-400/kinetics-400_val.EXCERPT-quirks.csv").read_bytes()
    assert "massaging person's head" in k400.classes and "passing American football (not in game)" in k400.classes
    k600 = convert("kinetics", [k / "kinetics-600/kinetics-600_val.EXCERPT-quirks.csv"])
    assert {"passing american football (not in game)", "passing American football (in game)"} <= set(k600.classes)
    under = convert("kinetics", [k / "kinetics-400/kinetics-400_val.EXCERPT-quirks.csv"], underscore_dirs=True)
    assert under.entries[0].path == "massaging_person's_head/-huT_p-r_zA_001989_001999.mp4"
    assert under.entries[0].label == "massaging person's head"
    k400_test = convert("kinetics", [k / "kinetics-400/kinetics-400_test.csv"])
    assert k400_test.entries[0].video_id == "--6bJUbfpnQ_000017_000027"  # ids may start with '-'
    assert k400_test.entries[0].path == "test/--6bJUbfpnQ_000017_000027.mp4" and k400_test.classes == []
    k700 = convert("kinetics", [k / "kinetics-700/validate.csv"])
    assert k700.entries[0].video_id == "---QUuC4vJs_000084_000094" and k700.entries[0].label == "testifying"
    lengths = {int(r["time_end"]) - int(r["time_start"]) for r in csv_rows(k / "kinetics-700/validate.csv")}
    assert lengths <= {5, 7, 8, 9, 10}
    trimmed = convert("kinetics", [k / "kinetics-700/validate.csv"], trim=True, path_template="{youtube_id}.mp4")
    assert (trimmed.entries[0].start, trimmed.entries[0].end, trimmed.entries[0].path) == (84.0, 94.0, "---QUuC4vJs.mp4")
    both = convert("kinetics", [k / "kinetics-400/kinetics-400_val.csv", k / "kinetics-400/kinetics-400_test.csv"])
    assert splits(both) == {"train": 0, "val": 200, "test": 200}


def test_kinetics_json(annotations_dir):
    path = annotations_dir / "kinetics" / "json" / "kinetics_val.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    m = convert("kinetics", [path])
    assert len(m) == len(data) == 48 and splits(m)["val"] == 48
    first_id, first = next(iter(data.items()))
    assert m.entries[0].video_id == "-0TvmZ9L0ho_000033_000043" and first_id == "-0TvmZ9L0ho"
    assert m.entries[0].label == first["annotations"]["label"] == "washing dishes"
    assert m.entries[0].path == "washing dishes/-0TvmZ9L0ho_000033_000043.mp4"
    assert m.classes == sorted({v["annotations"]["label"] for v in data.values()})
    trimmed = convert("kinetics", [path], trim=True, path_template="{youtube_id}.mp4")
    assert (trimmed.entries[0].start, trimmed.entries[0].end) == (33.0, 43.0)
    with pytest.raises(ConfigError, match="--trim is for full-length videos and needs --path-template"):
        convert("kinetics", [path], trim=True)


def test_kinetics_errors(tmp_path):
    header = "label,youtube_id,time_start,time_end,split\n"
    no_col = write(tmp_path / "a.csv", "label,youtube_id,time_start,split\n")
    assert error_of("kinetics", [no_col]).startswith(f"{no_col}:1: missing column 'time_end'")
    bad_split = write(tmp_path / "b.csv", header + "x,abcdefghijk,1,11,val\nx,bbcdefghijk,1,11,dev\n")
    assert error_of("kinetics", [bad_split]) == f"{bad_split}:3: unknown split 'dev' (expected train, val or test)"
    bad_time = write(tmp_path / "c.csv", header + "x,abcdefghijk,one,11,train\n")
    assert error_of("kinetics", [bad_time]) == f"{bad_time}:2: time_start 'one' is not a number of seconds"
    backwards = write(tmp_path / "d.csv", header + "x,abcdefghijk,20,11,train\n")
    assert "must be >= 0 and before time_end" in error_of("kinetics", [backwards])
    dup = write(tmp_path / "e.csv", header + '"a b",abcdefghijk,1,11,train\n"a b",abcdefghijk,1,11,val\n')
    assert error_of("kinetics", [dup]) == f"{dup}:3: duplicate video_id 'abcdefghijk_000001_000011' (first at {dup}:2)"
    two_clips = convert("kinetics", [write(tmp_path / "f.csv", header + "x,abcdefghijk,1,11,train\nx,abcdefghijk,30,40,train\n")])
    assert len(two_clips) == 2  # two segments of one YouTube video stay distinct
    bad_json = write(tmp_path / "g.json", '{"abcdefghijk": {"annotations": {"label": "x"}, "subset": "val"}}')
    assert "lacks annotations.segment" in error_of("kinetics", [bad_json])
    with pytest.raises(ConfigError, match=r"unknown field \{ytid\}"):
        convert("kinetics", [bad_split], path_template="{ytid}.mp4")
    assert "not a Kinetics annotation file" in error_of("kinetics", [write(tmp_path / "h.txt", "x")])


# ---- folder-per-class tree ---------------------------------------------------------------------


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_folder_tree_with_videos_and_frame_folders(tmp_path):
    root = tmp_path / "tree"
    for name in ("wave/b.mp4", "wave/a.AVI", "wave/frames_c/00001.jpg", "wave/notes.txt", "wave/.hidden.mp4",
                 "clap/x.webm", "empty/.keep"):
        touch(root / name)
    m = convert("folder", [root])
    assert m.classes == ["clap", "empty", "wave"] and m.root == root.absolute()
    assert [(e.video_id, e.path, e.label, e.split) for e in m.entries] == [
        ("clap/x", "clap/x.webm", "clap", "train"),
        ("wave/a", "wave/a.AVI", "wave", "train"),
        ("wave/b", "wave/b.mp4", "wave", "train"),
        ("wave/frames_c", "wave/frames_c", "wave", "train"),
    ]
    assert all(m.resolve(e).exists() for e in m.entries)
    assert {e.split for e in convert("folder", [root], split="test").entries} == {"test"}


def test_folder_tree_with_split_folders(tmp_path):
    root = tmp_path / "tree"
    for name in ("train/dog/a.mp4", "train/cat/b.mp4", "validation/dog/a.mp4", "test/cat/c.mp4"):
        touch(root / name)
    m = convert("folder", [root])
    assert [(e.video_id, e.split, e.label) for e in m.entries] == [
        ("test/cat/c", "test", "cat"), ("train/cat/b", "train", "cat"), ("train/dog/a", "train", "dog"),
        ("validation/dog/a", "val", "dog")]


def test_folder_errors(tmp_path):
    touch(tmp_path / "frames" / "cls" / "00001.jpg")
    assert "frame image directly in class folder" in error_of("folder", [tmp_path / "frames"])
    (tmp_path / "hollow" / "cls" / "clip").mkdir(parents=True)
    assert "neither a video file nor a folder of frame images" in error_of("folder", [tmp_path / "hollow"])
    touch(tmp_path / "same" / "cls" / "a.mp4")
    touch(tmp_path / "same" / "cls" / "a.avi")
    assert "duplicate video_id 'cls/a'" in error_of("folder", [tmp_path / "same"])
    assert "folder not found" in error_of("folder", [tmp_path / "nowhere"])
    with pytest.raises(ConfigError, match="--split 'dev'"):
        convert("folder", [tmp_path / "same"], split="dev")
    with pytest.raises(ConfigError, match="--fold does not apply to format 'folder'"):
        convert("folder", [tmp_path / "same"], fold=1)
