"""Stage one: decode videos, run backbones and TV-L1 flow, write one store group per video.

`Extractor.process(jobs)` is the work unit shared by every executor: the in-process executor
calls it on the whole manifest, the Ray executor on batches of videos inside long-lived actors.

`Extractor` (and with it torch) is imported on first use: a re-run of a finished extraction, the
CLI's config parsing and the Ray driver need the config and the job records only.
"""

from pipeline.extraction.config import ExtractConfig
from pipeline.extraction.records import VideoJob

__all__ = ["ExtractConfig", "Extractor", "VideoJob"]


def __getattr__(name: str):
    if name == "Extractor":
        from pipeline.extraction.extractor import Extractor

        return Extractor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
