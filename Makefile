# Two commands on a fresh machine (Python >= 3.10 and make): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell $(PYTHON) -c "import hashlib,sys;print(hashlib.sha1(open('pyproject.toml','rb').read()).hexdigest()[:12])" 2>/dev/null)

.PHONY: demo test venv bench docs sample-data clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dask]'
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

NOW := $(shell date +%Y%m%d-%H%M%S)

demo: $(STAMP)
	$(BIN)/opis evaluate sample_data/model_a.parquet --name demo-model-a-$(NOW) --k 1 --k 5
	$(BIN)/opis evaluate sample_data/model_b.parquet --name demo-model-b-$(NOW) --k 1 --k 5 --eer
	$(BIN)/opis plot .opis/runs/demo-model-a-$(NOW) .opis/runs/demo-model-b-$(NOW) --kind compare \
		--title "Sample data: model A vs model B" --out .opis/demo-compare.png
	$(BIN)/opis plot --kind distributions --out .opis/demo-distributions.png
	$(BIN)/opis plot --kind det --out .opis/demo-det.png
	$(BIN)/opis report .opis/runs/demo-model-a-$(NOW) .opis/runs/demo-model-b-$(NOW) --out .opis/demo-report.html

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal

sample-data: $(STAMP)
	$(BIN)/python sample_data/generate.py

clean:
	rm -rf $(VENV) .opis .pytest_cache .hypothesis build *.egg-info

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_engine.py --n 40000 --d 512 --classes 1000
	$(BIN)/python benchmarks/bench_approx.py --n 100000 --d 128 --compare

docs: $(STAMP)
	$(BIN)/python docs/gen_cli.py
	$(BIN)/python docs/gen_errors.py
