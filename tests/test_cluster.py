"""--ray: inputs spread over a Ray cluster that the tests start on 127.0.0.1 (a head without
CPUs and two worker nodes of one CPU each), a worker killed in the middle of an input, and the
errors a user meets before any of it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge.cluster import driver as cluster
from edge.cluster import worker as cluster_worker
from edge.cli import main
from edge.errors import ClusterError, ModelError, StageError, UsageError
from tests.makers_clips import make_clip, ramp


def frames(n, h=48, w=64):
    """n frames that differ, so an output that skipped or repeated one would show it."""
    rng = np.random.default_rng(7)
    return [np.roll(f, i % w, axis=1) | rng.integers(0, 40, f.shape, dtype=np.uint8) for i, f in enumerate(ramp(n, h, w))]


def clip(path, n=10):
    path.parent.mkdir(parents=True, exist_ok=True)
    make_clip(path, frames(n), fps=25)
    return path


def edge_run(*argv, env=None, cwd=None):
    return subprocess.Popen([sys.executable, "-m", "edge.cli", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, cwd=cwd)


def finish(process, timeout=180):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def jobs_of(out):
    return json.loads((out / "jobs.json").read_text())["jobs"]


def outputs(folder: Path) -> dict[str, bytes]:
    """Every output file of an input's folder but run.json (which has timings) and the resume state."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "run.json" and ".edge-resume" not in p.parts}


# --- without a cluster ---

def test_workers_go_one_per_node_or_one_per_gpu():
    nodes = [
        {"NodeID": "head", "NodeManagerAddress": "10.0.0.1", "Alive": True, "Resources": {"memory": 1.0}},
        {"NodeID": "a", "NodeManagerAddress": "10.0.0.2", "Alive": True, "Resources": {"CPU": 16.0, "GPU": 2.0}},
        {"NodeID": "b", "NodeManagerAddress": "10.0.0.3", "Alive": True, "Resources": {"CPU": 8.0}},
        {"NodeID": "c", "NodeManagerAddress": "10.0.0.4", "Alive": False, "Resources": {"CPU": 8.0, "GPU": 1.0}},
        {"NodeID": "d", "NodeManagerAddress": "10.0.0.5", "Alive": True, "Resources": {"CPU": 0.5}},
    ]
    on_cpu = cluster.placements(nodes, cuda=False)
    assert [(p.node_id, p.cpus, p.gpus) for p in on_cpu] == [("a", 16.0, 0), ("b", 8.0, 0)]
    on_gpu = cluster.placements(nodes, cuda=True)
    assert [(p.node_id, p.cpus, p.gpus) for p in on_gpu] == [("a", 8.0, 1), ("a", 8.0, 1)]
    # --ray-cpus: as many workers as fit, taking turns over the nodes; on cuda, no more than the GPUs
    threes = cluster.placements(nodes, cuda=False, cpus=3)
    assert [(p.node_id, p.cpus) for p in threes] == [("a", 3), ("b", 3), ("a", 3), ("b", 3), ("a", 3), ("a", 3), ("a", 3)]
    assert [p.node_id for p in cluster.placements(nodes, cuda=False, cpus=12)] == ["a"]
    assert [(p.node_id, p.cpus, p.gpus) for p in cluster.placements(nodes, cuda=True, cpus=12)] == [("a", 12, 1)]
    assert [(p.node_id, p.cpus, p.gpus) for p in cluster.placements(nodes, cuda=True, cpus=2)] == [("a", 2, 1)] * 2


def test_a_workers_error_reaches_the_user_as_the_same_line_and_exit_code():
    err = cluster_worker.rebuilt(*cluster_worker.remote_error(ModelError("model.onnx: not found; check the path")))
    assert isinstance(err, ModelError) and err.exit_code == 4 and str(err) == "model.onnx: not found; check the path"
    stage = cluster_worker.rebuilt(*cluster_worker.remote_error(StageError("infer", 3, RuntimeError("boom"))))
    assert stage.exit_code == 6 and "stage 'infer' failed at frame 3" in str(stage)
    bug = cluster_worker.rebuilt(*cluster_worker.remote_error(KeyError("x")))
    assert bug.exit_code == 1 and "internal error on a Ray worker, KeyError" in str(bug)


def test_ray_addresses_that_cannot_work_fail_at_once_in_one_line(tmp_path, models, capsys):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    video = clip(tmp_path / "a.mp4")
    argv = [str(video), "--model", models.planet(), "--out", str(tmp_path / "out")]
    started = time.monotonic()
    assert main([*argv, "--ray-cpus", "2"]) == UsageError.exit_code
    assert "--ray-cpus goes with --ray" in capsys.readouterr().err
    assert main([*argv, "--ray", "auto", "--ray-cpus", "0"]) == UsageError.exit_code
    assert "--ray-cpus must be 1 or more, got 0" in capsys.readouterr().err
    assert main([*argv, "--ray", "127.0.0.1:1"]) == ClusterError.exit_code
    assert "cannot reach a Ray cluster at 127.0.0.1:1" in capsys.readouterr().err
    assert time.monotonic() - started < 30  # Ray alone keeps trying such an address for minutes
    assert main([*argv, "--ray", "head-without-port"]) == UsageError.exit_code
    assert "--ray takes auto or a cluster's HOST:PORT" in capsys.readouterr().err
    assert main([*argv, "--ray", "ray://head:10001"]) == UsageError.exit_code
    assert "not a Ray Client one" in capsys.readouterr().err


def test_without_ray_installed_the_user_is_told_what_to_install(tmp_path, models, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    video = clip(tmp_path / "a.mp4")
    assert main([str(video), "--model", models.planet(), "--ray", "auto", "--out", str(tmp_path / "o")]) == 2
    assert "pip install 'edge[ray]'" in capsys.readouterr().err


class FakeJobs:
    """What Worker.run_input calls of run.jobs.Jobs, with a prepare that refuses to resume: because of
    x264's threads (`threads_only`, as on a node of other cores), or another option."""

    def __init__(self, threads_only: bool):
        self.threads_only = threads_only
        self.prepared, self.notices = [], []

    def plan(self, job, *, folder, force, retry_failed):
        from edge.run.jobs import Plan

        return Plan(job, folder)

    def prepare(self, plan, *, resume):
        self.prepared.append(resume)
        if resume:
            refused = UsageError("cannot resume x.mp4: it differs; give the interrupted run's command again")
            refused.threads_only = self.threads_only
            raise refused

    def register(self, plans):
        pass

    def notice(self, line):
        self.notices.append(line)

    def execute(self, plan):
        return {"status": "done"}


@pytest.mark.parametrize("attempt, resume, threads_only, outcome", [
    (2, False, False, "starts over"),  # carried on after its worker died: this one cannot, so it starts over
    (1, True, True, "starts over"),  # --resume on a node of other cores than the one that stopped it
    (1, True, False, "error"),  # --resume with other options: the run's error, as at home
])
def test_a_checkpoint_a_worker_cannot_carry_on(attempt, resume, threads_only, outcome):
    from queue import SimpleQueue

    from edge.inputs import Job

    jobs, events = FakeJobs(threads_only), SimpleQueue()
    cluster_worker.Worker.run_input(jobs, Job("x.mp4", "x"), Path("out/x"), events, attempt, False, False, resume)
    kind, value = events.get()
    if outcome == "starts over":
        assert (kind, value) == ("summary", {"status": "done"}) and jobs.prepared == [True, False]
        assert jobs.notices == ["cannot resume x.mp4: it differs on this worker; it starts over"]
    else:
        assert kind == "error" and value[0] == "UsageError" and value[2] == 2 and jobs.prepared == [True]


# --- on a local cluster ---

@pytest.fixture(scope="module")
def ray_cluster():
    """A head node with no CPUs, so that all work goes to two worker nodes of one CPU each, all on
    127.0.0.1 (see conftest)."""
    cluster_utils = pytest.importorskip("ray.cluster_utils", reason="the ray extra is not installed")
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}  # Ray's nodes set their own
    # health checks every 0.2 s, so that a node removed by a test is known dead within a second
    health = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 200, "health_check_timeout_ms": 200,
              "health_check_failure_threshold": 3}
    local = cluster_utils.Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "_system_config": health})
    for _ in range(2):
        local.add_node(num_cpus=1)
    local.wait_for_nodes()
    assert {node.node_ip_address for node in [local.head_node, *local.worker_nodes]} == {"127.0.0.1"}
    yield local
    for node in list(local.worker_nodes):
        local.remove_node(node, allow_graceful=False)
    local.remove_node(local.head_node, allow_graceful=False)
    local.shutdown()  # forgets the cluster's address, so a later `--ray auto` here does not look for it
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def test_inputs_spread_over_workers_give_what_one_machine_gives(tmp_path, models, ray_cluster):
    model = models.planet()
    inputs = tmp_path / "in"
    clip(inputs / "a.mp4", 12)
    clip(inputs / "day2" / "a.mp4", 20)  # the same name: folders with a hash each
    (inputs / "broken.mp4").write_bytes(os.urandom(3000))
    out, home = tmp_path / "out", tmp_path / "home"

    # a model named relative to here, where the workers are not
    code, stdout, stderr = finish(edge_run(inputs, "--model", os.path.relpath(model, tmp_path), "--out", out,
                                           "--ray", "auto", env={"RAY_ADDRESS": ray_cluster.address}, cwd=tmp_path))
    assert code == 7, stderr
    assert f"Ray: joined the cluster at {ray_cluster.address}" in stderr
    assert stderr.count("edge-run: error:") == 1 and "broken.mp4" in stderr
    assert "3 inputs: 2 done, 0 already done, 1 failed; 32 frames" in stdout
    jobs = jobs_of(out)
    assert {Path(k).name: (j["state"], j["exit_code"]) for k, j in jobs.items() if "day2" not in k} == {
        "a.mp4": ("done", None), "broken.mp4": ("failed", 3)}
    assert jobs[str(inputs / "day2" / "a.mp4")]["state"] == "done"
    assert all(j["worker"] and j["attempts"] == 1 for j in jobs.values())

    assert main([str(inputs), "--model", model, "--out", str(home), "--quiet"]) == 7  # the same, on this machine
    for key, job in jobs_of(home).items():
        assert job["output"].replace(str(home), str(out)) == jobs[key]["output"]
        if job["state"] == "done":
            assert outputs(Path(jobs[key]["output"])) == outputs(Path(job["output"]))

    code, stdout, stderr = finish(edge_run(inputs, "--model", model, "--out", out, "--ray", ray_cluster.address))
    assert code == 7
    assert stderr.count("already done with these options") == 1 and "failed before" in stderr
    assert "2 of 3 inputs already done with these options" in stderr
    assert "3 inputs: 0 done, 2 already done, 1 failed" in stdout

    # other options replace the outputs, and say so, as at home
    code, _, stderr = finish(edge_run(inputs, "--model", model, "--out", out, "--ray", ray_cluster.address,
                                      "--threshold", "0.3"))
    assert code == 7 and stderr.count("are from a run with other threshold; this run replaces them") == 2
    assert sorted(str(j.get("replaces")) for j in jobs_of(out).values()) == ["None", "['threshold']", "['threshold']"]


@pytest.mark.parametrize("jobs, twin", [(1, True), (2, False)])
def test_a_killed_worker_has_its_input_carried_on_by_another(tmp_path, models, ray_cluster, jobs, twin):
    """SIGKILL to the worker process in the middle of an input, after its first checkpoint: the
    input is carried on from there by a worker that lives, and comes out byte for byte as its
    twin. Alone with --jobs 2, it has one worker, whose other, idle slot must not take it back
    to the dead worker (which would cost it an attempt) but wait for the worker's replacement."""
    inputs = tmp_path / "in"
    clip(inputs / "victim.mp4", 1000)
    if twin:
        (inputs / "twin.mp4").write_bytes((inputs / "victim.mp4").read_bytes())
    out = tmp_path / "out"
    run = edge_run(inputs, "--model", models.camvid(), "--out", out, "--ray", ray_cluster.address,
                   "--checkpoint-every", "1", "--batch", "2", "--jobs", jobs)
    victim = str(inputs / "victim.mp4")
    checkpoint = out / "victim" / ".edge-resume" / "camvid" / "checkpoint.json"
    deadline = time.monotonic() + 120
    while not checkpoint.exists():
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.02)
    worker = jobs_of(out)[victim]["worker"]
    os.kill(int(worker.split(" pid ")[1]), signal.SIGKILL)

    code, stdout, stderr = finish(run)
    assert code == 0, stderr
    assert "raylet" not in stdout  # Ray's own account of the death goes to stderr, out of what --json prints
    assert f"its Ray worker ({worker}) died" in stderr and "attempt 2 of 3" in stderr
    assert "victim.mp4: resuming after" in stderr
    record = jobs_of(out)[victim]
    assert record["state"] == "done" and record["attempts"] == 2 and record["lost_workers"] == [worker]
    assert record["worker"] != worker
    assert json.loads((out / "victim" / "camvid" / "run.json").read_text())["frames"]["in_range"] == 1000
    if twin:
        assert outputs(out / "victim") == outputs(out / "twin")


def test_progress_reaches_the_drivers_callback_and_resources_are_asked_for(tmp_path, models, ray_cluster):
    from edge import api
    from edge.run.options import RunOptions

    inputs = tmp_path / "in"
    clip(inputs / "a.mp4", 30)
    (inputs / "b.mp4").write_bytes((inputs / "a.mp4").read_bytes())
    seen = []
    options = RunOptions(models=[models.planet()], out=str(tmp_path / "out"), ray=ray_cluster.address, ray_cpus=1)
    summaries = api.run([str(inputs)], options,
                        progress=lambda key, written, expected: seen.append((Path(key).name, written, expected)))
    assert [s.status for s in summaries] == ["done", "done"]
    assert {name for name, _, _ in seen} == {"a.mp4", "b.mp4"} and all(expected == 30 for _, _, expected in seen)

    # this cluster's nodes have no GPU: a cuda run has nowhere to go, and says so before loading anything
    code, _, stderr = finish(edge_run(inputs, "--model", models.planet(), "--device", "cuda", "--out",
                                      tmp_path / "gpu", "--ray", ray_cluster.address))
    assert code == ClusterError.exit_code and "no live node with a GPU (--device cuda)" in stderr
    # nor a run whose workers would each reserve more CPUs than a node has
    code, _, stderr = finish(edge_run(inputs, "--model", models.planet(), "--ray-cpus", 2, "--out", tmp_path / "two",
                                      "--ray", ray_cluster.address))
    assert code == ClusterError.exit_code and "no live node with 2 CPUs (--ray-cpus)" in stderr


def test_an_input_that_kills_every_worker_it_is_given_fails_alone(tmp_path, models, ray_cluster):
    inputs = tmp_path / "in"
    clip(inputs / "victim.mp4", 2500)  # long enough to be caught running, every time
    clip(inputs / "other.mp4", 10)
    out = tmp_path / "out"
    run = edge_run(inputs, "--model", models.planet(), "--out", out, "--ray", ray_cluster.address)
    victim, killed = str(inputs / "victim.mp4"), []
    deadline = time.monotonic() + 120
    while run.poll() is None:
        assert time.monotonic() < deadline
        record = jobs_of(out).get(victim, {}) if (out / "jobs.json").exists() else {}
        if record.get("state") == "running" and record["worker"] not in killed:
            killed.append(record["worker"])
            os.kill(int(record["worker"].split(" pid ")[1]), signal.SIGKILL)
        time.sleep(0.01)
    code, stdout, stderr = finish(run)
    assert code == 7 and len(killed) == cluster.MAX_ATTEMPTS, stderr
    jobs = jobs_of(out)
    assert jobs[str(inputs / "other.mp4")]["state"] == "done"
    record = jobs[victim]
    assert record["state"] == "failed" and record["exit_code"] == ClusterError.exit_code
    assert record["lost_workers"] == killed and "as did the 2 before it" in record["error"]
    assert stderr.count("edge-run: error:") == 1 and "1 failed" in stdout


def test_a_model_that_fails_on_the_workers_is_the_runs_error(tmp_path, ray_cluster):
    video = clip(tmp_path / "a.mp4")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    code, _, stderr = finish(edge_run(video, "--model", bad, "--out", tmp_path / "out", "--ray", ray_cluster.address))
    assert code == ModelError.exit_code
    assert stderr.strip().splitlines()[-1].startswith("edge-run: error:") and "bad.onnx" in stderr


def test_ctrl_c_stops_every_worker_and_resume_carries_on(tmp_path, models, ray_cluster):
    inputs = tmp_path / "in"
    clip(inputs / "a.mp4", 1000)
    (inputs / "b.mp4").write_bytes((inputs / "a.mp4").read_bytes())  # x264 need not encode a clip twice alike
    out = tmp_path / "out"
    argv = [inputs, "--model", models.camvid(), "--out", out, "--ray", ray_cluster.address, "--checkpoint-every", "1",
            "--batch", "2"]
    run = edge_run(*argv)
    checkpoints = [out / name / ".edge-resume" / "camvid" / "checkpoint.json" for name in ("a", "b")]
    deadline = time.monotonic() + 120
    while not all(c.exists() for c in checkpoints):
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.02)
    run.send_signal(signal.SIGINT)
    code, _, stderr = finish(run, timeout=90)
    assert code == 130, stderr
    assert "2 of the inputs keep their outputs so far" in stderr and "--resume" in stderr
    assert {j["state"] for j in jobs_of(out).values()} == {"interrupted"}

    code, stdout, stderr = finish(edge_run(*argv, "--resume"))
    assert code == 0, stderr
    assert stderr.count("resuming after") == 2
    assert {j["state"] for j in jobs_of(out).values()} == {"done"}
    assert outputs(out / "a") == outputs(out / "b")


def test_a_lone_input_is_run_even_after_failing_and_its_error_is_the_runs(tmp_path, models, ray_cluster):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(os.urandom(3000))
    argv = [broken, "--model", models.planet(), "--out", tmp_path / "out", "--ray", ray_cluster.address]
    for _ in range(2):  # the second time too: a lone input is always tried, as at home
        code, _, stderr = finish(edge_run(*argv))
        assert code == 3 and stderr.count("edge-run: error:") == 1 and "failed before" not in stderr


def node_running(ray_cluster, worker: str):
    """The test cluster's node whose raylet started the worker process `worker` names."""
    pid = int(worker.split(" pid ")[1])
    parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return next(n for n in ray_cluster.worker_nodes if n.all_processes["raylet"][0].process.pid == parent)


def test_a_node_lost_sends_its_input_to_another_and_with_none_left_the_run_ends(tmp_path, models, ray_cluster):
    inputs = tmp_path / "in"
    clip(inputs / "long.mp4", 3000)
    key = str(inputs / "long.mp4")

    def start(out):
        run = edge_run(inputs, "--model", models.camvid(), "--out", out, "--ray", ray_cluster.address, "--batch", "1")
        deadline = time.monotonic() + 120
        while not (out / "jobs.json").exists() or jobs_of(out).get(key, {}).get("state") != "running":
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.01)
        return run, node_running(ray_cluster, jobs_of(out)[key]["worker"])

    try:
        # one input has one worker; its node gone, a worker starts on the other node and carries it on
        run, node = start(tmp_path / "one")
        ray_cluster.remove_node(node, allow_graceful=False)
        code, _, stderr = finish(run)
        assert code == 0, stderr
        assert "attempt 2 of 3" in stderr and "already done" not in stderr, stderr  # caught running, every time
        record = jobs_of(tmp_path / "one")[key]
        assert record["state"] == "done" and record["attempts"] == 2 and len(record["lost_workers"]) == 1
        assert record["worker"] != record["lost_workers"][0]

        # the last node gone too: nowhere to carry it on, so the run ends, the input left pending
        run, node = start(tmp_path / "two")
        ray_cluster.remove_node(node, allow_graceful=False)
        code, _, stderr = finish(run)
        assert code == ClusterError.exit_code, stderr
        assert "the Ray cluster lost all its workers, with 1 inputs not done" in stderr
        assert jobs_of(tmp_path / "two")[key]["state"] == "pending"
    finally:
        while len(ray_cluster.worker_nodes) < 2:
            ray_cluster.add_node(num_cpus=1)
        ray_cluster.wait_for_nodes()
