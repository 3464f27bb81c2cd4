"""What ships: the wheel holds the product's packages (with ops) and no scaffolding — no
benchmarks (devtools/), no tests or test fakes — and no shipped module imports either. From
a checkout the dev-only app is installed and its commands work; without it, Django starts
and simply has no bench commands."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from django.conf import settings
from django.core.management import get_commands
from setuptools import find_packages

ROOT = Path(__file__).resolve().parent.parent
SCAFFOLDING = {"tests", "devtools"}


def shipped_packages() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    find = config["tool"]["setuptools"]["packages"]["find"]
    return find_packages(
        where=ROOT, include=find.get("include", ["*"]), exclude=find.get("exclude", [])
    )


def test_the_wheel_ships_the_product_and_no_scaffolding():
    packages = shipped_packages()
    tops = {name.split(".")[0] for name in packages}
    assert tops == {
        "config", "accounts", "flows", "runs", "chat", "usage", "audit", "ops", "knowledge"
    }
    assert "ops.management.commands" in packages  # `manage.py serve`


def _project_apps() -> set[str]:
    """The INSTALLED_APPS that are this project's own packages (not libraries)."""
    return {
        app.split(".")[0]
        for app in settings.INSTALLED_APPS
        if (ROOT / app.split(".")[0] / "apps.py").exists()
    }


def test_every_product_app_is_shipped_and_type_checked():
    # A new app added to INSTALLED_APPS but not to the wheel's packages would work from a
    # checkout and be missing from an install; one left out of mypy's files goes unchecked.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shipped = {name.split(".")[0] for name in shipped_packages()}
    checked = set(config["tool"]["mypy"]["files"])
    apps = _project_apps()
    assert apps - {"devtools"} <= shipped
    assert apps | {"config"} <= checked


def test_no_shipped_module_imports_test_or_dev_code():
    offenders = []
    for package in shipped_packages():
        for path in (ROOT / package.replace(".", "/")).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                offenders += [
                    f"{path.relative_to(ROOT)}: {name}"
                    for name in names
                    if name.split(".")[0] in SCAFFOLDING
                ]
    assert offenders == []


def test_a_checkout_has_the_bench_commands():
    commands = get_commands()
    assert commands["bench_stream"] == "devtools"
    assert commands["bench_run_page"] == "devtools"
    assert commands["serve"] == "ops"


def test_without_the_dev_app_django_starts_and_has_no_bench_commands():
    # As in an installed wheel: `devtools` cannot be imported at all.
    code = textwrap.dedent(
        """
        import json, sys
        from importlib.abc import MetaPathFinder

        class NoDevtools(MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "devtools" or name.startswith("devtools."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, NoDevtools())
        import django
        django.setup()
        from django.conf import settings
        from django.core.management import get_commands
        commands = get_commands()
        print(json.dumps({"apps": settings.INSTALLED_APPS,
                          "bench": sorted(c for c in commands if c.startswith("bench")),
                          "serve": commands.get("serve")}))
        """
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.test_settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert "devtools" not in seen["apps"] and "ops" in seen["apps"]
    assert seen["bench"] == []
    assert seen["serve"] == "ops"


def test_the_front_end_exposes_no_test_hook_on_window():
    # The browser tests drive the page (its UI, its own WebSocket), not a global handle on
    # the protocol client and the run store.
    bundle = (ROOT / "static" / "build" / "editor.js").read_text()
    assert "replay_finished" in bundle  # the built island with its protocol client
    assert re.search(r"window\.flowdeck\s*=", bundle) is None
    sources = [p.read_text() for p in (ROOT / "frontend" / "src").rglob("*.ts*")]
    assert sources and not [s for s in sources if re.search(r"\.flowdeck\s*=", s)]
