"""The parity gate's input from the user's own pictures: `edge-export --images DIR [--labels FILE.csv]`.

`learn.export()` drops the data, so a notebook's learner has nothing to gate on but what the user
points at. Every image under DIR (subfolders too, hidden ones skipped, in natural order) is read
as fastai reads it (PIL, RGB) and resized as the contract says, the way the runtime resizes frames.

Labels come from a CSV with the header `image,labels` (or Kaggle planet's `image_name,tags`):
`image` names a file under DIR (its path relative to DIR, its file name, or either without the
extension, as Kaggle writes them); `labels` holds planet's space-separated tags, or biwi's face
centre `x y` in that image's pixels. camvid's labels are masks, which a CSV cannot hold: gate
camvid on `--data` in CamVid's layout instead.
"""

import csv
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from edge.errors import InputError, UsageError
from edge.geometry import Preprocessor, Window
from edge.model import Contract
from export.onnx_export import compare

SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
HEADERS = (("image", "labels"), ("image_name", "tags"))  # ours, then the Kaggle planet CSV's


@dataclass(frozen=True)
class Truth:
    """What the labels say about some of the gated images."""

    rows: np.ndarray  # which of the gated images are labelled, as indices into them
    tags: np.ndarray | None = None  # planet: (rows, classes) 0/1, in the contract's class order
    points: np.ndarray | None = None  # biwi: (rows, 2) face centres x, y in image pixels
    windows: tuple[Window, ...] = ()  # biwi: each labelled image's window onto the model input


@dataclass(frozen=True)
class GateImages:
    pixels: np.ndarray  # uint8 (N, H, W, 3) at the model's size
    source: str  # where they came from, as the parity table's title says it
    truth: Truth | None = None


@dataclass(frozen=True)
class Row:
    line: int
    image: str
    labels: str


def warn(message: str) -> None:
    print(f"edge-export: warning: {message}", file=sys.stderr)


def natural_key(name: str) -> tuple:
    """img2 before img10; re.split with a group alternates text and digits, so the parts compare."""
    parts = re.split(r"(\d+)", name.lower())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def find_images(folder: Path) -> list[Path]:
    """The image files under `folder`, recursively, in natural order of their paths within it.
    Hidden files and folders are skipped: a notebook's .ipynb_checkpoints holds stale copies."""
    if not folder.is_dir():
        raise InputError(f"{folder}: --images needs a folder of images"
                         + ("" if folder.exists() else ", and there is none there"))
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root, n) for n in names if not n.startswith(".") and n.lower().endswith(SUFFIXES)]
    if not found:
        raise InputError(f"{folder}: no images in it or its subfolders ({' '.join(s[1:] for s in SUFFIXES)}); "
                         f"point --images at the folder that holds your pictures")
    return sorted(found, key=lambda f: natural_key(f.relative_to(folder).as_posix()))


def read_rgb(file: Path) -> np.ndarray:
    try:
        with Image.open(file) as image:
            return np.asarray(image.convert("RGB"))  # as fastai's PILImage.create reads it
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"{file}: cannot read it as an image ({err}); fix or remove it") from None


def load(folder, contract: Contract, *, labels=None, limit: int) -> GateImages:
    """Up to `limit` of the images under `folder`, at the model's size, with what `labels` says of them."""
    if labels is not None and contract.task == "camvid":
        raise UsageError("--labels: camvid's labels are masks, which a CSV cannot hold; gate on --images alone, "
                         "or on --data with a dataset in CamVid's layout (images/, labels/, codes.txt)")
    folder = Path(folder)
    files = find_images(folder)
    # the CSV before the pictures: its mistakes are told at once, not after reading a folder of photos
    values = label_values(Path(labels), folder, files, contract) if labels is not None else None
    gated = files[:limit]
    preprocess = Preprocessor(contract)
    batches, sizes = [], []
    for file in gated:  # one at a time: a folder of full-size photos would not fit in memory at once
        rgb = read_rgb(file)
        sizes.append(rgb.shape[:2])
        batches.append(preprocess([rgb]))
    source = (f"{len(gated)} images under {folder}" if len(gated) == len(files)
              else f"{len(gated)} of the {len(files)} images under {folder} (--limit {limit})")
    truth = gated_truth(values, Path(labels).name, folder, gated, sizes, contract) if values is not None else None
    return GateImages(np.concatenate(batches), source, truth)


def read_rows(csv_file: Path) -> list[Row]:
    """The CSV's rows, by its header's two columns (any others are ignored)."""
    if not csv_file.is_file():
        raise InputError(f"{csv_file}: --labels needs a CSV file with the header image,labels, and there is none")
    try:
        with open(csv_file, newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets write a BOM
            reader = csv.DictReader(f)
            names = [n.strip() for n in reader.fieldnames or []]
            columns = next((h for h in HEADERS if set(h) <= set(names)), None)
            if columns is None:
                raise InputError(f"{csv_file}: the header is {','.join(names) or 'missing'}; it must be "
                                 f"image,labels (or Kaggle's image_name,tags)")
            reader.fieldnames = names
            rows = [Row(reader.line_num, (r[columns[0]] or "").strip(), r[columns[1]]) for r in reader]
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{csv_file}: not a readable CSV ({err}); write it as UTF-8 text, image,labels") from None
    for row in rows:
        if not row.image or row.labels is None:  # DictReader fills a short row's missing fields with None
            raise InputError(f"{csv_file}: line {row.line} is not image,labels; give each image a row of its own")
    if not rows:
        raise InputError(f"{csv_file}: no rows under the header; add one image,labels row per image")
    return rows


def lookup(folder: Path, files: list[Path]) -> dict[str, list[Path]]:
    """Each name a CSV may give an image by: its path relative to `folder`, its file name, and
    either without the extension (Kaggle's planet CSV names its tiles so)."""
    names: dict[str, list[Path]] = {}
    for file in files:
        rel = PurePosixPath(file.relative_to(folder).as_posix())
        for key in dict.fromkeys((str(rel), str(rel.with_suffix("")), rel.name, rel.stem)):
            names.setdefault(key, []).append(file)
    return names


def match(rows: list[Row], csv_file: Path, folder: Path, files: list[Path]) -> dict[Path, Row]:
    """Each row's image file. Rows naming images that are not under `folder` are left out, in
    one warning (a dataset's whole CSV beside a folder holding a sample of its images), but
    none matching is refused, as is a row that fits several images, or one named before."""
    names = lookup(folder, files)
    labelled: dict[Path, Row] = {}
    absent: list[Row] = []
    for row in rows:
        found = names.get(row.image.replace("\\", "/").removeprefix("./"), [])
        if not found:
            absent.append(row)
            continue
        if len(found) > 1:
            raise InputError(f"{csv_file}: line {row.line} names {row.image!r}, which fits {len(found)} images "
                             f"under {folder} ({found[0].relative_to(folder)}, {found[1].relative_to(folder)}, …); "
                             f"name it by its path relative to {folder}")
        if found[0] in labelled:
            raise InputError(f"{csv_file}: line {row.line} labels {found[0].relative_to(folder)} again (first on "
                             f"line {labelled[found[0]].line}); keep one row per image")
        labelled[found[0]] = row
    if not labelled:
        raise InputError(f"{csv_file}: none of its {len(rows)} rows names an image under {folder} (line "
                         f"{rows[0].line}: {rows[0].image!r}); name images by their path relative to {folder}, or "
                         f"their file name")
    if absent:
        warn(f"{len(absent)} of the {len(rows)} rows of {csv_file.name} name images that are not under {folder} "
             f"(the first: line {absent[0].line}, {absent[0].image!r}); they are left out")
    return labelled


def tag_vector(row: Row, csv_file: Path, classes: tuple[str, ...]) -> np.ndarray:
    """planet's tags as 0/1 in `classes` order; no tag at all is an image where nothing shows."""
    tags = row.labels.split()
    unknown = [t for t in tags if t not in classes]
    if unknown:
        known = ", ".join(classes[:10]) + (", …" if len(classes) > 10 else "")
        raise InputError(f"{csv_file}: line {row.line} ({row.image}) has tag {unknown[0]!r}, which the learner "
                         f"does not know (its tags: {known}); fix the tag")
    return np.array([float(c in tags) for c in classes], np.float32)


def face_centre(row: Row, csv_file: Path) -> np.ndarray:
    try:
        xy = np.array([float(v) for v in row.labels.split()])
    except ValueError:
        xy = np.array([])
    if xy.shape != (2,) or not np.isfinite(xy).all():
        raise InputError(f"{csv_file}: line {row.line} ({row.image}) has labels {row.labels!r}; biwi's label is "
                         f"the face centre 'x y' in the image's pixels")
    return xy


def label_values(csv_file: Path, folder: Path, files: list[Path], contract: Contract) -> dict[Path, np.ndarray]:
    """Each labelled image's labels, as numbers: planet's tags 0/1, biwi's face centre. Every row is
    checked, whether --limit gates its image or not."""
    labelled = match(read_rows(csv_file), csv_file, folder, files)
    if contract.task == "planet":
        return {f: tag_vector(row, csv_file, contract.classes) for f, row in labelled.items()}
    return {f: face_centre(row, csv_file) for f, row in labelled.items()}


def gated_truth(values: dict[Path, np.ndarray], csv_name: str, folder: Path, gated: list[Path],
                sizes: list[tuple[int, int]], contract: Contract) -> Truth | None:
    """What the labels say of the `gated` images (read at `sizes`). Those without a row still
    gate parity, but count in no metric."""
    rows = [i for i, f in enumerate(gated) if f in values]
    if len(rows) < len(gated):
        first = next(f for f in gated if f not in values).relative_to(folder)
        warn(f"{len(gated) - len(rows)} of the {len(gated)} gated images have no row in {csv_name} (the first: "
             f"{first}); they gate parity but count in no metric"
             + (" and fit no threshold" if contract.task == "planet" else ""))
    if not rows:
        return None
    chosen = np.stack([values[gated[i]] for i in rows])
    if contract.task == "planet":
        return Truth(np.array(rows), tags=chosen)
    windows = tuple(Window.fit(sizes[i], contract.input_size, contract.resize) for i in rows)
    return Truth(np.array(rows), points=chosen, windows=windows)


def score(contract: Contract, truth: Truth, ours: np.ndarray) -> dict[str, float]:
    """The task metric of the model's outputs `ours` on the labelled images: planet's the lesson's
    accuracy_thresh and F-beta at the contract's thresholds, biwi's the face-centre error in pixels."""
    if contract.task == "planet":
        # compare() measures its second argument's tags against its first's: the model's against the labels'
        tags = compare(contract, truth.tags, ours)
        return {"accuracy_thresh": tags["tag_agreement"], "fbeta": tags["fbeta"]}
    h, w = contract.input_size
    model_px = (ours.reshape(-1, 2) + 1) / 2 * np.array([w, h])  # xy_minus1_1, as edge-run maps it
    found = np.array([window.to_frame(p) for p, window in zip(model_px, truth.windows)])
    error = np.linalg.norm(found - truth.points, axis=1)
    return {"mean_point_error_px": float(error.mean()), "max_point_error_px": float(error.max())}
