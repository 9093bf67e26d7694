.PHONY: install test lint demo bench

install:
	pip install torch==2.13.0 && pip install -e ".[dev]"

test:
	python -m pytest

lint:
	ruff check morse tests

demo:
	morse demo

bench:
	python -m morse.bench overhead
	python -m morse.bench chunked
