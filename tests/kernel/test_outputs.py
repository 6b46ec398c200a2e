"""Output fidelity at message level (nbjob.outputs through the executor and kernel/fake.py).

Streams as JupyterLab shows them (``\\r`` overwrite, ``\\b``, merging, ANSI kept), the head+tail
cap across streams, clear_output after the cap.
"""

from __future__ import annotations

from typing import Any

import nbformat
from nbjob import events
from nbjob.execute import Executor
from nbjob.kernel.fake import FakeKernel, cell, clear, display, stream
from nbjob.outputs import CellOutputs, Displays, LineFolder
from support import terminal


def run_cell(*steps: Any, max_output_bytes: int = 1_000_000) -> list[Any]:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x")]
    Executor(
        FakeKernel(lambda code: cell(*steps)), events.Bus(), max_output_bytes=max_output_bytes
    ).run(nb)
    return list(nb.cells[0].outputs)


def texts(outputs: list[Any]) -> list[tuple[str, str]]:
    return [(o.get("name", o.output_type), o.get("text", "")) for o in outputs]


def test_carriage_return_overwrites_in_place_as_jupyterlab() -> None:
    folder = LineFolder()
    assert folder.feed("12345\rab") == []
    assert folder.line == "ab345"
    assert folder.feed("\r\n") == ["ab345\n"]


def test_backspace_deletes_but_never_a_newline() -> None:
    folder = LineFolder()
    assert folder.feed("ab\nc\b\b\bd\n") == ["ab\n", "d\n"]


def test_keras_style_bar_keeps_one_line_and_the_final_text() -> None:
    steps = [stream("Epoch 1/1\n")]
    width = 0
    for i in range(2000):
        bar = f"\x1b[1m{i}/2000\x1b[0m [{'=' * (i % 30):<30}] - loss: 0.{i:04d}"
        steps.append(stream("\b" * width + "\r" + bar))
        width = len(bar)
    steps.append(stream("\nFINAL accuracy=0.9731\n"))
    outputs = run_cell(*steps)
    assert len(outputs) == 1
    text = outputs[0]["text"]
    assert text.startswith("Epoch 1/1\n\x1b[1m1999/2000")
    assert text.endswith("\nFINAL accuracy=0.9731\n") and len(text) < 200


def test_tqdm_style_carriage_returns_on_stderr_then_stdout() -> None:
    bars = [stream(f"\r{i:3d}%|{'#' * (i // 10):<10}|", "stderr") for i in range(101)]
    outputs = run_cell(*bars, stream("\n", "stderr"), stream("DONE\n"))
    assert texts(outputs) == [("stderr", "100%|##########|\n"), ("stdout", "DONE\n")]


def test_spinner_with_backspaces() -> None:
    spins = [stream("working " + "|")] + [stream("\b" + c) for c in "/-\\|/-\\" * 10]
    outputs = run_cell(*spins, stream("\bdone\n"))
    assert texts(outputs) == [("stdout", "working done\n")]


def test_consecutive_streams_merge_a_display_between_starts_a_new_one() -> None:
    outputs = run_cell(stream("a\n"), stream("b\n"), display({"text/plain": "img"}), stream("c\n"))
    assert texts(outputs) == [("stdout", "a\nb\n"), ("display_data", ""), ("stdout", "c\n")]


def test_cap_keeps_head_and_tail_with_one_marker() -> None:
    lines = [stream(f"line {i:05d}\n") for i in range(10_000)]
    outputs = run_cell(*lines, max_output_bytes=10_000)
    (text,) = [o["text"] for o in outputs]
    assert text.startswith("line 00000\n") and text.endswith("line 09999\n")
    assert text.count("bytes left out; executor.log has them") == 1
    assert len(text.encode()) < 10_000 + 100


def test_cap_of_one_stream_hides_no_other_stream_display_or_later_output() -> None:
    noise = [stream(f"{i:06d}\n", "stderr") for i in range(5000)]
    outputs = run_cell(
        stream("start\n"),
        *noise,
        display({"text/plain": "plot"}),
        stream("DONE\n"),
        max_output_bytes=4000,
    )
    kinds = texts(outputs)
    assert kinds[0] == ("stdout", "start\n")
    assert kinds[1][0] == "stderr" and "left out" in kinds[1][1]
    assert kinds[1][1].endswith("004999\n")
    assert kinds[2:] == [("display_data", ""), ("stdout", "DONE\n")]


def test_clear_output_keeps_working_after_the_cap() -> None:
    noise = [stream(f"{i:06d}\n") for i in range(5000)]
    outputs = run_cell(
        *noise, clear(wait=True), stream("fresh\n"), stream("more\n"), max_output_bytes=4000
    )
    assert texts(outputs) == [("stdout", "fresh\nmore\n")]


def test_memory_stays_bounded_however_much_is_printed() -> None:
    out = CellOutputs([], 10_000, Displays())
    for i in range(20_000):
        out.stream("stdout", f"{i:08d} " + "x" * 40 + "\n")
    (stream_,) = out.streams
    assert stream_.head_bytes + stream_.tail_bytes <= 10_000
    out.stream("stdout", "y" * 200_000)  # one endless line
    out.sync()
    assert len(out.outputs[0]["text"]) < 80_000


def test_a_lone_carriage_return_leaves_no_empty_output() -> None:
    assert texts(run_cell(stream("\r"), display({"text/plain": "x"}))) == [("display_data", "")]


def test_scrapbook_glue_outputs_become_metrics() -> None:
    from nbjob.record import RunRecord

    record = RunRecord.start("r", "s", "o", "local", {})
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x")]
    scrap = {"name": "accuracy", "data": 0.97, "encoder": "json", "version": 1}
    steps = cell(
        display({"application/scrapbook.scrap.json+json": scrap}),
        display({"application/scrapbook.scrap.json+json": {**scrap, "data": 0.98}}),
        display({"application/scrapbook.scrap.text+json": {"name": "note", "data": "ok"}}),
    )
    Executor(FakeKernel(lambda code: steps), events.Bus([record])).run(nb)
    assert record.to_json()["metrics"] == {"accuracy": 0.98, "note": "ok"}


def test_folding_agrees_with_a_character_model_however_text_is_split() -> None:
    texts = ["a\nbc\nd", "abc\rx\n", "ab\bc\nd\n\n", "12345\rab\b\bXYZW\n", "\r\r\n\bq"]
    for text in texts:
        for cut in range(len(text) + 1):
            folder = LineFolder()
            got = folder.feed(text[:cut]) + folder.feed(text[cut:])
            assert (got, folder.line) == terminal(text), (text, cut)
