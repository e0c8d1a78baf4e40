# pgdr.backup — every set-up step lives here, so a fresh Debian 12 machine
# needs nothing but `make demo` or `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := collection

VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
COLLECTION_LINK := .collections/ansible_collections/pgdr/backup
SANITY_ROOT := .build/sanity/ansible_collections/pgdr/backup
PROBACKUP_BUILD := .build/probackup
APT_PACKAGES := openssh-server openssh-client openssh-sftp-server iproute2 acl procps git gnupg zstd lz4 postgresql-15 postgresql-client-15 python3-psycopg python3-paramiko python3-boto3 systemd cron
# headless Chromium for the test that opens the drill report's HTML page, and the font its screenshot is drawn in (tests/browser.py)
APT_PACKAGES += chromium fonts-dejavu-core
# pgBackRest (Debian 12: 2.45), which pgbackrest_stanza drives (its integration tests run the real one on the lab hosts)
# and the bench compares against (bench/pgbackrest.py)
APT_PACKAGES += pgbackrest
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: deps apt venv collection lab-up lab-down lab-status lint sanity unit probackup-real integration molecule test demo bench build clean drill-screenshot

## deps: system packages, the .venv and the collection link
deps: apt venv collection

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing$$missing"; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

## collection: make `pgdr.backup` importable from this checkout (ansible.cfg points here)
collection: venv
	@mkdir -p $(dir $(COLLECTION_LINK))
	@ln -sfn ../../.. $(COLLECTION_LINK)

lab-up: deps
	$(PY) -m tests.lab up

lab-down:
	@if [ -x $(PY) ]; then $(PY) -m tests.lab down; else echo "lab: no .venv, nothing to tear down"; fi

lab-status:
	$(PY) -m tests.lab status

lint: venv
	$(BIN)/ruff check plugins tests bench
	$(BIN)/ansible-lint --offline -q roles playbooks molecule
	$(BIN)/antsibull-changelog lint

## sanity: ansible-test insists on running inside ansible_collections/<ns>/<name>
sanity: venv
	@# ansible-test seeds pip into its venvs with a script it downloads from a host CI cannot reach:
	@# put an offline stand-in where it caches that download (see tests/sanity/pip_bootstrap.py)
	@v=$$(grep -o "pip='[0-9.]*'" $(VENV)/lib/python3.11/site-packages/ansible_test/_internal/python_requirements.py | head -1 | tr -dc '0-9.'); \
	  mkdir -p $(HOME)/.ansible/test/cache && cp tests/sanity/pip_bootstrap.py $(HOME)/.ansible/test/cache/get_pip_$${v//./_}.py
	rm -rf .build/sanity && mkdir -p $(SANITY_ROOT)
	git ls-files -co --exclude-standard | tar -cf - --ignore-failed-read -T - | tar -xf - -C $(SANITY_ROOT)
	@# a git repo of its own, or ansible-test lists files through this checkout's .git and finds none
	cd $(SANITY_ROOT) && git init -q && git add -A && $(CURDIR)/$(BIN)/ansible-test sanity --venv --python 3.11 --color no

unit: venv
	$(BIN)/pytest -q tests/unit

## probackup-real: the real pg_probackup 2.5.15, built once from ../shared/vendor into .build/probackup
## (its -dev packages pinned to the installed server, so nothing upgrades under a running lab: before lab-up)
probackup-real: apt
	bash tests/probackup_real/build.sh $(PROBACKUP_BUILD)

integration: probackup-real lab-up
	@# Three phases (tests/phases.py): tests that only touch objects of their own, two at a time (whole files per
	@# worker, so module fixtures are built once); exclusive tests, one worker per PostgreSQL version; alone tests.
	$(BIN)/pytest -q --durations=15 -n 2 --dist loadfile -m "not exclusive and not alone" tests/integration
	$(BIN)/pytest -q --durations=15 -n 2 --dist loadgroup -m exclusive tests/integration
	$(BIN)/pytest -q --durations=15 -m alone tests/integration
	@# The probackup tests once more, against the real binary (phase 1 ran them against the stand-in); they use
	@# fixed ports on primary15, so not beside the stand-in run.
	@bin=$$(bash tests/probackup_real/build.sh $(PROBACKUP_BUILD) | tail -1); \
	if [ -x "$$bin" ]; then \
	  echo "probackup tests against the real $$($$bin version)"; \
	  PG_PROBACKUP=$(CURDIR)/$$bin $(BIN)/pytest -q --durations=5 tests/integration/test_probackup.py; \
	else echo "probackup tests against the real pg_probackup: $$bin"; fi

molecule: lab-up
	@# Two scenarios at a time (each works on objects of its own: its database, job names, throwaway clusters on their
	@# own ports), each into its own log; the log of a scenario that failed is cut to Ansible's failure lines and
	@# printed last, where a CI log's tail shows them (molecule's recap hides which task failed and why).
	@# molecule keeps a scenario's state ("prepared") in ~/.ansible/tmp under a name taken from this folder's
	@# basename, so another checkout named alike (CI's clone) would skip prepare: one fresh state per run, here
	@mkdir -p .build
	@ls molecule | xargs -P 2 -I{} bash -c ' \
	  scenario={}; rm -rf .build/molecule/$$scenario; start=$$(date +%s); \
	  if MOLECULE_EPHEMERAL_DIRECTORY=$(CURDIR)/.build/molecule/$$scenario $(BIN)/molecule test -s $$scenario > .build/molecule-$$scenario.log 2>&1; \
	  then echo "molecule $$scenario: passed in $$(( $$(date +%s) - start )) s ($$(grep -c "^TASK" .build/molecule-$$scenario.log) tasks)"; \
	  else echo "molecule $$scenario FAILED after $$(( $$(date +%s) - start )) s; its failing tasks (whole log: .build/molecule-$$scenario.log):"; \
	    sed "s/\x1b\[[0-9;]*m//g" .build/molecule-$$scenario.log | grep -E -A8 "^(fatal|failed):|FAILED!|ERROR" | cut -c1-400 | tail -60; exit 1; fi'

test: deps lint sanity unit integration molecule

demo: lab-up
	@mkdir -p .build  # the drill report's textfile goes there (its folder must exist, as node_exporter's does)
	$(BIN)/ansible-playbook playbooks/demo.yml

## bench: modules through ansible-playbook vs the raw tools, and the fleet drill on 1, 2, 4, 8 pairs (the lab grown to 8 and put
## back), one run (BENCH_SCALE=70, BENCH_REPEAT, BENCH_ONLY; see bench/README.md)
bench: lab-up
	$(PY) -m bench

## drill-screenshot: docs/images/drill-report.png, the drill report's HTML page as headless Chromium renders it, from a run's
## report.json and its report folder's history (REPORT=<folder>/<run id>/report.json; without REPORT, the sample fleet)
drill-screenshot: apt collection
	$(PY) -m tests.drill_screenshot --out docs/images/drill-report.png $(REPORT)

## build: the Galaxy tarball, installed into .build/ to prove it works the same
build: venv
	rm -rf .build/dist && mkdir -p .build/dist
	$(BIN)/ansible-galaxy collection build --force --output-path .build/dist .
	$(BIN)/ansible-galaxy collection install --force -p .build/installed .build/dist/pgdr-backup-*.tar.gz

clean: lab-down
	rm -rf .build .collections .ruff_cache .pytest_cache tests/output
