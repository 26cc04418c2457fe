# `make demo`: set up .venv, get MNIST, train studies/quick.toml, print the table, write the report.
# `make test`: set up .venv (+ Chromium and PostgreSQL where apt is available), run the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test chromium postgresql bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/mnistlab data fetch
	$(BIN)/mnistlab run studies/quick.toml
	$(BIN)/mnistlab report studies/quick.toml -o reports/quick.html

test: $(BIN)/.installed chromium postgresql
	$(BIN)/mnistlab data fetch
	$(BIN)/python -m pytest -q

# Debian's Chromium renders the report in the end-to-end test; without it that test is skipped.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium could not be installed: the browser test will be skipped"; \
	  else echo "chromium not installed and apt unavailable: the browser test will be skipped"; fi; }

# Debian's PostgreSQL binaries: the store tests start a throwaway cluster from them (tests/pg_cluster.py)
# and stop it at the end; without them (or MNISTLAB_TEST_POSTGRES) those tests are skipped.
postgresql:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	      || echo "postgresql could not be installed: the PostgreSQL store tests will be skipped"; \
	  else echo "postgresql not installed and apt unavailable: the PostgreSQL store tests will be skipped"; fi; }

bench: $(BIN)/.installed
	bash benchmarks/setup_peers.sh
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) reports studies/mnistlab.db* studies/mnistlab-artifacts
