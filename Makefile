# Convenience targets; the README's two commands are the source of truth.
PY := .venv/bin/python

.PHONY: venv test lint demo bench
venv:
	python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev,opencv]'
test:
	$(PY) -m pytest -q
lint:
	.venv/bin/ruff check .
demo:
	.venv/bin/stpipe demo -o demo
bench:
	for f in benchmarks/bench_*.py; do $(PY) $$f; done
