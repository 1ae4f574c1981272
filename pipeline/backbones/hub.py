"""Weights in a library's own cache: the Hugging Face hub cache (timm, OpenCLIP) or torch hub's.

Looking a file up never touches the network (`try_to_load_from_cache` reads the cache folders
only), so a filled cache works offline (HF_HUB_OFFLINE=1 or no network at all). A missing file is
one line saying what to fetch, unless downloading was asked for (then through the library's own
downloader, with a socket timeout so a dead network fails instead of hanging).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from pipeline.backbones.weights import DOWNLOAD_TIMEOUT_S, socket_timeout
from pipeline.errors import BackboneError


@dataclass(frozen=True)
class HubWeights:
    """Pretrained weights found through a library's own cache.

    `files` are tried in order (a safetensors file before its .bin twin, as the libraries do):
    `hf:<repo>/<filename>` for the Hugging Face hub, `url:<url>` for torch hub's checkpoint folder.
    """

    label: str  # e.g. "timm/vit_base_patch16_clip_224.openai"
    files: tuple[str, ...]

    def cached(self) -> Path | None:
        return find_cached(self.files)

    def locate(self, name: str, *, download: bool = False) -> Path:
        return locate(name, self, download=download)


def _split_hf(spec: str) -> tuple[str, str]:
    repo, _, filename = spec.removeprefix("hf:").rpartition("/")
    return repo, filename


def url_cache_path(url: str) -> Path:
    """Where torch hub keeps (and would download) a checkpoint URL."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _cached_one(spec: str) -> Path | None:
    if spec.startswith("url:"):
        path = url_cache_path(spec[4:])
        return path if path.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo, filename = _split_hf(spec)
    found = try_to_load_from_cache(repo, filename)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def find_cached(files: tuple[str, ...]) -> Path | None:
    for spec in files:
        path = _cached_one(spec)
        if path is not None:
            return path
    return None


def where(files: tuple[str, ...]) -> str:
    """Human-readable places a file would be taken from."""
    out = []
    for spec in files:
        if spec.startswith("url:"):
            out.append(f"{spec[4:]} -> {url_cache_path(spec[4:])}")
        else:
            repo, filename = _split_hf(spec)
            out.append(f"Hugging Face hub {repo} file {filename}")
    return " or ".join(out)


def locate(name: str, weights: HubWeights, *, download: bool = False) -> Path:
    found = find_cached(weights.files)
    if found is not None:
        return found
    if not download:
        raise BackboneError(
            f"{name} weights ({weights.label}) are not in the cache: {where(weights.files)}; fill the cache "
            "(e.g. `huggingface-cli download REPO FILE` on a machine with network), pass a local file as "
            "the weights, or allow downloading"
        )
    errors = []
    with socket_timeout(DOWNLOAD_TIMEOUT_S):
        for spec in weights.files:
            try:
                if spec.startswith("url:"):
                    path = url_cache_path(spec[4:])
                    path.parent.mkdir(parents=True, exist_ok=True)
                    torch.hub.download_url_to_file(spec[4:], str(path), progress=False)
                    return path
                from huggingface_hub import hf_hub_download

                repo, filename = _split_hf(spec)
                return Path(hf_hub_download(repo, filename))
            except Exception as error:  # noqa: BLE001 - any network/IO failure: try the next file
                errors.append(f"{spec}: {(str(error).splitlines() or [type(error).__name__])[0]}")
    raise BackboneError(f"{name} weights ({weights.label}): download failed ({'; '.join(errors)})")
