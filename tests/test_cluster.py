"""Scale-out on Dask (issue 8): a real local cluster of two worker processes grades,
screens and certifies a store of many segments with results identical to this process;
a worker killed mid-run is retried; failures store nothing; the CLI's --workers and
--scheduler options work end to end."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import dask
import numpy as np
import pytest
from distributed import get_task_stream
from distributed.diagnostics.plugin import WorkerPlugin

from fibergrade.adapters.writers import to_histograms
from fibergrade.certificates import certify_lots
from fibergrade.cluster import (
    ClusterError,
    DaskExecutor,
    InProcess,
    TaskFailed,
    _check_versions,
    chunk_tasks,
    executor,
    worker_environment,
)
from fibergrade.demo_calibration import calibrate_simulated_instruments
from fibergrade.errors import StoreCorruptError
from fibergrade.keys import init_keys, load_private_key
from fibergrade.measurements import LotMeta
from fibergrade.screening import screen_stored_lots
from fibergrade.segment_tasks import plan_tasks, summarise_segment
from fibergrade.store import Store
from fibergrade.synthetic import demo_day
from fibergrade.workflow import grade_lots, latest_grades

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    # one pytest-xdist worker runs the whole module, so its cluster is started once
    pytest.mark.xdist_group("dask-cluster"),
]

# the plugins below are defined here, in a module the workers cannot import
cloudpickle.register_pickle_by_value(sys.modules[__name__])

EXE = shutil.which("fibergrade", path=str(Path(sys.executable).parent)) or "fibergrade"
DATE = "2026-11-20"
FIBRE_SEGMENTS = 5


def build_store(root: Path, work: Path) -> Store:
    """A calibrated store of several fibre segments and one histogram segment."""
    day = demo_day(seed=11, n_lots=48, date=DATE)
    store = Store.open(root)
    calibrate_simulated_instruments(store, work, seed=11, date=DATE)
    ids = day.fibres.lot_ids
    n_hist = 8
    chunks = np.array_split(np.arange(len(ids) - n_hist), FIBRE_SEGMENTS)
    for k, idx in enumerate(chunks):
        part = day.fibres.select(idx)
        store.import_fibres(
            part,
            {x: day.meta[x] for x in part.lot_ids},
            source_name=f"ofda-part-{k}.csv",
            source_digest=f"{k:064x}",
        )
    hist = to_histograms(day.fibres.select(np.arange(len(ids) - n_hist, len(ids))))
    meta = {}
    for x in hist.lot_ids:
        d = day.meta[x].to_dict()
        d["instrument_id"] = "LASERSCAN-SIM-2"
        meta[x] = LotMeta.from_dict(d)
    store.import_histograms(hist, meta, source_name="laserscan.csv", source_digest="f" * 64)
    return store


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cluster-lab")
    store = build_store(d / "store", d)
    assert len(store.segments()) == FIBRE_SEGMENTS + 1
    grade_lots(store)  # graded once here, so copies certify from the same grade result
    init_keys(d / "keys")
    return d


@pytest.fixture(scope="module")
def cluster():
    """One real LocalCluster of two worker processes for the module."""
    with executor(workers=2) as ex:
        assert isinstance(ex, DaskExecutor)
        assert len(ex.client.scheduler_info()["workers"]) == 2
        yield ex


def copy_store(lab: Path, tmp_path: Path, name: str) -> Store:
    shutil.copytree(lab / "store", tmp_path / name)
    return Store.open(tmp_path / name)


def as_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, allow_nan=False)


# --------------------------------------------------------------------------- same figures


def test_grading_on_two_workers_matches_this_process(lab, cluster):
    store = Store.open(lab / "store")
    here = grade_lots(store, record=False)
    there = grade_lots(store, record=False, executor=cluster)
    assert len(here.records) == 48
    assert any(r.get("calibration") for r in here.records)  # corrected on read
    assert {r["segment"] for r in here.records} == {s.digest for s in store.segments()}
    assert as_json(there.records) == as_json(here.records)
    # key order too: the JSON a user sees is the same
    assert [list(r) for r in there.records] == [list(r) for r in here.records]


def test_a_subset_in_any_order_under_a_chosen_standard_matches(lab, cluster):
    store = Store.open(lab / "store")
    ids = [r.lot_id for r in store.lots()]
    pick = [ids[40], ids[3], ids[27], ids[12], ids[44], ids[3]]  # across segments, repeated
    kw = {"standard": "gb18267-cashmere", "record": False, "uncalibrated": True}
    here = grade_lots(store, pick, **kw)
    there = grade_lots(store, pick, executor=cluster, **kw)
    assert [r["lot_id"] for r in there.records] == list(dict.fromkeys(pick))
    assert as_json(there.records) == as_json(here.records)


def test_screening_on_two_workers_matches_this_process(lab, cluster):
    store = Store.open(lab / "store")
    here = screen_stored_lots(store, record=False)
    there = screen_stored_lots(store, record=False, executor=cluster)
    assert as_json(there.records) == as_json(here.records)
    assert {r["verdict"] for r in here.records} >= {"clean"}


def test_the_model_stays_on_the_workers_between_runs(lab, cluster):
    store = Store.open(lab / "store")
    first = grade_lots(store, record=False, executor=cluster)
    resident = dict(cluster._resident)
    assert len(resident) == 1 and next(iter(resident)).startswith("resident-ScreeningModel-")
    again = screen_stored_lots(store, record=False, executor=cluster)  # the same model
    assert cluster._resident == resident
    assert grade_lots(store, record=False, executor=cluster).records == first.records
    assert len(again.records) == len(first.records)


def test_progress_counts_segments_as_they_finish(lab, cluster):
    store = Store.open(lab / "store")
    seen: list[tuple[int, int]] = []
    grade_lots(store, record=False, executor=cluster, progress=lambda k, n: seen.append((k, n)))
    tasks, _ = plan_tasks(store, store.lots())
    n = FIBRE_SEGMENTS + 1
    assert len(tasks) == n
    # one call per Dask task, each counting the segments done so far
    runs = chunk_tasks([t.weight for t in tasks], cluster._slots())
    assert len(seen) == len(runs) and all(total == n for _, total in seen)
    done = [k for k, _ in seen]
    assert done == sorted(done) and done[-1] == n
    assert {b - a for a, b in zip([0, *done], done, strict=False)} <= {len(r) for r in runs}


@dataclasses.dataclass(frozen=True)
class Job:
    k: int
    weight: float


def _square(job: Job | int, offset: int) -> int:
    k = job.k if isinstance(job, Job) else job
    return k * k + offset


def test_a_map_of_many_tasks_runs_them_in_fewer_dask_tasks_in_order(cluster):
    tasks = list(range(37))
    seen: list[tuple[int, int]] = []
    got = cluster.map(
        _square, tasks, label="square", progress=lambda k, n: seen.append((k, n)), offset=1
    )
    assert got == [k * k + 1 for k in tasks]
    runs = chunk_tasks([1.0] * len(tasks), cluster._slots())
    assert max(len(r) for r in runs) > 1
    # progress: one call per Dask task, counting the tasks of the runs finished so far
    done = [k for k, _ in seen]
    assert len(seen) == len(runs) and {n for _, n in seen} == {37}
    assert done == sorted(done) and done[-1] == 37
    steps = sorted(b - a for a, b in zip([0, *done], done, strict=False))
    assert steps == sorted(len(r) for r in runs) and steps[-1] > 1
    with get_task_stream(cluster.client) as stream:
        cluster.map(_square, tasks, label="square", offset=0)
    ran = [t for t in stream.data if str(t["key"]).startswith("square-")]
    assert len(ran) == len(runs) < len(tasks)
    # uneven tasks run heaviest first, and their results still come back in task order
    jobs = [Job(k, weight=(k * 7919) % 13 + 1) for k in range(40)]
    assert cluster.map(_square, jobs, label="square", offset=2) == [k * k + 2 for k in range(40)]


def test_results_are_stored_once_by_the_client(lab, cluster, tmp_path):
    store = copy_store(lab, tmp_path, "s")
    before = store.results("grade")
    run = grade_lots(store, executor=cluster)
    stored = store.results("grade")
    assert [d for d, _ in stored] == [d for d, _ in before] + [run.result_id]
    assert stored[-1][1]["lots"] == run.records


def certifiable(store: Store, per_segment: int = 2) -> list[str]:
    """A few clean, graded lots from each of several segments (PDFs take a while)."""
    ok = {k for k, r in latest_grades(store).items() if r["screening"]["verdict"] == "clean"}
    chosen: list[str] = []
    for seg in store.segments()[:4]:
        chosen += [r.lot_id for r in store.lots() if r.segment == seg.digest and r.lot_id in ok][
            :per_segment
        ]
    assert len(chosen) == 4 * per_segment
    return chosen


def _certificate_view(env: dict[str, Any]) -> dict[str, Any]:
    """A certificate without what differs between two issues of it (time, audit position,
    and so the signature)."""
    doc = dict(env["certificate"])
    for k in ("issued_at", "audit_position"):
        doc.pop(k)
    return doc


def test_certificates_issued_on_two_workers_match_this_process(lab, cluster, tmp_path):
    key = load_private_key(lab / "keys" / "lab.key")
    outs = {}
    for name, ex in (("here", None), ("there", cluster)):
        store = copy_store(lab, tmp_path, name)
        chosen = certifiable(store)
        res = certify_lots(store, chosen, key, tmp_path / f"{name}-certs", executor=ex)
        assert [i.envelope["certificate"]["lot"]["lot_id"] for i in res.issued] == chosen
        assert all(i.pdf_path and i.pdf_path.stat().st_size > 10_000 for i in res.issued)
        # the PDFs were moved out of their staging folder, which is gone
        assert sorted(p.name for p in (tmp_path / f"{name}-certs").glob(".*")) == []
        assert len(store.results("certificate")) == len(chosen)
        outs[name] = [_certificate_view(i.envelope) for i in res.issued]
    assert as_json(outs["there"]) == as_json(outs["here"])


@pytest.mark.parametrize("where", ["lot index", "fibre data"])
def test_certify_refuses_altered_raw_data_and_stores_nothing(lab, cluster, tmp_path, where):
    """One byte of a segment changed after import. In its lot index, certify finds it when
    it compares the manifest with the segments (hashing the segment that disagrees),
    before any task; in the fibre data, the task that hashes the segment finds it."""
    key = load_private_key(lab / "keys" / "lab.key")
    store = copy_store(lab, tmp_path, "s")
    seg = store.segments()[2]
    lots = certifiable(store)
    assert any(store.lot(x).segment == seg.digest for x in lots)
    path = store.segment_path(seg.digest)
    path.chmod(0o644)
    size = path.stat().st_size
    with path.open("r+b") as f:  # one byte of the raw data changed after import
        f.seek(size - 100 if where == "lot index" else size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 1]))
    out = tmp_path / "certs"
    with pytest.raises(StoreCorruptError if where == "lot index" else TaskFailed) as ei:
        certify_lots(store, lots, key, out, executor=cluster)
    assert ei.value.exit_code == 3
    assert getattr(ei.value, "kind", "StoreCorruptError") == "StoreCorruptError"
    assert seg.digest in str(ei.value) and "altered" in str(ei.value)
    assert store.results("certificate") == []
    assert list(out.glob("*")) == []  # no PDF of an unissued certificate is left
    # not even by the tasks still rendering on the other worker when the run failed
    _wait_until_idle(cluster)
    assert list(out.glob("*")) == []


def _wait_until_idle(cluster: DaskExecutor, timeout_s: float = 60.0) -> None:
    """Until no worker runs a task (cancelled ones run to their end)."""
    deadline = time.monotonic() + timeout_s
    while any(cluster.client.run(lambda dask_worker: dask_worker.state.executing_count).values()):
        assert time.monotonic() < deadline, "workers still busy"
        time.sleep(0.1)


# --------------------------------------------------------------------------- failures


class DieOnce(WorkerPlugin):
    """Kill the worker process that starts the first task whose key has ``prefix``."""

    def __init__(self, marker: str, prefix: str) -> None:
        self.marker = marker
        self.prefix = prefix

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish != "executing" or not str(key).startswith(self.prefix):
            return
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os._exit(1)  # as if the machine lost power: no clean-up, no reply


class AlwaysDie(WorkerPlugin):
    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish == "executing" and str(key).startswith("grade-"):
            os._exit(1)


def test_a_worker_killed_mid_run_is_retried_and_the_result_is_whole(lab, tmp_path):
    store = copy_store(lab, tmp_path, "s")
    expected = grade_lots(store, record=False).records
    marker = tmp_path / "died"
    with executor(workers=2) as ex:
        ex.client.register_plugin(DieOnce(str(marker), "grade-"))
        run = grade_lots(store, executor=ex)
    assert marker.exists()  # a worker really died
    assert as_json(run.records) == as_json(expected)
    assert [d for d, _ in store.results("grade")][1:] == [run.result_id]


def test_a_task_that_keeps_killing_workers_fails_the_run_and_stores_nothing(lab, tmp_path):
    store = copy_store(lab, tmp_path, "s")
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        executor(workers=2) as ex,
    ):
        ex.client.register_plugin(AlwaysDie())
        with pytest.raises(ClusterError, match="kept killing the workers"):
            grade_lots(store, executor=ex)
    assert len(store.results("grade")) == 1  # only the fixture's


def test_a_worker_that_cannot_see_the_store_says_so(lab, cluster, tmp_path):
    store = Store.open(lab / "store")
    tasks, _ = plan_tasks(store, store.lots())
    moved = [t.__class__(**{**t.__dict__, "path": str(tmp_path / "elsewhere.h5")}) for t in tasks]
    with pytest.raises(TaskFailed, match="must see the store at this same path") as ei:
        cluster.map(summarise_segment, moved[:1], label="summarise", cut_um=30.0)
    assert ei.value.exit_code == 3
    with pytest.raises(Exception, match="must see the store"):  # the same check in-process
        InProcess().map(summarise_segment, moved[:1], label="summarise", cut_um=30.0)


class _Workers:
    """A stand-in for a Dask client's ``run``: what each worker reports."""

    def __init__(self, versions: dict[str, dict[str, str]]) -> None:
        self.versions = versions

    def run(self, fn: Any) -> dict[str, dict[str, str]]:
        return self.versions


def test_small_shared_objects_ride_inside_tasks_and_large_ones_travel_once():
    from fibergrade.cluster import INLINE_SHARED_BYTES, _rides_along
    from fibergrade.grading import load_standard
    from fibergrade.segment_tasks import GradePlan

    assert _rides_along(30.0)
    assert _rides_along(GradePlan((load_standard("us-wpla-cashmere"), None), 30.0))
    assert not _rides_along(b"x" * (INLINE_SHARED_BYTES + 1))

    class Named:  # named by content (like a screening model): stays on the workers
        digest = "0" * 64

    assert not _rides_along(Named())


def test_tasks_run_with_the_collector_paused_and_it_resumes_after_errors():
    from fibergrade.cluster import TaskRun, _run_tasks
    from fibergrade.errors import InputError

    seen: list[bool] = []

    def task(k: int) -> list[dict[str, int]]:
        seen.append(gc.isenabled())
        if k < 0:
            raise InputError("lots.csv", 3, "not a diameter")
        return [{"lot": k}]

    assert gc.isenabled()
    assert InProcess().map(task, [1, 2], label="t") == [[{"lot": 1}], [{"lot": 2}]]
    # a worker returns the run's results, each pickled on its own, in one pickled list
    parts = pickle.loads(_run_tasks(task, TaskRun((3, 5))))
    assert [pickle.loads(b) for b in parts] == [[{"lot": 3}], [{"lot": 5}]]
    assert seen == [False, False, False, False] and gc.isenabled()
    with pytest.raises(InputError):
        InProcess().map(task, [-1], label="t")
    assert gc.isenabled()
    with pytest.raises(TaskFailed, match=r"lots\.csv.*not a diameter"):
        _run_tasks(task, TaskRun((4, -1)))
    assert gc.isenabled()


def test_workers_with_other_software_are_refused():
    from fibergrade.cluster import _worker_versions

    mine = _worker_versions()
    _check_versions(_Workers({"tcp://a:1": mine, "tcp://b:2": mine}), "cluster")
    with pytest.raises(ClusterError, match=r"tcp://b:2.*same fibergrade version"):
        _check_versions(
            _Workers({"tcp://a:1": mine, "tcp://b:2": mine | {"fibergrade": "0.0"}}), "c"
        )
    with pytest.raises(ClusterError, match="no workers"):
        _check_versions(_Workers({}), "c")


def test_local_workers_share_the_cores(cluster):
    cores = len(os.sched_getaffinity(0))
    assert worker_environment(1)["NUMBA_NUM_THREADS"] == str(cores)
    assert worker_environment(cores) == {
        "NUMBA_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "passive",
    }
    assert worker_environment(4 * cores)["OMP_NUM_THREADS"] == "1"

    def threads() -> int:
        import numba

        return numba.get_num_threads()

    assert set(cluster.client.run(threads).values()) == {max(1, cores // 2)}


def _warm_state() -> dict[str, Any]:
    """On a worker: which of the tasks' modules are loaded, and the kernel's signatures."""
    from fibergrade.screening import MODEL_MODULES

    mods = ("fibergrade.segment_tasks", "fibergrade.kernel", *MODEL_MODULES)
    loaded = {m: m in sys.modules for m in mods}
    kernel = sys.modules.get("fibergrade.kernel")
    return loaded | {"kernel_signatures": len(kernel._fused.signatures) if kernel else 0}


def test_new_workers_warm_up_before_any_task(lab):
    """A fresh cluster's workers import the tasks' modules (scikit-learn's included) and
    load the compiled kernel before any map: the warm-up task the executor starts."""
    from distributed import wait

    with executor(workers=1) as ex:
        assert isinstance(ex, DaskExecutor) and len(ex._warming) == 1
        wait(ex._warming, timeout=120)
        assert all(f.status == "finished" for f in ex._warming)
        (state,) = ex.client.run(_warm_state).values()
        # the kernel as tasks call it: on read-only (mapped) and on writable diameters
        assert state.pop("kernel_signatures") == 2
        assert all(state.values()), state
        # a map right after works as ever
        store = Store.open(lab / "store")
        lots = [r.lot_id for r in store.lots()][:3]
        warm = grade_lots(store, lots, record=False, executor=ex).records
        assert warm == grade_lots(store, lots, record=False).records


def test_the_connect_timeout_is_dasks_own_setting():
    from fibergrade.cluster import connect_timeout_s

    with dask.config.set({"distributed.comm.timeouts.connect": "2.5s"}):
        assert connect_timeout_s() == 2.5
    with dask.config.set({"distributed.comm.timeouts.connect": 4}):  # seconds
        assert connect_timeout_s() == 4.0


def test_bad_executor_arguments():
    with pytest.raises(ClusterError, match="not both"), executor(2, "tcp://127.0.0.1:1"):
        pass
    with pytest.raises(ClusterError, match="at least 1"), executor(0):
        pass
    with executor() as ex:
        assert isinstance(ex, InProcess)


# --------------------------------------------------------------------------- CLI


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, cwd=cwd, timeout=300, check=False,
        env=None if env is None else os.environ | env,
    )  # fmt: skip


def test_cli_grade_with_workers_matches_and_records_once(lab, tmp_path):
    shutil.copytree(lab / "store", tmp_path / "s")
    here = cli("grade", "--store", "s", "--json", cwd=tmp_path)
    assert here.returncode == 0, here.stderr
    there = cli("grade", "--store", "s", "--workers", "2", "--json", cwd=tmp_path)
    assert there.returncode == 0, there.stderr
    assert json.loads(there.stdout) == json.loads(here.stdout)
    assert len(Store.open(tmp_path / "s").results("grade")) == 1 + 2  # one per run


def test_cli_screen_and_certify_on_an_existing_scheduler(lab, cluster, tmp_path):
    shutil.copytree(lab / "store", tmp_path / "s")
    address = cluster.client.scheduler.address
    there = cli("screen", "--store", "s", "--scheduler", address, cwd=tmp_path)
    assert there.returncode == 0, there.stderr
    assert f"working on the Dask scheduler at {address}" in there.stderr
    assert "48 lots screened by screening-" in there.stdout
    key = str(lab / "keys" / "lab.key")
    chosen = certifiable(Store.open(tmp_path / "s"), per_segment=1)
    env = os.environ | {"FIBERGRADE_SCHEDULER": address}
    r = subprocess.run(
        [EXE, "certify", *chosen, "--store", "s", "--key", key, "--out", "certs", "--json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    issued = json.loads(r.stdout)
    assert len(issued) == 4 and all(Path(tmp_path, i["pdf"]).is_file() for i in issued)
    v = cli("verify", issued[0]["json"], "--public-key", str(lab / "keys" / "lab.pub"),
            "--store", "s", cwd=tmp_path)  # fmt: skip
    assert v.returncode == 0, v.stderr


def test_cli_cluster_errors_are_clear(lab, tmp_path):
    with contextlib.closing(__import__("socket").socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    r = cli("grade", "--store", str(lab / "store"), "--scheduler", f"tcp://127.0.0.1:{port}",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 6
    assert "cannot reach the Dask scheduler" in r.stderr and "Connection refused" in r.stderr
    r = cli("grade", "--store", str(lab / "store"), "--workers", "2", "--scheduler",
            f"tcp://127.0.0.1:{port}", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 6 and "not both" in r.stderr
    r = cli("screen", "--store", str(lab / "store"), "--workers", "0", cwd=tmp_path)
    assert r.returncode == 2 and "--workers" in r.stderr


def test_a_scheduler_address_where_another_service_listens_is_refused(lab, tmp_path):
    """A web server (the dashboard's port) says nothing; an SSH server's banner is no Dask
    greeting: both end with exit 6 and one line, not a hang or a traceback. The wait for a
    greeting is Dask's connect timeout, as an administrator sets it (30 s by default; 2 s
    here, in the environment)."""
    import socket
    import threading

    with contextlib.closing(socket.socket()) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections complete in the backlog; nothing is ever sent
        r = cli("grade", "--store", str(lab / "store"), "--scheduler",
                f"tcp://127.0.0.1:{silent.getsockname()[1]}", cwd=tmp_path,
                env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"})  # fmt: skip
    assert r.returncode == 6, r.stderr
    assert "sent no Dask greeting within 2 s, Dask's connect timeout" in r.stderr
    assert "Traceback" not in r.stderr
    with contextlib.closing(socket.socket()) as ssh:
        ssh.bind(("127.0.0.1", 0))
        ssh.listen()

        def banner() -> None:
            conn, _ = ssh.accept()
            with conn, contextlib.suppress(OSError):  # the client hangs up first
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
                conn.recv(100)

        threading.Thread(target=banner, daemon=True).start()
        r = cli("screen", "--store", str(lab / "store"), "--scheduler",
                f"tcp://127.0.0.1:{ssh.getsockname()[1]}", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 6, r.stderr
    assert "does not speak Dask's protocol" in r.stderr and "Traceback" not in r.stderr


def test_local_workers_run_with_less_housekeeping_and_glibc_trimming(cluster):
    def settings() -> dict[str, Any]:
        return {
            "tick": dask.config.get("distributed.admin.tick.interval"),
            "profile": dask.config.get("distributed.worker.profile.enabled"),
            "trim": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
            "omp_wait": os.environ.get("OMP_WAIT_POLICY"),
        }

    seen = list(cluster.client.run(settings).values())
    assert seen == [{"tick": "1s", "profile": False, "trim": None, "omp_wait": "passive"}] * 2
