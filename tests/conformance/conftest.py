"""The conformance suite's summary: one line per notebook compared, and the totals.

Printed at the end of the pytest run (no ``-s`` needed) and written to ``conformance.txt`` in
pytest's base temporary folder.
"""

from __future__ import annotations

from typing import Any

from conform import VERDICTS, summary


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not VERDICTS:
        return
    table = summary(VERDICTS)
    terminalreporter.write_sep("=", "conformance: nbjob against papermill and nbclient")
    terminalreporter.write_line(table)
    factory = getattr(terminalreporter.config, "_tmp_path_factory", None)
    if factory is not None:
        path = factory.getbasetemp() / "conformance.txt"
        path.write_text(table + "\n")
        terminalreporter.write_line(f"(written to {path})")
