# The commands README.md documents. `make env` is run by the others when needed.
PY := .venv/bin/python

.PHONY: env run test test-full bench gpu-check lint models doctor

env: .venv/.bootstrapped
.venv/.bootstrapped: scripts/bootstrap.sh requirements.txt requirements-dev.txt
	bash scripts/bootstrap.sh
	touch $@

run: env
	$(PY) scripts/comfy_server.py --port 8188

test: env
	$(PY) -m pytest tests -q

test-full: env
	$(PY) -m pytest tests -q --full

bench: env
	$(PY) -m instantid.bench

gpu-check: env
	$(PY) -m instantid.gpu_check

lint: env
	$(PY) -m ruff check .

models: env
	$(PY) scripts/download_models.py

doctor: env
	$(PY) -m instantid.doctor
