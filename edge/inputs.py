"""What `edge-run`'s VIDEO arguments name, as jobs: one input and its output folder each.

An argument is a video file; a folder, whose videos are taken recursively (a folder with no
videos but images is one image sequence); a quoted glob, of videos or else of images; or
@LIST, a text file of such arguments, one a line (blank lines and # comments skipped,
relative paths taken from the list's folder). Each job writes to OUT/NAME: a video's name
without its extension, or its path inside the folder it was found in; where two jobs of a run
would share a NAME, each of them gets a short hash of its full path added, so they never collide.
"""

import glob
import hashlib
import os
from dataclasses import dataclass

from . import media
from .errors import UsageError

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".m2ts", ".mts", ".mpg", ".mpeg",
                    ".flv", ".wmv", ".3gp", ".ogv")


@dataclass(frozen=True)
class Job:
    path: str  # what media opens: a video file, or a folder or glob of images
    name: str  # its output folder under --out, relative ("/" between parts)

    @property
    def key(self) -> str:
        """How the job manifest knows it."""
        return os.path.abspath(self.path)


def expand(arguments: list[str]) -> list[Job]:
    """The jobs the arguments name, in order, each input once."""
    found: dict[str, str] = {}
    for argument in arguments:
        for path, name in _expand(str(argument), list_folder=None):
            found.setdefault(os.path.abspath(path), (path, name))
    jobs = list(found.values())
    names = [name for _, name in jobs]
    return [Job(path, name if names.count(name) == 1 else f"{name}-{_short_hash(path)}") for path, name in jobs]


def _expand(argument: str, list_folder: str | None) -> list[tuple[str, str]]:
    if list_folder is not None and not os.path.isabs(argument):
        argument = os.path.join(list_folder, argument)
    if argument.startswith("@"):
        return _listed(argument[1:])
    if os.path.isdir(argument):
        videos = _videos(os.path.join(glob.escape(argument), "**", "*"))
        if videos:
            return [(v, os.path.splitext(os.path.relpath(v, argument))[0].replace(os.sep, "/")) for v in videos]
    elif glob.has_magic(argument) and not os.path.exists(argument):
        videos = _videos(argument)
        if videos:
            return [(v, os.path.splitext(os.path.basename(v))[0]) for v in videos]
    return [(argument, media.sequence_name(argument))]  # one file, or a sequence of images


def _listed(path: str) -> list[tuple[str, str]]:
    try:
        with open(path) as listing:
            lines = [line.strip() for line in listing]
    except OSError as err:
        raise UsageError(f"cannot read the list @{path}: {err.strerror or err}; check the path after @") from None
    folder = os.path.dirname(os.path.abspath(path))
    return [item for line in lines if line and not line.startswith("#") for item in _expand(line, folder)]


def _videos(pattern: str) -> list[str]:
    matches = glob.glob(pattern, recursive=True)
    return media.natural_order(m for m in matches if m.lower().endswith(VIDEO_EXTENSIONS) and os.path.isfile(m))


def _short_hash(path: str) -> str:
    return hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:6]
