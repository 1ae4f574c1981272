"""Stage one: decode videos, run backbones and TV-L1 flow, write one store group per video.

`Extractor.process(jobs)` is the work unit shared by every executor: the in-process executor
calls it on the whole manifest, the Ray executor on batches of videos inside long-lived actors.
"""

from pipeline.extraction.config import ExtractConfig
from pipeline.extraction.extractor import Extractor
from pipeline.extraction.records import VideoJob

__all__ = ["ExtractConfig", "Extractor", "VideoJob"]
