"""Benchmarks: pgdr.backup modules, run through ansible-playbook on the lab, against the raw tools in one run.

`make bench` (or `python -m bench`); see bench/README.md.
"""
