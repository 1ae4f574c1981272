"""One module per verb: each exposes `run(cfg) -> result`; no printing, no argument parsing."""
