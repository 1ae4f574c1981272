"""The `stpipe` command line. The only place that parses arguments, prints, and exits."""

from __future__ import annotations

import contextlib
import sys

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


# ---- options made from the config dataclasses ------------------------------------------------


def _json_option(ctx, param, value):
    import json

    if not value:
        return None
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc.msg})", param=param) from None
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object", param=param)
    return data


def _shown(default) -> str | None:
    """A dataclass default as help shows it; None for "not set" defaults (their help says what happens)."""
    if isinstance(default, bool):
        return "on" if default else "off"
    if default is None or default == "" or default == {}:
        return None
    if isinstance(default, (tuple, list)):
        return ",".join(map(str, default))
    return f"{default:g}" if isinstance(default, float) else str(default)


def config_params(cls: type, names=None) -> list[click.Parameter]:
    """click parameters for `cls`'s fields declared with pipeline.config.arg (or those in `names`): flag,
    type and help from the field, the default shown from the dataclass; not given = None = the
    config's default (so YAML and the API mean the same)."""
    import dataclasses
    import types
    import typing

    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "help" not in meta or (names is not None and f.name not in names):
            continue
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint) or hint
        if meta["positional"]:
            many = origin is tuple
            params.append(click.Argument([f.name], nargs=-1 if many else 1, required=meta["required"] or many))
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        flag = meta["flag"] or "--" + f.name.replace("_", "-")
        shown = None if hint is bool and not meta["negatable"] else _shown(default)
        kw = dict(help=meta["help"] + (f"  [default: {shown}]" if shown else ""), default=None,
                  required=meta["required"])
        if hint is bool and meta["negatable"]:
            flag = f"{flag}/--no-{flag[2:]}"
        elif hint is bool:
            kw["is_flag"] = True
        elif origin is typing.Literal:
            kw["type"] = click.Choice([a for a in typing.get_args(hint) if a != ""])
        elif origin is dict:
            kw["callback"] = _json_option
        elif hint in (int, float):
            kw["type"] = hint
        elif meta["repeat"]:
            kw.update(multiple=True, default=())
        params.append(click.Option([d for d in (meta["short"], flag) if d] + [f.name], **kw))
    return params


def _load(path: str):
    """The object a "module:name" path names (imported when a command first needs it)."""
    import importlib

    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


class ConfigCommand(click.Command):
    """A command made from a stage: options from its config dataclasses (`configs`: ("module:Class",
    field names or None for all), the first being the stage's), made when first needed (a config's
    module may import torch, which `stpipe other-verb --help` should not wait for). Invoked, it builds
    the config (`build(file, values)`, default pipeline.config.build_config), runs the stage (`run`:
    "module:function", given the renderer when it takes `progress`) and calls the callback with the
    result (or with `cfg` when there is no `run`) and the command's own options. `yaml`: --config FILE."""

    def __init__(self, *args, configs=(), run=None, build=None, yaml=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.configs, self.run, self.build, self.yaml, self.fields = list(configs), run, build, yaml, set()

    def get_params(self, ctx):
        if self.configs:
            import dataclasses

            classes = [(_load(path), names) for path, names in self.configs]
            self.fields = {f.name for cls, _ in classes for f in dataclasses.fields(cls)}
            self.params[:0] = [param for cls, names in classes for param in config_params(cls, names)]
            self.cls, self.configs = classes[0][0], []
            if self.yaml:
                self.params.append(click.Option(["--config", "config_file"], type=click.Path(dir_okay=False),
                                                help="YAML config file (its keys are the options' names, with _)."))
        return super().get_params(ctx)

    def invoke(self, ctx):
        import inspect

        from pipeline.config import build_config

        values = {name: ctx.params.pop(name) for name in list(ctx.params) if name in self.fields}
        file = ctx.params.pop("config_file", None)
        cfg = _load(self.build)(file, values) if self.build else build_config(self.cls, file, values)
        if self.run is None:
            return ctx.invoke(self.callback, cfg=cfg, **ctx.params)
        run = _load(self.run)
        with _rendered() as show:
            result = run(cfg, progress=show) if "progress" in inspect.signature(run).parameters else run(cfg)
        return ctx.invoke(self.callback, result, **ctx.params)


def config_command(name: str, config: str, *, run=None, names=None, also=(), build=None, yaml=True, group=None):
    """`cli.command(name)` made from `config` ("module:Class") and `also` ((config, names), ...)."""
    return (group or cli).command(name, cls=ConfigCommand, configs=[(config, names), *also], run=run, build=build,
                                  yaml=yaml)


# ---- commands -------------------------------------------------------------------------------
# In the order of the pipeline. Each is made from its stage (options, config, run); its body only
# prints the result.


def _echo_lines(lines) -> None:
    for line in lines:
        click.echo(line)


def _fail(message: str, lines=()) -> None:
    """Lines on stderr, then the exit code of a run that finished with failures (PartialFailure)."""
    from pipeline.errors import PartialFailure

    for line in lines:
        click.echo(line, err=True)
    raise PartialFailure(message)


@cli.group("manifest")
def manifest_group() -> None:
    """Build and check manifests: the table of videos (video_id, path, label, split[, start, end][, group])."""


@config_command("convert", "stages.manifest:ConvertConfig", run="stages.manifest:convert", yaml=False,
                group=manifest_group)
def manifest_convert(lines):
    """Convert official annotation files of FORMAT to a manifest.

    FORMAT is one of jester, ssv2, ucf101, hmdb51, kinetics, folder. Examples:

      stpipe manifest convert jester -a jester/annotations -o jester.csv

      stpipe manifest convert ucf101 -a ucfTrainTestlist --fold 1 -o ucf101-1.csv

      stpipe manifest convert kinetics -a kinetics-400_train.csv -a kinetics-400_val.csv -o k400.csv
    """
    _echo_lines(lines)


@config_command("from-folder", "stages.manifest:FromFolderConfig", run="stages.manifest:from_folder", yaml=False,
                group=manifest_group)
def manifest_from_folder(lines):
    """Manifest of a DIRECTORY/<class>/<video> (or DIRECTORY/<split>/<class>/<video>) tree.

    A video is a video file or a folder of frame images. Paths are written relative to the
    manifest's folder, so the manifest works without --root.
    """
    _echo_lines(lines)


@config_command("check", "stages.manifest:CheckConfig", run="stages.manifest:check", yaml=False,
                group=manifest_group)
def manifest_check(lines):
    """Validate MANIFEST and print how many videos each split and class has (and groups, and any group
    that train shares with val or test: a leak)."""
    _echo_lines(lines)


@cli.command("flows")
def flows_cmd():
    """List the optical-flow methods (for --flow-method and flow-viz --method)."""
    from stages import listings

    _echo_lines(listings.flows())


@config_command("flow-viz", "stages.flow_viz:FlowVizConfig", run="stages.flow_viz:run", yaml=False)
def flow_viz_cmd(line):
    """Write a PNG of VIDEO's frames next to their colour-coded optical flow (Middlebury wheel)."""
    click.echo(line)


@config_command("extract", "pipeline.extraction.config:ExtractConfig", run="stages.extract:run")
def extract_cmd(result):
    """Stage one: decode videos, run the backbone (and TV-L1 flow), cache features in a Zarr store."""
    rate = result.frames / result.seconds if result.seconds else 0.0
    click.echo(f"{result.store}: {result.done} extracted, {result.skipped} already complete, {result.failed} failed "
               f"of {result.total} videos; {result.frames} frames in {result.seconds:.1f} s ({rate:.1f} frames/s)")
    if result.failed:
        _fail(f"{result.failed} videos failed; see `stpipe inspect {result.store}`",
              [f"  failed: {f.video_id}: {f.error}" for f in result.failures[:10]])


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
    from stages import listings

    _echo_lines(listings.backbones(name))


@config_command("inspect", "stages.inspect:InspectConfig", run="stages.inspect:run", yaml=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect_cmd(summary, as_json):
    """Summarise a feature store: counts, shapes, dtypes, bytes, config, failures."""
    import json

    from stages import inspect

    _echo_lines([json.dumps(summary, indent=2, default=str)] if as_json else inspect.lines(summary))


@config_command("pack", "stages.pack:PackConfig", run="stages.pack:run", yaml=False)
def pack_cmd(outcome):
    """(Re)build STORE's pack: its pooled features back to back, read by stage two in a few requests."""
    words = {"written": "written", "fresh": "already up to date", "absent": "not in the store"}
    click.echo("; ".join(f"{name}: {words[state]}" for name, state in outcome.items()))


@config_command("verify", "stages.verify:VerifyConfig", run="stages.verify:run", yaml=False)
def verify_cmd(result):
    """Read every chunk of STORE back and check it; list the damaged videos (exit 3 when any)."""
    derived = f"; damaged: {', '.join(result.damaged_derived)}" if result.damaged_derived else ""
    click.echo(f"{result.store}: {result.videos} videos and {result.derived} other arrays checked ({result.chunks} "
               f"chunks, {result.nbytes / 2**20:.1f} MiB in {result.seconds:.1f} s): "
               f"{len(result.damaged_videos)} damaged video(s){derived}")
    if result.damage:
        what = f"{len(result.damaged_videos)} damaged video(s)" + (" and derived arrays" if derived else "")
        if result.repaired:
            _fail(f"{what} marked for redo: re-run the extract (or import) command that made {result.store}")
        _fail(f"{what}; `stpipe verify --repair {result.store}` marks them for redo")


@config_command("export", "stages.export:ExportConfig", run="stages.export:run", yaml=False)
def export_cmd(result):
    """Write a feature STORE's complete videos to one HDF5 file OUTPUT.

    One group per video (/videos/<key>: rgb, flow, flow_feat, frame_index; attrs: label, split,
    ...), /index and /classes datasets, and the store's provenance as JSON in the root attrs.
    """
    click.echo(f"{result.target}: {result.done} videos from {result.source}"
               + (f" (+ {result.failed} failed ones listed in /index)" if result.failed else ""))


@config_command("import", "stages.import_features:ImportConfig", run="stages.import_features:run", yaml=False)
def import_cmd(result):
    """Build a feature store from features made elsewhere, for stage two.

    SOURCE is an HDF5 file from `stpipe export`, or a folder of per-video .npy files of shape
    (T, D) or (T, C, H, W) named <video_id>.npy (then --manifest gives labels and splits; without
    SOURCE the manifest's paths are the .npy files). Examples:

      stpipe import features.h5 -o features.zarr

      stpipe import i3d_rgb/ -m ucf101.csv --flow-dir i3d_flow/ --backbone i3d -o ucf101-i3d.zarr
    """
    click.echo(f"{result.target}: {result.done} imported, {result.skipped} already complete, "
               f"{result.failed} failed of {result.total} videos from {result.source}")
    if result.failed:
        _fail(f"{result.failed} videos failed; see `stpipe inspect {result.target}`",
              [f"  failed: {f.video_id}: {f.error}" for f in result.failures[:10]])


@config_command("demo-data", "pipeline.demo_data:DemoDataConfig", run="stages.demo_data:run",
                build="stages.demo_data:config",
                also=[("pipeline.footage_data:FootageConfig", ("sources", "train_clips", "val_clips", "val_sources"))])
def demo_data_cmd(line):
    """Write a small labelled video set whose classes depend on temporal order (synthetic, or cut from real
    footage with --from)."""
    click.echo(line)


@config_command("heads", "stages.listings:HeadsConfig", run="stages.listings:heads", yaml=False)
def heads_cmd(lines):
    """List the temporal heads with parameters and multiply-adds per clip.

    Projection (dropout + Linear / 1x1 conv to --proj-dim) and head body are counted apart; MACs
    come from torch's flop counter (matmuls and convolutions). Example, the setting of Table 3 of Köpüklü et al.:

      stpipe heads --classes 27 --segments 8 --feature-shape 1024x7x7
    """
    _echo_lines(lines)


@config_command("train-head", "pipeline.training.config:TrainHeadConfig", run="stages.train_head:run")
def train_head_cmd(result):
    """Stage two: train a temporal head on cached features (the protocol of Köpüklü et al.).

    Example: stpipe train-head -s jester.zarr --head trn_multiscale --segments 8 -o runs/trn
    """
    m = result.metrics
    click.echo(f"{result.run_dir}: val top-1 {m['val_top1']:.2%}, top-5 {m['val_top5']:.2%}, mean class "
               f"{m['val_mean_class_acc']:.2%} (best epoch {m['best_epoch']} of {m['epochs']}; {m['stopped']}); "
               f"{m['params']:,} params, {m['macs'] / 1e6:,.2f}M MACs/clip; {m['samples_per_second']:,.0f} samples/s, "
               f"{m['train_seconds']:.1f} s training + {m['load_seconds']:.1f} s loading")


@config_command("evaluate", "stages.evaluate:EvaluateConfig", yaml=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def evaluate_cmd(cfg, as_json):
    """Top-1/top-5/mean-class accuracy of a run on a split (all cached views averaged).

    Example: stpipe evaluate --run runs/trn --split val --out runs/trn/val_predictions.csv
    """
    import json

    from stages import evaluate

    with _rendered() as show:
        result = evaluate.run(cfg, progress=show)
    if as_json:
        return click.echo(json.dumps(result.__dict__, default=str))
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{cfg.run} on {result.split} ({result.videos} videos): top-1 {result.top1:.2%}, top-5 "
               f"{result.top5:.2%}, mean class {result.mean_class_acc:.2%}, loss {result.loss:.4f}; "
               f"per-class accuracy in {result.report}")
    if result.outputs:
        click.echo(f"per-video predictions: {result.outputs[0]}; per class and confusion: "
                   + ", ".join(str(p) for p in result.outputs[1:]))


@config_command("stats", "stages.stats:StatsConfig", run="stages.stats:run", yaml=False)
def stats_cmd(lines):
    """Per-channel mean/std of a split's features (read as stage two reads them), cached in the store."""
    _echo_lines(lines)


@config_command("predict", "stages.predict:PredictConfig", run="stages.predict:run", yaml=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def predict_cmd(result, as_json):
    """Classify videos: extract features as the run's store did, print the top classes."""
    import json

    if as_json:
        click.echo(json.dumps([p.__dict__ for p in result.predictions], indent=1))
    for p in [] if as_json else result.predictions:
        if p.error:
            click.echo(f"{p.video}: error: {p.error}", err=True)
        else:
            _echo_lines([p.video] + [f"  {item['probability']:7.2%}  {item['class']}" for item in p.top])
    if result.failed:
        _fail(f"{result.failed} of {len(result.predictions)} videos could not be classified")


def _echo_ablation(result) -> None:
    click.echo(result.summary_text)
    click.echo(f"results: {result.results}\nsummary: {result.summary}\nplot:    {result.plot}")
    if result.failed:
        _fail(f"{len(result.failed)} trial(s) failed after a retry (see {result.summary}); "
              "re-run the same command to try them again")


# train-head settings `stpipe ablate` takes as flags (into AblateConfig.train)
ABLATE_TRAIN_FLAGS = ("epochs", "batch_size", "optimizer", "lr", "schedule", "weight_decay", "proj_dim",
                      "temporal_center", "dropout", "fusion", "standardize", "recipe", "select", "val_split")


def _grid(ctx, param, value):
    from pipeline.ablation.grid import parse_grid

    return parse_grid(value)


@config_command("ablate", "pipeline.ablation.config:AblateConfig", run="stages.ablate:run",
                build="pipeline.ablation.config:ablate_config",
                also=[("pipeline.training.config:TrainHeadConfig", ABLATE_TRAIN_FLAGS)])
@click.option("--grid", multiple=True, metavar="FIELD=V1,V2,...", callback=_grid,
              help="Sweep a train-head setting for every head (repeatable; the axes multiply), "
                   "e.g. --grid lr=1e-3,3e-3 --grid weight_decay=0.01,0.1.")
def ablate_cmd(result):
    """Compare heads x segments x modalities over seeds on one store, as parallel trials on Ray.

    Example: stpipe ablate -s jester.zarr -o runs/ablation --heads all --segments 8,16 --seeds 0,1,2
    """
    _echo_ablation(result)


@config_command("demo", "stages.demo:DemoConfig", run="stages.demo:run")
def demo_cmd(result):
    """The whole pipeline on generated videos, offline, in minutes: demo data -> extract (TV-L1 flow,
    embedded Ray) -> ablate over every head -> the summary table and plots."""
    steps = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in result.steps.items())
    click.echo(f"demo: {result.videos} videos; backbone: {result.weights_note}; {steps} "
               f"(total {result.seconds / 60:.1f} min)")
    if result.finding:
        click.echo(f"demo: {result.finding}")
    _echo_ablation(result.ablate)


@config_command("finetune", "pipeline.finetune.config:FinetuneConfig", run="stages.finetune:run")
def finetune_cmd(result):
    """Stage three: fine-tune backbone(s) and head end to end from the videos (two streams, Ray Train).

    Example: stpipe finetune --run runs/trn -m jester.csv --root /data/jester -o runs/trn-ft --workers 2
    """
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
