"""edge: fastai lesson-3 models (camvid, planet, biwi) over video, at the edge.

`import edge` needs neither torch nor fastai: only numpy, PyAV, OpenCV and onnxruntime.
"""

__version__ = "0.1.0"
