"""Optional imports that nbjob's own processes (the run, the report's renderer) skip.

jsonschema, imported by nbformat, imports a module for each string format it can check when that
module is installed (jupyter_server's dependencies install them all). nbjob checks no string
formats (nbformat's schema names none it needs), so those imports are made to fail fast and
jsonschema leaves the format out: ``rfc3987_syntax`` compiles a grammar at import (0.5-2 s
before the first cell), and the rest, arrow and dateutil among them, take ~40 ms and ~3 MiB in
each process. ``idna`` (idn-hostname) is not among them: HTTP clients use it. Kernels are other
processes and are not affected.
"""

from __future__ import annotations

import sys

SKIPPED = (
    "rfc3987_syntax",  # iri, iri-reference
    "fqdn",  # hostname
    "isoduration",  # duration (imports arrow, dateutil)
    "jsonpointer",  # json-pointer
    "rfc3339_validator",  # date-time
    "rfc3986_validator",  # uri, uri-reference
    "uri_template",  # uri-template
    "webcolors",  # color
)


def skip_optional() -> None:
    """Make the optional format modules fail to import, unless jsonschema is imported already
    (then whatever it found stays) or a module is (something else in the process uses it)."""
    if "jsonschema" in sys.modules:
        return
    for name in SKIPPED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
