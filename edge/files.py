"""Output files that survive a crash: flushed to the disk, and reopened where a checkpoint left them.

Sinks, the video writer's packet log, checkpoints and biwi's track use these, so that what a
checkpoint records as written is on the disk, and a resumed run carries on from exactly there.
"""

import os

from .errors import OutputError


def sync(file, path) -> None:
    """Flush `file` through to the disk."""
    try:
        file.flush()
        os.fsync(file.fileno())
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}; check free disk space") from err


def durable_size(file, path) -> int:
    """`sync` the file and return its size in bytes."""
    sync(file, path)
    return os.fstat(file.fileno()).st_size


def open_resumable(path: str | os.PathLike, *, resume_bytes: int | None, binary: bool = False):
    """A new file at `path`, or, resuming, the existing one cut back to `resume_bytes` (what a
    checkpoint's `durable_size` said) and open for appending."""
    mode = ("r+" if resume_bytes is not None else "w") + ("b" if binary else "")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        file = open(path, mode, **({} if binary else {"newline": ""}))
    except FileNotFoundError as err:
        if resume_bytes is None:
            raise OutputError(f"cannot create a file in {folder}: {err.strerror}; check the output folder") from err
        raise OutputError(f"{path} is gone, so its run cannot be resumed; run again without --resume") from err
    except OSError as err:
        raise OutputError(f"cannot create a file in {folder}: {err.strerror}; choose a writable output folder") \
            from err
    if resume_bytes is not None:
        if os.fstat(file.fileno()).st_size < resume_bytes:
            file.close()
            raise OutputError(f"{path} is shorter than its checkpoint says, so its run cannot be resumed; "
                              f"run again without --resume")
        file.truncate(resume_bytes)
        file.seek(resume_bytes)
    return file
