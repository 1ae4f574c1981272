"""Stage one's decoding: videos in, uint8 view crops (and TV-L1 fields) out, in typed records.

    core.py     one video: probe, demux, decode, frame selection, resize in FFmpeg's scaler, crops
                (numpy), CPU flow -> `Opened`, `Frames`, `Ended` / `Failed` records
    pool.py     where that runs: a pool of decoder processes writing into a shared-memory ring
                (`ProcessDecoders`), or threads of the compute process (`ThreadDecoders`)
    worker.py   the decoder process's main loop (`python -m pipeline.decoding.worker`)
    gpu.py      GPU decoding in the compute process (`GpuDecoders`, `--decoder`): JPEG frame folders
                with nvJPEG, video files with NVDEC (PyNvVideoCodec, the `nvdec` extra), the CPU
                pools above for what they cannot decode

Nothing a decoder process runs imports torch unless flow runs in it: a decoder process starts in a
fraction of a second and holds tens of MB, not the compute process's torch.
"""
