"""Many inputs over a Ray cluster: `edge-run ... --ray auto|ADDRESS` (`pip install edge[ray]`).

This process, the driver, expands the inputs, gives each its output folder and alone writes
OUT/jobs.json, the one record of what is done. The workers are Ray actors, one per node (one per
GPU, which it requests, when the models run on cuda), each loading the models once and running
up to `--jobs` inputs side by side exactly as a local run does (worker.py); an input's
run streams back the changes to its record, its progress and its notices. When a worker dies,
its inputs go back in the queue, to carry on from their last checkpoint on the next free worker
(at most MAX_ATTEMPTS times each), and a replacement starts on its node or, the node gone, on
one that no worker uses. Inputs, models and --out must be on paths that every node sees under
the same names.
"""

import contextlib
import dataclasses
import itertools
import math
import os
import signal
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

from .. import errors
from ..errors import ClusterError, EdgeError, Interrupted, UsageError
from ..inputs import Job as InputJob
from ..inputs import expand as expand_inputs
from ..manifest import Manifest
from ..pipeline import POLL_S
from .connect import connect, import_ray
from .worker import FINAL, Worker, rebuilt, remote_error

from ..run.jobs import failed_summary, output_folders, skipped_notice
from ..run.options import RunOptions
from ..run.summary import RunSummary
from ..run.models import MODEL_DIR_ENV
from ..run.one import now_iso
from ..run.signals import signals_deferred, signals_raise

MAX_ATTEMPTS = 3  # an input that has killed its worker this often is failed rather than tried on another
START_S = 120.0  # for a worker to be placed, import edge and load the models
STOP_S = 60.0  # after Ctrl-C, for the running inputs to stop and record where they got
LOGS = "session_latest/logs in its Ray temp folder, /tmp/ray by default"  # a node's workers' logs


@dataclass(frozen=True)
class Placement:
    """Where one worker goes and what it reserves there."""

    node_id: str
    address: str
    cpus: float
    gpus: int


def placements(nodes: list[dict], *, cuda: bool, cpus: int | None = None) -> list[Placement]:
    """One worker per live node with CPUs, reserving them all; on cuda, one per GPU instead,
    each with its share of the node's CPUs. With `cpus` (--ray-cpus), each worker reserves that
    many, and a node takes as many workers as fit (on cuda, at most one per GPU). `nodes` as
    `ray.nodes()` gives them. In turns over the nodes, so that the first few spread out."""
    per_node = []
    for node in nodes:
        resources = node.get("Resources", {})
        has, gpus = resources.get("CPU", 0.0), int(resources.get("GPU", 0))
        if not node.get("Alive"):
            continue
        if cpus is None:
            each, count = (has / max(gpus, 1), gpus) if cuda else (has, int(has >= 1))
        else:
            each, count = cpus, min(int(has // cpus), gpus) if cuda else int(has // cpus)
        per_node.append([Placement(node["NodeID"], node["NodeManagerAddress"], each, int(cuda)) for _ in range(count)])
    return [p for turn in itertools.zip_longest(*per_node) for p in turn if p is not None]


def run_on_ray(inputs: list[str], options: RunOptions, *, progress, notice) -> list[RunSummary]:
    """api.run's work spread over the workers of the Ray cluster at `options.ray`; the same
    summaries back."""
    ray = import_ray()
    out_path = Path(os.path.abspath(options.out))
    with signals_raise():
        found = [InputJob(os.path.abspath(job.path), job.name)
                 for job in expand_inputs(inputs, outputs=str(out_path))]
        if not found:
            raise UsageError("the inputs name no video or image; check the paths and @LIST files")
        manifest = Manifest(out_path)
    # the workers' working folders are not this one
    options = dataclasses.replace(options, models=tuple(os.path.abspath(m) for m in options.models))
    connect(ray, options.ray, notice)
    with signals_raise():  # after ray.init, which sets handlers of its own
        try:
            driver = Driver(ray, options, manifest, out_path, progress=progress, notice=notice)
            return driver.run(found)
        except ray.exceptions.RayError as err:  # the cluster itself failing under the driver
            raise ClusterError(f"the Ray cluster failed: {errors.last_line(err)}; `ray status` shows its state, "
                               f"and jobs.json what was done") from err
        finally:
            # a signal while Ray lets go of the workers asks for what is happening already
            with contextlib.suppress(Interrupted), signals_deferred():
                ray.shutdown()


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
    def __init__(self, ray, options: RunOptions, manifest: Manifest, out: Path, *, progress, notice):
        self.ray, self.options, self.manifest, self.out = ray, options, manifest, out
        self.jobs, self.cpus, self.progress, self.notice = options.jobs, options.ray_cpus, progress, notice
        self.queue: deque[Item] = deque()
        self.changed = threading.Condition()
        self.unfinished = 0
        self.summaries: dict[str, RunSummary] = {}
        self.running: set[str] = set()  # inputs on a worker now
        self.resumable: dict[str, bool] = {}
        self.stopping = threading.Event()
        self.error: EdgeError | None = None
        self.remotes: list[Remote] = []
        self.lone = False  # one input: its error is the run's
        e = ray.exceptions
        # a worker, not its input, is gone: its input goes to another
        self.lost = (e.RayActorError, e.WorkerCrashedError, e.NodeDiedError, e.ObjectLostError)
        self.worker_class = ray.remote(Worker)
        model_dir = os.environ.get(MODEL_DIR_ENV)  # where this machine's default models are, for every worker
        self.runtime_env = {"env_vars": {MODEL_DIR_ENV: os.path.abspath(model_dir)}} if model_dir else None

    def run(self, found: list[InputJob]) -> list[RunSummary]:
        registered, folders = {}, output_folders(self.manifest, self.out, found)
        for job in found:
            state = self.manifest.get(job.key).get("state")
            registered[job.key] = {"input": job.key, "output": str(folders[job.key]),
                                   "state": state if state in ("done", "failed", "interrupted") else "pending"}
        self.manifest.update_many(registered)
        self.queue.extend(Item(job) for job in found)
        self.unfinished = len(found)
        self.lone = len(found) == 1
        self.start_all(wanted=math.ceil(len(found) / self.jobs))
        threads = [threading.Thread(target=self.serve, args=(remote,), name=f"edge-ray-{i}", daemon=True)
                   for i, remote in enumerate(self.remotes) for _ in range(self.jobs)]
        for thread in threads:
            thread.start()
        try:
            while any(thread.is_alive() for thread in threads) and not self.stopping.is_set():
                time.sleep(POLL_S * 4)
        except (Interrupted, KeyboardInterrupt) as err:
            self.stop(threads)
            stopped = err if isinstance(err, Interrupted) else Interrupted(signal.SIGINT)
            stopped.resumable_inputs = sum(self.resumable.values())
            raise stopped from None
        if self.stopping.is_set():  # the run's error
            self.stop(threads)
            raise self.error
        if self.queue:  # every worker died, and none could start again
            raise ClusterError(f"the Ray cluster lost all its workers, with {len(self.queue)} inputs not done (they "
                               f"stay pending in jobs.json; the same command carries them on); see the nodes' Ray "
                               f"logs ({LOGS})")
        summaries = [self.summaries[job.key] for job in found]
        if not self.lone:
            skipped_notice(summaries, len(found), self.notice)
        if self.lone and summaries[0].status == "failed":  # it killed its workers: its error is the run's
            raise rebuilt("ClusterError", summaries[0].error, summaries[0].exit_code)
        return summaries

    def start_all(self, *, wanted: int) -> None:
        """Workers on as many nodes (GPUs) as there are for the inputs, all waited for at once."""
        where = placements(self.ray.nodes(), cuda=self.options.cuda, cpus=self.cpus)
        if not where:
            gpu = "a GPU (--device cuda)" if self.options.cuda else None
            cpus = f"{self.cpus} CPUs (--ray-cpus)" if self.cpus else None
            need = " and ".join(filter(None, [gpu, cpus])) or "a CPU"
            raise ClusterError(f"the Ray cluster has no live node with {need}; `ray status` shows its nodes")
        remotes = [Remote(p) for p in where[:wanted]]
        for line in self.started([(remote, self.create(remote.placement)) for remote in remotes]):
            self.notice(line)
        self.remotes = [remote for remote in remotes if remote.actor is not None]
        if not self.remotes:
            raise ClusterError(f"no Ray worker started within {START_S:.0f} s; `ray status` shows what the cluster "
                               f"has free, and each node's Ray logs ({LOGS}) why a worker failed")

    def create(self, p: Placement):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # max_concurrency: the inputs side by side, and a call to stop them
        actor = self.worker_class.options(
            num_cpus=p.cpus, num_gpus=p.gpus, max_concurrency=self.jobs + 1, max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(p.node_id, soft=False), runtime_env=self.runtime_env)
        return actor.remote(self.options, p.cpus, self.jobs)

    def started(self, started: list[tuple["Remote", object]]) -> list[str]:
        """Wait, START_S in all, for workers to have loaded the models; each that did gets its
        Remote's actor. A model that fails to load is the run's error, as it is at home; a worker
        that cannot start is left out, with a notice. Returns the notices of loading the models."""
        calls = {actor.ready.remote(): (remote, actor) for remote, actor in started}
        waiting, gone, deadline = list(calls), set(), time.monotonic() + START_S
        while waiting and time.monotonic() < deadline:
            _, waiting = self.ray.wait(waiting, num_returns=len(waiting), timeout=POLL_S * 10)
            # a node that died is noticed by Ray's health checks, long before the deadline
            alive = {node["NodeID"] for node in self.ray.nodes() if node.get("Alive")}
            gone |= {call for call in waiting if calls[call][0].placement.node_id not in alive}
            waiting = [call for call in waiting if call not in gone]
        notices = None
        for call, (remote, actor) in calls.items():
            try:
                if call in gone:
                    raise TimeoutError("its node is gone")
                if call in waiting:
                    raise TimeoutError(f"not started within {START_S:.0f} s")
                state = self.ray.get(call)
            except (TimeoutError, self.ray.exceptions.RayError) as err:
                self.ray.kill(actor)
                self.notice(f"Ray: no worker started on {remote.placement.address}: {_reason(err)}")
                continue
            if state["error"] is not None:
                raise rebuilt(*state["error"])
            remote.actor, remote.where = actor, state["where"]
            notices = state["notices"]  # each worker's are the same: the models it loaded
        return notices or []

    def serve(self, remote: Remote) -> None:
        """One of a worker's slots: inputs from the queue until none is left."""
        try:
            while True:
                with remote.lock:  # held while the worker is being replaced
                    actor, generation, where = remote.actor, remote.generation, remote.where
                if actor is None or (item := self.take()) is None:  # it could not be replaced, or all is done
                    return
                if remote.generation != generation:  # it died while this slot waited for an input
                    self.put_back(item)
                    continue
                try:
                    self.process(actor, where, item)
                except self.lost as err:
                    if not self.replace(remote, generation, item, where, err):
                        return
        except BaseException as err:  # the run's error (a replacement's models failing to load, say)
            self.fail_run(err if isinstance(err, EdgeError) else rebuilt(*remote_error(err)))

    def take(self) -> Item | None:
        with self.changed:
            while not self.queue and self.unfinished > 0 and not self.stopping.is_set():
                self.changed.wait(POLL_S * 4)
            if self.stopping.is_set() or not self.queue:
                return None
            return self.queue.popleft()

    def put_back(self, item: Item) -> None:
        with self.changed:
            self.queue.appendleft(item)
            self.changed.notify_all()

    def done(self, key: str, summary: RunSummary) -> None:
        with self.changed:
            if key not in self.summaries:  # once, even if a worker dies after saying so
                self.summaries[key] = summary
                self.unfinished -= 1
            self.changed.notify_all()

    def process(self, actor, where: str, item: Item) -> None:
        key = item.job.key
        first = {"lost_workers": []} if item.attempt == 1 else {}
        self.manifest.update(key, worker=where, attempts=item.attempt, **first)
        self.running.add(key)
        events = actor.process.remote(item.job, self.manifest.get(key), attempt=item.attempt, lone=self.lone,
                                      force=self.options.force, retry_failed=self.options.retry_failed,
                                      resume=self.options.resume)
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
            if kind in FINAL:  # what follows, if its worker dies now, no longer matters
                break
        self.running.discard(key)

    def replace(self, remote: Remote, generation: int, item: Item, where: str, err: BaseException) -> bool:
        """After a worker died under `item`: the item goes back to the queue, and the first of
        the worker's slots to see the death starts a new worker, the others waiting for it.
        False when there is none to be had."""
        with remote.lock:
            if remote.generation == generation:  # retired before its item is put back, so no slot takes it there
                remote.generation += 1
                remote.actor = None
                self.on_lost(item, where, err)
                if not self.stopping.is_set():
                    self.restart(remote)
            else:  # another slot of the same worker saw it first
                self.on_lost(item, where, err)
            return remote.actor is not None

    def restart(self, remote: Remote) -> None:
        """A new worker where the dead one was or, its node gone, on a node that has room."""
        dead = remote.placement
        self.started([(remote, self.create(dead))])
        if remote.actor is None and (other := next((p for p in self.spare() if p.node_id != dead.node_id), None)):
            remote.placement = other
            self.started([(remote, self.create(other))])

    def spare(self) -> list[Placement]:
        """The places for workers that no live worker takes (a node added, or one left idle)."""
        taken = Counter(r.placement.node_id for r in self.remotes if r.actor is not None)
        free = []
        for placement in placements(self.ray.nodes(), cuda=self.options.cuda, cpus=self.cpus):
            if taken[placement.node_id]:
                taken[placement.node_id] -= 1
            else:
                free.append(placement)
        return free

    def on_lost(self, item: Item, where: str, err: BaseException) -> None:
        key = item.job.key
        self.running.discard(key)
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
            self.manifest.update(key, state="failed", exit_code=ClusterError.exit_code, finished_at=now_iso(),
                                 error=f"{key}: {reason}, as did the {MAX_ATTEMPTS - 1} before it; it may need more "
                                       f"memory than a worker has (see the node's Ray logs, {LOGS})")
            self.done(key, failed_summary(item.job, self.manifest.get(key)))

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
        """Every worker's inputs stop and record where they got, for STOP_S at most; those
        that do not answer by then are recorded interrupted, their workers killed by Ray's
        shutdown. A second Ctrl-C ends the wait."""
        self.stopping.set()
        self.stop_workers()
        deadline = time.monotonic() + STOP_S
        try:
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        except (Interrupted, KeyboardInterrupt):
            pass
        for key in list(self.running):
            self.manifest.update(key, state="interrupted", finished_at=now_iso())


def _reason(err: BaseException) -> str:
    """The telling part of Ray's long account of a lost worker."""
    text = str(err)
    for marker in ("Worker exit detail: ", "The actor died because "):
        if marker in text:
            return text.split(marker, 1)[1].splitlines()[0][:200]
    return errors.last_line(err) if text.strip() else type(err).__name__
