# nbjob: `make demo` runs an example bundle end to end; `make test` sets up and runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# nbjob alone (what `make demo` needs: its notebook imports nothing else); STAMP implies it.
CORE_STAMP := $(VENV)/.installed-core
APT_GET ?= apt-get
# Storage servers the contract tests start on loopback (npm packages; pinned).
NPM_DIR   := .npm
NPM_PKGS  := s3rver@3.7.1 azurite@3.37.0
NPM_STAMP := $(NPM_DIR)/.installed-s3rver-3.7.1-azurite-3.37.0

.PHONY: help venv npm-deps system-deps lint docs test test-fast test-e2e demo demo-s3 bench bench-gpu bench-image images clean

help:
	@echo "make demo   - install nbjob only, pack and run the example bundle; results in ./demo-output"
	@echo "make demo-s3 - the same against a local S3 server: pack, upload, run, stop midway, resume"
	@echo "make test   - install everything the tests need, lint, type-check, run all tests"
	@echo "              (15-40 min, several GB; starts real Slurm, Ray and podman containers)"
	@echo "make docs   - build the documentation site into ./site (mkdocs, warnings as errors)"
	@echo "make test-fast - the in-process tests only (no nbjob, kernel or server started; seconds)"
	@echo "make test-e2e  - the tests that start nbjob, kernels or servers (no images, no clusters)"
	@echo "make bench  - nbjob vs papermill vs nbclient, artifact upload vs aws s3 sync, the resource sampler's cost; writes BENCHMARKS.md"
	@echo "make bench-gpu - a torch notebook on the GPU through nbjob vs the same code as a script (needs a CUDA GPU)"
	@echo "make bench-image - the torch image's first-cell time: its entrypoint vs a script in it (builds the CPU image)"
	@echo "make images - build nbjob-base, then the torch and TF images on it (docker, else podman)"
	@echo "              (CPU variant without a registry: make images IMAGES_FLAGS=--cpu)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench,docs]'
	touch $@ $(CORE_STAMP)

$(CORE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e .
	touch $@

venv: $(STAMP) npm-deps

# s3rver and Azurite for tests/storage (skipped with a note where npm is missing).
$(NPM_STAMP):
	@if command -v npm >/dev/null; then \
	  npm install --prefix $(NPM_DIR) --no-audit --no-fund --no-save --silent $(NPM_PKGS) \
	    && touch $@; \
	else echo "npm not found: the s3rver and Azurite storage tests will be skipped"; fi

npm-deps: $(NPM_STAMP)

# Debian packages the tests need, those missing only (podman builds and runs the images; headless chromium
# looks at the HTML reports; tini is the init the orphan tests run under; slurm-wlm — munged, slurmctld, slurmd and the clients — runs the
# Slurm cluster tests); root only.
system-deps:
	@missing=""; \
	for need in podman:podman runc:runc debootstrap:debootstrap chromium:chromium tini:tini \
	    slurmctld:slurm-wlm slurmd:slurm-wlm munged:slurm-wlm R:r-cran-irkernel; do \
	  command -v $${need%%:*} >/dev/null && continue; \
	  case " $$missing " in *" $${need#*:} "*) ;; *) missing="$$missing $${need#*:}" ;; esac; \
	done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v $(APT_GET) >/dev/null; then \
	  echo "installing$$missing"; \
	  $(APT_GET) update -qq && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq \
	    --no-install-recommends $$missing >/dev/null; \
	fi

lint: venv
	$(BIN)/ruff check executor tests bench
	$(BIN)/ruff format --check executor tests bench
	$(BIN)/mypy

# The manual (docs/, mkdocs.yml); --strict: a warning (a broken link or anchor) is an error.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site

test: venv system-deps lint docs
	$(BIN)/pytest -ra --durations=25

# The in-process layer only: no nbjob, kernel or server process is started (seconds). Tests that
# start one are marked e2e automatically (tests/support/e2e.py); `make test` runs them all.
test-fast: venv
	$(BIN)/pytest -ra -m "not e2e"

# The end-to-end layer without the image builds and the Slurm / Ray cluster tests.
test-e2e: venv
	$(BIN)/pytest -ra -m "e2e and not images and not clusters"

# nbjob only, not the test and bench tooling; the bundle stays, so the command printed at the
# end runs it again.
demo: $(CORE_STAMP)
	rm -rf demo-output demo-output.zip
	$(BIN)/nbjob pack examples/demo/demo.ipynb -o demo-output.zip >/dev/null
	$(BIN)/nbjob run demo-output.zip --output demo-output --log-format console \
	  -p epochs 30; \
	  code=$$?; \
	  echo; echo "exit code $$code; results in $(CURDIR)/demo-output:"; ls -l demo-output; \
	  echo; echo "run the bundle again (a new attempt in the same folder):"; \
	  echo "  $(BIN)/nbjob run demo-output.zip --output demo-output -p epochs 30"; \
	  exit $$code

# The README's local-S3 walkthrough: a local S3-compatible server (moto), pack and upload, a run
# from s3:// to s3:// stopped midway, the same command again resuming it.
demo-s3: $(CORE_STAMP)
	$(BIN)/pip install -q 'moto[server]'
	rm -f steps.zip moto.log
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo-s3/walkthrough.sh

bench: venv
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/artifacts.py $(ARTIFACTS_BENCH_ARGS)
	$(BIN)/python bench/resources.py $(RESOURCES_BENCH_ARGS)
	$(BIN)/python bench/refresh.py $(REFRESH_BENCH_ARGS)
	$(BIN)/python bench/uploads.py $(UPLOADS_BENCH_ARGS)

# On a machine with a CUDA GPU and torch only (no CI machine has one): writes bench/gpu.json
# and the "GPU" section of BENCHMARKS.md.
bench-gpu: venv
	$(BIN)/python bench/gpu.py $(GPU_BENCH_ARGS)

# The CPU torch image (built here with podman, a few minutes the first time) through its
# entrypoint vs a script in it: bench/image.json and the image's section of BENCHMARKS.md.
bench-image: venv
	bash tests/images/build.sh --cpu torch
	$(BIN)/python bench/image.py $(IMAGE_BENCH_ARGS)

images: venv
	bash tests/images/build.sh $(IMAGES_FLAGS)

clean:
	rm -rf $(VENV) $(NPM_DIR) site demo-output demo-output.zip steps.zip moto.log .pytest_cache .mypy_cache .ruff_cache
