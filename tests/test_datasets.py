"""export.datasets: the generators write the real layouts, the loaders read them back, and bad data
is an InputError that names the file."""

import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from edge.errors import InputError
from export import datasets as ds


@pytest.fixture(scope="module")
def camvid(tmp_path_factory):
    return ds.make_camvid(tmp_path_factory.mktemp("camvid"), n=10, size=(48, 64))


@pytest.fixture(scope="module")
def planet(tmp_path_factory):
    return ds.make_planet(tmp_path_factory.mktemp("planet"), n=40, size=32)


@pytest.fixture(scope="module")
def biwi(tmp_path_factory):
    return ds.make_biwi(tmp_path_factory.mktemp("biwi"), subjects=3, frames=4, size=(120, 160))


def pixels(file) -> np.ndarray:
    return np.asarray(Image.open(file)).astype(int)


def test_constants_are_the_real_ones():
    assert len(ds.CAMVID_CODES) == 32 and ds.CAMVID_CODES[:3] == ("Animal", "Archway", "Bicyclist")
    assert list(ds.CAMVID_PALETTE) == list(ds.CAMVID_CODES)
    assert ds.CAMVID_PALETTE["Sky"] == (128, 128, 128) and ds.CAMVID_PALETTE["Road"] == (128, 64, 128)
    assert ds.CAMVID_PALETTE["Car"] == (64, 0, 128) and ds.CAMVID_PALETTE["Void"] == (0, 0, 0)
    assert len(ds.PLANET_TAGS) == 17 and list(ds.PLANET_TAGS) == sorted(ds.PLANET_TAGS)
    assert set(ds.PLANET_WEATHER) <= set(ds.PLANET_TAGS)


# ---------------------------------------------------------------------------------------------- CamVid

def test_camvid_layout(camvid):
    assert (camvid / "codes.txt").read_text().split() == list(ds.CAMVID_CODES)
    images = sorted((camvid / "images").glob("*.png"))
    assert len(images) == 10
    for f in images:
        mask = Image.open(camvid / "labels" / f"{f.stem}_P.png")
        assert mask.mode == "L" and mask.size == Image.open(f).size == (64, 48)


def test_camvid_masks_are_what_the_pictures_show(camvid):
    car, sky, road = (ds.CAMVID_CODES.index(c) for c in ("Car", "Sky", "Road"))
    cars = 0
    for f in (camvid / "images").glob("*.png"):
        img, mask = pixels(f), pixels(camvid / "labels" / f"{f.stem}_P.png")
        assert set(np.unique(mask)) <= {ds.CAMVID_CODES.index(c) for c in ds.STREET}
        r, g, b = img[mask == car].T  # the cars are red
        assert (r > g + 60).all() and (r > b + 60).all()
        cars += len(r)
        r, g, b = img[mask == sky].T  # the sky is blue
        assert (b > r + 15).all()
        r, g, b = img[mask == road].T  # the road is grey
        assert np.abs(r - b).mean() < 12 and r.mean() < 120
    assert cars > 0


def test_camvid_dls(camvid):
    dls = ds.camvid_dls(camvid, size=(32, 48), bs=4, augment=True)
    x, y = dls.one_batch()
    assert x.shape == (4, 3, 32, 48) and y.shape == (4, 32, 48)
    assert 0 <= y.min() and y.max() < 32
    assert list(dls.vocab) == list(ds.CAMVID_CODES)
    valid = set((camvid / "valid.txt").read_text().split())
    assert {f.name for f in dls.valid.items} == valid and len(valid) == 2
    assert not valid & {f.name for f in dls.train.items}


def test_camvid_dls_without_augmentation_keeps_the_mask(camvid):
    dls = ds.camvid_dls(camvid, size=(48, 64), bs=2, augment=False)
    _, y = dls.valid.one_batch()
    first = dls.valid.items[0]
    assert (y[0].numpy() == pixels(camvid / "labels" / f"{first.stem}_P.png")).all()


# ---------------------------------------------------------------------------------------------- Planet

def rows(planet) -> dict[str, list[str]]:
    lines = (planet / "train_v2.csv").read_text().splitlines()
    assert lines[0] == "image_name,tags"
    return {name: tags.split(" ") for name, tags in (line.split(",") for line in lines[1:])}


def test_planet_layout_and_weather(planet):
    tags = rows(planet)
    assert len(tags) == 40
    for name, t in tags.items():
        assert (planet / "train-jpg" / f"{name}.jpg").is_file()
        assert set(t) <= set(ds.PLANET_TAGS) and t == sorted(t)
        assert len(set(t) & set(ds.PLANET_WEATHER)) == 1  # one weather tag, as in the real data
        assert "cloudy" not in t or t == ["cloudy"]


def test_planet_tags_are_what_the_tiles_show(planet):
    for name, t in rows(planet).items():
        r, g, b = pixels(planet / "train-jpg" / f"{name}.jpg").reshape(-1, 3).T
        if "cloudy" in t:
            assert r.mean() > 200 and b.mean() > 200
        if "clear" in t:  # water is the only blue under a clear sky
            assert (((b > r + 40) & (b > g + 20)).sum() >= 10) == ("water" in t)


def test_planet_dls_targets_match_the_csv(planet):
    tags = rows(planet)
    dls = ds.planet_dls(planet, size=32, bs=8, augment=False)
    assert list(dls.vocab) == sorted({t for ts in tags.values() for t in ts})
    x, y = dls.one_batch()
    assert x.shape == (8, 3, 32, 32) and y.shape == (8, len(dls.vocab))
    assert len(dls.train_ds) == 32 and len(dls.valid_ds) == 8
    for i in range(len(dls.valid_ds)):
        name = dls.valid_ds.items.iloc[i].image_name
        hot = dls.valid_ds[i][1]
        assert [dls.vocab[j] for j in np.flatnonzero(hot.numpy())] == tags[name]


def test_planet_dls_with_the_full_vocab(planet):
    dls = ds.planet_dls(planet, size=32, bs=8, vocab=ds.PLANET_TAGS)
    assert list(dls.vocab) == list(ds.PLANET_TAGS) and dls.one_batch()[1].shape == (8, 17)


def test_planet_split_follows_the_seed(planet):
    names = [set(ds.planet_dls(planet, size=32, seed=s).valid_ds.items.image_name) for s in (0, 0, 1)]
    assert names[0] == names[1] != names[2]


# ---------------------------------------------------------------------------------------------- BIWI

def write_biwi_files(folder, *, fx=500, fy=510, cx=320, cy=240, translation=(100, -50, 1000), resolution=True):
    """rgb.cal and pose.txt written by hand in the real files' shape (trailing spaces included)."""
    cal = (f"{fx} 0 {cx} \n0 {fy} {cy} \n0 0 1 \n\n0 0 0 0 \n\n1 0 0 \n0 1 0 \n0 0 1 \n\n-24.0198 5.8896 -13.2308 \n"
           + ("\n640 480\n" if resolution else ""))
    (folder / "rgb.cal").write_text(cal)
    (folder / "frame_00003_pose.txt").write_text(
        "0.97 -0.03 -0.23 \n0.03 0.99 -0.02 \n0.23 0.01 0.97 \n\n" + " ".join(map(str, translation)) + " \n")
    return folder / "frame_00003_pose.txt", folder / "rgb.cal"


def test_biwi_center_by_hand(tmp_path):
    pose, cal = write_biwi_files(tmp_path)
    x, y = ds.biwi_center(pose, cal)
    assert x == pytest.approx(100 * 500 / 1000 + 320)  # 370
    assert y == pytest.approx(-50 * 510 / 1000 + 240)  # 214.5


def test_biwi_center_needs_the_real_cal_shape(tmp_path):
    # the lesson's skip_footer=6 counts on the resolution row the real rgb.cal ends with
    pose, cal = write_biwi_files(tmp_path, resolution=False)
    with pytest.raises(InputError, match="rgb.cal: read a 2x3 table"):
        ds.biwi_center(pose, cal)


def test_biwi_center_rejects_a_head_behind_the_camera(tmp_path):
    pose, cal = write_biwi_files(tmp_path, translation=(100, -50, 0))
    with pytest.raises(InputError, match="frame_00003_pose.txt: head centre depth"):
        ds.biwi_center(pose, cal)


def test_biwi_layout_and_own_intrinsics(biwi):
    subjects = sorted(p.name for p in biwi.iterdir())
    assert subjects == ["01", "02", "03"]
    for s in subjects:
        frames = sorted((biwi / s).glob("frame_*_rgb.jpg"))
        assert [f.name for f in frames][0] == "frame_00003_rgb.jpg" and len(frames) == 4
        assert all((biwi / s / f"{f.stem[:-3]}pose.txt").is_file() for f in frames)
        assert (biwi / s / "rgb.cal").read_text().splitlines()[-1] == "160 120"
    f = biwi / "02" / "frame_00004_rgb.jpg"
    own = ds.biwi_center(biwi / "02" / "frame_00004_pose.txt", biwi / "02" / "rgb.cal")
    assert ds.biwi_point(f).tolist() == [pytest.approx(list(own))]
    assert ds.biwi_center(biwi / "02" / "frame_00004_pose.txt", biwi / "01" / "rgb.cal") != pytest.approx(own)


def test_biwi_face_is_at_the_projected_centre(biwi):
    for f in biwi.glob("*/frame_*_rgb.jpg"):
        r, g, b = pixels(f).transpose(2, 0, 1)
        ys, xs = np.nonzero((r - b > 50) & (r > 120))  # skin; background, hair and shirt never are
        x, y = ds.biwi_center(f.parent / f"{f.stem[:-3]}pose.txt", f.parent / "rgb.cal")
        assert abs(xs.mean() - x) < 2 and abs(ys.mean() - y) < 2, f


def test_biwi_dls_targets_are_the_scaled_centres(biwi):
    dls = ds.biwi_dls(biwi, size=(60, 80), bs=4, augment=False)
    assert {f.parent.name for f in dls.valid.items} == {"03"} and len(dls.train.items) == 8
    x, y = dls.valid.one_batch()
    assert x.shape == (4, 3, 60, 80) and y.shape == (4, 1, 2)
    print("biwi batch targets (x, y in [-1, 1]):", y.squeeze(1).tolist())
    for f, point in zip(dls.valid.items, y[:, 0]):
        cx, cy = ds.biwi_center(f.parent / f"{f.stem[:-3]}pose.txt", f.parent / "rgb.cal")
        # fastai's PointScaler: pixels of the 160x120 frame → [-1, 1], x first
        assert point.tolist() == pytest.approx([cx / 160 * 2 - 1, cy / 120 * 2 - 1], abs=1e-4)
    assert y.abs().max() <= 1


def test_biwi_dls_valid_subjects(biwi):
    dls = ds.biwi_dls(biwi, bs=4, valid_subjects=[1, "02"], augment=False)
    assert {f.parent.name for f in dls.valid.items} == {"01", "02"}
    for bad in (["07"], ["01", "02", "03"], []):
        with pytest.raises(ValueError, match="some, not all, of 01, 02, 03"):
            ds.biwi_dls(biwi, valid_subjects=bad)


def test_biwi_dls_augmented_batch(biwi):
    x, y = ds.biwi_dls(biwi, size=(60, 80), bs=4).one_batch()
    assert x.shape == (4, 3, 60, 80) and y.shape == (4, 1, 2)


# ---------------------------------------------------------------------------------------------- all three

def test_dataloaders_pickle_for_learn_export(camvid, planet, biwi):
    loaders = {"camvid": (ds.camvid_dls(camvid, size=(32, 48), bs=2), sorted((camvid / "images").iterdir())[:2]),
               "planet": (ds.planet_dls(planet, size=32, bs=2), pd.read_csv(planet / "train_v2.csv")[:2]),
               "biwi": (ds.biwi_dls(biwi, bs=2), sorted(biwi.glob("01/*.jpg"))[:2])}
    for name, (dls, items) in loaders.items():
        empty = pickle.loads(pickle.dumps(dls.new_empty()))  # what learn.export() saves, and predict() uses
        assert empty.test_dl(items).one_batch()[0].shape[0] == 2, name
        if name == "camvid":  # dls.vocab is not kept; the codes are, in the mask transform
            assert list(empty.train.after_item.vocab) == list(ds.CAMVID_CODES) == list(dls.vocab)


def files(root) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("make,kw", [(ds.make_camvid, dict(n=4, size=(24, 32))), (ds.make_planet, dict(n=6, size=16)),
                                     (ds.make_biwi, dict(subjects=2, frames=2, size=(48, 64)))])
def test_generators_are_deterministic(tmp_path, make, kw):
    a, b, c = (files(make(tmp_path / name, seed=seed, **kw)) for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    assert a == b and a.keys() == c.keys() and a != c


@pytest.mark.parametrize("call", [lambda: ds.camvid_dls("x", size=(0, 4)), lambda: ds.planet_dls("x", bs=0),
                                  lambda: ds.planet_dls("x", valid_pct=1.0), lambda: ds.planet_dls("x", vocab=[]),
                                  lambda: ds.biwi_dls("x", augment="yes"), lambda: ds.make_camvid("x", n=1),
                                  lambda: ds.make_biwi("x", subjects=1)])
def test_bad_options_are_value_errors(call):
    with pytest.raises(ValueError):
        call()


def test_download_of_an_unknown_task(tmp_path):
    with pytest.raises(ValueError, match="allowed: camvid, planet, biwi"):
        ds.download("mnist", tmp_path)


# ---------------------------------------------------------------------------------------------- bad data

@pytest.fixture
def copy(tmp_path):
    return lambda src: shutil.copytree(src, tmp_path / src.name)


def test_missing_folders(tmp_path):
    for dls in (ds.camvid_dls, ds.planet_dls, ds.biwi_dls):
        with pytest.raises(InputError, match=f"{tmp_path / 'nowhere'}: the .* folder is missing"):
            dls(tmp_path / "nowhere")


def test_camvid_missing_codes(camvid, copy):
    data = copy(camvid)
    (data / "codes.txt").unlink()
    with pytest.raises(InputError, match="codes.txt: codes.txt is missing"):
        ds.camvid_dls(data)


def test_camvid_missing_mask(camvid, copy):
    data = copy(camvid)
    (data / "labels" / "synth_00003_P.png").unlink()
    with pytest.raises(InputError, match="synth_00003_P.png: the mask of synth_00003.png is missing"):
        ds.camvid_dls(data)


def test_camvid_mask_of_the_wrong_size(camvid, copy):
    data = copy(camvid)
    Image.new("L", (32, 24)).save(data / "labels" / "synth_00004_P.png")
    with pytest.raises(InputError, match="synth_00004_P.png: mask is 32x24 but synth_00004.png is 64x48"):
        ds.camvid_dls(data)


def test_camvid_colour_mask(camvid, copy):
    data = copy(camvid)
    Image.new("RGB", (64, 48)).save(data / "labels" / "synth_00004_P.png")
    with pytest.raises(InputError, match="synth_00004_P.png: mask has PIL mode RGB"):
        ds.camvid_dls(data)


def test_camvid_no_images(camvid, copy):
    data = copy(camvid)
    for f in (data / "images").iterdir():
        f.unlink()
    with pytest.raises(InputError, match="images: no images"):
        ds.camvid_dls(data)


def test_camvid_valid_txt_naming_nothing(camvid, copy):
    data = copy(camvid)
    (data / "valid.txt").write_text("other.png\n")
    with pytest.raises(InputError, match="valid.txt: names 0 of the 10 images"):
        ds.camvid_dls(data)


def test_planet_tag_not_in_vocab(planet, copy):
    data = copy(planet)
    csv = data / "train_v2.csv"
    lines = csv.read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ",clear volcano"
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"train_v2.csv: line 4 \(train_2\) has tag 'volcano'"):
        ds.planet_dls(data, vocab=ds.PLANET_TAGS)


def test_planet_missing_image(planet, copy):
    data = copy(planet)
    (data / "train-jpg" / "train_5.jpg").unlink()
    with pytest.raises(InputError, match=r"train_5.jpg: listed on line 7 of train_v2.csv but missing"):
        ds.planet_dls(data)


@pytest.mark.parametrize("text,message", [(None, "train_v2.csv: the labels CSV is missing"),
                                          ("name,tags\ntrain_0,clear\n", "train_v2.csv: no column image_name"),
                                          ("image_name,tags\n", "train_v2.csv: no rows"),
                                          ("image_name,tags\ntrain_0,\n", r"line 2 \(train_0\) has no tags")])
def test_planet_bad_csv(planet, copy, text, message):
    data = copy(planet)
    csv = data / "train_v2.csv"
    csv.unlink() if text is None else csv.write_text(text)
    with pytest.raises(InputError, match=message):
        ds.planet_dls(data)


def test_biwi_missing_cal_and_pose(biwi, copy):
    data = copy(biwi)
    (data / "02" / "frame_00005_pose.txt").unlink()
    with pytest.raises(InputError, match="02/frame_00005_pose.txt: the pose of frame_00005_rgb.jpg is missing"):
        ds.biwi_dls(data)
    (data / "03" / "rgb.cal").unlink()
    with pytest.raises(InputError, match="03/rgb.cal: missing"):
        ds.biwi_dls(data)
