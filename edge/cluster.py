"""Many inputs over a Ray cluster: `edge-run ... --ray auto|ADDRESS` (`pip install edge[ray]`).

This process, the driver, expands the inputs, gives each its output folder and alone writes
OUT/jobs.json, the one record of what is done. The workers are Ray actors, one per node (one per
GPU, which it requests, when the models run on cuda), each loading the models once and running
up to `--jobs` inputs side by side exactly as a local run does (runner.Jobs); an input's run
streams back the changes to its record, its progress and its notices. When a worker dies, its
inputs go back in the queue, to carry on from their last checkpoint on the next free worker
(at most MAX_ATTEMPTS times each), and a replacement starts on its node if the node is still
there. Inputs, models and --out must be on paths that every node sees under the same names.
"""

import contextlib
import dataclasses
import logging
import os
import queue
import signal
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from . import errors
from .errors import ClusterError, EdgeError, Interrupted, UsageError, user_line
from .inputs import Job as InputJob
from .inputs import expand as expand_inputs
from .manifest import Manifest
from .pipeline import POLL_S
from .runner import Setup, failed_summary, now_iso, output_folder, signals_deferred, signals_raise

MAX_ATTEMPTS = 3  # an input that has killed its worker this often is failed rather than tried on another
START_S = 120.0  # for a worker to be placed, import edge and load the models
STOP_S = 60.0  # after Ctrl-C, for the running inputs to stop and record where they got
PROGRESS_S = 0.5  # between two progress events of one input
LOGS = "/tmp/ray/session_latest/logs"  # where a node keeps its workers' logs (Ray's default)


@dataclass(frozen=True)
class Placement:
    """Where one worker goes and what it reserves there."""

    node_id: str
    address: str
    cpus: float
    gpus: int


def placements(nodes: list[dict], *, cuda: bool) -> list[Placement]:
    """One worker per live node with CPUs; on cuda, one per GPU instead, each with its share of
    the node's CPUs. `nodes` as `ray.nodes()` gives them."""
    found = []
    for node in nodes:
        resources = node.get("Resources", {})
        cpus, gpus = resources.get("CPU", 0.0), int(resources.get("GPU", 0))
        if not node.get("Alive"):
            continue
        if cuda:
            found += [Placement(node["NodeID"], node["NodeManagerAddress"], cpus / gpus, 1) for _ in range(gpus)]
        elif cpus >= 1:
            found.append(Placement(node["NodeID"], node["NodeManagerAddress"], cpus, 0))
    return found


def run_on_ray(address: str, inputs: list[str], setup: Setup, *, out: str, jobs: int, force: bool,
               retry_failed: bool, resume: bool, progress, notice) -> list[dict]:
    """runner.run's work spread over a Ray cluster's workers; the same summaries back."""
    ray = _import_ray()
    out_path = Path(os.path.abspath(out))
    found = [InputJob(os.path.abspath(job.path), job.name) for job in expand_inputs(inputs, outputs=str(out_path))]
    if not found:
        raise UsageError("the inputs name no video or image; check the paths and @LIST files")
    manifest = Manifest(out_path)
    connect(ray, address, notice)
    with signals_raise():  # after ray.init, which sets handlers of its own
        try:
            driver = Driver(ray, setup, manifest, out_path, jobs=jobs, progress=progress, notice=notice,
                            options={"force": force, "retry_failed": retry_failed, "resume": resume})
            return driver.run(found)
        finally:
            # a signal while Ray lets go of the workers asks for what is happening already
            with contextlib.suppress(Interrupted), signals_deferred():
                ray.shutdown()


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray on this machine and every node: pip install 'edge[ray]'") from None
    return ray


def connect(ray, address: str, notice) -> None:
    """Join the cluster at `address`; `auto`: the one Ray finds here (RAY_ADDRESS, or the last
    `ray start` on this machine), else a cluster of this machine alone, started for this run."""
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address == "auto":
            here = _address_here()
            if here is not None and _unanswered(here) is None:
                ray.init(address=here, **quiet)
                notice(f"Ray: joined the cluster at {here} ({_cpus(ray)} CPUs)")
            else:
                stale = f"the cluster last started here ({here}) does not answer, so " if here else ""
                ray.init(address="local", include_dashboard=False, **quiet)
                notice(f"Ray: {stale}this run started a cluster of this machine alone ({_cpus(ray)} CPUs); "
                       f"`ray start` makes one of several machines")
        else:
            _join(ray, address, quiet)
    except KeyboardInterrupt:
        raise Interrupted(signal.SIGINT) from None
    except EdgeError:
        raise
    except Exception as err:  # Ray's own, of many kinds
        raise ClusterError(f"cannot join the Ray cluster at {address}: {errors.last_line(err)}") from err
    _errors_to_stderr()


def _join(ray, address: str, quiet: dict) -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray takes auto or a cluster's HOST:PORT (as `ray start --head` prints it), "
                         f"got {address!r}")
    if (why := _unanswered(address)) is not None:
        raise ClusterError(f"cannot reach a Ray cluster at {address}: {why}; `ray status` on its head node says "
                           f"whether it runs (its address is HEAD:6379 by default)")
    ray.init(address=address, **quiet)


def _errors_to_stderr() -> None:
    """Ray prints the cluster's error messages (a worker died, and why) on the driver's stdout,
    which must hold nothing but the run's --json; they go to stderr instead. Ray has no option
    for it, so its printing function is wrapped, where it still has the one it had."""
    try:
        from ray._private import worker
    except ImportError:
        return
    prints = worker.print_to_stdstream
    if getattr(prints, "edge_stderr", False):
        return

    def to_stderr(data, **kwargs):
        return prints({**data, "is_err": True}, **kwargs)

    to_stderr.edge_stderr = True
    worker.print_to_stdstream = to_stderr


def _cpus(ray) -> int:
    return int(ray.cluster_resources().get("CPU", 0))


def _address_here() -> str | None:
    """The cluster Ray's own address "auto" means, or None."""
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # moved in a later Ray: its documented variable, at least
        return os.environ.get("RAY_ADDRESS") or None
    try:
        return canonicalize_bootstrap_address("auto")
    except ConnectionError:
        return None


def _unanswered(address: str) -> str | None:
    """Why nothing answers at `address`, or None when something does. Ray itself retries an
    address that does not answer for minutes on end; a plain connection says so at once."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as err:
        return getattr(err, "strerror", None) or str(err)
    return None


class Relay:
    """jobs.json as a worker sees it: one input's record, whose changes go back to the driver."""

    def __init__(self, key: str, record: dict, send):
        self.key, self.record, self.send = key, dict(record), send

    def get(self, key: str) -> dict:
        return self.record if key == self.key else {}

    def outputs(self) -> dict[str, str]:
        return {self.key: self.record["output"]}

    def update(self, key: str, **fields) -> None:
        self.record.update(fields)
        self.send(("record", fields))


def remote_error(err: BaseException) -> tuple[str, str, int]:
    """An error as it crosses from a worker to the driver: its kind, its line and its exit code."""
    if isinstance(err, EdgeError):
        return type(err).__name__, user_line(err), err.exit_code
    return "EdgeError", f"internal error on a Ray worker, {type(err).__name__}: {err} (please report it)", 1


def rebuilt(kind: str, line: str, exit_code: int) -> EdgeError:
    """The driver's copy of a worker's error: the same line, exit code and, where simple, class."""
    cls = getattr(errors, kind, EdgeError)
    if not (isinstance(cls, type) and issubclass(cls, EdgeError)) or cls in (Interrupted, errors.StageError):
        cls = EdgeError  # their constructors take other arguments than a line
    err = cls(line)
    err.exit_code = exit_code
    return err


class Worker:
    """A Ray actor: the models loaded once; each `process` call runs one input and is a stream
    of events: ("record", fields), ("progress", written, expected), ("notice", line), and last
    ("summary", summary), ("stopped", resumable) or ("error", remote_error)."""

    def __init__(self, setup: Setup, out: str, cpus: float, jobs: int):
        import ray

        self.where = f"{ray.util.get_node_ip_address()} pid {os.getpid()}"
        self.notices: list[str] = []
        self.error = None
        cores = max(1, int(cpus))
        try:
            self.jobs = setup.jobs(None, out=Path(out), progress=None, notice=self.notices.append, threads=cores)
        except EdgeError as err:
            self.error = remote_error(err)
            return
        self.jobs.threads = max(1, cores // jobs)  # the decoder's and encoder's, of each input side by side
        if all(m.backend.device == "cpu" for m in self.jobs.models):
            import cv2

            cv2.setNumThreads(1)  # as runner.opencv_threads does, for this process's whole life

    def ready(self) -> dict:
        return {"error": self.error, "notices": self.notices, "where": self.where}

    def stop(self) -> None:
        """Running inputs stop at their next tick, keeping their checkpoints; none start."""
        if self.error is None:
            self.jobs.cancel.set()

    def process(self, job: InputJob, record: dict, *, attempt: int, lone: bool, force: bool, retry_failed: bool,
                resume: bool):
        events = queue.SimpleQueue()
        last = [0.0]

        def progress(key: str, written: int, expected: int | None) -> None:
            if time.monotonic() - last[0] >= PROGRESS_S:
                last[0] = time.monotonic()
                events.put(("progress", written, expected))

        # a lone input's error is the run's, as at home: it comes back as the error event
        jobs = dataclasses.replace(self.jobs, manifest=Relay(job.key, record, events.put), progress=progress,
                                   notice=lambda line: events.put(("notice", line)), lone=lone)
        worker = threading.Thread(target=self._run, args=(jobs, job, events, attempt, force, retry_failed, resume),
                                  name="edge-ray-input", daemon=True)
        worker.start()
        while True:
            event = events.get()
            yield event
            if event[0] in ("summary", "stopped", "error"):
                break
        worker.join()

    @staticmethod
    def _run(jobs, job, events, attempt, force, retry_failed, resume) -> None:
        plan = None
        try:
            plan = jobs.plan(job, force=force, retry_failed=retry_failed or resume)
            if plan.known is None:
                try:
                    # an input its dead worker left is carried on from its checkpoint, if any
                    jobs.prepare(plan, resume=resume or attempt > 1)
                except UsageError:
                    if resume:
                        raise
                    jobs.prepare(plan, resume=False)  # this worker's options differ (x264's threads)
            events.put(("summary", jobs.execute(plan)))
        except (Interrupted, KeyboardInterrupt):
            events.put(("stopped", bool(plan and plan.checkpoints and plan.checkpoints.serial)))
        except BaseException as err:  # the whole run's error (an input's own is in its summary)
            events.put(("error", remote_error(err)))


@dataclass
class Remote:
    """The driver's handle on one worker, replaced when its actor dies."""

    placement: Placement
    actor: object = None
    where: str = ""
    generation: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Item:
    job: InputJob
    attempt: int = 1


class Driver:
    def __init__(self, ray, setup: Setup, manifest: Manifest, out: Path, *, jobs: int, options: dict, progress,
                 notice):
        self.ray, self.setup, self.manifest, self.out = ray, setup, manifest, out
        self.jobs, self.options, self.progress, self.notice = jobs, options, progress, notice
        self.queue: deque[Item] = deque()
        self.changed = threading.Condition()
        self.unfinished = 0
        self.summaries: dict[str, dict] = {}
        self.resumable: dict[str, bool] = {}
        self.stopping = threading.Event()
        self.error: EdgeError | None = None
        self.remotes: list[Remote] = []
        self.lone = False  # one input: its error is the run's
        self.lost = self._lost_errors()
        self.worker_class = ray.remote(Worker)

    def _lost_errors(self) -> tuple:
        """Ray's errors that mean a worker, not its input, is gone: its input is retried."""
        e = self.ray.exceptions
        return (e.RayActorError, e.WorkerCrashedError, e.NodeDiedError, e.ObjectLostError, e.OwnerDiedError,
                e.LocalRayletDiedError)

    def run(self, found: list[InputJob]) -> list[dict]:
        for job in found:
            before = self.manifest.get(job.key)
            state = before.get("state") if before.get("state") in ("done", "failed", "interrupted") else "pending"
            self.manifest.update(job.key, input=job.key, output=str(output_folder(self.manifest, self.out, job)),
                                 state=state)
        self.queue.extend(Item(job) for job in found)
        self.unfinished = len(found)
        self.lone = len(found) == 1
        self.start_all()
        threads = [threading.Thread(target=self.serve, args=(remote,), name=f"edge-ray-{i}", daemon=True)
                   for i, remote in enumerate(self.remotes) for _ in range(self.jobs)]
        for thread in threads:
            thread.start()
        try:
            while any(thread.is_alive() for thread in threads):
                time.sleep(POLL_S * 4)
        except (Interrupted, KeyboardInterrupt) as err:
            self.stop(threads)
            stopped = err if isinstance(err, Interrupted) else Interrupted(signal.SIGINT)
            stopped.resumable_inputs = sum(self.resumable.values())
            raise stopped from None
        if self.error is not None:
            raise self.error
        for item in self.queue:  # every worker died and none could be started again
            self.fail(item, f"no Ray worker was left to take it (see their logs in {LOGS} on each node)")
        summaries = [self.summaries[job.key] for job in found]
        if len(found) == 1 and summaries[0]["status"] == "failed":  # a lone input's error is the run's, as at home
            raise rebuilt("EdgeError", summaries[0]["error"], summaries[0]["exit_code"])
        return summaries

    def start_all(self) -> None:
        nodes = self.ray.nodes()
        where = placements(nodes, cuda=self.setup.cuda)
        if not where:
            need = "a GPU (--device cuda)" if self.setup.cuda else "a CPU"
            raise ClusterError(f"the Ray cluster has no live node with {need}; `ray status` shows its nodes")
        started = [(Remote(p), self.create(p)) for p in where]
        for remote, actor in started:
            if self.ready(remote, actor, first=not self.remotes):
                self.remotes.append(remote)
        if not self.remotes:
            raise ClusterError(f"no Ray worker started within {START_S:.0f} s; `ray status` shows what the cluster "
                               f"has, and each node's {LOGS} why a worker failed")

    def create(self, p: Placement):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # max_concurrency: the inputs side by side, and a call to stop them
        actor = self.worker_class.options(
            num_cpus=p.cpus, num_gpus=p.gpus, max_concurrency=self.jobs + 1, max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(p.node_id, soft=False))
        return actor.remote(self.setup, str(self.out), p.cpus, self.jobs)

    def ready(self, remote: Remote, actor, *, first: bool) -> bool:
        """Wait for a worker to have loaded the models. A model that fails to load is the run's
        error, as it is at home; a worker that cannot start is left out, with a notice."""
        try:
            state = self.ray.get(actor.ready.remote(), timeout=START_S)
        except (self.ray.exceptions.GetTimeoutError, *self.lost) as err:
            self.ray.kill(actor)
            self.notice(f"Ray: no worker started on {remote.placement.address}: {_reason(err)}")
            return False
        if state["error"] is not None:
            raise rebuilt(*state["error"])
        if first:
            for line in state["notices"]:
                self.notice(line)
        remote.actor, remote.where = actor, state["where"]
        return True

    def serve(self, remote: Remote) -> None:
        """One of a worker's slots: inputs from the queue until none is left."""
        try:
            while True:
                with remote.lock:  # held while another of its slots starts its replacement
                    actor, generation, where = remote.actor, remote.generation, remote.where
                if actor is None or (item := self.take()) is None:  # it could not be replaced, or all is done
                    return
                if remote.generation != generation:  # it died while this slot waited for an input
                    self.put_back(item)
                    continue
                try:
                    self.process(actor, where, item)
                except self.lost as err:
                    self.on_lost(item, where, err)
                    if not self.replace(remote, generation):
                        return
        except BaseException as err:  # the run's error (a replacement's models failing to load, say)
            self.fail_run(err if isinstance(err, EdgeError) else rebuilt(*remote_error(err)))

    def take(self) -> Item | None:
        with self.changed:
            while not self.queue and self.unfinished and not self.stopping.is_set():
                self.changed.wait(POLL_S * 4)
            if self.stopping.is_set() or not self.queue:
                return None
            return self.queue.popleft()

    def put_back(self, item: Item) -> None:
        with self.changed:
            self.queue.appendleft(item)
            self.changed.notify_all()

    def done(self, key: str, summary: dict) -> None:
        with self.changed:
            self.summaries[key] = summary
            self.unfinished -= 1
            self.changed.notify_all()

    def process(self, actor, where: str, item: Item) -> None:
        key = item.job.key
        first = {"lost_workers": []} if item.attempt == 1 else {}
        self.manifest.update(key, worker=where, attempts=item.attempt, **first)
        events = actor.process.remote(item.job, self.manifest.get(key), attempt=item.attempt,
                                      lone=self.lone, **self.options)
        for ref in events:
            kind, *args = self.ray.get(ref)
            if kind == "record":
                self.manifest.update(key, **args[0])
            elif kind == "progress":
                if self.progress is not None:
                    self.progress(key, *args)
            elif kind == "notice":
                self.notice(args[0])
            elif kind == "summary":
                self.done(key, args[0])
            elif kind == "stopped":
                self.resumable[key] = args[0]
            elif kind == "error":
                self.fail_run(rebuilt(*args[0]))

    def on_lost(self, item: Item, where: str, err: BaseException) -> None:
        key = item.job.key
        reason = f"its Ray worker ({where}) died: {_reason(err)}"
        self.manifest.update(key, lost_workers=[*self.manifest.get(key).get("lost_workers", []), where])
        if self.stopping.is_set():
            self.manifest.update(key, state="interrupted", finished_at=now_iso())
        elif item.attempt < MAX_ATTEMPTS:
            self.notice(f"{key}: {reason}; it carries on with another worker "
                        f"(attempt {item.attempt + 1} of {MAX_ATTEMPTS})")
            self.manifest.update(key, state="pending")
            self.put_back(Item(item.job, item.attempt + 1))
        else:
            self.fail(item, f"{reason}, as did the {MAX_ATTEMPTS - 1} before it; it may need more memory than a "
                            f"worker has (see the worker's log in {LOGS} on its node)")

    def fail(self, item: Item, why: str) -> None:
        key = item.job.key
        self.manifest.update(key, state="failed", error=f"{key}: {why}", exit_code=ClusterError.exit_code,
                             finished_at=now_iso())
        self.done(key, failed_summary(item.job, self.manifest.get(key)))

    def replace(self, remote: Remote, generation: int) -> bool:
        """A new worker where one died, once for all its slots; False when none can be had."""
        with remote.lock:
            if remote.generation != generation:  # another slot of the same worker replaced it already
                return remote.actor is not None
            remote.generation += 1
            remote.actor = None
            if self.stopping.is_set():
                return False
            alive = {node["NodeID"] for node in self.ray.nodes() if node.get("Alive")}
            if remote.placement.node_id not in alive:
                self.notice(f"Ray: node {remote.placement.address} is gone; its inputs go to the other workers")
                return False
            return self.ready(remote, self.create(remote.placement), first=False)

    def fail_run(self, err: EdgeError) -> None:
        """An error that is the whole run's: everything stops, and it is what the run raises."""
        if self.error is None:
            self.error = err
        self.stopping.set()
        self.stop_workers()

    def stop_workers(self) -> None:
        for remote in self.remotes:
            if remote.actor is not None:
                remote.actor.stop.remote()

    def stop(self, threads: list[threading.Thread]) -> None:
        """Ctrl-C or SIGTERM: the running inputs stop and record where they got, for a while."""
        self.stopping.set()
        self.stop_workers()
        deadline = time.monotonic() + STOP_S
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _reason(err: BaseException) -> str:
    """The telling part of Ray's long account of a lost worker."""
    text = str(err)
    for marker in ("Worker exit detail: ", "The actor died because "):
        if marker in text:
            return text.split(marker, 1)[1].splitlines()[0][:200]
    return errors.last_line(err) if text.strip() else type(err).__name__
