"""`stpipe manifest convert | from-folder | check`: build a manifest from official annotations or a
folder tree, and check one (counts per split and class, groups, leaks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.config import arg


@dataclass(frozen=True)
class ConvertConfig:
    format: str = arg("", positional=True, required=True)
    annotations: tuple[str, ...] = arg((), "Official annotation file, or a folder holding them under their official "
                                           "names (repeatable).", short="-a", repeat=True, required=True)
    output: str = arg("", "Manifest to write (.csv or .jsonl); the class list goes beside it as <stem>.classes.txt.",
                      short="-o", required=True)
    fold: int | None = arg(None, "ucf101, hmdb51: official split number (default 1).")
    path_template: str | None = arg(None, "Where each video lives under the root, e.g. '{id}' or '{class}/{stem}'.")
    class_order: Literal["sorted", "file"] | None = arg(
        None, "jester: class index by sorted name (TRN/TSM, default) or labels-file order (mmaction2).")
    underscore_dirs: bool = arg(False, "kinetics: class folders with '_' for spaces.", negatable=False)
    trim: bool = arg(False, "kinetics: keep time_start/time_end as start/end (full-length videos).", negatable=False)
    split: str | None = arg(None, "folder: split of a tree without split folders (default train).")
    group_folders: bool = arg(False, "folder: <class>/<group>/<video>; the sub-folder names each video's group "
                                     "(its source).", negatable=False)
    classes: str = arg("", "Use this class list (one name per line) instead of the dataset's.")


@dataclass(frozen=True)
class FromFolderConfig:
    directory: str = arg("", positional=True, required=True)
    output: str = arg("", "Manifest to write (.csv or .jsonl).", short="-o", required=True)
    split: str = arg("train", "Split of every entry when DIRECTORY has no train/val/test folders.")
    group_folders: bool = arg(False, "DIRECTORY/<class>/<group>/<video>: the sub-folder names each video's group "
                                     "(its source).", negatable=False)


@dataclass(frozen=True)
class CheckConfig:
    manifest: str = arg("", positional=True, required=True)
    root: str = arg("", "Folder that relative paths start from (default: the manifest's folder).")
    exists: bool = arg(False, "Also require every video file / frame folder to exist.", negatable=False)
    classes: str = arg("", "Class list to use when the manifest has no <stem>.classes.txt beside it.")


def convert(cfg: ConvertConfig) -> list[str]:
    """Write the manifest of `cfg.format`'s annotation files; what was written."""
    from manifests import convert, read_class_list

    options = dict(fold=cfg.fold, path_template=cfg.path_template, class_order=cfg.class_order, split=cfg.split,
                   underscore_dirs=cfg.underscore_dirs or None, trim=cfg.trim or None,
                   group_folders=cfg.group_folders or None)
    manifest = convert(cfg.format, list(cfg.annotations), **{k: v for k, v in options.items() if v is not None})
    if cfg.classes:
        manifest = manifest.with_classes(read_class_list(cfg.classes))
    return _written(manifest, cfg.output)


def from_folder(cfg: FromFolderConfig) -> list[str]:
    """Write the manifest of a <class>/<video> tree, paths relative to the manifest's folder."""
    from pathlib import Path

    from manifests import convert

    manifest = convert("folder", [Path(cfg.directory)], split=cfg.split, group_folders=cfg.group_folders)
    return _written(manifest.rebased(Path(cfg.output).absolute().parent), cfg.output)


def _written(manifest, output: str) -> list[str]:
    from manifests import classes_path, write_manifest

    write_manifest(manifest, output)
    counts = {split: sum(c.values()) for split, c in manifest.counts().items()}
    splits = ", ".join(f"{split} {n}" for split, n in counts.items() if n)
    return [f"wrote {len(manifest)} entries ({splits}), {len(manifest.classes)} classes -> {output} "
            f"(+ {classes_path(output).name})"]


def check(cfg: CheckConfig) -> list[str]:
    """Validate the manifest; its counts per split and class (and groups, and leaks) as a table."""
    from manifests import SPLITS, read_manifest
    from pipeline.splits import leak_note, shared_groups

    manifest = read_manifest(cfg.manifest, root=cfg.root or None, classes=cfg.classes or None,
                             check_exists=cfg.exists)
    counts = manifest.counts()
    names = [*manifest.classes, *([None] if any(counts[s][None] for s in SPLITS) else [])]
    width = max([len("class"), len("(no label)"), *(len(n) for n in manifest.classes)])
    lines = [f"{cfg.manifest}: {len(manifest)} entries, {len(manifest.classes)} classes, "
             f"sha256 {manifest.sha256()[:16]}" + (", all paths exist" if cfg.exists else ""),
             f"{'class':<{width}}  " + "  ".join(f"{s:>6}" for s in SPLITS)]
    for name in names:
        row = "  ".join(f"{counts[s][name]:>6}" for s in SPLITS)
        lines.append(f"{name if name is not None else '(no label)':<{width}}  {row}")
    lines.append(f"{'total':<{width}}  " + "  ".join(f"{sum(counts[s].values()):>6}" for s in SPLITS))
    if any(e.group is not None for e in manifest.entries):
        groups, splits = [e.group or "" for e in manifest.entries], [e.split for e in manifest.entries]
        per_split = {s: len({g for g, sp in zip(groups, splits) if sp == s and g}) for s in SPLITS}
        lines.append(f"{'groups':<{width}}  " + "  ".join(f"{per_split[s]:>6}" for s in SPLITS))
        lines += [f"leak: {leak_note(shared, 'train', other)}" for other in ("val", "test")
                  if (shared := shared_groups(groups, splits, "train", other))]
    return lines
