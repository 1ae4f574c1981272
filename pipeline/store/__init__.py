"""The feature store (shared/DESIGN.md, docs/store.md): one package.

    feature_store  FeatureStore: the Zarr v3 layout, provenance, resume scan, index, failures
    io             object puts and reads, keys, JSON documents, checksummed codecs
    urls           store URLs, filesystem options, remote errors
    writer         ordered per-video writes, several in flight (extract and import)
    pack           the pack: every complete video's pooled features in a few large arrays
    lease          one writing run per store
    verify         chunk checksums and repair (`stpipe verify`)

Modules of this package import each other by their own names, never through this file.
"""

from pipeline.store.feature_store import Failure, FeatureStore, config_hash, summarize, time_chunk
from pipeline.store.io import key_to_id, video_key

__all__ = ["Failure", "FeatureStore", "config_hash", "key_to_id", "summarize", "time_chunk", "video_key"]
