"""The conformance suite's comparison itself (conform.py), in process: it must be able to say
"wrong", and say "equivalent" only for the differences it names."""

from __future__ import annotations

from typing import Any

from conform import EQUIVALENCES, Masker, canonical, classify, fold, outputs, summary


def stream(text: str, name: str = "stdout") -> dict[str, Any]:
    return {"output_type": "stream", "name": name, "text": text}


def notebook(*cells: dict[str, Any]) -> dict[str, Any]:
    return {"cells": list(cells), "metadata": {"kernelspec": {"name": "python3"}}}


def code(source: str, *outs: dict[str, Any], count: int = 1, tags: tuple[str, ...] = ()) -> Any:
    metadata = {"tags": list(tags)} if tags else {}
    return {"cell_type": "code", "source": source, "metadata": metadata,
            "execution_count": count, "outputs": list(outs)}  # fmt: skip


def test_fold_is_jupyterlabs_terminal_model() -> None:
    assert fold("12345\rab") == "ab345"
    assert fold("ab\nc\b\b\bd\n") == "ab\nd\n"  # \b never deletes a newline
    assert fold(" 0%\r50%\r100%\n") == "100%\n"
    assert fold("x\r\n") == "x\n"


def test_streams_merge_when_consecutive_and_empty_ones_go() -> None:
    raw = [stream("a\n"), stream("\rb\n"), stream("e", "stderr"), stream("c\n"), stream("\r")]
    assert outputs(raw, Masker()) == [stream("a\nb\n"), stream("e", "stderr"), stream("c\n")]


def test_volatile_values_are_masked() -> None:
    mask = Masker("/tmp/run-1")
    text = "at 0x7f3a2b1c9d40 on 2026-12-03T14:06:39.044+00:00 in /tmp/run-1/x, id " + "a" * 32
    assert mask(text) == "at <address> on <date> in <tmp>/x, id <id>"


def test_a_different_output_is_wrong_and_its_diff_is_kept() -> None:
    mask = Masker()
    ours = canonical(notebook(code("print(1)", stream("1\n"))), mask)
    theirs = canonical(notebook(code("print(1)", stream("2\n"))), mask)
    verdict = classify("nb", "peer", ours, theirs, failed=False)
    assert verdict.result == "wrong" and verdict.ours != verdict.theirs


def test_message_splits_are_identical_and_named_differences_equivalent() -> None:
    mask = Masker()
    ours = notebook(code("print(1)", stream("1\n2\n")))
    theirs = notebook(code("print(1)", stream("1\n"), stream("2\n")))
    assert classify("nb", "p", canonical(ours, mask), canonical(theirs, mask), False).result == (
        "identical"
    )
    ours["cells"].append(code("# Parameters\nx = 'a'\n", tags=("injected-parameters",)))
    theirs["cells"].append(code('# Parameters\nx = "a"\n', tags=("injected-parameters",)))
    verdict = classify("nb", "p", canonical(ours, mask), canonical(theirs, mask), False)
    assert (verdict.result, verdict.used) == ("equivalent", ["parameter quoting"])
    theirs["cells"][-1]["source"] = '# Parameters\nx = "b"\n'  # another value: not equivalent
    assert classify("nb", "p", canonical(ours, mask), canonical(theirs, mask), False).result == (
        "wrong"
    )


def test_widget_state_difference_is_equivalent_only_for_a_failed_run() -> None:
    state = {"application/vnd.jupyter.widget-state+json": {"state": {"m": {"state": {}}}}}
    with_state = notebook(code("w"))
    with_state["metadata"]["widgets"] = state
    ours = canonical(with_state, Masker())
    theirs = canonical(notebook(code("w")), Masker())
    assert classify("nb", "p", ours, theirs, failed=False).result == "wrong"
    verdict = classify("nb", "p", ours, theirs, failed=True)
    assert (verdict.result, verdict.used) == ("equivalent", ["widget state of a failed run"])


def test_every_equivalence_states_its_reason_and_the_summary_counts() -> None:
    assert all(len(e.reason) > 40 for e in EQUIVALENCES.values())
    mask = Masker()
    same = canonical(notebook(code("x")), mask)
    table = summary([classify("a.ipynb", "nbclient", same, same, False)])
    assert "a.ipynb" in table and "1 identical, 0 equivalent, 0 wrong of 1" in table
