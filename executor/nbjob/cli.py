"""The ``nbjob`` command: ``nbjob run``, ``nbjob pack`` and ``nbjob watch``.

Parses flags, builds settings and hands over; every error becomes a one-line message and the
documented exit code (see ``nbjob.errors``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from nbjob import __version__, early, imports, memory, reaper, stop
from nbjob.errors import EnvironmentUnfitError, NbjobError, UsageError
from nbjob.logplaces import silence

EPILOG = """exit codes: 0 success, 1 a cell raised, 2 usage, 3 invalid input, 4 timeout,
5 kernel died, 6 storage error, 7 environment unfit, 143 stopped (SIGTERM/SIGINT or
--stop-signals), 200 peer lost (another rank died).
Every option can also be set as NBJOB_<OPTION> (e.g. NBJOB_OUTPUT, NBJOB_CELL_TIMEOUT);
NBJOB_SOURCE gives SOURCE and NBJOB_PARAMETERS a YAML/JSON mapping of parameters."""
WATCH_EPILOG = """exit codes: the run's own (0 success, 1 a cell raised, ... 143 stopped, see
nbjob run --help); 9 the run is lost (its heartbeat stopped, or no run appeared within
--wait-start); 2 usage; 6 the destination could not be read; 130 Ctrl-C (the run goes on)."""
WATCH_INTERRUPTED = 130  # nbjob watch ended by Ctrl-C (the run goes on)
EXIT_S = 2.0  # once the outcome is final and stored, the process ends within this


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2 via UsageError
        raise UsageError(f"{self.prog}: {message}")


def _parameter_actions(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="parameter, converted like papermill's",
    )
    parser.add_argument(
        "-r",
        "--raw-parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="parameter kept as a string",
    )


def build_parser() -> argparse.ArgumentParser:
    from nbjob.config import OPTIONS

    parser = _Parser(
        prog="nbjob",
        description="Run notebook bundles inside batch jobs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"nbjob {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="run a notebook, folder or bundle",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "source",
        nargs="?",
        metavar="SOURCE",
        help="notebook, folder, .zip/.tar.gz: local, file://, http(s)://, s3://, gs:// or az://",
    )
    _parameter_actions(run)
    for opt in OPTIONS:
        if opt.metavar is None:  # a switch; NBJOB_<NAME>=1 sets it too
            run.add_argument(
                opt.flag,
                dest=opt.name,
                action="store_const",
                const="true",
                default=None,
                help=f"{opt.help} [{opt.env}=1]",
            )
        else:
            run.add_argument(
                opt.flag,
                dest=opt.name,
                metavar=opt.metavar,
                default=None,
                action="append" if opt.repeat else "store",
                help=f"{opt.help} [{opt.env}]",
            )

    pack = sub.add_parser("pack", help="build a deterministic bundle from a notebook")
    pack.add_argument("notebook", metavar="NOTEBOOK", help="the .ipynb to pack")
    pack.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="bundle file, .zip or .tar.gz (default NOTEBOOK-NAME.zip)",
    )
    pack.add_argument(
        "--include",
        metavar="GLOBS",
        help="comma-separated files/globs beside the notebook (default *.py)",
    )
    pack.add_argument("--requirements", metavar="FILE", help="requirements.txt to include")
    pack.add_argument("--upload", metavar="S3_URL", help="also upload the bundle to s3://...")
    pack.add_argument(
        "--s3-endpoint-url",
        metavar="URL",
        default=os.environ.get("NBJOB_S3_ENDPOINT_URL"),
        help="S3-compatible endpoint for --upload (MinIO, IBM COS, Ceph, a local server)"
        " [NBJOB_S3_ENDPOINT_URL]",
    )
    _parameter_actions(pack)
    _watch_arguments(sub)
    return parser


def _watch_arguments(sub: Any) -> None:
    """``nbjob watch DEST``: its own flags, and the storage options ``nbjob run`` has."""
    from nbjob.config import OPTIONS
    from nbjob.storage import Options as StorageOptions

    cmd = sub.add_parser(
        "watch",
        help="follow a run at its destination; exit with its exit code",
        epilog=WATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("dest", nargs="?", metavar="DEST", help="the run's --output [NBJOB_OUTPUT]")
    seconds = {  # defaults: nbjob.watch's, applied in _watch (not imported for every command)
        "--poll": "seconds between reads of run.json",
        "--wait-start": "seconds to wait for the run to appear",
        "--lost-after": "seconds without a heartbeat: the run is lost",
    }
    for flag, text in seconds.items():
        cmd.add_argument(flag, type=float, metavar="SECONDS", help=text)
    cmd.add_argument("--json", action="store_true", help="print what happens as JSON lines")
    for opt in OPTIONS:
        if opt.name in StorageOptions.SETTINGS.values():
            cmd.add_argument(opt.flag, dest=opt.name, metavar=opt.metavar, help=opt.help)


def _parameters(args: argparse.Namespace) -> tuple[tuple[str, Any], ...]:
    """-p (converted like papermill) then -r (raw), as given; ``params.merge`` checks them."""
    from nbjob.params import convert

    converted = [(name, convert(value)) for name, value in args.parameter]
    return (*converted, *((name, value) for name, value in args.raw_parameter))


def _run(args: argparse.Namespace, token: stop.StopToken) -> int:
    from nbjob.config import OPTIONS, resolve
    from nbjob.start import run

    flags = {opt.name: getattr(args, opt.name) for opt in OPTIONS}
    flags["source"] = args.source
    settings = resolve(flags, os.environ, _parameters(args))
    return run(settings, token, install_signals=True, configure_logging=True, end_orphans=True)


def _watch(args: argparse.Namespace) -> int:
    from nbjob import watch
    from nbjob.config import storage_options
    from nbjob.storage import Options as StorageOptions
    from nbjob.watch import Watcher, WatchSettings
    from nbjob.watchview import view_for

    dest = args.dest or os.environ.get("NBJOB_OUTPUT")
    if not dest:
        raise UsageError("nbjob watch: no destination given: pass DEST or set NBJOB_OUTPUT")
    poll = watch.POLL_S if args.poll is None else args.poll
    wait_start = watch.WAIT_START_S if args.wait_start is None else args.wait_start
    lost_after = watch.LOST_AFTER_S if args.lost_after is None else args.lost_after
    if min(poll, lost_after) <= 0 or wait_start < 0:
        raise UsageError("nbjob watch: --poll and --lost-after must be > 0, --wait-start >= 0")
    flags = {name: getattr(args, name) for name in StorageOptions.SETTINGS.values()}
    settings = WatchSettings(dest, poll, wait_start, lost_after, storage_options(flags, os.environ))
    view = view_for(sys.stdout, args.json)
    try:
        return Watcher(settings, view).run()
    except KeyboardInterrupt:  # Ctrl-C ends the watching, not the run
        return WATCH_INTERRUPTED
    finally:
        view.close()


def _pack(args: argparse.Namespace) -> int:
    from nbjob.config import storage_options
    from nbjob.pack import pack
    from nbjob.params import ParameterSources, merge
    from nbjob.storage import Storage

    notebook = Path(args.notebook)
    output = Path(args.output or notebook.with_suffix(".zip").name)
    names = pack(
        notebook,
        output,
        args.include,
        Path(args.requirements) if args.requirements else None,
        merge(ParameterSources(flags=_parameters(args))),
    )
    _say(f"packed {len(names)} files into {output}: {', '.join(names)}", sys.stderr)
    target = str(output)
    if args.upload:
        url = args.upload.rstrip("/")
        if url.endswith("/") or not url.endswith((".zip", ".tar.gz", ".tgz")):
            url = f"{url}/{output.name}"
        options = storage_options({"s3_endpoint_url": args.s3_endpoint_url}, os.environ)
        Storage(options).put_file(url, output)
        _say(f"uploaded to {url}", sys.stderr)
        target = url
    _say(f"nbjob run {target}", sys.stdout)
    return 0


def _say(text: str, stream: TextIO) -> None:
    """One line for the user; a console that cannot take it (a closed pipe, an I/O error)
    never changes what the command did nor its exit code."""
    try:
        print(text, file=stream, flush=True)
    except BrokenPipeError:
        silence(stream)
    except (OSError, ValueError):
        pass


def _no_room(exc: OSError) -> int:
    """A disk that cannot take the run's first files (a full or read-only work folder, no
    inodes left) is this machine's problem: one line and exit 7, not a traceback."""
    from nbjob.storage.retry import local_disk_error

    if local_disk_error(exc) is None:
        raise exc
    where = f" ({exc.filename})" if exc.filename else ""
    _say(
        f"nbjob: error: this machine's disk cannot take the run's files{where}: {exc.strerror}",
        sys.stderr,
    )
    return EnvironmentUnfitError.exit_code


def _settle_console() -> None:
    """Before Python's exit flushes stdout and stderr (a flush that fails there turns the
    exit status into 120): a console whose reader has gone is pointed at /dev/null."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            silence(stream)


def _early_stop_token(argv: Sequence[str]) -> stop.StopToken | None:
    """For ``nbjob run``: a stop token its signals set from the very start of the process."""
    if list(argv[:1]) != ["run"]:
        return None
    token = stop.StopToken()
    text = os.environ.get("NBJOB_STOP_SIGNALS") or "TERM,INT"
    for i, arg in enumerate(argv):  # the flag wins, as in the settings
        if arg == "--stop-signals" and i + 1 < len(argv):
            text = argv[i + 1]
        elif arg.startswith("--stop-signals="):
            text = arg.partition("=")[2]
    try:
        names = stop.parse_signals(text)
    except ValueError:
        names = stop.DEFAULT_SIGNALS  # the settings report the bad value (exit 2)
    stop.install(token, names)
    return token


def main(argv: Sequence[str] | None = None) -> int:
    """The ``nbjob`` command. Called with no ``argv`` it is this process's command: once it
    returns, the outcome is final, the stop signals are ignored (``stop.ignore_from_now_on``)
    and the process exits within ``EXIT_S`` seconds (``stop.exit_within``), once Python's exit
    has joined its threads and run the exit handlers, without tearing the interpreter down
    (``stop.exit_without_teardown``).
    """
    if argv is None:
        stop.exit_without_teardown()  # first: its exit handler runs after every other one
        code = main(sys.argv[1:])
        _settle_console()
        stop.ignore_from_now_on()
        stop.exit_within(EXIT_S, code)
        stop.exit_without_teardown(code)
        return code
    argv = list(argv)
    token = _early_stop_token(argv)  # first: before the heavy imports
    if token is not None:  # nbjob run: orphans below it come to it, not to PID 1
        reaper.become_subreaper()
        early.start()  # the kernel's interpreter imports ipykernel while nbjob starts
        memory.fix_threshold()
    imports.skip_optional()  # before nbformat imports jsonschema
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command == "run":
            return _run(args, token or stop.StopToken())
        if args.command == "pack":
            return _pack(args)
        if args.command == "watch":
            return _watch(args)
        _say(parser.format_usage().rstrip(), sys.stderr)
        return UsageError.exit_code
    except NbjobError as exc:
        _say(f"nbjob: error: {exc.reason}", sys.stderr)
        return exc.exit_code
    except OSError as exc:  # before the run could record anything: the work folder, say
        return _no_room(exc)
    except KeyboardInterrupt:
        _say("nbjob: stopped", sys.stderr)
        return 143
    finally:
        early.discard()  # a run that ended before its kernel's launch
