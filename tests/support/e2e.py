"""The ``e2e`` marker, applied automatically, and the guard that keeps the fast layer honest.

The fast layer (``make test-fast``: ``pytest -m "not e2e"``) runs in-process tests only: it
starts no process — no ``nbjob``, no kernel, no server. A test is e2e when

1. it is marked ``e2e`` (``pytestmark = pytest.mark.e2e`` in its module, or on it), or
   ``images`` / ``clusters``;
2. one of its fixtures, or its own code, starts processes: it refers — directly or through
   functions and classes of the test code (under ``testpaths``) — to a helper marked with
   ``@starts_processes`` (``run_nbjob``, ``start_nbjob``, ``start_server``, the server
   fixtures...), to nbjob's own kernel starters (``Job``, ``LocalKernel``) or to the standard
   library's process starters (``subprocess.Popen`` / ``run``, ``os.system``...).

So a new test that calls the support helpers is e2e with no edit. The rule is a static
over-approximation; a test it misses (say, a fixture that picks a server by
``request.getfixturevalue``) would start a process from the fast layer, and the guard stops
that: an audit hook (``sys.addaudithook``) fails any test not marked e2e that starts a process,
with a message saying how to mark it. The guard holds in every run, ``make test`` included, so
the rule cannot rot silently.
"""

from __future__ import annotations

import importlib
import inspect
import platform
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

__all__ = ["MARK", "FastLayerError", "code_roots", "e2e_reason", "starts_processes"]

MARK = "e2e"
# Markers that imply e2e (image builds, cluster jobs).
IMPLIED_BY = ("images", "clusters")
TESTS = Path(__file__).resolve().parents[1]
_FLAG = "__starts_processes__"
# nbjob's in-process kernel starters and the standard library's process starters.
_KNOWN_STARTERS = (
    "nbjob.job:Job",
    "nbjob.start:run",
    "nbjob.start:launch",
    "nbjob.early:start",
    "nbjob:run",
    "nbjob.kernel:open_session",
    "nbjob.kernel.local:LocalKernel",
    "nbjob.renderer:Renderer",
    "subprocess:Popen",
    "subprocess:run",
    "subprocess:call",
    "subprocess:check_call",
    "subprocess:check_output",
    "subprocess:getoutput",
    "subprocess:getstatusoutput",
    "os:system",
    "os:popen",
    "os:fork",
    "os:posix_spawn",
    "os:posix_spawnp",
    "asyncio:create_subprocess_exec",
    "asyncio:create_subprocess_shell",
    "multiprocessing:Process",
)
# Audit events (PEP 578) raised when a process starts.
_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.posix_spawn", "os.fork", "os.forkpty", "os.exec"}
)

F = TypeVar("F")


def starts_processes(obj: F) -> F:
    """Mark a helper (function, class or fixture function) as starting processes.

    Tests that use it, directly or through their own helpers and fixtures, are e2e. Put it
    below ``@pytest.fixture``, so that it marks the fixture's own function.
    """
    setattr(obj, _FLAG, True)
    return obj


class FastLayerError(RuntimeError):
    """A test outside the e2e layer started a process."""


# -- the rule -----------------------------------------------------------------------------------


def _known() -> dict[int, str]:
    """id() -> name of every known starter that can be imported here."""
    found: dict[int, str] = {}
    for spec in _KNOWN_STARTERS:
        module, _, attr = spec.partition(":")
        try:
            found[id(getattr(importlib.import_module(module), attr))] = spec.replace(":", ".")
        except (ImportError, AttributeError):
            continue  # renamed or absent: the guard still catches what it starts
    return found


def _defined_under(obj: Any, roots: tuple[Path, ...]) -> bool:
    """Whether ``obj`` (a function or class) is defined in a file under one of ``roots``."""
    try:
        source = inspect.getsourcefile(obj)
    except TypeError:
        return False
    return source is not None and any(Path(source).resolve().is_relative_to(r) for r in roots)


def code_roots(config: pytest.Config) -> tuple[Path, ...]:
    """Where test code lives: the ``testpaths`` (else the rootdir), and this package's tests/."""
    paths = [config.rootpath / p for p in config.getini("testpaths")] or [config.rootpath]
    return (*(p.resolve() for p in paths), TESTS)


def _codes(code: types.CodeType) -> Iterator[types.CodeType]:
    """``code`` and every code object nested in it (lambdas, inner functions, classes)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


class _Scan:
    """Looks through test code for a reference to a process starter (memoised per object)."""

    def __init__(self, roots: tuple[Path, ...] = (TESTS,)) -> None:
        self.roots = roots  # test code is read through; other code (nbjob, libraries) is not
        self.known = _known()
        self.memo: dict[int, str | None] = {}

    def starter(self, obj: Any) -> str | None:
        """The name of the starter ``obj`` is, or None."""
        if getattr(obj, _FLAG, False) is True:
            return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"
        return self.known.get(id(obj))

    def find(self, obj: Any) -> str | None:
        """A starter that ``obj`` is or (through test code) refers to, or None."""
        obj = getattr(obj, "__func__", obj)
        found = self.starter(obj)  # before unwrapping: the mark may sit on a wrapper
        obj = inspect.unwrap(obj)
        found = found or self.starter(obj)
        if found or not _defined_under(obj, self.roots):
            return found
        key = id(obj)
        if key not in self.memo:
            self.memo[key] = None  # recursion guard
            self.memo[key] = self._search(obj)
        return self.memo[key]

    def _search(self, obj: Any) -> str | None:
        if inspect.isclass(obj):
            return self._first(v for v in vars(obj).values() if callable(v))
        code = getattr(obj, "__code__", None)
        if code is None:
            return None
        names = {name for c in _codes(code) for name in c.co_names}
        scope: dict[str, Any] = getattr(obj, "__globals__", {})
        values = [scope[n] for n in names if n in scope]
        cells = [c.cell_contents for c in obj.__closure__ or () if _filled(c)]
        # ``subprocess.run``, ``support.run_nbjob``, ``from nbjob.job import Job`` in a function
        modules = [v for v in values if isinstance(v, types.ModuleType)]
        modules += [sys.modules[n] for n in names if n in sys.modules]
        for module in modules:
            found = self._first(getattr(module, n, None) for n in names)
            if found:
                return found
        return self._first([*values, *cells])

    def _first(self, objects: Iterable[Any]) -> str | None:
        for value in objects:
            if callable(value) and not isinstance(value, types.ModuleType):
                found = self.find(value)
                if found:
                    return found
        return None


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 (an empty cell raises)
    except ValueError:
        return False
    return True


def e2e_reason(item: pytest.Item, scan: _Scan | None = None) -> str | None:
    """Why ``item`` is e2e (a marker, a fixture or a helper that starts processes), or None."""
    for name in (MARK, *IMPLIED_BY):
        if item.get_closest_marker(name):
            return f"marked {name}"
    scan = scan or _Scan(code_roots(item.config))
    info = getattr(item, "_fixtureinfo", None)
    for name in getattr(item, "fixturenames", ()):
        for fixturedef in info.name2fixturedefs.get(name, ()) if info else ():
            found = scan.find(fixturedef.func)
            if found:
                return f"fixture {name} uses {found}"
    function = getattr(item, "obj", None)
    found = scan.find(function) if function is not None else None
    return f"uses {found}" if found else None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--e2e-why",
        action="store_true",
        help="print why each collected test is e2e (or 'fast'), e.g. with --collect-only -q",
    )


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that starts processes ``e2e``."""
    scan = _Scan(code_roots(config))
    why = config.getoption("e2e_why")
    for item in items:
        reason = e2e_reason(item, scan)
        if reason and not item.get_closest_marker(MARK):
            item.add_marker(MARK)
        if why:
            print(f"{item.nodeid}: {reason or 'fast'}")


# -- the guard ----------------------------------------------------------------------------------


class _Guard:
    """The fast test now in setup or call (None otherwise) and what it started."""

    def __init__(self) -> None:
        self.test: str | None = None
        self.started: list[str] = []

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if event not in _EVENTS or self.test is None:
            return
        what = f"{event} {args[1] if event == 'subprocess.Popen' else args[0]!r}"[:300]
        self.started.append(what)
        raise FastLayerError(self.message(what))

    def message(self, what: str) -> str:
        return (
            f"{self.test} started a process ({what}) but is not an e2e test: the fast layer "
            "(`make test-fast`, -m 'not e2e') starts no process. Start it through the support "
            "helpers (run_nbjob, start_nbjob, start_server: they mark their tests e2e), mark "
            "the helper that starts it with @support.starts_processes, or declare "
            "`pytestmark = pytest.mark.e2e` in the module."
        )


_GUARD = _Guard()


def pytest_configure(config: pytest.Config) -> None:
    # The platform module runs `uname -p` once per process and caches it; nbjob's record asks
    # for it, in-process. Ask first, so that this probe is not counted against a fast test.
    platform.platform()
    if not getattr(sys, "_nbjob_e2e_guard", False):  # audit hooks cannot be removed: add once
        sys.addaudithook(_GUARD.audit)
        sys._nbjob_e2e_guard = True  # type: ignore[attr-defined]


def _guarded(item: pytest.Item) -> Callable[[Any], None]:
    """Watch ``item`` if it is not e2e; the check to run when its phase ends."""
    fast = not item.get_closest_marker(MARK)
    _GUARD.test, _GUARD.started = (item.nodeid if fast else None), []

    def done(outcome: Any) -> None:
        started, _GUARD.test = _GUARD.started, None
        if started and outcome.excinfo is None:  # its error was swallowed: fail it anyway
            outcome.force_exception(FastLayerError(_GUARD.message(started[0])))

    return done


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    done = _guarded(item)
    done((yield))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    done = _guarded(item)
    done((yield))
