"""What the crc32c chunk checksums (issue 33) cost, on real features, beside the same work without them.

Every array stpipe writes ends each chunk in a crc32c of its compressed bytes; a read checks it. The
cost is isolated here, with and without it, side by side in one run (medians of --repeats):

- per video, write: a video's rgb chunk encoded as the store writes it (blosc zstd, then crc32c)
  against blosc alone;
- per video, read: the crc check plus blosc decoding, against decoding alone;
- the pack (no compressor): a whole read of its frames through zarr with the crc32c codec, against
  the same frames in an array without it;
- both per-video figures as a fraction of what a whole `stpipe import` costs per video (--import-ms,
  from bench_scale.py's table).

Run: `.venv/bin/python benchmarks/bench_checksums.py --store STORE.zarr [--videos 2000]` on a pooled
store with a pack (bench_scale.py leaves one in its --work folder with --keep; any extracted store).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--videos", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--import-ms", type=float, default=0.0, help="a whole import's ms per video, for the fractions")
    args = parser.parse_args()

    import zarr

    from pipeline.store import FeatureStore
    from pipeline.store.io import _codec, checksummed, crc32c, encode_chunk, read_arrays
    from pipeline.store.pack import open_pack

    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    store = FeatureStore.open(args.store)
    index = store.index()
    keys = [str(k) for k, s in zip(index["key"], index["status"]) if s == "complete"][:args.videos]
    videos = list(read_arrays(store, [f"videos/{k}/rgb" for k in keys]))
    print(f"bench_checksums: {len(videos)} videos of {args.store} ({videos[0].shape} {videos[0].dtype}); "
          f"load average {load}")
    blosc = _codec(videos[0].dtype.itemsize)
    encoded = [encode_chunk(v) for v in videos]
    compressed = [bytes(blosc.encode(np.ascontiguousarray(v))) for v in videos]

    rows = []
    with_crc = median_seconds(lambda: [encode_chunk(v) for v in videos], args.repeats)
    without = median_seconds(lambda: [bytes(blosc.encode(np.ascontiguousarray(v))) for v in videos], args.repeats)
    rows.append(("write a video's chunk", with_crc, without))

    def read_checked():
        for data in encoded:
            assert crc32c(data[:-4]) == data[-4:]
            blosc.decode(data[:-4])

    with_crc = median_seconds(read_checked, args.repeats)
    without = median_seconds(lambda: [blosc.decode(data) for data in compressed], args.repeats)
    rows.append(("read a video's chunk", with_crc, without))
    n = len(videos)
    print(f"\n{'per video':<24} {'with crc32c':>14} {'without':>14} {'cost':>10}" +
          (f" {'of an import':>14}" if args.import_ms else ""))
    for label, a, b in rows:
        extra = f" {(a - b) / n * 1e3 / args.import_ms:>13.2%}" if args.import_ms else ""
        print(f"{label:<24} {a / n * 1e6:>11.1f} us {b / n * 1e6:>11.1f} us {(a - b) / n * 1e6:>7.1f} us{extra}")

    pack = open_pack(store, "rgb")
    if pack is None:
        print("\n(no pack in this store: the pack part is skipped)")
        return
    frames = pack.frames[...]
    with tempfile.TemporaryDirectory() as tmp:
        root = zarr.open_group(str(Path(tmp) / "p.zarr"), mode="w")
        arrays = {}
        for label, codecs in (("with crc32c", checksummed(compress=False)), ("without", None)):
            arrays[label] = root.create_array(label.replace(" ", "_"), shape=frames.shape, dtype=frames.dtype,
                                              chunks=pack.frames.chunks, compressors=codecs)
            arrays[label][...] = frames
        seconds = {label: median_seconds(lambda a=a: a[...], args.repeats) for label, a in arrays.items()}
    mib = frames.nbytes / 2**20
    a, b = seconds["with crc32c"], seconds["without"]
    print(f"\npack read ({mib:.0f} MiB, {pack.frames.nchunks} chunks): with crc32c {a:.3f} s ({mib / a:.0f} MiB/s), "
          f"without {b:.3f} s ({mib / b:.0f} MiB/s): {a / b - 1:+.1%}")
    print(f"\nload average at the end {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
