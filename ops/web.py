"""The web process's entry point: `python -m ops.web <daphne arguments>`.

It prepares the process for serving (config.runtime: the switch interval, the eager
imports, the ASGI application loaded, then the start-up heap frozen) and then hands over to
Daphne's own command line, so every Daphne option works as documented. This is done here,
when a server starts, and not when config.asgi is imported: any process that imports the
application (the test suite, a shell, a management command) must not inherit a frozen heap
or a changed switch interval.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import django

# daphne.cli imports daphne.server, which installs Twisted's asyncio reactor: before
# anything else (the application's imports) can import Twisted.
from daphne.cli import CommandLineInterface
from daphne.server import Server
from daphne.utils import import_by_path

from config.runtime import prepare_server_process
from ops.logs import QuietProbes


class FlowdeckServer(Server):
    """Daphne's server, its access log without the health probes' lines (ops.logs)."""

    def __init__(self, *args: Any, action_logger: Any = None, **kwargs: Any) -> None:
        if action_logger is not None:
            action_logger = QuietProbes(action_logger)
        super().__init__(*args, action_logger=action_logger, **kwargs)


def prepare(argv: list[str]) -> CommandLineInterface:
    """Set Django up, load the application named in `argv` and prepare the process; the
    returned CLI then runs Daphne with the same `argv`."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup(set_prefix=False)
    cli = CommandLineInterface()
    cli.server_class = FlowdeckServer
    args = cli.parser.parse_args(argv)
    # Loaded before the freeze, so the application's own modules are in the frozen heap
    # (Daphne imports it again from sys.modules).
    prepare_server_process(warm_up=lambda: import_by_path(args.application))
    return cli


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    prepare(argv).run(argv)


if __name__ == "__main__":
    main()
