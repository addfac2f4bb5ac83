"""`edge-export --images DIR [--labels FILE.csv]`: the parity gate on the user's own pictures.

The learners have known outputs, so what the labels should fit and score is known: planet's
ChannelScore tags red and green by their channel means (as in test_exporter), and biwi's
ColourPoint puts its point at (red, green) of the way across and down the image.
"""

import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastai")
ort = pytest.importorskip("onnxruntime")

from fastai.data.block import DataBlock  # noqa: E402
from fastai.data.transforms import Normalize  # noqa: E402
from fastai.learner import Learner  # noqa: E402
from fastai.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat  # noqa: E402
from fastai.vision.augment import Resize  # noqa: E402
from fastai.vision.data import ImageBlock, MaskBlock, PointBlock  # noqa: E402
from PIL import Image  # noqa: E402

from edge.errors import UsageError  # noqa: E402
from export import exporter, user_images  # noqa: E402
from tests.test_exporter import (  # noqa: E402
    CODES, TAGS, ChannelScore, contract_of, get_ctr, get_msk, planet_dls, write_biwi, write_camvid, write_planet,
)

# (red, green) of each planet picture, as fractions; a tag is on above 0.6. Their paths are nested,
# and named so that natural order (img2 before img10) differs from plain string order.
PLANET = {
    "a/img2.png": (0.35, 0.4), "a/img10.png": (0.45, 0.8), "a/b/img1.jpg": (0.7, 0.4),
    "c/img3.png": (0.9, 0.8), "img20.bmp": (0.35, 0.8), "img100.tiff": (0.9, 0.4),
}
NATURAL_ORDER = ["a/b/img1.jpg", "a/img2.png", "a/img10.png", "c/img3.png", "img20.bmp", "img100.tiff"]


class ColourPoint(torch.nn.Module):
    """biwi stand-in: the point (x, y) in -1..1 is the image's mean red and green, so a solid
    picture of red r and green g has its point at (r * width, g * height) of the image."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))  # fastai's optimiser wants a parameter

    def forward(self, x):  # 0..1 pixels: the learner has no Normalize
        return x.mean((2, 3))[:, :2] * self.scale - 1


def solid(path: Path, rgb: tuple[float, float, float], size=(36, 36)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), np.array(rgb) * 255, np.uint8)).save(path)


def tags_of(red: float, green: float) -> str:
    return " ".join(t for t, v in (("red", red), ("green", green)) if v > 0.6)


@pytest.fixture(scope="module")
def learners(tmp_path_factory) -> dict[str, Path]:
    """planet's and biwi's learner files, as learn.export() writes them."""
    folder = tmp_path_factory.mktemp("learners")
    planet = Learner(planet_dls(write_planet(folder / "planet"), size=32, bs=4, seed=0, augment=False),
                     ChannelScore(), loss_func=BCEWithLogitsLossFlat())
    planet.export(folder / "planet.pkl")
    block = DataBlock(blocks=(ImageBlock, PointBlock), get_y=get_ctr, item_tfms=Resize((48, 64), method="squish"))
    biwi = Learner(block.dataloaders(write_biwi(folder / "biwi"), bs=2, num_workers=0), ColourPoint())
    biwi.export(folder / "biwi.pkl")
    return {"planet": folder / "planet.pkl", "biwi": folder / "biwi.pkl"}


@pytest.fixture
def pictures(tmp_path) -> Path:
    """PLANET's pictures, with what the gate must skip: hidden files and folders, and other files."""
    folder = tmp_path / "pictures"
    for name, (r, g) in PLANET.items():
        solid(folder / name, (r, g, 0.5))
    solid(folder / ".ipynb_checkpoints" / "img2-checkpoint.png", (0, 0, 0))
    solid(folder / "a" / ".hidden.png", (0, 0, 0))
    (folder / "notes.txt").write_text("not an image")
    return folder


def export_cli(learner: Path, out: Path, *flags) -> int:
    return exporter.main([str(learner), "--onnx", str(out), *map(str, flags)])


def test_images_are_found_recursively_in_natural_order(pictures):
    found = [f.relative_to(pictures).as_posix() for f in user_images.find_images(pictures)]
    assert found == NATURAL_ORDER


def test_the_gate_runs_on_exactly_the_folders_images(learners, pictures, tmp_path, monkeypatch, capsys):
    seen = []
    run_torch = exporter.run_torch
    monkeypatch.setattr(exporter, "run_torch", lambda module, pixels: seen.append(pixels) or run_torch(module, pixels))
    assert export_cli(learners["planet"], tmp_path / "p.onnx", "--images", pictures) == 0
    out = capsys.readouterr().out
    assert f"parity: onnxruntime vs PyTorch on 6 images under {pictures}" in out
    expected = np.array([[*PLANET[n], 0.5] for n in NATURAL_ORDER]) * 255
    [pixels] = seen
    assert pixels.shape == (6, 32, 32, 3)
    np.testing.assert_allclose(pixels[:, 16, 16], expected.astype(np.uint8), atol=1)
    assert "thresholds" not in out and contract_of(tmp_path / "p.onnx")[0].thresholds == (0.2, 0.2, 0.2)


def test_limit_takes_the_first_images(learners, pictures, tmp_path):
    report = exporter.export(learners["planet"], tmp_path / "p.onnx", images=pictures, limit=4)
    assert report["images"] == f"4 of the 6 images under {pictures} (--limit 4)"


def prob(v):  # ChannelScore's output for a channel at fraction v, after uint8 and Normalize
    return 1 / (1 + np.exp(-(int(v * 255) / 255 - 0.5) / 0.25))


@pytest.mark.parametrize("header,name", [("image,labels", lambda n: n), ("image_name,tags", lambda n: Path(n).stem)])
def test_planet_labels_fit_the_thresholds_written_into_the_contract(learners, pictures, tmp_path, capsys, header,
                                                                   name):
    rows = [f"{name(n)},{tags_of(r, g)}" for n, (r, g) in PLANET.items()]
    (tmp_path / "labels.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    out_file = tmp_path / "p.onnx"
    assert export_cli(learners["planet"], out_file, "--images", pictures, "--labels", tmp_path / "labels.csv") == 0
    thresholds = dict(zip(TAGS, contract_of(out_file)[0].thresholds))
    for tag, channel in (("red", 0), ("green", 1)):
        values = {colour[channel] for colour in PLANET.values()}
        highest_off = max(prob(v) for v in values if v <= 0.6)
        lowest_on = min(prob(v) for v in values if v > 0.6)
        assert highest_off < thresholds[tag] <= lowest_on  # every picture right; 0.2 would tag them all
    assert thresholds["rare"] == 0.2  # no picture is rare
    out = capsys.readouterr().out
    assert "thresholds (best F2 per tag on the 6 labelled images): red " in out
    # red and green right everywhere; rare (probability 0.5) wrongly on everywhere at 0.2
    assert "task metric on the 6 labelled images (at the thresholds fitted on them):" in out
    assert re.search(r"accuracy_thresh +0\.666667\n", out)


def test_pictures_without_a_row_gate_parity_but_fit_nothing(learners, pictures, tmp_path, capsys):
    labelled = ["a/img10.png", "img20.bmp", "img100.tiff"]  # red off, off, on
    (tmp_path / "labels.csv").write_text("image,labels\n" + "".join(f"{n},{tags_of(*PLANET[n])}\n" for n in labelled))
    report = exporter.export(learners["planet"], tmp_path / "p.onnx", images=pictures, labels=tmp_path / "labels.csv")
    err = capsys.readouterr().err
    assert "3 of the 6 gated images have no row in labels.csv (the first: a/b/img1.jpg)" in err
    assert report["images"] == f"6 images under {pictures}" and report["labels"]["count"] == 3
    assert prob(0.45) < report["labels"]["thresholds"]["red"] <= prob(0.9)  # fitted on the labelled three


def test_rows_for_images_not_in_the_folder_are_left_out_in_one_warning(learners, pictures, tmp_path, capsys):
    """A dataset's whole CSV beside a folder holding a sample of its images."""
    rows = [f"{n},{tags_of(r, g)}" for n, (r, g) in PLANET.items()] + [f"train_{i},red" for i in range(500)]
    (tmp_path / "labels.csv").write_text("image_name,tags\n" + "\n".join(rows) + "\n")
    report = exporter.export(learners["planet"], tmp_path / "p.onnx", images=pictures, labels=tmp_path / "labels.csv")
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [f"edge-export: warning: 500 of the 506 rows of labels.csv name images that are not under "
                        f"{pictures} (the first: line 8, 'train_0'); they are left out"]
    assert report["labels"]["count"] == 6


def test_biwi_labels_give_the_face_centre_error_in_image_pixels(learners, tmp_path, capsys):
    folder = tmp_path / "faces"
    faces = {"s1/f1.png": ((60, 90), (0.25, 0.5)), "s1/f2.png": ((30, 40), (0.75, 0.2)),
             "s2/f1.png": ((48, 64), (0.5, 0.5))}
    rows = []
    for name, ((h, w), (r, g)) in faces.items():
        solid(folder / name, (r, g, 0), size=(h, w))
        x, y = int(r * 255) / 255 * w, int(g * 255) / 255 * h  # where ColourPoint puts it in this image
        rows.append(f"{name},{x + 3} {y - 4}")  # 5 pixels off
    (tmp_path / "centres.csv").write_text("image,labels\n" + "\n".join(rows) + "\n")
    report = exporter.export(learners["biwi"], tmp_path / "b.onnx", images=folder, labels=tmp_path / "centres.csv")
    metrics = report["labels"]["metrics"]
    assert metrics["mean_point_error_px"] == pytest.approx(5, abs=0.01)
    assert metrics["max_point_error_px"] == pytest.approx(5, abs=0.01)
    assert "mean_point_error_px" in capsys.readouterr().out and report["parity"]["passed"]


def refused(code: int, message: str, learner: Path, out: Path, *flags, capsys) -> None:
    """The export exits with `code`, says `message` in one error line, and writes nothing."""
    assert export_cli(learner, out, *flags) == code
    [error] = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert message in error
    assert not out.exists()


def test_a_folder_without_images_and_clashing_options_are_refused(learners, pictures, tmp_path, capsys):
    empty = tmp_path / "empty"
    solid(empty / ".hidden.png", (0, 0, 0))
    (empty / "readme.txt").write_text("no pictures")
    out, planet = tmp_path / "out.onnx", learners["planet"]
    refused(3, f"{empty}: no images in it or its subfolders", planet, out, "--images", empty, capsys=capsys)
    refused(3, "--images needs a folder of images, and there is none there", planet, out, "--images",
            tmp_path / "absent", capsys=capsys)
    refused(2, "--data and --images both name the gate's images", planet, out, "--images", pictures,
            "--data", pictures, capsys=capsys)
    refused(2, "--labels labels the pictures of --images DIR", planet, out, "--labels", tmp_path / "x.csv",
            capsys=capsys)
    refused(2, "--limit must be 1 or more", planet, out, "--images", pictures, "--limit", 0, capsys=capsys)
    refused(3, "--labels needs a CSV file", planet, out, "--images", pictures, "--labels", tmp_path / "x.csv",
            capsys=capsys)
    (pictures / "broken.jpg").write_bytes(b"not a jpeg")
    refused(3, f"{pictures / 'broken.jpg'}: cannot read it as an image", planet, out, "--images", pictures,
            capsys=capsys)


@pytest.mark.parametrize("task,text,message", [
    ("planet", "name,tag\nimg20.bmp,red\n", "the header is name,tag; it must be image,labels (or Kaggle's"),
    ("planet", "image,labels\n", "no rows under the header"),
    ("planet", "image,labels\nimg20.bmp\n", "line 2 is not image,labels"),
    ("planet", "image,labels\na/img99.png,red\nimg98,green\n",
     "none of its 2 rows names an image under"),
    ("planet", "image,labels\nimg2,red\n", "line 2 names 'img2', which fits 2 images under"),
    ("planet", "image,labels\nimg20.bmp,green blue\n",
     "line 2 (img20.bmp) has tag 'blue', which the learner does not know (its tags: red, green, rare)"),
    ("planet", "image,labels\nimg20.bmp,green\n./img20,green\n", "line 3 labels img20.bmp again (first on line 2)"),
    ("biwi", "image,labels\nimg20.bmp,12\n", "line 2 (img20.bmp) has labels '12'; biwi's label is the face centre"),
])
def test_a_bad_labels_csv_is_refused_in_one_line(learners, pictures, tmp_path, capsys, task, text, message):
    solid(pictures / "c" / "img2.png", (0, 0, 0))  # a second img2, in another folder than a/img2.png
    (tmp_path / "labels.csv").write_text(text)
    refused(3, f"{tmp_path / 'labels.csv'}: {message}", learners[task], tmp_path / "out.onnx", "--images", pictures,
            "--labels", tmp_path / "labels.csv", capsys=capsys)


def test_camvid_labels_are_masks_and_refused(tmp_path, pictures):
    block = DataBlock(blocks=(ImageBlock, MaskBlock(codes=CODES)), get_y=get_msk, item_tfms=Resize((32, 32)),
                      batch_tfms=Normalize.from_stats((0.5,) * 3, (0.25,) * 3))
    camvid = Learner(block.dataloaders(write_camvid(tmp_path / "camvid"), bs=2, num_workers=0),
                     torch.nn.Conv2d(3, len(CODES), 1), loss_func=CrossEntropyLossFlat(axis=1))
    (tmp_path / "masks.csv").write_text("image,labels\nimg20.bmp,Road\n")
    with pytest.raises(UsageError, match="camvid's labels are masks"):
        exporter.export(camvid, tmp_path / "c.onnx", images=pictures, labels=tmp_path / "masks.csv")
    assert exporter.export(camvid, tmp_path / "c.onnx", images=pictures)["parity"]["passed"]
