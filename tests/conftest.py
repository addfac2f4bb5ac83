import pytest

from tests import makers_models


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
