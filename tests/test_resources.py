"""Resources, in process: the memory cgroup's files as both versions write them, the timeline's
bound, the wording of a death's cause, NVML through a recorded reply (an extra layer: no GPU
here), and the sampler on this very process's tree."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from nbjob import attempts, resources
from nbjob.errors import CellExecutionError, DeadKernelError
from nbjob.resources import death, procs
from nbjob.resources.cgroup import Memory, MemoryGroup
from nbjob.resources.gpus import Nvml, visible
from nbjob.resources.sampler import Sampler
from nbjob.resources.timeline import Timeline

GiB = 2**30


def write(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_a_v1_memory_group_is_found_and_read(tmp_path: Path) -> None:
    self_file = tmp_path / "cgroup"
    self_file.write_text("9:name=systemd:/\n4:memory:/kubepods/pod1\n0::/\n")
    write(tmp_path / "fs/memory/kubepods/pod1", {
        "memory.usage_in_bytes": "7900000000\n", "memory.limit_in_bytes": str(8 * GiB),
        "memory.max_usage_in_bytes": "8000000000", "memory.failcnt": "3",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    })  # fmt: skip
    group = MemoryGroup.find(self_file, tmp_path / "fs")
    assert group is not None and group.version == 1
    m = group.read()
    assert (m.usage_bytes, m.limit_bytes, m.oom_kills, m.limit_hits) == (7900000000, 8 * GiB, 2, 3)
    assert m.fraction == pytest.approx(7900000000 / (8 * GiB))


def test_a_v2_group_in_a_namespace_is_its_mounts_root_and_max_is_no_limit(tmp_path: Path) -> None:
    self_file = tmp_path / "cgroup"
    self_file.write_text("0::/\n")
    write(tmp_path / "fs", {
        "memory.current": "1000", "memory.max": "max\n", "memory.peak": "2000",
        "memory.events": "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n",
    })  # fmt: skip
    group = MemoryGroup.find(self_file, tmp_path / "fs")
    assert group is not None and group.version == 2
    m = group.read()
    assert (m.usage_bytes, m.limit_bytes, m.peak_bytes, m.oom_kills, m.limit_hits) == (
        1000,
        None,
        2000,
        1,
        5,
    )
    assert m.fraction is None  # no limit: no pressure


def test_no_cgroup_file_system_is_no_group(tmp_path: Path) -> None:
    assert MemoryGroup.find(tmp_path / "absent", tmp_path) is None
    (tmp_path / "cgroup").write_text("4:memory:/x\n")
    assert MemoryGroup.find(tmp_path / "cgroup", tmp_path / "fs") is None


def test_the_timeline_stays_bounded_for_48_hours_at_one_sample_a_second() -> None:
    line = Timeline()
    for t in range(48 * 3600):
        line.add({"t": t, "rss_bytes": 123456789, "cpu_s": 12.5, "memory_bytes": 987654321})
    kept = line.samples()
    assert len(kept) <= 600 + 3600
    assert [s["t"] for s in kept[-600:]] == list(range(48 * 3600 - 600, 48 * 3600))  # recent
    assert kept[0]["t"] == 0  # the start is kept
    gaps = {b["t"] - a["t"] for a, b in itertools.pairwise(kept)}
    assert max(gaps) <= 128  # the older part: about a line a minute
    assert len(line.to_bytes()) < 1_000_000


def test_a_moved_counter_says_out_of_memory_with_the_limit_and_the_last_sample() -> None:
    before = Memory(1, oom_kills=0)
    now = Memory(1, usage_bytes=10, limit_bytes=8 * GiB, oom_kills=1)
    error = DeadKernelError(
        "the kernel was killed by SIGKILL while running cell 12", cell_index=12, exit_status=-9
    )
    last = {"rss_bytes": int(7.9 * GiB), "cell": 12}
    told = death.explain_death(error, before, now, last, "In [12] (cell 12)")
    assert told.reason == (
        "the kernel was killed by SIGKILL while running cell 12: out of memory: the container's"
        " limit is 8.0 GiB; the kernel used 7.9 GiB at its last sample, in In [12] (cell 12)"
    )
    stamped = {**last, "t": time.time() - 0.5}
    peaked = Memory(1, limit_bytes=8 * GiB, peak_bytes=8 * GiB, oom_kills=1)
    told = death.explain_death(error, before, peaked, stamped, "In [12] (cell 12)")
    assert (
        ": the container's limit is 8.0 GiB, its use reached 8.0 GiB; the kernel used 7.9 GiB"
        " at its last sample, 0.5 s before, in In [12] (cell 12)"
    ) in told.reason
    assert told.details["cause"]["kind"] == "out_of_memory" and told.details["cell_index"] == 12
    assert told.exit_code == 5


def test_a_still_counter_says_not_out_of_memory_and_none_says_unknown() -> None:
    error = DeadKernelError("the kernel was killed by SIGKILL while x", exit_status=-9)
    same = Memory(1, oom_kills=3)
    told = death.explain_death(error, same, same, None, None)
    assert told.reason.endswith("killed by SIGKILL while x, not by this container's"
                                " out-of-memory killer")  # fmt: skip
    unknown = death.explain_death(error, None, None, None, None)
    assert "the cause is unknown" in unknown.reason and "out of memory:" not in unknown.reason
    other = DeadKernelError("the kernel exited with status 1", exit_status=1)
    assert death.explain_death(other, same, Memory(1, oom_kills=4), None, None) is other


def test_a_gpu_out_of_memory_exception_names_the_gpus_peak() -> None:
    error = CellExecutionError("In [3] (cell 3) raised OutOfMemoryError: CUDA out of memory",
                               cell_index=3, ename="OutOfMemoryError", evalue="CUDA")  # fmt: skip
    cell = {"gpus": [{"index": 0, "peak_memory_bytes": 79 * GiB, "mean_utilization": 90.0}]}
    told = death.explain_gpu(error, cell)
    assert told.reason.endswith("(a GPU's memory ran out; peak during the cell: GPU 0 79.0 GiB)")
    assert told.details["cause"]["kind"] == "gpu_out_of_memory"
    plain = CellExecutionError("x", cell_index=3, ename="ValueError", evalue="")
    assert death.explain_gpu(plain, cell) is plain


def test_a_lost_attempt_near_its_limit_is_a_probable_out_of_memory() -> None:
    last = {"memory_bytes": int(0.97 * 8 * GiB), "memory_limit_bytes": 8 * GiB}
    record = {"status": "running", "resources": {"last_sample": last},
              "progress": {"running_cell": 4}, "heartbeat_at": "T"}  # fmt: skip
    reason = attempts.unrecorded(record)["reason"]
    assert "while cell 4 ran; probable out-of-memory: 97 % of the 8.0 GiB limit at its last" in (
        reason
    )
    low = {**record, "resources": {"last_sample": {**last, "memory_bytes": GiB}}}
    assert "probable" not in attempts.unrecorded(low)["reason"]


class FakeNvml:
    """What pynvml answered for two devices (a recorded reply; no GPU on this machine)."""

    def __init__(self) -> None:
        self.shut = False

    def nvmlInit(self) -> None: ...

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetUUID(self, h: int) -> bytes:
        return f"GPU-{h}aaa".encode()

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(used=(h + 1) * GiB, total=80 * GiB, free=0)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return SimpleNamespace(gpu=50 + h * 40, memory=10)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return 300500

    def nvmlShutdown(self) -> None:
        self.shut = True


def test_nvml_reads_the_visible_devices_only() -> None:
    assert visible({"CUDA_VISIBLE_DEVICES": "1"}) == ["1"]
    assert visible({"NVIDIA_VISIBLE_DEVICES": "all"}) is None and visible({}) is None
    fake = FakeNvml()
    nvml = Nvml.open({"CUDA_VISIBLE_DEVICES": "GPU-1"}, fake)
    assert nvml is not None
    (gpu,) = nvml.read()
    assert (gpu.index, gpu.memory_used_bytes, gpu.utilization, gpu.power_w) == (1, 2 * GiB, 90,
                                                                                300.5)  # fmt: skip
    assert nvml.limits() == [{"index": 1, "name": "NVIDIA H100 80GB HBM3",
                              "memory_total_bytes": 80 * GiB}]  # fmt: skip
    assert Nvml.open({"CUDA_VISIBLE_DEVICES": ""}, fake) is not None  # "": all of them
    assert Nvml.open({"CUDA_VISIBLE_DEVICES": "-1"}, fake) is None


def test_a_cells_gpu_figures_come_from_the_samples() -> None:
    sampler = Sampler(1.0, None, Nvml.open({}, FakeNvml()))
    sampler.start(None)  # no tree: a remote kernel
    sampler.sample()  # the first reading, as Resources.start takes it
    sampler.cell_started(5)
    figures = sampler.cell_ended(5)
    sampler.stop()
    assert figures == {"peak_rss_bytes": None, "cpu_s": None, "gpus": [
        {"index": 0, "peak_memory_bytes": GiB, "mean_utilization": 50.0},
        {"index": 1, "peak_memory_bytes": 2 * GiB, "mean_utilization": 90.0},
    ]}  # fmt: skip
    summary = sampler.summary()
    assert summary["limits"]["gpus"][1]["memory_total_bytes"] == 80 * GiB
    assert summary["peaks"]["gpus"] == [{"index": 0, "memory_bytes": GiB},
                                        {"index": 1, "memory_bytes": 2 * GiB}]  # fmt: skip


# A stand-in kernel: on each line "hold" it holds 300 MiB (every page touched), on "free" it
# lets go; it answers each line once done.
HOLDER = """
import sys
held = None
for line in sys.stdin:
    if line.strip() == "hold":
        held = bytearray(300 * 2**20)
        held[::4096] = b"x" * len(held[::4096])
    else:
        held = None
    print("done", flush=True)
"""


def test_a_cells_figures_end_at_its_reply_and_the_next_cells_start_there() -> None:
    """The next cell is sent when this one replies and may run before this one ends (its last
    outputs still arriving): what it uses then is the next cell's, not this one's, even when
    it is freed before the next cell's start is seen."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdin is not None and holder.stdout is not None

    def tell(word: str) -> None:
        holder.stdin.write(word + "\n")  # type: ignore[union-attr]
        holder.stdin.flush()  # type: ignore[union-attr]
        assert holder.stdout.readline().strip() == "done"  # type: ignore[union-attr]

    sampler = Sampler(60.0, None)  # no thread sampling meanwhile: only the cells' readings
    try:
        sampler.start(holder.pid)
        sampler.sample()
        sampler.cell_started(0)
        sampler.cell_replied(0)
        tell("hold")  # cell 1, sent early, runs ...
        sampler.sample()  # ... and a reading lands before cell 0 has ended
        first = sampler.cell_ended(0)
        tell("free")  # cell 1 lets go before its start is seen
        sampler.cell_started(1)
        sampler.cell_replied(1)
        second = sampler.cell_ended(1)
    finally:
        sampler.stop()
        holder.kill()
        holder.wait()
    assert first is not None and first["peak_rss_bytes"] < 200 * 2**20
    assert second is not None and second["peak_rss_bytes"] >= 300 * 2**20


def test_the_tree_of_this_process_has_its_memory_and_cpu() -> None:
    tree = procs.read_tree(os.getpid())
    assert tree is not None and tree.pids >= 1
    assert tree.rss_bytes > 10 * 2**20 and tree.cpu_s > 0
    assert tree.peak_bytes >= tree.rss_bytes
    assert procs.read_tree(2**22 + 12345) is None  # no such process


def test_pressure_asks_for_a_checkpoint_once_per_episode_window(tmp_path: Path) -> None:
    write(tmp_path, {"memory.current": "95", "memory.max": "100", "memory.events": "max 0\n"})
    calls: list[Any] = []
    sampler = Sampler(1.0, MemoryGroup(tmp_path, 2), on_pressure=calls.append)
    sampler.sample()
    sampler.sample()  # within PRESSURE_EVERY_S: not again
    assert len(calls) == 1


def test_a_remote_kernel_has_no_tree_and_its_death_is_not_explained() -> None:
    from nbjob.record import RunRecord

    record = RunRecord.start("r", "s", "o", "local", {})
    res = resources.Resources(1.0, record)
    res.start(SimpleNamespace(process_id=lambda: None))
    died = DeadKernelError("the remote kernel died", exit_status=None)
    assert res.end(died) is died  # no exit status here: nothing to compare
    assert record.to_json()["resources"]["kernel_tree"] == resources.REMOTE
    assert "rss_bytes" not in record.to_json()["resources"]["last_sample"]


def test_resources_listener_puts_figures_in_the_record() -> None:
    from nbjob import events
    from nbjob.record import RunRecord

    record = RunRecord.start("r", "s", "o", "local", {})
    kernel = SimpleNamespace(process_id=os.getpid)
    res = resources.Resources(0.5, record)
    res.start(kernel)
    res.on_event(events.CellStarted(1, "t"))
    res.on_event(events.CellEnded(events.CellState(1)))
    error = res.end(DeadKernelError("killed by SIGKILL", cell_index=1, exit_status=-9))
    data = record.to_json()
    assert data["resources"]["interval_s"] == 0.5 and data["resources"]["last_sample"]
    assert record.cell_resources[1]["peak_rss_bytes"] > 10 * 2**20
    assert isinstance(error, DeadKernelError) and "cause" in error.details


def test_interval_zero_records_nothing_and_still_explains_a_death(tmp_path: Path) -> None:
    from nbjob import events
    from nbjob.config import OPTIONS
    from nbjob.record import RunRecord

    (option,) = [o for o in OPTIONS if o.name == "resource_interval"]
    assert (option.flag, option.env, option.default) == (
        "--resource-interval", "NBJOB_RESOURCE_INTERVAL", 1.0
    )  # fmt: skip
    assert option.parse("0") == 0.0
    with pytest.raises(ValueError):
        option.parse("-1")
    write(tmp_path, {"memory.oom_control": "oom_kill 0\n", "memory.usage_in_bytes": "1"})
    record = RunRecord.start("r", "s", "o", "local", {})
    res = resources.Resources(0, record, group=MemoryGroup(tmp_path, 1))
    res.start(SimpleNamespace(process_id=os.getpid))
    res.on_event(events.CellStarted(1, "t"))
    res.on_event(events.CellEnded(events.CellState(1)))
    (tmp_path / "memory.oom_control").write_text("oom_kill 1\n")  # the kernel's OOM kill
    error = res.end(DeadKernelError("the kernel was killed by SIGKILL", exit_status=-9))
    assert "resources" not in record.to_json() and record.cell_resources == {}
    assert res.timeline() == b""
    assert isinstance(error, DeadKernelError)
    assert error.reason == (
        "the kernel was killed by SIGKILL: out of memory: this container's out-of-memory killer"
        " ended it"
    )


def test_near_the_limit_the_sampler_samples_more_often(tmp_path: Path) -> None:
    write(tmp_path, {"memory.current": "50", "memory.max": "100", "memory.events": "max 0\n"})
    sampler = Sampler(1.0, MemoryGroup(tmp_path, 2))
    sampler.sample()
    assert sampler._next_wait() == 1.0
    (tmp_path / "memory.current").write_text("80")
    sampler.sample()
    assert sampler._next_wait() == 0.25
