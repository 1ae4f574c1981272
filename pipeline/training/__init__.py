"""Stage two: train temporal heads on cached features (see `loop.train` and `data.load_split`)."""
