"""The sentinel: records whether anything named by a hostile payload was imported or run.

`tests.fakes.sentinel_target` flips `STATE["imported"]` when imported and `STATE["fired"]`
when its `fire()` runs; payloads name it as a component key, an import path, a pickle
reduce target. `watch()` also trips on LangChain's load/loads (the revivers; importing
`langchain_core.load` itself is fine: LangChain's tracing uses its `dumpd`), pickle.loads
and importlib.import_module / __import__ of modules a payload names.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import pickle
import sys
from collections.abc import Iterator
from typing import Any

import pytest

STATE: dict[str, Any] = {"imported": False, "fired": False, "tripped": []}
TARGET = "tests.fakes.sentinel_target"
FORBIDDEN_MODULES = {
    TARGET,
    "subprocess",
    "pickle",
    "marshal",
    "shelve",
    "jinja2",
    "chevron",
    "ctypes",
    "posix",
    "pty",
}


def reset() -> None:
    STATE.update(imported=False, fired=False, tripped=[])
    sys.modules.pop(TARGET, None)


class PickleBomb:
    """Unpickling this calls `tests.fakes.sentinel_target.fire` (importing it first)."""

    def __reduce__(self) -> tuple[Any, tuple]:
        import tests.fakes.sentinel_target as target

        return (target.fire, ())


def pickle_bomb_bytes() -> bytes:
    data = pickle.dumps(PickleBomb())
    reset()  # building the blob imported the target; forget that
    return data


@contextlib.contextmanager
def watch() -> Iterator[dict[str, Any]]:
    """Trip on any import of a forbidden module or any deserialiser call while active."""
    real_import = builtins.__import__
    real_import_module = importlib.import_module

    def trip(what: str) -> None:
        STATE["tripped"].append(what)

    def guarded_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name in FORBIDDEN_MODULES or name.startswith(TARGET):
            trip(f"__import__({name})")
        return real_import(name, *args, **kwargs)

    def guarded_import_module(name: str, package: str | None = None) -> Any:
        if name in FORBIDDEN_MODULES or name.startswith(TARGET):
            trip(f"import_module({name})")
        return real_import_module(name, package)

    def tripwire(label: str) -> Any:
        def wire(*args: Any, **kwargs: Any) -> Any:
            trip(label)
            raise AssertionError(f"{label} was called on tenant data")

        return wire

    import langchain_core.load as lc_load

    lc_load_mod = sys.modules["langchain_core.load.load"]

    mp = pytest.MonkeyPatch()
    mp.setattr(builtins, "__import__", guarded_import)
    mp.setattr(importlib, "import_module", guarded_import_module)
    mp.setattr(pickle, "loads", tripwire("pickle.loads"))
    mp.setattr(pickle, "load", tripwire("pickle.load"))
    mp.setattr(lc_load, "load", tripwire("langchain load()"))
    mp.setattr(lc_load, "loads", tripwire("langchain loads()"))
    mp.setattr(lc_load_mod, "load", tripwire("langchain load()"))
    mp.setattr(lc_load_mod, "loads", tripwire("langchain loads()"))
    try:
        yield STATE
    finally:
        mp.undo()


def assert_untouched() -> None:
    assert STATE["imported"] is False, "the sentinel module was imported"
    assert STATE["fired"] is False, "the sentinel function ran"
    assert STATE["tripped"] == [], f"forbidden calls: {STATE['tripped']}"
    assert TARGET not in sys.modules
