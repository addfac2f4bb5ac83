import os

import pytest

from tests import makers_models

# Ray puts the nodes it starts on this machine at its outward address, and turns 127.0.0.1 given to
# ray.init into it too; this switch (read when ray is imported, and inherited by the edge-run
# processes the tests start) keeps the tests' clusters on loopback, where they need no network.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture
def models(tmp_path):
    """Builders for the known-function contract models, writing into this test's folder."""

    class Models:
        def camvid(self, name="camvid.onnx", **kw):
            return makers_models.camvid(tmp_path / name, **kw)

        def planet(self, name="planet.onnx", **kw):
            return makers_models.planet(tmp_path / name, **kw)

        def biwi(self, name="biwi.onnx", **kw):
            return makers_models.biwi(tmp_path / name, **kw)

    return Models()
