"""nbjob's own processes (the run, the report's renderer): the optional imports they skip
(``nbjob.imports``) and their allocator's threshold (``nbjob.memory``)."""

from __future__ import annotations

import subprocess
import sys


def test_notebooks_validate_without_the_format_modules_nbjob_skips() -> None:
    """nbjob's processes skip jsonschema's optional string-format modules (nbjob.imports);
    notebooks still validate, and a bad one is still refused."""
    code = (
        "import sys\n"
        "from nbjob import imports\n"
        "imports.skip_optional()\n"
        "import nbformat\n"
        "from nbformat import v4\n"
        "nbformat.validate(v4.new_notebook(cells=[v4.new_code_cell('x = 1')]))\n"
        "bad = v4.new_notebook(); bad.cells = [{'cell_type': 'code'}]\n"
        "try:\n    nbformat.validate(bad)\nexcept nbformat.ValidationError:\n    print('refused')\n"
        "print(sorted(n for n in imports.SKIPPED if sys.modules.get(n)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:2] == ["refused", "[]"]


def test_nbjob_run_fixes_glibcs_mmap_threshold() -> None:
    """A large buffer freed goes back to the system (nbjob.memory): allocate and free 8 MiB
    twenty times after nbjob fixed the threshold, and the process's resident memory does not
    keep them; the call says whether it could (glibc: yes)."""
    code = (
        "import os\n"
        "from nbjob import memory\n"
        "print(memory.fix_threshold())\n"
        "def rss():\n"
        "    for line in open(f'/proc/{os.getpid()}/status'):\n"
        "        if line.startswith('VmRSS'):\n"
        "            return int(line.split()[1]) // 1024\n"
        "before = rss()\n"
        "for n in range(20):\n"
        "    kept = [bytes(8 << 20)]\n"
        "    small = [bytearray(200_000) for _ in range(40)]\n"
        "    del kept\n"
        "    del small\n"
        "print(rss() - before)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    fixed, grown = done.stdout.split()
    assert fixed == "True" and int(grown) < 8
