"""The notebook's pace at a remote destination: its uploads stay within a multiple of its size."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nbjob.pacing import BUDGET, FREE_BYTES, NotebookPace
from support import make_zip, notebook_json, start_nbjob, wait_until
from support.proxy import FlakyProxy
from support.s3 import S3Server


def test_a_growing_notebook_is_rewritten_about_each_doubling_within_the_budget() -> None:
    pace = NotebookPace()
    sizes = [FREE_BYTES + 1000 * i for i in range(1, 100_001)]  # 100,000 checkpoints
    stored = [size for size in sizes if pace.take(size)]
    assert sum(stored) <= BUDGET * sizes[-1]
    assert 10 < len(stored) < 40  # a log of the growth, not one per checkpoint
    assert stored[0] == sizes[0] and stored[-1] >= sizes[-1] / 2.5  # never far behind


def test_a_small_notebook_is_stored_at_every_checkpoint_and_not_counted() -> None:
    pace = NotebookPace()
    assert all(pace.take(FREE_BYTES) for _ in range(1000))
    assert pace.spent == 0 and pace.take(FREE_BYTES + 1)  # the first large one: stored


def test_a_notebook_that_stops_growing_is_stored_until_its_budget_is_spent() -> None:
    pace = NotebookPace()
    size = 10 * FREE_BYTES
    assert [pace.take(size) for _ in range(4)] == [True, True, False, False]
    assert pace.take(2 * size + 1) and not pace.take(2 * size + 1)


GROWING = "import time\nprint(('x' * 99 + '\\n') * 500, end='')\ntime.sleep(0.5)"


def test_a_growing_notebook_in_s3_is_uploaded_within_three_times_its_final_size(
    s3_server: S3Server, bucket: str, flaky_proxy: Callable[..., FlakyProxy], tmp_path: Path
) -> None:
    proxy = flaky_proxy()
    source = make_zip(tmp_path / "b.zip", {"nb.ipynb": notebook_json([GROWING] * 12)})
    run = start_nbjob("run", source, "--output", f"s3://{bucket}/r", "--checkpoint-interval",
                      "0.3", "--no-report", env=s3_server.env_for(proxy.url))  # fmt: skip
    try:

        def shows_output() -> bool:  # the stored notebook, while the run goes on
            try:
                return run.running() and "xxxx" in s3_server.get(bucket, "r/nb.ipynb").decode()
            except Exception:
                return False

        assert wait_until(shows_output, 30)
        assert run.wait(60).returncode == 0
    finally:
        run.kill()
    final = s3_server.get(bucket, "r/nb.ipynb")
    assert final.count(b"x" * 99) == 12 * 500
    sent = proxy.sent[f"/{bucket}/r/nb.ipynb"]
    puts = proxy.requests_by[f"PUT /{bucket}/r/nb.ipynb"]
    # 3x its final size, and the checkpoints while it was small (uncounted, 64 KiB at most each)
    assert sent <= 3 * len(final) + FREE_BYTES * puts, (sent, len(final), puts)
