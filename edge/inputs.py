"""What `edge-run`'s VIDEO arguments name, as jobs: one input and its output folder each.

An argument is a video file; a folder, whose videos are taken recursively (a folder with no
videos but images is one image sequence); a quoted glob, of videos or else of images; or
@LIST, a text file of such arguments, one a line (blank lines and # comments skipped,
relative paths taken from the list's folder). Each job writes to OUT/NAME: a video's name
without its extension, or its path inside the folder it was found in; where two jobs of a run
would share a NAME, each of them gets a short hash of its full path added, so they never
collide (and run/jobs.py keeps, across runs, the folder jobs.json gave an input before).
"""

import glob
import hashlib
import os
from collections import Counter
from dataclasses import dataclass

from . import media
from .errors import InputError, UsageError

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


def expand(arguments: list[str], *, outputs: str | None = None) -> list[Job]:
    """The jobs the arguments name, in order, each input once (however it was reached); a video
    under `outputs` (the run's --out, inside a folder given) is an output, not an input."""
    found: dict[str, tuple[str, str]] = {}
    skip = os.path.realpath(outputs) + os.sep if outputs is not None else None
    for argument in arguments:
        for path, name in _expand(str(argument), list_folder=None):
            real = os.path.realpath(path)
            if skip is None or not real.startswith(skip):
                found.setdefault(real, (path, name))
    jobs = list(found.values())
    counts = Counter(name for _, name in jobs)
    return [Job(path, name if counts[name] == 1 else f"{name}-{short_hash(path)}") for path, name in jobs]


def check_some_exist(arguments: list[str]) -> None:
    """InputError when no argument names anything on disk: a run of inputs that are all missing
    stops before it makes its output folder or jobs.json (one missing among several is that
    input's failure, recorded there, while the others run)."""
    missing = [a for a in map(str, arguments) if not a.startswith("@") and not os.path.exists(a)
               and not (glob.has_magic(a) and glob.glob(a))]
    if not arguments or len(missing) < len(arguments):
        return
    if len(missing) == 1 and glob.has_magic(missing[0]):
        raise InputError(f"no videos and no images match {missing[0]}; check the pattern")
    if len(missing) == 1:
        raise InputError(f"input video not found: {missing[0]}; check the path")
    raise InputError(f"none of the {len(missing)} inputs exists ({missing[0]}, ...); check the paths")


def short_hash(path: str) -> str:
    return hashlib.sha256(os.fsencode(os.path.abspath(path))).hexdigest()[:6]


def _expand(argument: str, list_folder: str | None) -> list[tuple[str, str]]:
    if argument.startswith("@"):
        listed = argument[1:]
        return _listed(listed if list_folder is None else os.path.join(list_folder, listed))
    if list_folder is not None:
        argument = os.path.join(list_folder, argument)
    if os.path.isdir(argument):
        videos = _walked(argument)
        if videos:
            return [(v, os.path.splitext(os.path.relpath(v, argument))[0].replace(os.sep, "/")) for v in videos]
    elif glob.has_magic(argument) and not os.path.exists(argument):
        videos = _videos(glob.glob(argument))
        if videos:
            return [(v, os.path.splitext(os.path.basename(v))[0]) for v in videos]
    return [(argument, media.sequence_name(argument))]  # one file, or a sequence of images


def _listed(path: str) -> list[tuple[str, str]]:
    try:
        with open(path, errors="surrogateescape") as listing:  # names are bytes to the file system
            lines = [line.strip() for line in listing]
    except OSError as err:
        raise UsageError(f"cannot read the list @{path}: {err.strerror or err}; check the path after @") from None
    folder = os.path.dirname(os.path.abspath(path))
    return [item for line in lines if line and not line.startswith("#") for item in _expand(line, folder)]


def _walked(folder: str) -> list[str]:
    """The videos under `folder`, hidden folders and files left out (edge's own partial outputs
    are hidden), symbolic links to folders not followed (a link back up would never end)."""
    names = []
    for root, folders, files in os.walk(folder):
        folders[:] = [f for f in folders if not f.startswith(".")]
        names += [os.path.join(root, f) for f in files if not f.startswith(".")]
    return _videos(names)


def _videos(names) -> list[str]:
    return media.natural_order(n for n in names if n.lower().endswith(VIDEO_EXTENSIONS) and os.path.isfile(n))
