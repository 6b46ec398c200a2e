# NOTE (bench helper): this file held no targets yet, so only `bench` is added here, as the brief
# allowed; the Makefile's owner may move or restyle this block freely.
.PHONY: bench
bench:  ## nbjob vs papermill vs jupyter execute -> BENCHMARKS.md, bench/results.json (BENCH_ARGS=--quick)
	test -x .venv/bin/python || python3 -m venv .venv
	.venv/bin/python -m pip install -q -e '.[test,bench]'
	.venv/bin/python bench/run.py $(BENCH_ARGS)
