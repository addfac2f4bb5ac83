"""Run edge-run command lines in a separate Python process, one at a time, so that a hang or a
crash of the interpreter in one case is seen (and the process replaced) instead of taking the
test session down. The worker imports edge once; each case costs only its own run."""

import json
import os
import select
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

WORKER = r"""
import contextlib, io, json, os, resource, signal, sys, traceback
results = os.fdopen(os.dup(1), "w")  # the protocol's own channel: nothing a case prints reaches it
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
from edge.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past a file size limit, writes fail (EFBIG) instead
unlimited = resource.getrlimit(resource.RLIMIT_FSIZE)
for line in sys.stdin:
    case = json.loads(line)
    out, err = io.StringIO(), io.StringIO()
    if case["file_size_limit"]:  # a disk that fills up, as the writes see it
        resource.setrlimit(resource.RLIMIT_FSIZE, (case["file_size_limit"], unlimited[1]))
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(case["argv"])
        except BaseException:  # what edge-run let escape: the test reports it as a traceback
            traceback.print_exc()
            code = -1
    resource.setrlimit(resource.RLIMIT_FSIZE, unlimited)
    print(json.dumps({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}), file=results, flush=True)
"""


@dataclass
class Outcome:
    code: int | None  # edge-run's exit code; None when the case hung or the interpreter died
    stdout: str
    stderr: str
    failure: str = ""  # "hang" or "crash (signal N)" when there is no code

    @property
    def clean(self) -> bool:
        """Success, or a one-line edge-run error with its exit code: never a traceback."""
        if self.code == 0:
            return "Traceback" not in self.stderr
        lines = [line for line in self.stderr.splitlines() if not line.startswith("edge-run: warning:")]
        return self.code in (2, 3, 4, 5, 6) and len(lines) == 1 and lines[0].startswith("edge-run: error:")


class Worker:
    def __init__(self, *, timeout_s: float = 60):
        self.timeout_s = timeout_s
        self.process = None

    def _start(self) -> None:
        root = Path(__file__).resolve().parents[1]
        # C-level output (FFmpeg's log) goes nowhere: an unread pipe could fill and block the worker
        self.process = subprocess.Popen([sys.executable, "-u", "-W", "ignore", "-c", WORKER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=root,
                                        env={**os.environ, "PYTHONPATH": str(root)})

    def run(self, argv: list, *, file_size_limit: int | None = None) -> Outcome:
        """`file_size_limit` (bytes): every file the case writes fails past it, as on a full disk."""
        if self.process is None or self.process.poll() is not None:
            self._start()
        case = {"argv": [str(a) for a in argv], "file_size_limit": file_size_limit}
        self.process.stdin.write(json.dumps(case) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], self.timeout_s)
        line = self.process.stdout.readline() if ready else ""
        if line:
            result = json.loads(line)
            return Outcome(result["code"], result["stdout"], result["stderr"])
        if not ready:
            self.close()
            return Outcome(None, "", "", failure=f"hang (no result in {self.timeout_s} s)")
        code = self.process.wait()
        self.process = None
        return Outcome(None, "", "", failure=f"crash (exit {code})")

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
