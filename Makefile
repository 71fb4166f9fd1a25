# The README's two commands: `make demo` and `make test`. Both run `make setup` first (idempotent).
.PHONY: setup demo test bench

setup:
	@bash scripts/setup.sh

# All three pipelines on the embedded demo data, then the team scoreboard.
demo: setup
	.venv/bin/hackathon run all
	.venv/bin/hackathon score

# The test suite. With CI=true the docker-engine tests must run, so the engine is started first.
test: setup
	@if [ "$${CI:-}" = "true" ]; then bash scripts/ensure_dockerd.sh; fi
	.venv/bin/python -m pytest -q -ra

bench: setup
	for b in bench/*.py; do echo "== $$b"; .venv/bin/python $$b || exit 1; done
