.PHONY: install test lint demo bench

install:
	pip install torch==2.13.0 && pip install -e ".[dev,demo]"

test:
	python -m pytest

lint:
	ruff check morse tests benchmarks

demo:
	morse demo

bench:
	python -m benchmarks overhead
	python -m benchmarks chunked
