"""The one error family users see: each kind has its own exit code and a one-line message.

The classes also subclass the builtin a Python caller would expect (PyAV does the same),
so `except OSError` around an input still works.
"""


def last_line(err: BaseException) -> str:
    """The telling part of a foreign library's error (onnxruntime, fastai), for a one-line message."""
    lines = str(err).strip().splitlines()
    return lines[-1][:200] if lines else type(err).__name__


def user_line(err: "EdgeError") -> str:
    """The error as the user sees it: its message, and where in the pipeline when a stage raised
    an error of its own kind (a StageError's message already says where)."""
    line = str(err)
    if getattr(err, "stage", None) and not isinstance(err, StageError):
        line = f"{err} (stage '{err.stage}', frame {err.frame_index})"
    if err.resume_from_s is not None:
        line += (f"; the outputs up to {err.resume_from_s:.2f} s are kept: give the same command with --resume "
                 f"to carry on from there")
    return line


class EdgeError(Exception):
    """Base of every error edge raises on purpose; `str(err)` is the line the user sees."""

    exit_code = 1
    resume_from_s: float | None = None  # set when the run stopped can carry on from there


class UsageError(EdgeError, ValueError):
    """Options that cannot work together or are out of range."""

    exit_code = 2


class InputError(EdgeError, OSError):
    """The input video is missing, unreadable, empty or has no video stream."""

    exit_code = 3


class ModelError(EdgeError, ValueError):
    """The model file is not valid ONNX, breaks the contract, or fails to run."""

    exit_code = 4


class OutputError(EdgeError, OSError):
    """The output folder or a file in it cannot be written."""

    exit_code = 5


class StageError(EdgeError, RuntimeError):
    """A pipeline stage failed; the message names the stage and the frame."""

    exit_code = 6

    def __init__(self, stage: str, frame_index: int | None, cause: BaseException):
        where = f"at frame {frame_index}" if frame_index is not None else "before the first frame"
        super().__init__(f"stage '{stage}' failed {where}: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.frame_index = frame_index
        self.cause = cause


class ClusterError(EdgeError, ConnectionError):
    """The Ray cluster cannot be reached, has no worker for the run, or lost them all."""

    exit_code = 8


class Interrupted(EdgeError):
    """SIGINT or SIGTERM arrived; the exit code follows the shell convention 128 + signal."""

    def __init__(self, signum: int):
        super().__init__("interrupted")
        self.exit_code = 128 + signum

    resumable_inputs = 0  # of several inputs side by side, how many kept a checkpoint

    def __str__(self) -> str:
        if self.resume_from_s is not None:
            return "interrupted"
        if self.resumable_inputs:
            return (f"interrupted; {self.resumable_inputs} of the inputs keep their outputs so far: give the same "
                    f"command with --resume to carry on")
        return "interrupted; no partial outputs were kept"
