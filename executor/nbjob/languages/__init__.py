"""Kernel languages: one module per language, one registry, looked up by kernel language name.

nbjob sends code to the kernel for a few set-up steps; each step is a *capability* a language
provides (``Language`` in ``_base.py`` documents each method):

- ``parameters``: the injected parameters cell (Python's is papermill's, ``python.py``);
- ``set_env``: set an environment variable (``NBJOB_ATTEMPT`` once the attempt is known);
- ``chdir``: change the working folder (a notebook in a subfolder of its bundle);
- ``gpu_probe``: which GPUs the kernel sees;
- ``requirements_check``: which requirement lines the kernel's environment does not satisfy;
- ``file_transfer``: files to and from a remote kernel without a Contents API, and its folders.

``get(name)`` returns the language for a kernel language name; a language nbjob does not know
gets one with no capability. What the kernel's language lacks is recorded, never fatal: run.json
holds ``kernel.unsupported``, the list of the capabilities above the run's kernel lacks
(``[]`` for Python), and that step is skipped (the GPU probe then reports an ``error``). One
exception keeps today's behaviour: parameters given for a notebook whose language cannot take
them are a ``ParameterError`` (exit 3), as the run would otherwise ignore what was asked.

To add a language: a module with a ``Language`` subclass and a line in ``_registry.BUILTIN``
(and, for its contract test against a real kernel, a ``Reader`` in tests/test_languages.py);
from another package: an entry point in the group ``nbjob.languages`` named after the language
(``r = "nbjob_r:R"``). Names are matched case-insensitively (IRkernel's language is ``R``).
"""

from __future__ import annotations

from nbjob.languages._base import CAPABILITIES, Language, UnsupportedCapability, check_value
from nbjob.languages._registry import (
    DEFAULT_LANGUAGE,
    ENTRY_POINT_GROUP,
    forget_found,
    get,
    names,
    supporting,
)

__all__ = [
    "CAPABILITIES",
    "DEFAULT_LANGUAGE",
    "ENTRY_POINT_GROUP",
    "Language",
    "UnsupportedCapability",
    "check_value",
    "forget_found",
    "get",
    "names",
    "supporting",
]
