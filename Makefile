# The commands README.md documents. `make env` is run by the others when needed.
PY := .venv/bin/python

.PHONY: env env-other run test test-full bench gpu-check lint models doctor

env: .venv/.bootstrapped
.venv/.bootstrapped: scripts/bootstrap.sh requirements.txt requirements-dev.txt
	bash scripts/bootstrap.sh
	touch $@

run: env
	$(PY) scripts/comfy_server.py --port 8188

test: env
	$(PY) -m pytest tests -q

# The slow checks, then the face tests again on the other supported insightface (.venv-other: 0.7.3 if .venv has 2.x,
# 2.1 if it has 0.7.3; see scripts/other_insightface.sh).
test-full: env env-other
	$(PY) -m pytest tests -q --full
	INSTANTID_EXPECT_INSIGHTFACE=$$(cat .venv-other/.insightface) .venv-other/bin/python -m pytest -q \
		tests/test_face_analysis.py tests/test_face_keypoints.py tests/test_face_models.py tests/test_face_nodes.py \
		tests/test_face_server.py tests/test_face_store.py tests/test_doctor.py

env-other: env
	bash scripts/other_insightface.sh

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
