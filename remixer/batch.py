"""Many songs at once: a manifest's rows over a pool of Ray actors, each holding one Remixer.

The driver (this process) checks the whole manifest, fetches the weights once, then hands rows to idle
workers and records each finished row in DIR/results.jsonl at once. Workers write a row's outputs into
DIR/.partial/ and the driver moves them to DIR/<id>/ before the row counts as done, so an interrupted
run leaves nothing half-written that looks finished. Ray is an optional dependency, imported only here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Iterator

from remixer import weights
from remixer.errors import RemixerError
from remixer.manifest import Row, read_manifest
from remixer.pipeline import Remixer
from remixer.request import RemixRequest

log = logging.getLogger("remixer.batch")

RESULTS_FILE = "results.jsonl"
PARTIAL_DIR = ".partial"
LOCK_FILE = ".batch.lock"
RAY_REQUIREMENT = "ray==2.60.0"


class BatchError(RemixerError):
    """The batch cannot go on (no Ray, no room for a worker, workers failing to start, a second run)."""


@dataclass(frozen=True)
class PoolPlan:
    """What the actor pool asks Ray for."""

    workers: int
    gpus_per_worker: float
    cpus_per_worker: float

    @property
    def device(self) -> str:
        """'cuda' when each worker holds a GPU, else 'cpu'."""
        return "cuda" if self.gpus_per_worker > 0 else "cpu"


@dataclass
class BatchSummary:
    total: int  # rows in the manifest
    ok: list[str] = field(default_factory=list)  # ids remixed by this run
    failed: dict[str, str] = field(default_factory=dict)  # id -> error, this run
    skipped: list[str] = field(default_factory=list)  # done by an earlier run with the same inputs
    abandoned: list[str] = field(default_factory=list)  # not finished when the run was stopped
    workers: list[dict[str, Any]] = field(default_factory=list)  # per worker: host, pid, device, setup_s, rows
    plan: PoolPlan | None = None
    seconds: float = 0.0
    interrupted: bool = False
    results: Path | None = None


def import_ray():
    """Ray, or a message saying how to install it."""
    try:
        import ray
    except ImportError:
        raise BatchError("batch remixing runs on Ray, which is not installed: pip install "
                         f"'musicgen-remixer[batch]' (or pip install {RAY_REQUIREMENT})") from None
    return ray


class Ledger:
    """DIR/results.jsonl: one line per finished row, the latest outcome of each id.

    Each finished row rewrites the file through a temporary file and a rename, so a crash at any moment
    leaves the old file or the new one, never a broken line.
    """

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                try:
                    record = json.loads(line)
                    self.records[record["id"]] = record
                except (json.JSONDecodeError, KeyError, TypeError):
                    log.warning("%s line %d is not a result; ignored (its row runs again)", path.name, number)

    def done(self, row: Row) -> bool:
        """Finished before with the same inputs, and its outputs are still there."""
        record = self.records.get(row.id)
        return (record is not None and record.get("status") == "ok" and record.get("input_hash") == row.input_hash
                and all((self.path.parent / p).is_file() for p in record.get("outputs", {}).values()))

    def record(self, record: dict[str, Any]) -> None:
        """Add or replace a row's record and rewrite results.jsonl atomically (fsync, then rename)."""
        self.records[record["id"]] = record
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records.values())
        handle, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            os.fchmod(handle, 0o644)  # mkstemp's 0600 would hide the results from the user's other tools
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


class RemixWorker:
    """One pool member (a Ray actor): a Remixer set up once, remixing one row at a time."""

    def __init__(self, weights_dir: str, device: str, offline: bool | None, threads: int):
        import torch


        torch.set_num_threads(max(1, threads))
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        logging.getLogger("remixer").setLevel(logging.WARNING)  # per-stage lines would bury the progress bar
        start = time.perf_counter()
        self.remixer = None
        self.error = None
        try:
            self.remixer = Remixer(weights_dir, device, offline=offline)
        except RemixerError as error:
            self.error = str(error)
        self.stats = {"host": socket.gethostname(), "pid": os.getpid(), "device": device,
                      "setup_s": round(time.perf_counter() - start, 2), "rows": 0}

    def ready(self) -> dict[str, Any]:
        """The worker's setup report: pid, host, setup seconds, and the setup error if any."""
        return {**self.stats, "error": self.error}

    def remix(self, request: RemixRequest, staging: str) -> dict[str, Any]:
        """Remix one row's request into `staging`; a dict with status ok/failed, never an exception. The
        request was checked once, when the manifest was read; Ray hands it over as it is (unpickling a
        dataclass does not run its checks again)."""
        start = time.perf_counter()
        outcome: dict[str, Any] = {"worker": f"{self.stats['host']}:{self.stats['pid']}"}
        try:
            result = self.remixer.remix(request, staging)
        except RemixerError as error:
            outcome.update(status="failed", error=str(error))
        except Exception as error:  # a bug fails its row, never the batch; the traceback goes to Ray's log
            traceback.print_exc()
            outcome.update(status="failed", error=f"internal error: {type(error).__name__}: {error}")
        else:
            outcome.update(status="ok", outputs={name: path.name for name, path in result.named_outputs.items()},
                           seed=result.seed, duration=round(result.analysis.duration, 3),
                           timings={name: round(s, 3) for name, s in result.timings.items()},
                           fidelity=result.analysis.fidelity, takes=result.analysis.takes)
        if outcome["status"] != "ok":
            shutil.rmtree(staging, ignore_errors=True)
        outcome["elapsed"] = round(time.perf_counter() - start, 3)
        return outcome

    def __repr__(self) -> str:  # how Ray names this actor in its logs
        return f"RemixWorker(pid={os.getpid()})"


def plan_pool(resources: dict[str, float], rows: int, workers: int | None = None,
              gpus_per_worker: float | None = None, cpus_per_worker: float | None = None) -> PoolPlan:
    """Workers and their share of the cluster: a GPU each where there are GPUs, else the CPU cores."""
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 1.0)
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus >= 1 else 0.0
    if gpus_per_worker < 0 or (workers is not None and workers < 1) or (cpus_per_worker or 1) <= 0:
        raise BatchError("--workers must be >= 1, --gpus-per-worker >= 0 and --cpus-per-worker > 0")
    if gpus_per_worker > 0 and gpus < gpus_per_worker:
        raise BatchError(f"each worker asks for {gpus_per_worker:g} GPU but the Ray cluster has {gpus:g}; "
                         "use --gpus-per-worker 0 to run on the CPU")
    if workers is None:
        workers = int(gpus // gpus_per_worker) if gpus_per_worker > 0 else 1
    workers = max(1, min(workers, rows))
    if cpus_per_worker is None:  # the cores shared out: a CPU remix uses every core it is given
        cpus_per_worker = float(max(1, math.floor(cpus / workers)))
    want_gpus, want_cpus = workers * gpus_per_worker, workers * cpus_per_worker
    if want_gpus > gpus + 1e-9 or want_cpus > cpus + 1e-9:
        raise BatchError(f"{workers} worker(s) x ({gpus_per_worker:g} GPU, {cpus_per_worker:g} CPU) need "
                         f"{want_gpus:g} GPU and {want_cpus:g} CPU, but the Ray cluster has {gpus:g} GPU and "
                         f"{cpus:g} CPU: ask for fewer --workers or a smaller share per worker")
    return PoolPlan(workers, gpus_per_worker, cpus_per_worker)


def run_batch(manifest: str | Path, out: str | Path, *, workers: int | None = None,
              gpus_per_worker: float | None = None, cpus_per_worker: float | None = None,
              address: str | None = None, weights_dir: str | Path | None = None, offline: bool | None = None,
              progress: bool = True) -> BatchSummary:
    """Remix every row of `manifest` into `out`; rows done before with the same inputs are skipped."""
    rows = read_manifest(manifest)  # every problem before any work
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with _only_run(out):
        ledger = Ledger(out / RESULTS_FILE)
        summary = BatchSummary(total=len(rows), results=ledger.path)
        done = {row.id for row in rows if ledger.done(row)}
        todo = [row for row in rows if row.id not in done]
        summary.skipped = [row.id for row in rows if row.id in done]
        shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)  # left by a run that was killed
        if summary.skipped:
            log.info("%d of %d row(s) were done before with the same inputs: skipped", len(summary.skipped),
                     len(rows))
        if todo:
            ray = import_ray()  # before fetching gigabytes of weights
            root = weights.weights_dir(weights_dir).resolve()
            # Every file the rows need, fetched and converted here once, not by each worker at the same time.
            Remixer.prefetch(sorted({row.request.model_version for row in todo}),
                             any(row.request.multi_band_diffusion for row in todo), root, offline)
            _run_on_ray(ray, todo, out, ledger, summary, root, offline, address,
                        (workers, gpus_per_worker, cpus_per_worker), progress)
    summary.seconds = time.perf_counter() - started
    return summary


class _only_run:
    """One batch per output folder at a time (two would overwrite each other's results)."""

    def __init__(self, out: Path):
        self.path = out / LOCK_FILE

    def __enter__(self):
        self.file = open(self.path, "w")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.close()
            raise BatchError(f"another batch is writing to {self.path.parent}; wait for it or use another "
                             "--out") from None
        return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)
        self.file.close()
        return False


def _run_on_ray(ray, todo: list[Row], out: Path, ledger: Ledger, summary: BatchSummary, root: Path,
                offline: bool | None, address: str | None, sizes: tuple, progress: bool) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline-first: no usage report unless asked
    owned = not ray.is_initialized()
    if owned:
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise BatchError(f"could not reach the Ray cluster at {address!r}: {error}") from None
    try:
        # After ray.init, which installs its own SIGTERM handler.
        with _stop_requests() as stop:
            _run_pool(ray, todo, out, ledger, summary, root, offline, sizes, progress, stop)
    finally:
        if owned:
            ray.shutdown()


@contextlib.contextmanager
def _stop_requests() -> Iterator[threading.Event]:
    """Ctrl-C and SIGTERM (a scheduler stopping the job) set the event the driver's loop checks after each
    wait; a second signal stops at once.

    Why not Python's KeyboardInterrupt alone: the driver spends nearly all its time inside ray.wait, whose
    C++ loop runs Python's signal handlers itself, catches the KeyboardInterrupt there and turns it into a
    status; on some of its paths that status is dropped, and the run carried on as if nothing was asked
    (the flaky Ctrl-C test). A flag set by our own handler cannot be lost that way.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield stop
        return

    def request_stop(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {number: signal.signal(number, request_stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _run_pool(ray, todo: list[Row], out: Path, ledger: Ledger, summary: BatchSummary, root: Path,
              offline: bool | None, sizes: tuple, progress: bool, stop: threading.Event) -> None:
    """Start the workers, drive the rows through them, and always stop them and drop unfinished work."""
    plan = plan_pool(ray.cluster_resources(), len(todo), *sizes)
    summary.plan = plan
    log.info("%d row(s) to remix on %d worker(s), each with %g GPU and %g CPU", len(todo), plan.workers,
             plan.gpus_per_worker, plan.cpus_per_worker)
    pool = _Pool(ray, plan, root, offline)
    try:
        _drive(pool, todo, out, ledger, summary, progress, stop)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        summary.workers = pool.stats()
        finished = {*summary.ok, *summary.failed}
        summary.abandoned = [row.id for row in todo if row.id not in finished]
        pool.close()
        shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)


class _Pool:
    """The actors: started, replaced when one dies, killed at the end."""

    SETUP_DEATHS_ALLOWED = 3  # workers dying while loading models: out of memory, most likely

    def __init__(self, ray, plan: PoolPlan, root: Path, offline: bool | None):
        self.ray = ray
        self.plan = plan
        self.actor_class = ray.remote(RemixWorker).options(
            num_cpus=plan.cpus_per_worker, num_gpus=plan.gpus_per_worker, max_restarts=0, max_task_retries=0)
        self.args = (str(root), plan.device, offline, int(plan.cpus_per_worker))
        self.starting: dict[Any, Any] = {}  # ready() ref -> actor
        self.idle: list[Any] = []
        self.all: dict[Any, dict[str, Any]] = {}  # actor -> its stats, from ready() and the rows it ran
        self.setup_deaths = 0
        for _ in range(plan.workers):
            self.start()

    def start(self) -> None:
        """Start one more actor; its ready() reference is waited on with the rows."""
        actor = self.actor_class.remote(*self.args)
        self.starting[actor.ready.remote()] = actor

    def started(self, ref) -> None:
        """A worker's setup finished (or failed: then the batch stops with its message)."""
        actor = self.starting.pop(ref)
        try:
            stats = self.ray.get(ref)
        except self.ray.exceptions.RayError as error:
            self.setup_deaths += 1
            if self.setup_deaths > self.SETUP_DEATHS_ALLOWED:
                raise BatchError(f"workers keep dying while loading the models ({_death_reason(error)}); "
                                 "try fewer --workers or more memory per worker") from None
            log.warning("a worker died while loading the models (%s); starting another", _death_reason(error))
            self.start()
            return
        if stats["error"]:
            raise BatchError(f"a worker could not set up: {stats['error']}")
        self.all[actor] = stats
        self.idle.append(actor)

    def lost(self, actor) -> None:
        """An actor that died: killed for good, and a new one started in its place."""
        self.all.pop(actor, None)
        self._kill(actor)
        self.start()

    def stats(self) -> list[dict[str, Any]]:
        """Each live worker's setup report and row count."""
        return [dict(s) for s in self.all.values()]

    def close(self) -> None:
        """Kill every actor, started or starting."""
        for actor in [*self.all, *self.starting.values()]:
            self._kill(actor)

    def _kill(self, actor) -> None:
        with contextlib.suppress(Exception):  # already gone
            self.ray.kill(actor, no_restart=True)


def _drive(pool: _Pool, todo: list[Row], out: Path, ledger: Ledger, summary: BatchSummary, progress: bool,
           stop: threading.Event) -> None:
    """Hand rows to idle workers until every row has finished or failed, or `stop` is set (then
    KeyboardInterrupt: the rows still running are abandoned)."""
    from tqdm import tqdm

    ray = pool.ray
    queue: deque[tuple[Row, int, str | None]] = deque((row, 1, None) for row in todo)  # row, attempt, death
    running: dict[Any, tuple[Any, Row, int, str | None]] = {}  # remix() ref -> actor, row, attempt, death
    partial = out / PARTIAL_DIR
    bar = tqdm(total=len(todo), unit="song", desc="remixing", disable=not progress, dynamic_ncols=True)
    try:
        while queue or running:
            while pool.idle and queue:
                row, attempt, death = queue.popleft()
                actor = pool.idle.pop(0)
                staging = partial / f"{row.id}.{attempt}"
                running[actor.remix.remote(row.request, str(staging))] = (actor, row, attempt, death)
            waiting = [*pool.starting, *running]
            if not waiting:
                raise BatchError("no worker is left to remix the remaining rows")
            ready, _ = ray.wait(waiting, num_returns=1, timeout=1.0)
            if stop.is_set():
                raise KeyboardInterrupt
            for ref in ready:
                if ref in pool.starting:
                    pool.started(ref)
                    continue
                actor, row, attempt, death = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayTaskError as error:  # not raised by RemixWorker.remix; kept safe
                    outcome = {"status": "failed", "error": f"internal error: {error}"}
                except ray.exceptions.RayError as error:  # the worker process died: killed, out of memory
                    pool.lost(actor)
                    reason = _death_reason(error)
                    if attempt == 1:
                        log.warning("the worker remixing %s died (%s); retrying the row on another worker",
                                    row.id, reason)
                        queue.appendleft((row, 2, reason))
                        continue
                    outcome = {"status": "failed", "error": f"the worker died remixing this row, twice: {death}; "
                                                           f"then {reason}"}
                else:
                    pool.all[actor]["rows"] += 1
                    pool.idle.append(actor)
                record = _finish(row, attempt, death, outcome, out, ledger)
                if record["status"] == "ok":
                    summary.ok.append(row.id)
                else:
                    summary.failed[row.id] = record["error"]
                bar.update(1)
                bar.set_postfix_str(f"ok {len(summary.ok)}, failed {len(summary.failed)}")
            bar.refresh()  # elapsed and ETA move while a long row runs
    finally:
        bar.close()


def _finish(row: Row, attempt: int, death: str | None, outcome: dict[str, Any], out: Path,
            ledger: Ledger) -> dict[str, Any]:
    """Move a row's outputs to DIR/<id>/ and record it; the record says what happened either way."""
    outputs = {}
    if outcome["status"] == "ok":
        final = out / row.id
        shutil.rmtree(final, ignore_errors=True)  # an earlier run's outputs for other inputs
        os.replace(out / PARTIAL_DIR / f"{row.id}.{attempt}", final)
        outputs = {name: f"{row.id}/{file}" for name, file in outcome["outputs"].items()}
    record = {
        "id": row.id, "row": row.number, "status": outcome["status"], "error": outcome.get("error"),
        "outputs": outputs, "seed": outcome.get("seed"), "duration": outcome.get("duration"),
        "elapsed": outcome.get("elapsed"), "timings": outcome.get("timings", {}),
        "fidelity": outcome.get("fidelity"), "takes": outcome.get("takes", []), "attempts": attempt,
        "retried_because": death, "worker": outcome.get("worker"), "music_input": str(row.request.music_input),
        "prompt": row.request.prompt, "input_hash": row.input_hash,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    ledger.record(record)
    return record


def _death_reason(error: Exception) -> str:
    """Ray's account of a dead worker, in one line."""
    name = type(error).__name__
    if "OutOfMemory" in name or "out of memory" in str(error).lower() or "low on memory" in str(error).lower():
        return "killed for running out of memory"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = next((line for line in lines if "exit" in line.lower() or "killed" in line.lower()
                   or "died" in line.lower()), lines[0] if lines else name)
    return f"{name}: {detail[:300]}"
