import json

import pytest

from edge.errors import ModelError
from edge.model import Contract, parse

CAMVID = Contract(task="camvid", input_size=(360, 480), input_format="uint8_nhwc", output="class_ids",
                  classes=("Void", "Road"), palette=((0, 0, 0), (128, 64, 128)))
PLANET = Contract(task="planet", input_size=(128, 128), input_format="float32_nchw", output="logits",
                  classes=("clear", "road", "water"), thresholds=(0.2, 0.2, 0.3), mean=(0.5, 0.4, 0.3),
                  std=(0.2, 0.2, 0.2))
BIWI = Contract(task="biwi", input_size=(120, 160), input_format="uint8_nhwc", output="points")


@pytest.mark.parametrize("contract", [CAMVID, PLANET, BIWI], ids=lambda c: c.task)
def test_metadata_round_trips(contract):
    assert parse(contract.to_metadata()) == contract


def test_a_single_threshold_applies_to_every_class():
    meta = PLANET.to_metadata() | {"edge.thresholds": "0.2"}
    assert parse(meta).thresholds == (0.2, 0.2, 0.2)


@pytest.mark.parametrize("key", ["edge.task", "edge.input_size", "edge.input_format", "edge.output", "edge.contract"])
def test_missing_required_key_is_named(key):
    meta = CAMVID.to_metadata()
    del meta[key]
    with pytest.raises(ModelError, match=key.replace(".", r"\.")):
        parse(meta)


@pytest.mark.parametrize("contract,key", [(CAMVID, "edge.palette"), (CAMVID, "edge.classes"),
                                          (PLANET, "edge.thresholds"), (BIWI, "edge.point_convention")])
def test_missing_task_key_is_named(contract, key):
    meta = contract.to_metadata()
    del meta[key]
    with pytest.raises(ModelError, match=f"{key}.*required for task {contract.task}"):
        parse(meta)


@pytest.mark.parametrize("key,value,message", [
    ("edge.task", "pose", "allowed: camvid, planet, biwi"),
    ("edge.output", "boxes", "allowed: class_ids, logits"),
    ("edge.input_size", "[360]", "height, width"),
    ("edge.input_size", "not json", "not valid JSON"),
    ("edge.palette", "[[0, 0, 0]]", "one \\[r, g, b\\]"),
    ("edge.std", "[0, 1, 1]", "positive"),
    ("edge.contract", "7", "version '7' is not supported"),
    ("edge.resize", "stretch", "allowed: squish, crop, pad"),
])
def test_bad_values_are_refused_with_the_reason(key, value, message):
    with pytest.raises(ModelError, match=message):
        parse(CAMVID.to_metadata() | {key: value})


def test_wrong_threshold_count():
    with pytest.raises(ModelError, match="thresholds' has 2 values, expected 3"):
        parse(PLANET.to_metadata() | {"edge.thresholds": json.dumps([0.1, 0.2])})


def test_other_metadata_is_kept_aside():
    contract = parse(BIWI.to_metadata() | {"author": "me"})
    assert contract.extra == {"author": "me"}
