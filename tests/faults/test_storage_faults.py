"""Storage faults: a file system that fills up mid-run, and chunks damaged at rest.

Full disk: a small tmpfs (mounted here; skipped where mounting is refused) is filled until only
part of what a run writes fits. The run must stop with one line `stpipe: error: <path>: no space
left on the device (...)` and exit 2, mark nothing complete that is not, keep the last good
checkpoint, and the same command must finish the job once the filler is deleted, ending where an
uninterrupted run ends.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
from fault_tools import (
    assert_identical_store,
    assert_readable,
    debris,
    demo_subset,
    disk_bytes,
    error_lines,
    leave_free,
    small_disk,
)
from store_fixtures import make_store

from pipeline.extraction import ExtractConfig
from pipeline.store import FeatureStore, video_key
from stages import extract

GOOD = ["moving_left_000", "moving_right_001", "moving_up_000", "moving_down_001", "rotating_clockwise_000",
        "zooming_in_001", "appearing_000", "disappearing_001"]
FULL = re.compile(r"^stpipe: error: (.+): no space left on the device \(.*make room and re-run the same command "
                  r"to resume\)$")


def extract_argv(manifest, store):
    return ["extract", "-m", str(manifest), "-o", str(store), "--backbone", "tiny", "--weights", "none",
            "--executor", "local", "--batch-size", "8", "--decode-threads", "2"]


@pytest.fixture(scope="module")
def manifest(demo):
    return demo_subset(demo, GOOD)


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "s.zarr"
    extract.run(ExtractConfig(manifest=str(manifest), output=str(path), backbone="tiny", weights="none",
                              executor="local", batch_size=8, decode_threads=2))
    return path


def assert_one_line(code: int, output: str, path) -> None:
    assert code == 2, output
    lines = error_lines(output)
    assert len(lines) == 1 and FULL.match(lines[0]), output
    assert FULL.match(lines[0]).group(1) == str(path)


@pytest.mark.parametrize("videos_that_fit", [0.2, 0.5, 0.8, 1.0])
def test_extract_on_a_full_disk_stops_in_one_line_and_resumes(launcher, manifest, reference, tmp_path,
                                                              videos_that_fit):
    """Room for a fraction of the videos' files (1.0: all of them, not the index and pack)."""
    need = disk_bytes(reference)
    with small_disk(tmp_path / "disk", f"{4 * need // 1024 + 64}k") as disk:
        store = disk / "s.zarr"
        filler = leave_free(disk, 4 * 4096 + int(disk_bytes(reference / "videos") * videos_that_fit))
        code, output = launcher.run(extract_argv(manifest, store))
        assert_one_line(code, output, store)
        state = assert_readable(store)  # every video marked complete is whole
        assert 0 < state["complete"] <= len(GOOD), state
        if videos_that_fit < 1:
            assert state["complete"] < len(GOOD), state
        filler.unlink()  # room again: the same command finishes the job
        code, output = launcher.run(extract_argv(manifest, store))
        assert code == 0, output
        assert f"resuming: {state['complete']}/{len(GOOD)} videos already complete" in output
        assert assert_identical_store(reference, store) == {"complete": len(GOOD), "failed": 0}


def test_import_on_a_full_disk_stops_in_one_line_and_resumes(launcher, reference, tmp_path):
    export = tmp_path / "features.h5"
    assert launcher.run(["export", str(reference), str(export)])[0] == 0
    imported = tmp_path / "imported.zarr"
    assert launcher.run(["import", str(export), "-o", str(imported)])[0] == 0
    with small_disk(tmp_path / "disk", f"{4 * disk_bytes(imported) // 1024 + 64}k") as disk:
        store = disk / "s.zarr"
        filler = leave_free(disk, 4 * 4096 + disk_bytes(imported / "videos") // 2)
        code, output = launcher.run(["import", str(export), "-o", str(store)])
        assert_one_line(code, output, store)
        state = assert_readable(store)
        assert 0 < state["complete"] < len(GOOD), state
        filler.unlink()
        code, output = launcher.run(["import", str(export), "-o", str(store)])
        assert code == 0, output
        assert f"{len(GOOD) - state['complete']} imported, {state['complete']} already complete" in output
        assert assert_identical_store(imported, store) == {"complete": len(GOOD), "failed": 0}


def test_train_head_on_a_full_disk_keeps_its_last_checkpoint_and_resumes(launcher, tmp_path):
    from test_crash_resume_train import OPTIONS, argv, assert_same_run

    from pipeline.training.config import TrainHeadConfig
    from pipeline.training.model import load_checkpoint
    from stages import train_head

    store_url = str(tmp_path / "order.zarr")
    make_store(store_url, per_class={"train": 8, "val": 4})
    reference = tmp_path / "ref"
    train_head.run(TrainHeadConfig(store=store_url, out=str(reference), **OPTIONS))
    best, last = disk_bytes(reference / "checkpoint.pt"), disk_bytes(reference / "last.pt")
    with small_disk(tmp_path / "disk", f"{4 * disk_bytes(reference) // 1024 + 64}k") as disk:
        out = disk / "run"
        # room for the small files, the first epoch's checkpoint.pt and last.pt, and half a last.pt: the
        # second epoch's last.pt (written beside the one it replaces) does not fit
        filler = leave_free(disk, 4 * 4096 + best + last + last // 2)
        code, output = launcher.run(argv(store_url, out))
        assert_one_line(code, output, out)
        saved = load_checkpoint(out / "last.pt")["state"]["epoch"]  # the last good checkpoint, whole
        assert 1 <= saved < OPTIONS["epochs"]
        assert not list(out.glob("*.tmp"))
        filler.unlink()
        code, output = launcher.run(argv(store_url, out, resume=True))
        assert code == 0, output
        assert f"resuming {out} after epoch {saved}" in output
        assert assert_same_run(reference, out) == OPTIONS["epochs"]


def test_finetune_on_a_full_disk_stops_in_one_line_and_resumes(launcher, manifest, reference, tmp_path):
    from pipeline.finetune.config import FinetuneConfig
    from pipeline.training.config import TrainHeadConfig
    from stages import finetune, train_head

    head = tmp_path / "head"
    train_head.run(TrainHeadConfig(store=str(reference), out=str(head), head="mlp", segments=2, epochs=1, batch_size=4,
                                   recipe="paper"))
    options = dict(epochs=2, batch_size=4, loader_workers=0, lr=0.05, executor="local")
    done = tmp_path / "uninterrupted"
    finetune.run(FinetuneConfig(run=str(head), manifest=str(manifest), out=str(done), **options))
    best, last = disk_bytes(done / "checkpoint.pt"), disk_bytes(done / "last.pt")
    argv_options = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    with small_disk(tmp_path / "disk", f"{4 * disk_bytes(done) // 1024 + 64}k") as disk:
        out = disk / "ft"
        # room for the small files, the first epoch's checkpoint.pt and last.pt, and half a last.pt
        filler = leave_free(disk, 4 * 4096 + best + last + last // 2)
        argv = ["finetune", "--run", str(head), "-m", str(manifest), "-o", str(out), *argv_options]
        code, output = launcher.run(argv)
        assert_one_line(code, output, out)
        assert not list(out.glob("*.tmp"))
        filler.unlink()
        code, output = launcher.run(argv)  # the same command, with room: it resumes and finishes
        assert code == 0, output
        assert json.loads((out / "metrics.json").read_text())["epochs"] == 2 and (out / "backbone.pt").is_file()


def test_nothing_queued_behind_a_failed_write_runs():
    """A torn chunk removed frees room: the video's `finish` queued behind it must not then mark it complete."""
    from pipeline.store.writer import Writer

    ran = []

    def full_disk():
        raise OSError(28, "No space left on device")

    writer = Writer()
    writer.submit(ran.append, "begin", key="v")
    writer.submit(full_disk, key="v")
    writer.submit(ran.append, "finish", key="v")
    writer.submit(ran.append, "another video", key="w")
    with pytest.raises(OSError):
        writer.close()
    assert ran == ["begin"]


# ---- damaged chunks -------------------------------------------------------------------------------


def flip(path) -> None:
    """Damage a stored chunk at rest: invert one byte in its middle."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_verify_lists_a_damaged_chunk_and_repair_makes_extract_redo_exactly_it(launcher, manifest, reference,
                                                                               tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(reference, store)
    code, output = launcher.run(["verify", str(store)])
    assert code == 0 and f"{len(GOOD)} videos and 12 other arrays checked" in output, output
    assert "0 damaged video(s)" in output
    victim = GOOD[3]
    flip(store / "videos" / victim / "rgb" / "c.0.0.0")
    code, output = launcher.run(["verify", str(store)])
    assert code == 3, output
    assert f"damaged: {victim}: rgb c.0.0.0: checksum mismatch" in output
    assert error_lines(output) == [f"stpipe: error: 1 damaged video(s); `stpipe verify --repair {store}` marks "
                                   "them for redo"]
    code, output = launcher.run(["verify", "--repair", str(store)])
    assert code == 3 and "marked for redo" in output, output
    assert victim not in FeatureStore.open(str(store)).complete_ids()
    code, output = launcher.run(extract_argv(manifest, store))  # the command that made the store
    assert code == 0, output
    assert f"resuming: {len(GOOD) - 1}/{len(GOOD)} videos already complete" in output
    assert assert_identical_store(reference, store) == {"complete": len(GOOD), "failed": 0}
    assert launcher.run(["verify", str(store)])[0] == 0


def test_a_damaged_pack_is_read_around_then_rebuilt(launcher, reference, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(reference, store)
    flip(store / "pack" / "rgb" / "frames" / "c" / "0" / "0" / "0")
    code, output = launcher.run(["train-head", "-s", str(store), "-o", str(tmp_path / "run"), "--head", "mlp",
                                 "--segments", "2", "--epochs", "1", "--device", "cpu"])
    assert code == 0, output
    assert "the pack is damaged" in output and "reading the videos' own arrays" in output
    code, output = launcher.run(["verify", "--repair", str(store)])
    assert code == 3 and "damaged: pack/rgb/frames c/0/0/0: checksum mismatch" in output, output
    assert assert_identical_store(reference, store) == {"complete": len(GOOD), "failed": 0}  # the pack rebuilt


def test_stage_two_on_a_damaged_chunk_fails_in_one_line_or_leaves_the_video_out(launcher, tmp_path):
    store = tmp_path / "order.zarr"
    make_store(str(store), per_class={"train": 4, "val": 2})
    victim = sorted(FeatureStore.open(str(store)).complete_ids())[0]
    flip(store / "videos" / video_key(victim) / "rgb" / "c.0.0.0")
    args = ["train-head", "-s", str(store), "-o", str(tmp_path / "run"), "--head", "mlp", "--segments", "2",
            "--epochs", "1", "--device", "cpu"]
    line = (f"stpipe: error: video {victim!r}, array 'rgb': damaged data (checksum mismatch); "
            "`stpipe verify --repair STORE` marks it for redo")
    for extra in ([], ["--no-standardize"], ["--no-standardize", "--memory-budget-gb", "1e-9"]):  # stats, load, stream
        code, output = launcher.run(args + extra)
        assert code == 2, output
        assert error_lines(output) == [line], output
    code, output = launcher.run(args + ["--skip-damaged"])
    assert code == 0, output
    assert "leaving out 1 video(s) of split" in output and f"{victim} (rgb)" in output


def test_ablate_on_a_full_disk_stops_in_one_line_and_resumes(launcher, tmp_path):
    from test_crash_resume_ablate import argv, assert_same_ablation, rows

    store_url = str(tmp_path / "order.zarr")
    make_store(store_url, per_class={"train": 8, "val": 4})
    reference = tmp_path / "ref"
    assert launcher.run(argv(store_url, reference))[0] == 0
    trial = max(disk_bytes(p) for p in (reference / "trials").iterdir())
    with small_disk(tmp_path / "disk", f"{4 * disk_bytes(reference) // 1024 + 64}k") as disk:
        out = disk / "ablation"
        # a trial's peak is its files plus a last.pt being replaced: the first fits, the second does not
        filler = leave_free(disk, 8 * 4096 + int(2.2 * trial))
        code, output = launcher.run(argv(store_url, out))
        assert_one_line(code, output, out)
        done = rows(out)
        assert 1 <= len([r for r in done if r["status"] == "ok"]) < len(rows(reference)), done
        assert not [r for r in done if r["status"] == "failed"], done  # a full disk is not the trial's failure
        filler.unlink()
        code, output = launcher.run(argv(store_url, out))
        assert code == 0, output
        assert_same_ablation(reference, out)


def test_pack_on_a_full_disk_stops_in_one_line_and_rebuilds(launcher, reference, tmp_path):
    with small_disk(tmp_path / "disk", f"{4 * disk_bytes(reference) // 1024 + 64}k") as disk:
        store = disk / "s.zarr"
        shutil.copytree(reference, store, ignore=lambda folder, names: ["pack"] if folder == str(reference) else [])
        filler = leave_free(disk, 2 * 4096)  # the lease fits, the pack does not (a store made before packs)
        code, output = launcher.run(["pack", str(store)])
        assert_one_line(code, output, store)
        assert not debris(store), debris(store)
        filler.unlink()
        assert launcher.run(["pack", str(store)])[0] == 0
        assert assert_identical_store(reference, store) == {"complete": len(GOOD), "failed": 0}


def test_a_store_without_checksums_reads_and_verifies_by_decoding(launcher, tmp_path):
    """Stores written before checksums: read as before; verify decodes their chunks instead."""
    import zarr

    from pipeline.store.io import feature_compressor

    store = tmp_path / "old.zarr"
    make_store(str(store), per_class={"train": 2, "val": 1})
    victim = sorted(FeatureStore.open(str(store)).complete_ids())[0]
    path = f"videos/{video_key(victim)}/rgb"
    values = zarr.open_array(str(store / path), mode="r")[...]
    old = zarr.open_group(str(store), mode="r+")[f"videos/{video_key(victim)}"].create_array(
        "rgb", shape=values.shape, dtype=values.dtype, chunks=values.shape, compressors=feature_compressor(),
        dimension_names=("view", "time", "channel"), fill_value=0, overwrite=True)
    old[...] = values
    assert [c["name"] for c in json.loads((store / path / "zarr.json").read_text())["codecs"]] == ["bytes", "blosc"]
    code, output = launcher.run(["verify", str(store)])
    assert code == 0, output
    chunk = store / path / "c" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[12] ^= 0xFF  # blosc's header (compressed size): it refuses to decode; a flip in the data may pass unseen
    chunk.write_bytes(bytes(data))
    code, output = launcher.run(["verify", str(store)])
    assert code == 3 and f"damaged: {victim}: rgb c/0/0/0: does not decode" in output, output
