# Volant developer entry points. `make test` is the one command that checks everything.
.PHONY: test bootstrap lint typecheck unit pytest format schemas docs demo demo-stop

# uv as a command, or as a module where pip put it somewhere not yet on PATH.
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)

test: bootstrap lint typecheck pytest

bootstrap:
	./scripts/bootstrap

lint:
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .

typecheck:
	$(UV) run --locked mypy --strict packages/pluginspec/src/pluginspec
	$(UV) run --locked mypy packages/volantd/src/volantd packages/fledge/src/fledge packages/kestrel/src/kestrel packages/volar/src/volar

pytest:
	$(UV) run --locked pytest

unit:
	$(UV) run --locked pytest tests/unit

format:
	$(UV) run --locked ruff format .
	$(UV) run --locked ruff check --fix .

schemas:
	$(UV) run --locked python -m pluginspec schemas docs/schemas

# The CLI and configuration references (docs/cli.md, docs/reference.md) from the code.
docs: schemas
	$(UV) run --locked python scripts/gen_docs.py

# The quickstart: volantd in the background (state in .demo/), busybox-httpd built, installed
# and booted, its page fetched. `make demo-stop` stops it all. See docs/getting-started.md.
demo:
	./scripts/demo

demo-stop:
	./scripts/demo stop
