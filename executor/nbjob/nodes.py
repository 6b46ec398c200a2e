"""The notebook as nbjob reads it: nbformat's nodes without an attribute dictionary each.

nbformat's ``NotebookNode`` (a dict whose keys read as attributes) sets an attribute on every
node it makes, to say that it takes new keys, so every node carries a dictionary of its own:
half the memory of a notebook read (26 MiB for 20,000 cells; 13 as ``Node``). ``Node`` says it
once, for all. Otherwise the same: a key as an attribute, ``isinstance`` of ``NotebookNode``,
copied and pickled as one. Imported when the notebook is read (nbformat after the kernel's
launch).
"""

from __future__ import annotations

from typing import Any

from nbformat import NotebookNode

__all__ = ["Node"]


class Node(NotebookNode):
    """A notebook node that takes new keys, as every ``NotebookNode`` does."""

    _allownew = True  # for every node: nbformat's Struct sets it on each one

    def __init__(self, *args: Any, **kw: Any) -> None:
        dict.__init__(self, *args, **kw)
