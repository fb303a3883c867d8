"""Where per-segment work runs: in this process, or on a Dask cluster.

``grade``, ``screen`` and ``certify`` split their work into one task per store segment
(:mod:`fibergrade.segment_tasks`) and hand the tasks to an executor:

* :class:`InProcess` (no ``--workers`` / ``--scheduler``) runs them one after another
  here, which is exactly the single-process behaviour;
* :class:`DaskExecutor` submits them to a ``dask.distributed`` cluster: a
  ``LocalCluster`` of N worker processes (``--workers N``) or an existing scheduler
  (``--scheduler tcp://HOST:PORT``), in runs of tasks, heaviest first, one Dask task per
  run (:func:`chunk_tasks`). No scheduler of our own: Dask places the runs, and when a worker
  process dies mid-run Dask runs it again elsewhere (up to
  ``distributed.scheduler.allowed-failures`` times, then :class:`ClusterError`).

Tasks receive segment paths and open the files themselves; they return plain records
(pickled on the worker, see :func:`_run_tasks`) and write nothing. The caller, the
single writer, stores results only after every task has succeeded, so a failed or
half-finished task never leaves anything in the store. A large object shared by every task
of a run (the screening model) travels to each worker once and stays there; a small one
(the grading plan) rides inside every task. Dask ships them by pickle, as it ships every
task: the trust boundary is this
client, which loaded the model from its skops file and verified it (digest against the
model card, trusted types) before any lot was read. A worker runs whatever the client sends,
so a cluster must only accept clients the lab trusts (README, "Running on a cluster").

Before any work the client checks that every worker runs the same fibergrade version, so
that a result never mixes figures from two versions of the software.
"""

from __future__ import annotations

import gc
import logging
import math
import numbers
import os
import pickle
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from fibergrade.errors import FibergradeError

T = TypeVar("T")
R = TypeVar("R")
Progress = Callable[[int, int], None]


def connect_timeout_s() -> float:
    """How long to wait for an existing scheduler to answer (its greeting included) and for
    its first worker: Dask's own connect timeout, ``distributed.comm.timeouts.connect``
    (30 s unless the Dask configuration or ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT``
    sets another), so that a cluster's administrator sets it in one place."""
    import dask
    from dask.utils import parse_timedelta

    return float(parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s"))


class ClusterError(FibergradeError):
    """The cluster cannot be started or reached, or a task could not be completed on it."""

    exit_code = 6


class TaskFailed(FibergradeError):
    """A task raised a fibergrade error on a worker; carries its message and exit code.

    Built on the worker from the original error so that it always pickles back to the
    client, whatever the original error's constructor takes.
    """

    def __init__(self, message: str, exit_code: int = 1, kind: str = "FibergradeError") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.kind = kind

    def __reduce__(self) -> Any:
        return (TaskFailed, (str(self), self.exit_code, self.kind))


class Executor(Protocol):
    """Runs ``fn(task, **shared)`` for every task and returns the results in task order."""

    #: a short description for messages ("in this process", "2 Dask workers at ...")
    where: str

    def map(
        self,
        fn: Callable[..., R],
        tasks: Sequence[T],
        *,
        label: str,
        progress: Progress | None = None,
        **shared: Any,
    ) -> list[R]: ...


class InProcess:
    """Run every task here, one after another (the default: no cluster)."""

    where = "in this process"

    def map(
        self,
        fn: Callable[..., R],
        tasks: Sequence[T],
        *,
        label: str,
        progress: Progress | None = None,
        **shared: Any,
    ) -> list[R]:
        del label
        out = []
        for k, task in enumerate(tasks):
            with _collector_paused(freeze=False):  # as on a worker (see _run_tasks)
                out.append(fn(task, **shared))
            if progress:
                progress(k + 1, len(tasks))
        return out


@dataclass(frozen=True, eq=False)
class TaskRun:
    """Some tasks of one map, sent as one Dask task (see :func:`chunk_tasks`).

    Dask names every submitted call by a token of its arguments even when, as here, the
    caller gives the key; left to itself it would pickle every task again to compute it
    (1.6 ms of the client's time for 30 segments, before the first task can start). The
    key already names the run, so the token is a fresh random one, as Dask's own for
    impure calls.
    """

    tasks: tuple[Any, ...]

    def __dask_tokenize__(self) -> str:
        return uuid.uuid4().hex


def _run_tasks(fn: Callable[..., Any], run: TaskRun, **shared: Any) -> bytes:
    """Worker side: run each task of a run and return their results, each pickled as
    soon as it is made (so that a run holds one task's records as objects at a time),
    in one pickled list; a fibergrade error comes back as :class:`TaskFailed`.

    The results are pickled here, in the task's thread, so that Dask only moves bytes.
    Left to Dask, the worker's event-loop thread pickles each result (about 300 KB of
    records per segment) while the next task runs, and the two threads take turns at the
    interpreter lock: measured on 2 cores, grading 15,000 lots took 10-15 % longer on one
    worker, and the tasks' own time rose by more than the pickling itself. (A list result
    left to Dask is also serialised element by element, a pickle and a header per record.)

    The cyclic garbage collector is paused while the tasks run: a task builds about a
    hundred objects per lot, all acyclic and all freed once pickled, and the collections
    their allocations trigger took 12 % of a grading task's time (measured, 15,000 lots).
    """
    try:
        with _collector_paused(freeze=False):
            out = [
                pickle.dumps(fn(task, **shared), protocol=pickle.HIGHEST_PROTOCOL)
                for task in run.tasks
            ]
        return pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)
    except FibergradeError as exc:
        raise TaskFailed(str(exc), exc.exit_code, type(exc).__name__) from None


#: a run of several tasks holds at most this share of a map's work, so that progress
#: (and the client's share of the work: taking results in) moves at least every tenth of
#: it, unless one task alone is heavier
MAX_CHUNK_SHARE = 0.1


def task_weight(task: Any) -> float:
    """How much work a task is, relative to the others of its map: its ``weight``
    attribute (a segment task's lots, a certify task's PDFs), else 1. A weight that is
    not a finite real number >= 0 is a programming error: ``ValueError``."""
    w = getattr(task, "weight", 1)
    if isinstance(w, bool) or not isinstance(w, numbers.Real) or not _is_weight(float(w)):
        raise ValueError(f"a task's weight must be a finite number >= 0, got {w!r}")
    return float(w)


def _is_weight(w: float) -> bool:
    return math.isfinite(w) and w >= 0


def chunk_tasks(
    weights: Sequence[float], slots: int, max_share: float = MAX_CHUNK_SHARE
) -> list[list[int]]:
    """A map's tasks (by index) grouped into runs, each submitted as one Dask task: the
    heaviest tasks first, in large runs, shrinking to single light tasks at the end.

    Tasks are taken heaviest first (ties in their given order; longest-processing-time
    first, so that the last tasks to run are the lightest). Each run then takes tasks
    until it holds ``remaining / (2 * slots)`` of the weight not yet given out (at most
    ``max_share`` of all of it, and always at least one task): the rule of guided
    self-scheduling (Polychronopoulos and Kuck, "Guided self-scheduling", IEEE Trans.
    Computers C-36(12), 1987), with what remains split over twice the workers' threads
    instead of once, so that no first run is a whole worker's share. With equal weights
    a run takes ``ceil(remaining / (2 * slots))`` tasks.

    Every Dask task costs the client about 3.7 ms of event-loop work (messages,
    bookkeeping; measured on 2 cores) and the worker about 1 ms. One Dask task per
    segment, that was 95 ms of the client's 225 ms of CPU time for 30 segments on 2
    workers, taken from the workers' cores; in 13 runs, 48 ms. The single light tasks
    at the end keep the workers finishing within about one such task of each other.
    """
    if slots < 1:
        raise ValueError(f"need slots >= 1, got {slots}")
    w = [float(x) for x in weights]
    if not all(map(_is_weight, w)):
        raise ValueError("task weights must be finite numbers >= 0")
    order = sorted(range(len(w)), key=lambda k: -w[k])  # stable: ties keep their order
    remaining = sum(w)
    cap = max_share * remaining
    runs: list[list[int]] = []
    i = 0
    while i < len(order):
        target = min(cap, remaining / (2 * slots))
        run, held = [order[i]], w[order[i]]
        i += 1
        while i < len(order) and held < target and held + w[order[i]] <= cap:
            run.append(order[i])
            held += w[order[i]]
            i += 1
        runs.append(run)
        remaining -= held
    return runs


@contextmanager
def _collector_paused(freeze: bool = True) -> Iterator[None]:
    """Pause the cyclic garbage collector while results arrive (or a task builds them),
    then resume it.

    The results are acyclic records, tens of thousands per run. The collections that
    their allocations trigger doubled the time the client spent unpickling them
    (measured: 0.57 s against 0.25 s for 25,000 lots). On a machine whose cores the
    workers share, that time is taken from the workers.

    With ``freeze`` (the client receiving a run's results), on resuming, what is alive is
    first moved out of the collector's view with ``gc.freeze``. The next full collection
    would otherwise traverse every record just received, which took a third of the
    client's time in a profile. Frozen objects are still freed once unreferenced; only
    reference cycles among them would wait for ``gc.unfreeze``, and the records have none.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if was_enabled:
            gc.enable()


#: a shared object whose pickle is at most this size is sent inside every task
INLINE_SHARED_BYTES = 64 * 1024


def _rides_along(value: Any) -> bool:
    """Whether a shared object goes inside every task rather than once per worker: small,
    and not one named by content (those stay on the workers between runs)."""
    if isinstance(getattr(value, "digest", None), str):
        return False
    return len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)) <= INLINE_SHARED_BYTES


def _shared(value: T) -> T:
    """A task whose result is ``value``: how a run's shared objects reach the workers."""
    return value


def warm_up() -> None:
    """Worker side: import what grading and screening tasks run and load the compiled
    kernel, so that a new worker does it before its first task instead of during it.

    A cold worker's first grading task took about 1.4 s longer than the next (measured on
    2 cores): 0.9 s importing scikit-learn's modules while unpickling the screening
    model, 0.4 s loading the numba kernel from its cache. Started as soon as a cluster is
    connected (:meth:`DaskExecutor.warm_up`), this runs while the client reads and checks
    the model itself (about 1.6 s, most of it importing skops and scikit-learn).

    Nothing here is needed for correctness: a failure is swallowed (the tasks then meet
    the same problem and report it in their own words), so that a shared cluster's worker
    logs no traceback for it.
    """
    try:
        import importlib

        import numpy as np

        import fibergrade.segment_tasks  # noqa: F401  (the tasks' module and its imports)
        from fibergrade.distribution import summarise
        from fibergrade.measurements import FibreLots
        from fibergrade.screening import MODEL_MODULES

        for name in MODEL_MODULES:
            importlib.import_module(name)
        # a tiny lot through the kernel, as tasks' tables go: float32 diameters, read-only
        # when mapped from a whole segment file, writable when a task selects some lots
        # (numba keeps one compiled version for each)
        d = np.array([15, 16, 17], np.float32)
        summarise(FibreLots(("warm-up",), np.array([0, 3]), d))
        d.flags.writeable = False
        summarise(FibreLots(("warm-up",), np.array([0, 3]), d))
    except Exception:  # the tasks meet it and report it (see above)
        return


def _worker_versions() -> dict[str, str]:
    import numpy

    import fibergrade

    return {"fibergrade": fibergrade.__version__, "numpy": numpy.__version__}


class DaskExecutor:
    """Run tasks on a ``dask.distributed`` cluster through ``client``."""

    def __init__(self, client: Any, where: str) -> None:
        self.client = client
        self.where = where
        #: shared objects named by content (a model's SHA-256), kept on the workers for
        #: the next run on this cluster instead of being sent again
        self._resident: dict[str, Any] = {}
        #: warm-up tasks still running or done (see :meth:`warm_up`)
        self._warming: list[Any] = []

    def warm_up(self) -> None:
        """Start :func:`warm_up` on every connected worker, without waiting for it: a
        map's first tasks queue behind it on each worker. Finished warm-ups are let go at
        the next map; one pinned to a worker that died meanwhile waits, unrun, until the
        client closes."""
        call = uuid.uuid4().hex[:8]
        self._warming = [
            self.client.submit(
                warm_up,
                key=f"warm-up-{call}-{k}",
                workers=[w],
                allow_other_workers=False,
                pure=False,
            )
            for k, w in enumerate(self._workers())
        ]

    def _workers(self) -> dict[str, Any]:
        """The workers connected now, by address, as the scheduler describes them."""
        return self.client.scheduler_info(n_workers=-1).get("workers", {})

    def _slots(self) -> int:
        """How many tasks the cluster runs at once: its workers' threads (at least 1)."""
        return max(1, sum(int(w.get("nthreads", 1)) for w in self._workers().values()))

    def _share(self, value: Any, key: str) -> Any:
        """A future whose result is ``value`` on the workers: a task, so that Dask can
        recompute it when the worker holding it dies (scattered data would be lost)."""
        digest = getattr(value, "digest", None)
        if isinstance(digest, str):
            key = f"resident-{type(value).__name__}-{digest}"
            if key in self._resident:
                return self._resident[key]
        return self.client.submit(_shared, value, key=key, pure=False)

    def map(
        self,
        fn: Callable[..., R],
        tasks: Sequence[T],
        *,
        label: str,
        progress: Progress | None = None,
        **shared: Any,
    ) -> list[R]:
        from distributed import KilledWorker, as_completed

        if not tasks:
            return []
        self._warming = [f for f in self._warming if not f.done()]
        call = uuid.uuid4().hex[:8]
        # Objects shared by every task: a large one (the screening model, ~0.8 MB) travels
        # once per worker, not inside each task, and a model stays there for later runs on
        # this cluster; a small one (a grading plan, a few KB) rides inside every task,
        # which spares the round trips of sharing it (about 30 ms a run, measured).
        inline = {k: v for k, v in shared.items() if _rides_along(v)}
        shared_futures = {
            k: self._share(v, f"{label}-{call}-{k}") for k, v in shared.items() if k not in inline
        }
        fresh = [f for f in shared_futures.values() if f.key not in self._resident]
        if fresh:
            # a copy on every worker: otherwise the scheduler, preferring the worker that
            # holds a task's inputs, would queue most tasks on the first one
            self.client.replicate(fresh)
        self._resident.update(
            {f.key: f for f in shared_futures.values() if str(f.key).startswith("resident-")}
        )
        # runs of tasks, heaviest first, one Dask task each (see chunk_tasks)
        runs = chunk_tasks([task_weight(t) for t in tasks], self._slots())
        keys = [f"{label}-{call}-{k}" for k in range(len(runs))]
        futures = self.client.map(
            _run_tasks,
            [fn] * len(runs),
            [TaskRun(tuple(tasks[k] for k in r)) for r in runs],
            key=keys,
            **shared_futures,
            **inline,
        )
        index = {f.key: k for k, f in enumerate(futures)}
        results: list[Any] = [None] * len(tasks)
        try:
            # Results are fetched as tasks finish, overlapping the rest of the work; the
            # first failed task raises here. The loop is this client's: as_completed
            # would otherwise take the process's default client, and hang when another
            # cluster was opened after this one.
            done = as_completed(futures, loop=self.client.loop, with_results=True)
            finished = 0
            with _collector_paused():
                for future, result in done:
                    r = runs[index[future.key]]
                    for k, part in zip(r, pickle.loads(result), strict=True):
                        results[k] = pickle.loads(part)
                    finished += len(r)
                    if progress:
                        progress(finished, len(tasks))
            return results
        except KilledWorker as exc:
            raise ClusterError(
                f"{label}: a task kept killing the workers that ran it ({exc}); nothing was "
                "stored. Check the workers' logs (memory limit, missing packages)"
            ) from None
        finally:
            once = [f for f in shared_futures.values() if f.key not in self._resident]
            self.client.cancel(futures + once)


#: Dask settings of a local cluster (``--workers N``). Its tasks are a few tens of
#: milliseconds of Python each, and every wake-up of a worker's event loop takes the
#: interpreter lock from the running task:
#:
#: * no statistical profiler (no dashboard is served): it samples every thread's stack
#:   each 10 ms, about a tenth of a Python-heavy task here;
#: * the event loop's blocked-tick check once a second instead of every 20 ms (it warns
#:   after 3 s either way), the memory monitor once a second instead of every 100 ms (a
#:   run holds one segment, ~10 MB, at a time, and ~300 KB of pickled results per
#:   segment), the system monitor every 2 s instead of 500 ms.
#:   Together: one worker graded 15,000 lots 5-8 % faster (measured, 2 cores);
#: * (added by :func:`_local_cluster_config`) glibc's own heap trimming in the worker
#:   processes, as in this process: Dask sets ``MALLOC_TRIM_THRESHOLD_=65536`` before
#:   starting them, so that memory goes back to the system sooner, and the heap then
#:   shrank and regrew around every task (one worker ~5 % slower, measured). A run's
#:   memory is bounded by one segment and the pickled results of its segments.
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}


def _local_cluster_config() -> dict[str, Any]:
    """:data:`LOCAL_CLUSTER_CONFIG`, and Dask's environment for new worker processes less
    its ``MALLOC_TRIM_THRESHOLD_`` (the rest, one BLAS/OpenMP thread, stays)."""
    import dask

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return LOCAL_CLUSTER_CONFIG | {"distributed.nanny.pre-spawn-environ": environ}


def worker_environment(n_workers: int) -> dict[str, str]:
    """Environment of local worker processes: the machine's cores shared out between them.

    A worker runs one task at a time (``threads_per_worker=1``); its compiled kernel
    (numba) and scikit-learn's OpenMP get ``cores // n_workers`` threads (at least one), so
    ``--workers 1`` uses the whole machine like the direct path and N workers do not
    oversubscribe it. On a real cluster the operator sets these (README).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = str(max(1, (cores or 1) // n_workers))
    # OpenMP threads (numba's kernel runs on them) wait for work asleep, not spinning: a
    # spinning thread took a core from this client and the worker's own event loop after
    # every kernel call (one worker on 2 cores graded 15,000 lots ~5 % slower)
    return {"NUMBA_NUM_THREADS": threads, "OMP_NUM_THREADS": threads, "OMP_WAIT_POLICY": "passive"}


def _check_versions(client: Any, where: str) -> None:
    mine = _worker_versions()
    theirs = client.run(_worker_versions)
    if not theirs:
        raise ClusterError(f"{where}: no workers are connected")
    odd = {w: v for w, v in theirs.items() if v != mine}
    if odd:
        shown = "; ".join(f"{w}: {v}" for w, v in sorted(odd.items())[:5])
        raise ClusterError(
            f"{where}: workers run other software than this client ({mine}): {shown}. "
            "Install the same fibergrade version on every worker"
        )


#: a Dask greeting is a short message; a first length field above this is another protocol
#: (an SSH banner read as a length asks for exabytes)
GREETING_MAX_BYTES = 64 * 1024 * 1024


def _probe(address: str, where: str) -> None:
    """Fail at once, with a clear message, when nothing listens at a TCP or TLS address
    (Dask itself keeps retrying a refused connection until its timeout), or, over TCP,
    when what listens is not a Dask scheduler: a scheduler greets every new connection
    with its handshake, a message that starts with its length in 8 bytes. A web server
    (the dashboard's port, say) says nothing and would leave Dask waiting for ever; an SSH
    server's banner, read as a length, would have Dask allocate exabytes."""
    url = urlsplit(address if "://" in address else f"tcp://{address}")
    if url.scheme not in ("tcp", "tls"):
        return  # other transports: let Dask connect
    try:
        host, port = url.hostname, url.port
    except ValueError as exc:
        raise ClusterError(f"{where}: not an address of the form tcp://HOST:PORT ({exc})") from exc
    if not host or port is None:
        raise ClusterError(f"{where}: not an address of the form tcp://HOST:PORT")
    # a scheduler greets at once, but a busy one's event loop may take a while: wait for
    # its greeting as long as Dask waits for a connection
    timeout = connect_timeout_s()
    try:
        conn = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise _unreachable(where, exc) from exc
    if url.scheme == "tls":
        conn.close()  # the greeting comes after the TLS handshake: let Dask do both
        return
    with conn:
        conn.settimeout(timeout)
        head = b""
        try:
            while len(head) < 8 and (part := conn.recv(8 - len(head))):
                head += part
        except OSError:  # timed out, or reset
            pass
    if len(head) < 8:
        raise ClusterError(
            f"{where}: something listens there but sent no Dask greeting within "
            f"{timeout:g} s, Dask's connect timeout (a scheduler greets at once unless it "
            "is very busy). "
            "Is it the scheduler's port (8786 unless set), not its dashboard's (8787)?"
        )
    if int.from_bytes(head, "little") > GREETING_MAX_BYTES:
        raise ClusterError(
            f"{where}: the service listening there does not speak Dask's protocol (it "
            f"began with {head!r}). Give the address of a `dask scheduler`"
        )


def _unreachable(where: str, exc: Exception) -> ClusterError:
    return ClusterError(
        f"cannot reach {where}: {exc}. Is `dask scheduler` running there, and is the "
        "address tcp://HOST:PORT?"
    )


@contextmanager
def executor(
    workers: int | None = None, scheduler: str | None = None, warm: bool = True
) -> Iterator[Executor]:
    """The executor for ``--workers N`` (a local cluster of N processes), ``--scheduler
    ADDRESS`` (an existing cluster) or neither (this process). The cluster is closed on
    exit; an existing cluster is only disconnected from. With ``warm`` (for grading and
    screening, not for ``certify``, whose tasks hash segments and render PDFs) the
    workers start :func:`warm_up` at once."""
    if workers is None and scheduler is None:
        yield InProcess()
        return
    if workers is not None and scheduler is not None:
        raise ClusterError("give either --workers (a local cluster) or --scheduler, not both")
    if workers is not None and workers < 1:
        raise ClusterError(f"--workers must be at least 1, got {workers}")
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - a base dependency
        raise ClusterError(f"dask.distributed is not installed ({exc})") from exc

    cluster = None
    try:
        if workers is not None:
            where = f"a local cluster of {workers} worker process(es)"
            try:
                with dask.config.set(_local_cluster_config()):
                    cluster = LocalCluster(
                        n_workers=workers,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=":0",  # any free port: several clusters may run
                        silence_logs=logging.CRITICAL,  # a worker shutting down logs noise
                        env=worker_environment(workers),
                    )
            except Exception as exc:  # distributed raises several kinds on start-up
                raise ClusterError(f"cannot start {where}: {exc}") from exc
            client = Client(cluster)
        else:
            where = f"the Dask scheduler at {scheduler}"
            _probe(str(scheduler), where)
            try:
                client = Client(scheduler, timeout=connect_timeout_s())
            except Exception as exc:  # distributed raises many kinds on a failed connect
                raise _unreachable(where, exc) from exc
        try:
            if scheduler is not None:
                try:
                    client.wait_for_workers(1, timeout=connect_timeout_s())
                except TimeoutError as exc:
                    raise ClusterError(
                        f"{where} has no workers after {connect_timeout_s():g} s, Dask's "
                        "connect timeout; start some "
                        f"with `dask worker {scheduler}`"
                    ) from exc
            _check_versions(client, where)
            ex = DaskExecutor(client, where)
            if warm:
                ex.warm_up()
            yield ex
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


__all__ = [
    "ClusterError",
    "DaskExecutor",
    "Executor",
    "InProcess",
    "TaskFailed",
    "TaskRun",
    "chunk_tasks",
    "connect_timeout_s",
    "executor",
    "task_weight",
    "warm_up",
    "worker_environment",
]
