"""Developer tools that are not part of the product: the benchmarks (`manage.py bench_stream`,
`manage.py bench_run_page`) and the latency-stamping fake model server they start.

This package lives in the checkout only: it is left out of the wheel
(`[tool.setuptools.packages.find]` in pyproject.toml) and `config.settings` installs the app
only when it is importable, so an installed Flowdeck simply has no bench commands. It may
import test code (tests.fakes); the product never imports it.
"""
