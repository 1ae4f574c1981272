"""Groups (issue 35): the manifest's `group` column, the converters that fill it, the store index that
keeps it, the group-disjoint splits stpipe makes (pipeline.splits) and the leaks it reports."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace

import numpy as np
import pytest
from click.testing import CliRunner
from extract_fixtures import extract_config, small_demo
from store_fixtures import make_store

from cli import cli
from manifests import Manifest, VideoEntry, convert, read_manifest, write_manifest
from pipeline.errors import ManifestError
from pipeline.progress import Note
from pipeline.splits import groups_of, held_out, shared_groups
from pipeline.store import FeatureStore, summarize
from pipeline.training.config import TrainHeadConfig
from pipeline.training.data import load_split
from pipeline.training.select import inner_split

# ---- the manifest column ------------------------------------------------------------------------


def test_group_column_round_trips_and_leaves_ungrouped_manifests_as_they_were(tmp_path):
    entries = [VideoEntry("a", "a.mp4", "x", "train", group="src 1"), VideoEntry("b", "b.mp4", "x", "val")]
    grouped = Manifest(entries, ["x"])
    for suffix in (".csv", ".jsonl"):
        write_manifest(grouped, tmp_path / f"m{suffix}")
        assert [e.group for e in read_manifest(tmp_path / f"m{suffix}")] == ["src 1", None]
    assert (tmp_path / "m.csv").read_text().splitlines()[:2] == ["video_id,path,label,split,group",
                                                                 "a,a.mp4,x,train,src 1"]
    plain = Manifest([replace(e, group=None) for e in entries], ["x"])
    write_manifest(plain, tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "video_id,path,label,split"
    # the hash of a manifest without groups is the one stores made before groups recorded
    before = hashlib.sha256(json.dumps(["x"]).encode())
    for e in plain.entries:
        fields = {k: v for k, v in asdict(e).items() if k != "group"}
        before.update(b"\n" + json.dumps(fields, sort_keys=True).encode())
    assert plain.sha256() == before.hexdigest() != grouped.sha256()


def test_bad_groups_are_errors_that_name_file_and_line(tmp_path):
    csv_file = tmp_path / "m.csv"
    csv_file.write_text('video_id,path,label,split,group\na,a.mp4,x,train,g1\nb,b.mp4,x,train,"two\nlines"\n')
    with pytest.raises(ManifestError, match=r"m\.csv:3: group 'two\\nlines' contains a line break"):
        read_manifest(csv_file)
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text('{"video_id": "a", "path": "a.mp4", "label": "x", "split": "train", "group": "g1"}\n'
                     '{"video_id": "b", "path": "b.mp4", "label": "x", "split": "train", "group": 8}\n')
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: group must be a string, got int"):
        read_manifest(jsonl)


# ---- converters on the real annotation files ----------------------------------------------------


def test_ucf101_group_is_the_files_gGG_and_the_official_split_keeps_groups_apart(annotations_dir):
    m = convert("ucf101", [annotations_dir / "ucf101" / "ucfTrainTestlist"])
    assert (m.entries[0].video_id, m.entries[0].group) == ("v_ApplyEyeMakeup_g08_c01", "g08")
    assert all(e.group == e.video_id.split("_")[-2] for e in m.entries)
    train, test = ({e.group for e in m.by_split(s)} for s in ("train", "test"))
    assert min(train) >= "g08" and max(test) <= "g07"  # split 1: groups 8-25 train, 1-7 test
    assert shared_groups([e.group for e in m], [e.split for e in m], "train", "test") == []


def test_hmdb51_group_is_the_source_video_in_the_clip_name(annotations_dir):
    m = convert("hmdb51", [annotations_dir / "hmdb51" / "testTrainMulti_7030_splits"])
    group = {e.video_id: e.group for e in m}
    assert group["Acrobacias_de_un_fenomeno_cartwheel_f_cm_np1_ba_bad_8"] == "Acrobacias_de_un_fenomeno"
    assert group["(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0"] == "(Rad)Schlag_die_Bank!"
    assert group["Return_of_the_King_7_shoot_bow_u_nm_np10_ba_med_2"] == "Return_of_the_King_7"
    assert None not in group.values()
    # within a class the official split keeps a source's clips on one side
    within = [f"{e.label}/{e.group}" for e in m]
    assert shared_groups(within, [e.split for e in m], "train", "test") == []


def test_kinetics_group_is_the_youtube_id(annotations_dir):
    m = convert("kinetics", [annotations_dir / "kinetics" / "kinetics-400" / "kinetics-400_val.csv"])
    assert {e.video_id: e.group for e in m}["--nQbRBEz2s_000104_000114"] == "--nQbRBEz2s"  # ids may start with -
    assert all(e.video_id.startswith(e.group + "_") and len(e.group) == 11 for e in m)


def test_folder_tree_takes_groups_from_a_sub_folder_level(tmp_path):
    for name in ("dog/park/a.mp4", "dog/park/b.mp4", "dog/beach/c.mp4", "cat/park/d.mp4"):
        (tmp_path / "tree" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / name).write_bytes(b"")
    out = tmp_path / "m.csv"
    result = CliRunner().invoke(cli, ["manifest", "from-folder", str(tmp_path / "tree"), "-o", str(out),
                                      "--group-folders"])
    assert result.exit_code == 0, result.output
    assert {e.video_id: e.group for e in read_manifest(out)} == {
        "cat/park/d": "park", "dog/beach/c": "beach", "dog/park/a": "park", "dog/park/b": "park"}
    assert all(e.group is None for e in convert("folder", [tmp_path / "tree" / "dog"]))  # no flag, no groups
    (tmp_path / "tree" / "dog" / "loose.mp4").write_bytes(b"")
    with pytest.raises(ManifestError, match="loose.mp4: directly in class folder"):
        convert("folder", [tmp_path / "tree"], group_folders=True)


# ---- splits stpipe makes ------------------------------------------------------------------------


def test_held_out_keeps_every_group_on_one_side_and_stratifies_by_class():
    labels = np.repeat(np.arange(4), 12)
    groups = np.array([f"src{k % 6}" if c < 3 else f"solo{c}{k}" for c, k in zip(labels, np.tile(np.arange(12), 4))])
    held = held_out(labels, groups, fraction=0.25, seed=0)
    assert not set(groups[held]) & set(groups[~held])
    for c in range(4):  # every class is held out from and keeps training videos
        assert 0 < held[labels == c].sum() < 12
    assert np.array_equal(held, held_out(labels, groups, fraction=0.25, seed=0))
    assert not np.array_equal(held, held_out(labels, groups, fraction=0.25, seed=3))
    # without groups each video is its own: exactly a quarter of every class
    assert np.bincount(labels[held_out(labels, None, fraction=0.25, seed=0)]).tolist() == [3, 3, 3, 3]
    # a group that holds all of a class stays in training
    assert not held_out([0, 0, 1, 1], ["a", "a", "b", "c"], fraction=0.5, seed=0)[:2].any()


@pytest.fixture(scope="module")
def grouped_url(tmp_path_factory):
    """Train and val share no group (sources 0-2 train, 3 val); each source spans every class."""
    url = str(tmp_path_factory.mktemp("stores") / "grouped.zarr")
    make_store(url, per_class={"train": 6, "val": 2}, group_of=lambda split, c, k: f"src{k % 3 if split == 'train' else 3}")
    return url


def test_select_inner_split_puts_no_group_on_both_sides(grouped_url):
    store = FeatureStore.open(grouped_url)
    train = load_split(store, "train")
    groups = groups_of(store.index(), train.keys)
    assert sorted(set(groups)) == ["src0", "src1", "src2"]
    inner_train, inner_val = inner_split(train, seed=0, groups=groups)
    sides = [set(groups_of(store.index(), part.keys)) for part in (inner_train, inner_val)]
    assert sides[0] and sides[1] and not sides[0] & sides[1]
    assert len(set(inner_val.labels.tolist())) == 4  # a source spans every class: all are held out from


def _leak_notes(events):
    return [e.message for e in events if isinstance(e, Note) and "shares" in e.message]


def test_train_head_and_ablate_warn_once_when_val_shares_groups_with_train(grouped_url, tmp_path):
    from pipeline.ablation import AblateConfig
    from stages import ablate, train_head

    leaky = str(tmp_path / "leaky.zarr")
    make_store(leaky, per_class={"train": 6, "val": 2}, group_of=lambda split, c, k: f"src{k % 3}")
    base = dict(head="mlp", segments=4, epochs=1, batch_size=16, proj_dim=16)
    events = []
    train_head.run(TrainHeadConfig(store=leaky, out=str(tmp_path / "run"), **base), progress=events.append)
    assert _leak_notes(events) == ["split 'val' shares 2 group(s) with 'train' ('src0', 'src1'): its score measures "
                                   "sources the head trained on; hold whole groups out (README: groups)"]
    events = []
    cfg = AblateConfig(store=leaky, out=str(tmp_path / "abl"), heads=("mlp",), segments=(4,), seeds=(0, 1),
                       executor="local", trial_plots=False, train={"epochs": 1, "batch_size": 16})
    assert all(r.status == "ok" for r in ablate.run(cfg, progress=events.append).records)
    assert len(_leak_notes(events)) == 1
    events = []
    train_head.run(TrainHeadConfig(store=grouped_url, out=str(tmp_path / "clean"), **base), progress=events.append)
    assert _leak_notes(events) == []


# ---- the store: extract and inspect carry the group; stores without groups still read ----------


def test_extract_keeps_the_manifests_group_in_attrs_and_index(tmp_path):
    from stages import extract

    small = small_demo(tmp_path / "demo")
    manifest = read_manifest(small)
    takes = {"moving_left_000": "take0", "moving_right_000": "take2", "moving_left_001": "take0",
             "zooming_in_001": "take1"}  # the first two are val
    grouped = [replace(e, group=takes[e.video_id]) for e in manifest]
    write_manifest(Manifest(grouped, manifest.classes), tmp_path / "demo" / "grouped.csv")
    extract.run(extract_config(tmp_path / "demo" / "grouped.csv", str(tmp_path / "s.zarr")))
    store = FeatureStore.open(str(tmp_path / "s.zarr"))
    index = store.index()
    assert dict(zip(index["video_id"].tolist(), index["group"].tolist())) == {e.video_id: e.group for e in grouped}
    assert store.video_attrs(grouped[0].video_id)["group"] == grouped[0].group
    assert summarize(store)["groups"] == {"count": 3, "leaks": {"val": ["take0"]}}
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "s.zarr")])
    assert "groups    3; leak: val shares 1 with train (take0)" in result.output


def test_a_store_indexed_before_groups_reads_every_group_as_empty(tmp_path):
    url = str(tmp_path / "old.zarr")
    make_store(url, per_class={"train": 2, "val": 1})
    old = FeatureStore.open(url, mode="r+")
    del old.root["index"]["group"]  # the index as stpipe wrote it before groups
    reopened = FeatureStore.open(url, mode="r")
    index = reopened.index()
    assert index["group"].tolist() == [""] * 12 and set(index["status"].tolist()) == {"complete"}
    assert summarize(reopened)["groups"] == {"count": 0, "leaks": {}}


# ---- manifest check and the footage dev set -----------------------------------------------------


def _scene_video(path, seed: int, n: int = 40):
    from pipeline.demo_data import write_mp4

    scene = np.random.default_rng(seed).integers(0, 255, size=(96, 224, 3)).astype(np.uint8)
    write_mp4(path, np.stack([scene[:, i:i + 128] for i in range(n)]), fps=12)


def test_footage_val_sources_holds_out_whole_videos_and_manifest_check_reports_leaks(tmp_path):
    for seed in range(3):
        _scene_video(tmp_path / f"scene{seed}.mp4", seed)
    common = ["demo-data", "--from", str(tmp_path), "--train-clips", "1", "--val-clips", "1", "--frames", "4",
              "--size", "64"]
    runner = CliRunner()
    result = runner.invoke(cli, [*common, "-o", str(tmp_path / "held"), "--val-sources", "1"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "held" / "manifest.csv")
    sides = {s: {e.group for e in manifest.by_split(s)} for s in ("train", "val")}
    assert len(sides["val"]) == 1 and len(sides["train"]) == 2 and not sides["val"] & sides["train"]
    assert {e.group for e in manifest} == {f"scene{k}.mp4" for k in range(3)}
    check = runner.invoke(cli, ["manifest", "check", str(tmp_path / "held" / "manifest.csv")])
    assert check.exit_code == 0 and "leak" not in check.output
    assert "groups" in check.output
    result = runner.invoke(cli, [*common, "-o", str(tmp_path / "timed")])  # val from the end of every video
    assert result.exit_code == 0, result.output
    check = runner.invoke(cli, ["manifest", "check", str(tmp_path / "timed" / "manifest.csv")])
    assert "leak: split 'val' shares 3 group(s) with 'train' ('scene0.mp4', 'scene1.mp4', 'scene2.mp4')" in check.output
    too_many = runner.invoke(cli, [*common, "-o", str(tmp_path / "x"), "--val-sources", "3"])
    assert "--val-sources 3 needs more videos than that to train on (found 3)" in str(too_many.exception)
