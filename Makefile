# Volant developer entry points. `make test` is the one command that checks everything.
.PHONY: test bootstrap lint typecheck unit pytest format schemas demo

test: bootstrap lint typecheck pytest

bootstrap:
	./scripts/bootstrap

lint:
	uv run --locked ruff check .
	uv run --locked ruff format --check .

typecheck:
	uv run --locked mypy --strict packages/pluginspec/src/pluginspec
	uv run --locked mypy packages/volantd/src/volantd

pytest:
	uv run --locked pytest

unit:
	uv run --locked pytest tests/unit

format:
	uv run --locked ruff format .
	uv run --locked ruff check --fix .

schemas:
	uv run --locked python -m pluginspec schemas docs/schemas

demo:
	@echo "make demo lands with the volar quickstart issue: it will start volantd, build"
	@echo "examples/busybox-httpd with fledge, boot it as a microVM and fetch its page."
	@exit 1
