"""The datasets of fast.ai's lesson 3 in their real on-disk layouts: synthetic generators that write
them, and the fastai DataLoaders the lesson trains on.

    camvid/  images/{stem}.png, labels/{stem}_P.png (8-bit class ids), codes.txt, valid.txt
    planet/  train-jpg/{image_name}.jpg, train_v2.csv (image_name,tags; tags space-separated)
    biwi/    01/, 02/, … each with frame_XXXXX_rgb.jpg, frame_XXXXX_pose.txt and rgb.cal

Every function the DataBlocks hold is defined at module level, so `learn.export()` can pickle the
learner (the lesson's lambdas cannot be). Problems with the data on disk raise InputError naming
the file; bad options raise ValueError naming the allowed values.
"""

import random
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from fastai.vision.all import (
    ColReader, DataBlock, FileSplitter, FuncSplitter, ImageBlock, MaskBlock, MultiCategoryBlock, Normalize,
    PointBlock, RandomSplitter, Resize, URLs, aug_transforms, get_image_files, imagenet_stats, untar_data,
)
from PIL import Image

from edge.errors import InputError
from edge.model import TASKS

# CamVid's label_colors.txt, keyed by code (in codes.txt order) so a dataset with other codes can look them up.
CAMVID_PALETTE = {
    "Animal": (64, 128, 64), "Archway": (192, 0, 128), "Bicyclist": (0, 128, 192), "Bridge": (0, 128, 64),
    "Building": (128, 0, 0), "Car": (64, 0, 128), "CartLuggagePram": (64, 0, 192), "Child": (192, 128, 64),
    "Column_Pole": (192, 192, 128), "Fence": (64, 64, 128), "LaneMkgsDriv": (128, 0, 192),
    "LaneMkgsNonDriv": (192, 0, 64), "Misc_Text": (128, 128, 64), "MotorcycleScooter": (192, 0, 192),
    "OtherMoving": (128, 64, 64), "ParkingBlock": (64, 192, 128), "Pedestrian": (64, 64, 0), "Road": (128, 64, 128),
    "RoadShoulder": (128, 128, 192), "Sidewalk": (0, 0, 192), "SignSymbol": (192, 128, 128), "Sky": (128, 128, 128),
    "SUVPickupTruck": (64, 128, 192), "TrafficCone": (0, 0, 64), "TrafficLight": (0, 64, 64), "Train": (192, 64, 128),
    "Tree": (128, 128, 0), "Truck_Bus": (192, 128, 192), "Tunnel": (64, 0, 64), "VegetationMisc": (192, 192, 0),
    "Void": (0, 0, 0), "Wall": (64, 192, 0),
}
CAMVID_CODES = tuple(CAMVID_PALETTE)
PLANET_TAGS = (
    "agriculture", "artisinal_mine", "bare_ground", "blooming", "blow_down", "clear", "cloudy", "conventional_mine",
    "cultivation", "habitation", "haze", "partly_cloudy", "primary", "road", "selective_logging", "slash_burn",
    "water",
)
PLANET_WEATHER = ("clear", "cloudy", "haze", "partly_cloudy")  # exactly one per image in the real data


# ---------------------------------------------------------------------------------------------- options

def _hw(size) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, (tuple, list)) else ()
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise ValueError(f"size must be a positive int or a (height, width) pair of positive ints, got {size!r}")
    return pair


def _check(*, bs, seed, augment) -> None:
    if not isinstance(bs, int) or isinstance(bs, bool) or bs < 1:
        raise ValueError(f"bs must be an int of 1 or more, got {bs!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if augment not in (True, False):
        raise ValueError(f"augment must be True or False, got {augment!r}")


def _need(path: Path, what: str, fix: str) -> Path:
    if not path.exists():
        raise InputError(f"{path}: {what} is missing; {fix}")
    return path


def _batch_tfms(augment: bool, **aug) -> list:
    return [*(aug_transforms(**aug) if augment else []), Normalize.from_stats(*imagenet_stats)]


def _dataloaders(dblock: DataBlock, source, *, bs: int, seed: int):
    # num_workers=0: the items are small and worker processes cost more than they save on 2 cores
    dls = dblock.dataloaders(source, bs=bs, num_workers=0)
    for i, dl in enumerate(dls.loaders):
        dl.rng = random.Random(seed + i)  # the shuffle order follows `seed`, not whatever ran before
    return dls


# ---------------------------------------------------------------------------------------------- CamVid

def camvid_label(image_file) -> Path:
    """The mask of a CamVid image: images/{stem}{ext} → labels/{stem}_P{ext}."""
    f = Path(image_file)
    return f.parent.parent / "labels" / f"{f.stem}_P{f.suffix}"


def camvid_dls(path, *, size=(96, 128), bs=8, seed=0, augment=True):
    """The lesson's segmentation DataLoaders: images with their class-id masks, split by valid.txt
    (without it, as in camvid_tiny, a seeded random 20%)."""
    hw = _hw(size)
    _check(bs=bs, seed=seed, augment=augment)
    path = _need(Path(path), "the CamVid folder", "pass the folder holding images/, labels/ and codes.txt")
    images = _need(path / "images", "the images folder", "CamVid keeps its pictures in images/")
    _need(path / "labels", "the labels folder", "CamVid keeps its masks in labels/ as {stem}_P.png")
    codes_file = _need(path / "codes.txt", "codes.txt", "write the class names there, one a line, in mask-id order")
    codes = [c.strip() for c in codes_file.read_text().splitlines() if c.strip()]
    if not codes:
        raise InputError(f"{codes_file}: no class names; write one a line, in mask-id order")
    items = get_image_files(images)
    if not items:
        raise InputError(f"{images}: no images; put the pictures there as {{stem}}.png")
    for f in items:  # headers only: cheap even for the full 701 images
        label = camvid_label(f)
        _need(label, f"the mask of {f.name}", "each image needs labels/{stem}_P{ext}")
        with Image.open(f) as img, Image.open(label) as mask:
            if mask.mode != "L":  # fastai converts to L, so a palette PNG's ids would turn into grey levels
                raise InputError(f"{label}: mask has PIL mode {mask.mode}; save the class ids (index into codes.txt) "
                                 f"as an 8-bit grayscale PNG (mode L)")
            if mask.size != img.size:
                raise InputError(f"{label}: mask is {mask.size[0]}x{mask.size[1]} but {f.name} is "
                                 f"{img.size[0]}x{img.size[1]}; a mask must match its image pixel for pixel")
    valid_file = path / "valid.txt"
    if valid_file.exists():
        valid = set(valid_file.read_text().split("\n"))
        n_valid = sum(f.name in valid for f in items)
        if n_valid in (0, len(items)):
            raise InputError(f"{valid_file}: names {n_valid} of the {len(items)} images; list the validation "
                             f"images' file names, one a line, and leave some for training")
        splitter = FileSplitter(valid_file)
    else:
        splitter = RandomSplitter(0.2, seed=seed)
    dblock = DataBlock(
        blocks=(ImageBlock, MaskBlock(codes)),
        get_items=get_image_files,
        get_y=camvid_label,
        splitter=splitter,
        item_tfms=Resize(hw, method="squish"),
        batch_tfms=_batch_tfms(augment),
    )
    dls = _dataloaders(dblock, images, bs=bs, seed=seed)
    # as the lesson does: the codes live in the item transforms, and learners and metrics look for dls.vocab
    dls.vocab = codes
    return dls


# ---------------------------------------------------------------------------------------------- Planet

def planet_dls(path, *, size=128, bs=16, seed=0, csv="train_v2.csv", folder="train-jpg", valid_pct=0.2,
               vocab=None, augment=True):
    """The lesson's multi-label DataLoaders: tiles with multi-hot tags, a seeded random split."""
    hw = _hw(size)
    _check(bs=bs, seed=seed, augment=augment)
    if not (isinstance(valid_pct, float | int) and 0 < valid_pct < 1):
        raise ValueError(f"valid_pct must be between 0 and 1 (exclusive), got {valid_pct!r}")
    if vocab is not None:
        vocab = list(vocab)
        if not vocab or len(set(vocab)) != len(vocab) or not all(isinstance(t, str) and t for t in vocab):
            raise ValueError(f"vocab must be None or distinct non-empty tag names, e.g. PLANET_TAGS; got {vocab!r}")
    path = _need(Path(path), "the Planet folder", f"pass the folder holding {csv} and {folder}/")
    csv_file = _need(path / csv, "the labels CSV", "it needs the header image_name,tags")
    images = _need(path / folder, "the images folder", "put the tiles there as {image_name}.jpg")
    try:
        df = pd.read_csv(csv_file, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"{csv_file}: not a readable CSV ({err}); it needs the header image_name,tags") from None
    missing = [c for c in ("image_name", "tags") if c not in df.columns]
    if missing:
        raise InputError(f"{csv_file}: no column {', '.join(missing)}; the header must be image_name,tags")
    if df.empty:
        raise InputError(f"{csv_file}: no rows; list one image_name,tags row per tile")
    known = set(vocab or ())
    for line, (name, tags) in enumerate(zip(df.image_name, df.tags), start=2):  # line 1 is the header
        if not tags.split():
            raise InputError(f"{csv_file}: line {line} ({name}) has no tags; every tile needs at least one")
        unknown = [t for t in tags.split() if vocab is not None and t not in known]
        if unknown:
            raise InputError(f"{csv_file}: line {line} ({name}) has tag {unknown[0]!r}, which is not in the vocab; "
                             f"fix the tag or add it to the vocab")
        if not (images / f"{name}.jpg").is_file():
            raise InputError(f"{images / f'{name}.jpg'}: listed on line {line} of {csv_file.name} but missing; "
                             f"add the image or drop its row")
    dblock = DataBlock(
        blocks=(ImageBlock, MultiCategoryBlock(vocab=vocab)),
        get_x=ColReader("image_name", pref=images, suff=".jpg"),
        get_y=ColReader("tags", label_delim=" "),
        splitter=RandomSplitter(valid_pct, seed=seed),
        item_tfms=Resize(hw),
        batch_tfms=_batch_tfms(augment, flip_vert=True, max_lighting=0.1, max_zoom=1.05, max_warp=0.0),
    )
    return _dataloaders(dblock, df, bs=bs, seed=seed)


# ---------------------------------------------------------------------------------------------- BIWI

def _table(file: Path, shape: tuple, what: str, **kw) -> np.ndarray:
    try:
        table = np.genfromtxt(file, **kw)
    except FileNotFoundError:
        raise InputError(f"{file}: missing; each BIWI frame needs its pose.txt and each subject its rgb.cal") from None
    except ValueError as err:
        raise InputError(f"{file}: not BIWI's layout ({err}); it should hold {what}") from None
    if table.shape != shape or not np.isfinite(table).all():
        raise InputError(f"{file}: read a {'x'.join(map(str, table.shape))} table; it should hold {what}")
    return table


def _intrinsics(cal_file: Path) -> np.ndarray:
    # genfromtxt skips blank lines, so skip_footer=6 drops the real file's last 6 rows (distortion,
    # 3 of rotation, translation, resolution) and leaves the intrinsics; without the resolution row
    # (BIWI always has it) only 2 rows would be left, which the shape check reports
    return _table(cal_file, (3, 3), "3x3 intrinsics, distortion, 3x3 rotation, translation and resolution",
                  skip_footer=6)


def biwi_center(pose_file, cal_file) -> tuple[float, float]:
    """The face centre in pixels, (x, y): the head centre (the translation in pose.txt) projected
    through the camera intrinsics in rgb.cal, exactly as the lesson does."""
    cal = _intrinsics(Path(cal_file))
    ctr = _table(Path(pose_file), (3,), "3 rows of rotation, then the head centre x y z (mm)", skip_header=3)
    if ctr[2] <= 0:
        raise InputError(f"{pose_file}: head centre depth is {ctr[2]}; it must be in front of the camera (z > 0)")
    return (float(ctr[0] * cal[0][0] / ctr[2] + cal[0][2]), float(ctr[1] * cal[1][1] / ctr[2] + cal[1][2]))


def biwi_pose_file(image_file) -> Path:
    f = Path(image_file)
    return f.parent / f"{f.stem[:-3]}pose.txt"  # frame_00003_rgb.jpg → frame_00003_pose.txt


def biwi_point(image_file) -> torch.Tensor:
    """fastai's PointBlock target: the face centre as a (1, 2) tensor of (x, y) pixels."""
    f = Path(image_file)
    # each subject's own rgb.cal; the lesson read subject 01's for every frame
    return torch.tensor([biwi_center(biwi_pose_file(f), f.parent / "rgb.cal")])


class InSubjects:
    """Splitter test, picklable: is this frame from one of the validation subjects?"""

    def __init__(self, subjects):
        self.subjects = set(subjects)

    def __call__(self, image_file) -> bool:
        return Path(image_file).parent.name in self.subjects


def biwi_dls(path, *, size=(120, 160), bs=16, seed=0, valid_subjects=None, augment=True):
    """The lesson's point-regression DataLoaders: frames with their face centres, whole subjects
    held out for validation (by default the last). fastai scales the points to [-1, 1] as (x, y)."""
    hw = _hw(size)
    _check(bs=bs, seed=seed, augment=augment)
    path = _need(Path(path), "the BIWI folder", "pass the folder holding the subject folders 01/, 02/, …")
    items = get_image_files(path)
    if not items:
        raise InputError(f"{path}: no images; BIWI keeps frames as {{subject}}/frame_XXXXX_rgb.jpg")
    subjects = sorted({f.parent.name for f in items})
    for s in subjects:
        _intrinsics(path / s / "rgb.cal")
    for f in items:
        if not f.stem.endswith("_rgb"):
            raise InputError(f"{f}: not a BIWI frame name; frames are frame_XXXXX_rgb.jpg (move other images out)")
        _need(biwi_pose_file(f), f"the pose of {f.name}", "each frame needs its frame_XXXXX_pose.txt")
    if valid_subjects is None:
        valid_subjects = subjects[-1:]
    valid_subjects = [f"{s:02d}" if isinstance(s, int) else s for s in valid_subjects]
    if not valid_subjects or not set(valid_subjects) <= set(subjects) or set(valid_subjects) == set(subjects):
        raise ValueError(f"valid_subjects must be some, not all, of {', '.join(subjects)}; got {valid_subjects!r}")
    dblock = DataBlock(
        blocks=(ImageBlock, PointBlock),
        get_items=get_image_files,
        get_y=biwi_point,
        splitter=FuncSplitter(InSubjects(valid_subjects)),
        item_tfms=Resize(hw, method="squish"),
        batch_tfms=_batch_tfms(augment, size=hw, max_rotate=10, max_zoom=1.05, max_warp=0.0, do_flip=False),
    )
    return _dataloaders(dblock, path, bs=bs, seed=seed)


# ---------------------------------------------------------------------------------------------- synthetic data
# Small, deterministic stand-ins in the real layouts, drawn so that what the labels say is what
# the pictures show and a small model learns it in minutes of CPU. Item i draws from its own
# random stream, so it is the same picture whatever n is.

def _count(name: str, value, least: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValueError(f"{name} must be an int of {least} or more, got {value!r}")
    return value


def _smooth(rng, hw, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a cells x cells random grid, upsampled."""
    grid = rng.random((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _save(image: np.ndarray, file: Path, **kw) -> None:
    Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(file, **kw)


# Each scene class's look: RGB, pixel-noise and blotch amplitudes. Distinct colours make the
# classes learnable; the textures keep a model from matching exact values.
STREET = {
    "Sky": ((175, 200, 232), 3, 8),
    "Building": ((150, 95, 75), 6, 22),
    "Tree": ((55, 115, 45), 10, 35),
    "Road": ((85, 85, 92), 8, 6),
    "Sidewalk": ((182, 172, 150), 5, 10),
    "Car": ((205, 35, 40), 4, 10),
    "Pedestrian": ((70, 55, 125), 5, 8),
    "Void": ((22, 22, 28), 3, 3),
}


def _street_mask(rng, h: int, w: int) -> np.ndarray:
    """Class ids of a street scene, back to front: sky, buildings, trees, sidewalk, road, then
    cars and pedestrians nearest last, and the ego car's bonnet (Void, as in CamVid)."""
    cid = {c: CAMVID_CODES.index(c) for c in STREET}
    m = np.full((h, w), cid["Sky"], np.uint8)
    yh = int(h * rng.uniform(0.35, 0.5))  # the horizon
    x = 0
    while x < w:
        bw = int(w * rng.uniform(0.12, 0.3))
        if rng.random() < 0.8:
            m[int(yh * rng.uniform(0.1, 0.7)):yh, x:x + bw] = cid["Building"]
        x += bw + int(w * rng.uniform(0, 0.08))
    for _ in range(rng.integers(1, 4)):
        centre = (int(w * rng.uniform(0, 1)), int(yh * rng.uniform(0.6, 1.1)))
        axes = (int(w * rng.uniform(0.05, 0.12)), int(h * rng.uniform(0.08, 0.16)))
        cv2.ellipse(m, centre, axes, 0, 0, 360, cid["Tree"], -1)
    m[yh:] = cid["Sidewalk"]
    vx = w * rng.uniform(0.35, 0.65)  # the road's vanishing point
    left, right = -w * rng.uniform(0, 0.3), w * rng.uniform(1.0, 1.3)
    road = np.array([[vx - 0.04 * w, yh], [vx + 0.04 * w, yh], [right, h], [left, h]], np.int32)
    cv2.fillPoly(m, [road], cid["Road"])
    things = [("Car", rng.uniform(0.2, 1)) for _ in range(rng.integers(0, 4))]
    things += [("Pedestrian", rng.uniform(0.2, 1)) for _ in range(rng.integers(0, 4))]
    for name, depth in sorted(things, key=lambda t: t[1]):  # nearer (lower) things drawn over farther
        yb = int(yh + depth * (h - yh))
        lo = vx - 0.04 * w + (left - vx + 0.04 * w) * depth  # the road's edges at row yb
        hi = vx + 0.04 * w + (right - vx - 0.04 * w) * depth
        if name == "Car":
            ch = max(3, int(depth * 0.4 * (h - yh)))
            cw = int(1.6 * ch)
            x0 = int(rng.uniform(max(lo, 0), max(lo, min(hi, w) - cw, 0)))
            cv2.rectangle(m, (x0, yb - ch), (x0 + cw, yb), cid["Car"], -1)
        else:
            ph = max(4, int(depth * 0.8 * (h - yh)))
            pw = max(2, ph // 4)
            gap = w * rng.uniform(0.01, 0.12)  # from the kerb
            x0 = int(lo - pw - gap) if rng.random() < 0.5 else int(hi + gap)
            if 0 <= x0 <= w - pw:
                cv2.rectangle(m, (x0, yb - ph), (x0 + pw, yb), cid["Pedestrian"], -1)
    cv2.ellipse(m, (w // 2, h + int(0.02 * h)), (int(0.75 * w), int(0.1 * h)), 0, 0, 360, cid["Void"], -1)
    return m


def _street_image(rng, m: np.ndarray) -> np.ndarray:
    colour, fine, blotch = (np.zeros((256, k), np.float32) for k in (3, 1, 1))
    for name, (rgb, f, b) in STREET.items():
        i = CAMVID_CODES.index(name)
        colour[i], fine[i], blotch[i] = rgb, f, b
    h, w = m.shape
    img = colour[m] + fine[m] * rng.normal(0, 1, (h, w, 1)) + blotch[m] * (2 * _smooth(rng, (h, w), 8)[..., None] - 1)
    yy, xx = np.mgrid[:h, :w]
    img[(m == CAMVID_CODES.index("Building")) & (yy % 6 < 3) & (xx % 5 < 2)] -= 55  # windows
    sky = m == CAMVID_CODES.index("Sky")
    img[sky] += (yy[sky] / h * 30)[:, None]  # paler towards the horizon
    return img * rng.uniform(0.85, 1.15)  # the day's light


def make_camvid(path, *, n=60, size=(96, 128), seed=0) -> Path:
    """Street scenes in CamVid's layout: images/, labels/{stem}_P.png, codes.txt (all 32), valid.txt (~20%)."""
    _count("n", n, 2)
    h, w = _hw(size)
    _count("seed", seed, 0)
    path = Path(path)
    (path / "images").mkdir(parents=True, exist_ok=True)
    (path / "labels").mkdir(exist_ok=True)
    stems = [f"synth_{i:05d}" for i in range(n)]
    for i, stem in enumerate(stems):
        rng = np.random.default_rng([seed, i])
        mask = _street_mask(rng, h, w)
        _save(_street_image(rng, mask), path / "images" / f"{stem}.png")
        _save(mask, path / "labels" / f"{stem}_P.png")
    (path / "codes.txt").write_text("\n".join(CAMVID_CODES) + "\n")
    valid = np.random.default_rng([seed, n]).permutation(n)[:max(1, n // 5)]
    (path / "valid.txt").write_text("\n".join(f"{stems[i]}.png" for i in sorted(valid)))
    return path


# The land tags the tiles draw, with how often; the rest of PLANET_TAGS never appear.
LAND = {"primary": 0.8, "agriculture": 0.35, "water": 0.3, "road": 0.35, "habitation": 0.2, "bare_ground": 0.15}


def _planet_tile(rng, s: int) -> tuple[np.ndarray, list[str]]:
    weather = str(rng.choice(PLANET_WEATHER, p=[0.55, 0.15, 0.1, 0.2]))
    land = [] if weather == "cloudy" else [t for t, p in LAND.items() if rng.random() < p]  # as in the real data
    tex = _smooth(rng, (s, s), 6)[..., None]
    base = ((40, 95, 45), (30, 40, 20)) if "primary" in land else ((160, 150, 105), (25, 25, 20))
    img = np.float32(base[0]) + tex * np.float32(base[1])
    yy, xx = np.mgrid[:s, :s]
    if "agriculture" in land:  # a block of striped fields
        x0, y0 = rng.integers(0, s // 2, 2)
        bw, bh = rng.integers(s * 2 // 5, s * 3 // 5, 2)
        angle = rng.uniform(0, np.pi)
        stripes = ((xx * np.cos(angle) + yy * np.sin(angle)) // 3 % 2).astype(bool)
        field = (xx >= x0) & (xx < x0 + bw) & (yy >= y0) & (yy < y0 + bh)
        img[field & stripes], img[field & ~stripes] = (205, 190, 120), (150, 175, 80)
    if "bare_ground" in land:
        centre, axes = rng.integers(s // 5, s * 4 // 5, 2), rng.integers(s // 8, s // 4, 2)
        cv2.ellipse(img, tuple(map(int, centre)), tuple(map(int, axes)), 0, 0, 360, (155, 95, 60), -1)
    if "water" in land:
        centre, axes = rng.integers(s // 5, s * 4 // 5, 2), rng.integers(s // 10, s // 4, 2)
        cv2.ellipse(img, tuple(map(int, centre)), tuple(map(int, axes)), rng.uniform(0, 180), 0, 360, (35, 65, 135), -1)
    if "road" in land:  # edge to edge, from the left or top side to the right or bottom one
        a, b = rng.integers(0, s, 2)
        ends = [(0, int(a)), (s - 1, int(b))] if rng.random() < 0.5 else [(int(a), 0), (int(b), s - 1)]
        cv2.line(img, ends[0], ends[1], (205, 200, 190), max(2, s // 20))
    if "habitation" in land:  # a cluster of roofs
        centre = rng.integers(s // 4, s * 3 // 4, 2)
        for _ in range(rng.integers(4, 10)):
            x, y = (centre + rng.integers(-s // 6, s // 6, 2)).tolist()
            r = int(rng.integers(max(1, s // 32), max(2, s // 16)))
            roof = (235, 235, 230) if rng.random() < 0.6 else (190, 85, 65)
            cv2.rectangle(img, (x - r, y - r), (x + r, y + r), roof, -1)
    if weather == "partly_cloudy":
        alpha = sum(np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (s * rng.uniform(0.08, 0.16)) ** 2))
                    for cx, cy in rng.uniform(0, s, (rng.integers(2, 5), 2)))
        alpha = np.minimum(1.4 * alpha, 0.95)[..., None]
        img = img * (1 - alpha) + 240 * alpha
    elif weather == "haze":
        img = img * 0.45 + np.float32((200, 205, 215)) * 0.55
    elif weather == "cloudy":
        alpha = 0.85 + 0.15 * _smooth(rng, (s, s), 4)[..., None]
        img = img * (1 - alpha) + 235 * alpha
    return img + rng.normal(0, 4, img.shape), sorted([weather, *land])


def make_planet(path, *, n=400, size=64, seed=0) -> Path:
    """Aerial-like tiles in the Kaggle Planet layout: train-jpg/train_{i}.jpg and train_v2.csv. Each
    tile has one weather tag (clear, cloudy, haze, partly_cloudy) and land tags drawn where they are."""
    _count("n", n, 5)
    _count("size", size, 16)
    _count("seed", seed, 0)
    path = Path(path)
    (path / "train-jpg").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        img, tags = _planet_tile(np.random.default_rng([seed, i]), size)
        _save(img, path / "train-jpg" / f"train_{i}.jpg", quality=90)
        rows.append(f"train_{i},{' '.join(tags)}")
    (path / "train_v2.csv").write_text("image_name,tags\n" + "\n".join(rows) + "\n")
    return path


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return rz @ ry @ rx


def _rows(table) -> str:
    return "".join(" ".join(f"{v:.6g}" for v in row) + " \n" for row in np.atleast_2d(table))


SKIN = ((224, 172, 140), (198, 134, 100), (240, 190, 160), (170, 115, 85))
SHIRT = ((40, 60, 110), (60, 60, 64), (30, 90, 75), (90, 40, 95))  # cool or dark: never skin-like
HAIR = ((40, 28, 20), (90, 60, 35), (20, 20, 20), (120, 90, 55))


def _ellipse(img, centre, axes, angle, colour) -> None:
    # drawn with 4 fractional bits so the face's centroid is the projected centre to a fraction of a pixel
    cv2.ellipse(img, tuple(int(round(v * 16)) for v in centre), tuple(int(round(v * 16)) for v in axes),
                angle, 0, 360, colour, -1, cv2.LINE_AA, 4)


def make_biwi(path, *, subjects=4, frames=50, size=(240, 320), seed=0) -> Path:
    """Head-pose frames in BIWI's layout (real frames are 480x640; these default to half that):
    {subject}/frame_XXXXX_rgb.jpg, frame_XXXXX_pose.txt, rgb.cal. The face ellipse is centred on the
    head centre of pose.txt projected through the subject's rgb.cal, as biwi_center computes it."""
    _count("subjects", subjects, 2)
    _count("frames", frames, 1)
    h, w = _hw(size)
    _count("seed", seed, 0)
    sx, sy = w / 640, h / 480  # BIWI's Kinect intrinsics, scaled to this resolution
    for k in range(1, subjects + 1):
        folder = Path(path) / f"{k:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, k])
        f = 517.679 * rng.uniform(0.97, 1.03)
        cal = np.array([[f * sx, 0, (320 + rng.uniform(-6, 6)) * sx], [0, f * sy, (240.5 + rng.uniform(-6, 6)) * sy],
                        [0, 0, 1]])
        extrinsics = _rotation(*rng.uniform(-0.01, 0.01, 3)), rng.normal((-24, 6, -13), 2)  # depth → RGB camera
        (folder / "rgb.cal").write_text(_rows(cal) + "\n" + _rows([0, 0, 0, 0]) + "\n" + _rows(extrinsics[0]) + "\n"
                                        + _rows(extrinsics[1]) + "\n" + f"{w} {h}\n")
        skin, shirt, hair = (np.array(c[rng.integers(len(c))]) + rng.integers(-12, 12, 3) for c in (SKIN, SHIRT, HAIR))
        wall = np.float32(rng.choice([(120, 130, 150), (90, 110, 115), (150, 150, 160)]))
        room = wall + 40 * (_smooth(rng, (h, w), 5)[..., None] - 0.5)
        for j in range(frames):
            rngf = np.random.default_rng([seed, k, j])
            yaw, pitch, roll = np.radians(rngf.uniform((-35, -20, -15), (35, 20, 15)))
            z = rngf.uniform(850, 1150)
            mx, my = cal[0, 0] * 75 / 850 + 2, cal[1, 1] * 100 / 850 + 2  # the largest face's half-axes
            u, v = rngf.uniform((mx, my), (w - mx, h - my))
            head = ((u - cal[0, 2]) * z / cal[0, 0], (v - cal[1, 2]) * z / cal[1, 1], z)
            stem = folder / f"frame_{j + 3:05d}"  # real sequences start at frame 3
            Path(f"{stem}_pose.txt").write_text(_rows(_rotation(yaw, pitch, roll)) + "\n" + _rows(head))
            x, y = biwi_center(f"{stem}_pose.txt", folder / "rgb.cal")
            a, b = cal[0, 0] * 75 / z, cal[1, 1] * 100 / z
            img = np.ascontiguousarray(room + rngf.normal(0, 3, (h, w, 3)), np.float32)
            _ellipse(img, (x, y + 2.3 * b), (2.3 * a, 1.5 * b), 0, shirt.tolist())
            _ellipse(img, (x - 0.25 * b * np.sin(roll), y - 0.25 * b * np.cos(roll)), (1.08 * a, 0.95 * b),
                     np.degrees(roll), hair.tolist())
            _ellipse(img, (x, y), (a, b), np.degrees(roll), skin.tolist())
            turn = 0.3 * a * np.sin(yaw)  # the eyes and mouth follow the yaw
            for ex, ey, ax, ay, colour in ((-0.38 * a + turn, -0.2 * b, 0.14 * a, 0.08 * b, (40, 30, 30)),
                                           (0.38 * a + turn, -0.2 * b, 0.14 * a, 0.08 * b, (40, 30, 30)),
                                           (turn, 0.5 * b, 0.3 * a, 0.07 * b, (150, 70, 70))):
                c, s = np.cos(roll), np.sin(roll)
                _ellipse(img, (x + c * ex - s * ey, y + s * ex + c * ey), (ax, ay), np.degrees(roll), colour)
            _save(img, Path(f"{stem}_rgb.jpg"), quality=90)
    return Path(path)


# ---------------------------------------------------------------------------------------------- download

DOWNLOADS = {"camvid": "CAMVID", "planet": "PLANET_SAMPLE", "biwi": "BIWI_HEAD_POSE"}


def download(task, dest) -> Path:
    """Fetch the real dataset with fastai's untar_data (needs internet) into `dest`; returns its folder.
    The Planet sample keeps its labels in labels.csv and its tiles in train/: pass planet_dls
    csv="labels.csv", folder="train"."""
    if task not in DOWNLOADS:
        raise ValueError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    return untar_data(getattr(URLs, DOWNLOADS[task]), archive=dest, data=dest)
