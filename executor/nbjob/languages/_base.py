"""What nbjob asks of a kernel language: source snippets, one method per need.

nbjob drives a kernel by sending it code. Everything that code must say in the kernel's own
language lives in a ``Language``: the injected parameters cell, setting an environment variable,
changing folder, the GPU probe, the requirements check and the file transfer to remote kernels.
A method a language does not override is a capability it lacks (``supports`` / ``unsupported``
tell which); nbjob then skips that step and records the capability's name in run.json's
``kernel.unsupported``. ``CAPABILITIES`` names each capability and the methods it needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from nbjob.errors import ParameterError

# capability (the name run.json's ``kernel.unsupported`` lists) -> the methods it needs
CAPABILITIES: dict[str, tuple[str, ...]] = {
    "parameters": ("literal", "assign", "comment"),
    "set_env": ("set_env",),
    "chdir": ("chdir",),
    "gpu_probe": ("gpu_probe", "decode", "forget"),
    "requirements_check": ("requirements_check", "decode", "forget"),
    "file_transfer": (
        "decode",
        "forget",
        "remote_setup",
        "put_setup",
        "put_chunk",
        "list_files",
        "get_chunk",
        "remove_tree",
    ),
}


class UnsupportedCapability(NotImplementedError):
    """A snippet was asked of a language that lacks the capability (check ``supports`` first)."""

    def __init__(self, language: str, method: str) -> None:
        super().__init__(f"the {language or 'unknown'!r} language has no {method!r} snippet")


def check_value(value: Any) -> None:
    """Raise ``ParameterError`` unless ``value`` is a parameter value every language can write:
    None, str, bool, int, float, and lists and mappings of them (papermill's types)."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_value(key)
            check_value(item)
    elif isinstance(value, list | tuple):
        for item in value:
            check_value(item)
    elif not (value is None or isinstance(value, bool | int | float | str)):
        raise ParameterError(
            f"parameter value {value!r} has unsupported type {type(value).__name__}"
        )


def finite(value: Any) -> bool:
    """False for a float NaN or infinity (languages spell those differently)."""
    return not isinstance(value, float) or math.isfinite(value)


class Language:
    """One kernel language. Subclass it, override what the language can do, register it.

    ``name`` is the kernel's language as its kernelspec and ``language_info`` give it;
    ``default_kernel`` is the kernel chosen for a notebook of this language when it names none
    that is installed; ``kernels`` are kernel names known to be of this language. Snippets
    that return a value (the probe, the check, a file listing) set the variable named by
    ``RESULT`` to a JSON string; nbjob reads it back as a user expression and ``decode`` turns
    the reply's ``text/plain`` into the value. The parameters cell comes from ``literal``,
    ``assign`` and ``comment``, as papermill's translators build it.
    """

    name: ClassVar[str] = ""
    default_kernel: ClassVar[str | None] = None
    # Kernels of this language whose kernelspec names none (sparkmagic's), as papermill maps
    # kernel names to translators.
    kernels: ClassVar[tuple[str, ...]] = ()
    RESULT: ClassVar[str] = "_nbjob_result"

    # -- capabilities --------------------------------------------------------------------------

    def supports(self, capability: str) -> bool:
        """Does this language override every method ``capability`` needs?"""
        base = Language.__dict__
        return all(
            getattr(type(self), method) is not base[method] for method in CAPABILITIES[capability]
        )

    def unsupported(self) -> list[str]:
        """The capabilities this language lacks, in ``CAPABILITIES`` order."""
        return [c for c in CAPABILITIES if not self.supports(c)]

    def _lacks(self, method: str) -> UnsupportedCapability:
        return UnsupportedCapability(self.name, method)

    # -- parameters ----------------------------------------------------------------------------

    def literal(self, value: Any) -> str:
        """Source for ``value`` (None, str, bool, int, float, lists and mappings of them; a
        float may be NaN or infinite); ``ParameterError`` for any other type."""
        raise self._lacks("literal")

    def assign(self, name: str, source: str) -> str:
        """A statement that sets the variable ``name`` to the value of ``source``."""
        raise self._lacks("assign")

    def comment(self, text: str) -> str:
        """A comment line saying ``text``."""
        raise self._lacks("comment")

    def parameters_cell(self, parameters: Mapping[str, Any]) -> str:
        """The injected parameters cell's source: papermill's shape, a ``Parameters`` comment
        and one assignment a line."""
        lines = [self.comment("Parameters")]
        lines += [self.assign(name, self.literal(value)) for name, value in parameters.items()]
        return "\n".join(lines) + "\n"

    def declared_names(self, source: str) -> set[str] | None:
        """Names a cell's ``source`` assigns at top level; None when it cannot tell."""
        return None

    # -- the kernel's process ------------------------------------------------------------------

    def set_env(self, name: str, value: str) -> str:
        """Code that sets the environment variable ``name`` to ``value`` in the kernel."""
        raise self._lacks("set_env")

    def chdir(self, path: str) -> str:
        """Code that makes ``path`` (a path on the kernel's machine) the working folder."""
        raise self._lacks("chdir")

    def forget(self, name: str) -> str:
        """Code that deletes the kernel variable ``name`` (a helper's leftovers)."""
        raise self._lacks("forget")

    def decode(self, text_plain: str) -> Any:
        """The value of ``RESULT`` from its user-expression ``text/plain`` (ValueError if not)."""
        raise self._lacks("decode")

    # -- probes --------------------------------------------------------------------------------

    def gpu_probe(self) -> str:
        """Code that sets ``RESULT`` to ``{"gpus": [{"index", "name", "memory"}], "nvidia_smi",
        "error", "env"}`` as the kernel sees them (nvidia-smi, ``*_VISIBLE_DEVICES``)."""
        raise self._lacks("gpu_probe")

    def requirements_check(self, lines: list[str]) -> str:
        """Code that sets ``RESULT`` to the requirement ``lines`` the kernel does not satisfy."""
        raise self._lacks("requirements_check")

    # -- files to and from a remote kernel (kernel/transfer.py) --------------------------------

    def remote_setup(self, artifacts: str, make_temp: bool) -> str:
        """Code that (with ``make_temp``) makes and enters ``<temp>/bundle``, makes the
        ``artifacts`` folder (relative to the working folder), sets ``NBJOB_ARTIFACTS_DIR`` to
        it, and sets ``RESULT`` to ``{"cwd": ..., "artifacts": ...}`` (absolute paths)."""
        raise self._lacks("remote_setup")

    def put_setup(self) -> str:
        """Code that defines what ``put_chunk`` calls (``forget("_nbjob_put")`` removes it)."""
        raise self._lacks("put_setup")

    def put_chunk(self, path: str, data: str, append: bool) -> str:
        """Code that writes base64 ``data`` to ``path`` (appending or not), making folders."""
        raise self._lacks("put_chunk")

    def list_files(self, root: str) -> str:
        """Code that sets ``RESULT`` to ``[[relative posix path, size], ...]`` sorted: every
        regular file (not a link) under ``root``."""
        raise self._lacks("list_files")

    def get_chunk(self, path: str, offset: int, size: int) -> str:
        """Code that sets ``RESULT`` to ``size`` bytes of ``path`` from ``offset``, base64."""
        raise self._lacks("get_chunk")

    def remove_tree(self, path: str) -> str:
        """Code that removes the folder ``path`` and everything in it, ignoring errors."""
        raise self._lacks("remove_tree")
