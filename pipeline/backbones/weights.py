"""Weights: `DEFAULT`, an enum member name, `none`, or a local file — never a hanging download.

Named weights go through torchvision's own weights API. Before torchvision is asked to load them
we look for the file exactly where `torch.hub.load_state_dict_from_url` would
(`torch.hub.get_dir()/checkpoints/<basename of the url>`, i.e. `$TORCH_HOME/hub/checkpoints/...`);
when it is missing we stop with one line saying which file to put where, unless downloading was
asked for (then with a socket timeout, so a dead network fails instead of hanging).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import WeightsEnum

from pipeline.errors import BackboneError

DOWNLOAD_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ResolvedWeights:
    """What `weights=...` turned into. `label` is what the store records."""

    label: str  # enum member name, "DEFAULT" (a hub family's tag), "none", or the absolute file path
    enum: WeightsEnum | None = None  # named weights (also: the preset a file is recognised as)
    file: Path | None = None
    sha256: str | None = None  # first 16 hex digits of a local file's sha256
    hub: bool = False  # the name's own pretrained weights from a library's cache (timm, OpenCLIP)


def file_sha256(path: Path, *, chars: int = 16) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:chars]


def url_filename(member: WeightsEnum) -> str:
    return os.path.basename(urlparse(member.url).path)


def cache_path(member: WeightsEnum) -> Path:
    """Where torch.hub looks for (and would download) these weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url_filename(member)


def _members(enum_cls: type[WeightsEnum] | None) -> list[str]:
    return [] if enum_cls is None else list(enum_cls.__members__)


def resolve_weights(
    name: str,
    weights: str | os.PathLike | None,
    enum_cls: type[WeightsEnum] | None,
    *,
    hub: bool = False,
    random_default: bool = True,
) -> ResolvedWeights:
    """Turn the user's `weights` into a `ResolvedWeights`; unknown values are one-line errors.

    `hub`: the backbone's `DEFAULT` is its tag's weights in a library cache (timm, OpenCLIP).
    Backbones without named weights (the tiny test ones) treat `DEFAULT` as `none`, unless
    `random_default` is False (a library model named without pretrained weights). A local file
    whose name is one of torchvision's own file names (e.g. `mobilenet_v2-b0353104.pth`) is
    recognised as that enum member, so its preprocessing is the member's transforms.
    """
    text = "none" if weights is None else os.fspath(weights)
    if text.lower() == "none":
        return ResolvedWeights("none")
    if text == "DEFAULT" and enum_cls is None:
        if hub:
            return ResolvedWeights("DEFAULT", hub=True)
        if not random_default:
            raise BackboneError(
                f"{name} names no pretrained weights; name a tag (e.g. timm:NAME.TAG, open_clip:MODEL/TAG) "
                "or pass --weights none for a random init"
            )
        return ResolvedWeights("none")
    if text in _members(enum_cls):
        member = enum_cls[text]
        return ResolvedWeights(member.name, enum=member)  # .name resolves the DEFAULT alias
    path = Path(text).expanduser()
    if path.is_file():
        recognised = next((m for m in enum_cls if url_filename(m) == path.name), None) if enum_cls else None
        return ResolvedWeights(
            str(path.resolve()), enum=recognised, file=path.resolve(), sha256=file_sha256(path)
        )
    if os.sep in text or path.suffix in (".pt", ".pth", ".bin", ".ckpt", ".safetensors"):
        raise BackboneError(f"weights file {text} for {name} does not exist")
    default = ["DEFAULT"] if enum_cls is not None or hub or random_default else []
    known = ", ".join([*default, "none", *[m for m in _members(enum_cls) if m != "DEFAULT"]])
    raise BackboneError(f"unknown weights {text!r} for {name}; use {known} or a local file path")


def ensure_cached(name: str, member: WeightsEnum, *, download: bool = False) -> Path:
    """Make sure torchvision will find the file in the torch cache without touching the network."""
    path = cache_path(member)
    if path.is_file():
        return path
    if download:
        try:
            with socket_timeout(DOWNLOAD_TIMEOUT_S):
                member.get_state_dict(progress=False, check_hash=True)
        except Exception as error:  # any network/IO failure becomes the same one-line message
            raise BackboneError(
                f"{name} weights {member.name}: download failed ({error}); {_where(member, path)}"
            ) from None
        return path
    raise BackboneError(f"{name} weights {member.name} are not in the torch cache: {_where(member, path)}")


def _where(member: WeightsEnum, path: Path) -> str:
    return (
        f"put {path.name} (from {member.url}) at {path}, pass a local file as the weights, "
        "or allow downloading"
    )


@contextlib.contextmanager
def socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a file (.safetensors, or torch.load with weights_only=True); one wrapper
    level allowed."""
    try:
        if Path(path).suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise BackboneError(
            f"weights file {path} cannot be read as a state dict: {error}".splitlines()[0]
        ) from None
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"weights file {path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_into(
    candidates: list[nn.Module],
    state: dict[str, torch.Tensor],
    *,
    optional: set[int],
    adapt: Any = None,
    source: str,
    name: str,
) -> bool:
    """Load `state` into whichever candidate module's key names it matches best.

    Every tensor not in `optional` (ids of the classifier's tensors) must be present with the right
    shape; the classifier may be missing or of another size (a fine-tune with other classes). `adapt`
    may rewrite a tensor whose shape differs (the flow stream's first convolution).
    Returns whether the classifier was loaded too.
    """
    target = max(candidates, key=lambda m: len(state.keys() & m.state_dict().keys()))
    own = target.state_dict(keep_vars=True)
    usable: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in own:
            continue
        if adapt is not None and value.shape != own[key].shape:
            value = adapt(own[key], value)
        if value.shape == own[key].shape:
            usable[key] = value
    missing = [k for k, t in own.items() if k not in usable and id(t) not in optional]
    if missing:
        raise BackboneError(
            f"weights file {source} does not fit {name}: {len(missing)} tensors missing or of another shape, "
            f"first {missing[0]!r}"
        )
    target.load_state_dict(usable, strict=False)
    return all(k in usable for k, t in own.items() if id(t) in optional)
