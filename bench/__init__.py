"""Benchmarks: run them (`python -m bench.run_all`), never collected by pytest.

Every benchmark prints ratios measured side by side in one run (the machine is shared and
noisy), repeated a few times with the median reported, plus the absolute times.
"""
