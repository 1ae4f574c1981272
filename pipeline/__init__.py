"""stpipe: cache video features and TV-L1 flow in Zarr, then train temporal heads on them."""

import os as _os

__version__ = "0.1.0"

# torch's OpenMP threads spin for ~300,000 iterations after each parallel region before sleeping.
# In stage one the compute process shares its cores with decoder processes, and that spinning takes
# the decoders' CPU (a third of their frames on 2 cores), while the CPU forward and train-head run as
# fast with 10,000 (benchmarks/README.md, "the scaler's planar output, one-pass CPU batches, OpenMP's spin").
# libgomp reads it once, when torch is first imported: set before that (the CLI, decoder processes
# and Ray workers import this package first); a user's own setting wins.
if "GOMP_SPINCOUNT" not in _os.environ and "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ["GOMP_SPINCOUNT"] = "10000"
