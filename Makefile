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

# GPU host (benchmarks/gpu/run.sh): wheels it lacks, for CPython 3.12 manylinux x86_64. Two folders
# because the device tool sends at most 64 MiB a call: PyAV + zarr (~46 MB) and opencv-contrib (~56 MB).
GPU_PIP := $(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
VERSION_OF = $$($(PY) -c 'import importlib.metadata as m; print(m.version("$(1)"))')
.PHONY: gpu-wheels gpu-inputs gpu-dry-run gpu-nvdec-wheel gpu-inputs-decode
gpu-wheels:
	rm -rf .whl-gpu .whl-ocv
	$(GPU_PIP) -d .whl-gpu "zarr==$(call VERSION_OF,zarr)" "numcodecs==$(call VERSION_OF,numcodecs)" \
		"av==$(call VERSION_OF,av)" "donfig==$(call VERSION_OF,donfig)" "google-crc32c==$(call VERSION_OF,google-crc32c)"
	# 4.11 is the newest contrib build under the limit that loads with numpy 2 (5.x is 73 MB)
	$(GPU_PIP) -d .whl-ocv "opencv-contrib-python-headless==4.11.0.86"
	du -sh .whl-gpu .whl-ocv
# --decoder nvdec on the GPU host: PyNvVideoCodec for CPython 3.12, slimmed to what it runs (27 -> 10 MB;
# benchmarks/gpu/slim_wheel.py) so that it travels beside .whl-gpu (46 MB) within the 64 MiB a call
gpu-nvdec-wheel:
	rm -rf .whl-nvdec
	$(GPU_PIP) -d .whl-nvdec "PyNvVideoCodec==2.2.4"
	$(PY) benchmarks/gpu/slim_wheel.py .whl-nvdec/*.whl
	du -sh .whl-nvdec
# the GPU decoding check's inputs: the shared clips but vtest.avi (8 MB), so that .whl-gpu, .whl-nvdec,
# these and the repo travel together (run.sh --parts gpudecode,gpudecodetests; benchmarks/README.md)
gpu-inputs-decode:
	rm -rf .gpu-inputs-decode && mkdir -p .gpu-inputs-decode/videos
	cd "$${STPIPE_ASSETS:-../shared/assets}"/videos && cp carphone_pristine.mp4 tree.avi Megamind_bugy.avi \
		"$(CURDIR)"/.gpu-inputs-decode/videos/
	du -sh .gpu-inputs-decode
gpu-inputs:
	rm -rf .gpu-inputs && mkdir -p .gpu-inputs/videos
	cp "$${STPIPE_ASSETS:-../shared/assets}"/videos/* .gpu-inputs/videos/
	$(PY) benchmarks/gpu/bench_flow_gpu.py --prepare .gpu-inputs/pairs.npz
	du -sh .gpu-inputs
gpu-dry-run:
	PYTHON=$(PY) bash benchmarks/gpu/run.sh gpu-results-dry --dry-run
