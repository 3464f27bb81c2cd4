"""Process tuning (config.runtime: a frozen start-up heap, a short GIL switch interval) is
made when a server process starts, never when the application is imported: the test suite,
a shell or a management command that imports config.asgi keeps the interpreter's defaults.
Each case runs in a fresh interpreter, so nothing this test process did can mask it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ops.processes import free_port, web_command

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SWITCH_INTERVAL = 0.005  # CPython's


def python(code: str, *, timeout: float = 180) -> dict:
    """Run `code` in a fresh interpreter at the repository root; it prints one JSON line."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.test_settings"}
    env.pop("FLOWDECK_SWITCH_INTERVAL_MS", None)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_asgi_application_leaves_the_process_as_it_was():
    seen = python(
        """
        import gc, json, sys
        before = (gc.get_freeze_count(), sys.getswitchinterval())
        import config.asgi
        import config.celery  # the worker's signals are connected, not fired
        after = (gc.get_freeze_count(), sys.getswitchinterval())
        print(json.dumps({"before": before, "after": after,
                          "application": hasattr(config.asgi, "application")}))
        """
    )
    assert seen["application"]
    assert seen["before"] == [0, DEFAULT_SWITCH_INTERVAL]
    assert seen["after"] == seen["before"]


def test_the_web_entry_point_prepares_the_process_before_it_serves():
    # The real entry point (ops.web.main, what `python -m ops.web` runs) serving on a port;
    # a watcher thread reports the process's state once it listens, then ends it.
    port = free_port()
    argv = web_command(host="127.0.0.1", port=port)[3:]  # what follows `python -m ops.web`
    seen = python(
        f"""
        import gc, json, os, socket, sys, threading, time

        def report():
            while True:
                try:
                    socket.create_connection(("127.0.0.1", {port}), 1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            print(json.dumps({{
                "frozen": gc.get_freeze_count(),
                "switch_interval": sys.getswitchinterval(),
                "application_loaded": "config.asgi" in sys.modules,
            }}), flush=True)
            os._exit(0)

        threading.Thread(target=report, daemon=True).start()
        from ops.web import main
        main({argv!r})
        """
    )
    assert seen["application_loaded"]
    assert seen["frozen"] > 10_000  # Django, LangChain, the application: the start-up heap
    assert seen["switch_interval"] == pytest.approx(0.001)  # FLOWDECK_SWITCH_INTERVAL_MS=1
