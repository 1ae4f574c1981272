"""stpipe: cache video features and TV-L1 flow in Zarr, then train temporal heads on them."""

__version__ = "0.1.0"
