"""The two ways to run a model over a video without edge, on the same frames and model.

- the plain loop a user writes by hand: `cv2.VideoCapture` read, numpy/OpenCV preprocessing,
  an onnxruntime session with its default options at batch 1, drawing, `cv2.VideoWriter` write,
  one frame at a time;
- the lesson's way: fastai's `learn.predict` frame by frame (needs fastai and the learner file).

Both write what edge writes for the task (camvid: overlay video and class fractions; planet:
scores; biwi: overlay video and track) through the same plain output code, so they differ only
in how a frame becomes a result. `measured` times either over the frames the stages are timed on.
"""

import csv
import os

import cv2
import numpy as np

from edge.errors import UsageError
from edge.geometry import Window
from edge.model import Contract, parse

WARM_FRAMES = 8  # a baseline's warm-up: enough frames to load and allocate everything


class PlainOutputs:
    """What a hand-written script writes, with OpenCV and the csv module."""

    def __init__(self, folder: str, contract: Contract, fps: float, size: tuple[int, int]):
        self.contract, (self.width, self.height) = contract, size
        self.file = open(os.path.join(folder, "results.csv"), "w", newline="")
        self.rows = csv.writer(self.file)
        self.video = None
        if contract.task != "planet":
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            self.video = cv2.VideoWriter(os.path.join(folder, "overlay.mp4"), fourcc, fps, size)
        if contract.task == "camvid":
            self.palette = np.zeros((256, 3), np.uint8)
            self.palette[: len(contract.palette)] = contract.palette

    def write(self, bgr: np.ndarray, result: np.ndarray) -> None:
        """`result` in the model's terms: a class-id map at model size, tag probabilities, or
        one point in the contract's convention."""
        task = self.contract.task
        if task == "camvid":
            mask = cv2.resize(result.astype(np.uint8), (self.width, self.height), interpolation=cv2.INTER_NEAREST)
            colours = cv2.cvtColor(self.palette[mask], cv2.COLOR_RGB2BGR)
            self.video.write(cv2.addWeighted(bgr, 0.5, colours, 0.5, 0))
            self.rows.writerow(np.bincount(mask.ravel(), minlength=len(self.contract.classes)) / mask.size)
        elif task == "planet":
            self.rows.writerow(result)
        else:
            x, y = point_in_frame(result, self.contract, self.width, self.height)
            out = bgr.copy()
            cv2.circle(out, (int(x), int(y)), 6, (0, 0, 255), -1)
            self.video.write(out)
            self.rows.writerow([x, y])

    def close(self) -> None:
        self.file.close()
        if self.video is not None:
            self.video.release()


def point_in_frame(point: np.ndarray, contract: Contract, width: int, height: int) -> tuple[float, float]:
    mh, mw = contract.input_size
    x, y = np.asarray(point, np.float64).reshape(-1)[:2]
    if contract.point_convention == "xy_minus1_1":
        x, y = (x + 1) / 2 * mw, (y + 1) / 2 * mh
    left, top, side_w, side_h = crop_box(contract, width, height)
    return left + x * side_w / mw, top + y * side_h / mh


def crop_box(contract: Contract, width: int, height: int) -> tuple[int, int, int, int]:
    """The frame region a hand-written script feeds the model: the centred crop for `crop`,
    else the whole frame (squished: a script rarely pads)."""
    if contract.resize != "crop":
        return 0, 0, width, height
    w = Window.fit((height, width), contract.input_size, "crop")
    return round(w.x0), round(w.y0), round(w.width), round(w.height)


def over_video(video: str, frames: int, folder: str, contract: Contract, frame_to_result) -> int:
    """The loop every such script has: read, compute, write, one frame at a time."""
    capture = cv2.VideoCapture(video)
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    outputs = PlainOutputs(folder, contract, capture.get(cv2.CAP_PROP_FPS) or 25.0, size)
    done = 0
    try:
        while done < frames:
            ok, bgr = capture.read()
            if not ok:
                break
            outputs.write(bgr, frame_to_result(bgr))
            done += 1
    finally:
        outputs.close()
        capture.release()
    return done


def hand_loop(model_path: str, device: str):
    """`frame_to_result` of the hand-written script, the contract it read from the model, and
    where its session runs: a script's plain session, on CUDA when asked and onnxruntime has it."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(model_path, providers=providers)
    contract = parse(session.get_modelmeta().custom_metadata_map, source=model_path)
    used = "cpu" if session.get_providers()[0] == "CPUExecutionProvider" else "cuda"
    name = session.get_inputs()[0].name
    mh, mw = contract.input_size
    mean, std = np.array(contract.mean, np.float32), np.array(contract.std, np.float32)

    def frame_to_result(bgr: np.ndarray) -> np.ndarray:
        height, width = bgr.shape[:2]
        left, top, w, h = crop_box(contract, width, height)
        image = cv2.resize(bgr[top : top + h, left : left + w], (mw, mh))
        if contract.channel_order == "RGB":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if contract.input_format == "uint8_nhwc":
            x = image[None]
        else:
            order = mean if contract.channel_order == "RGB" else mean[::-1]
            spread = std if contract.channel_order == "RGB" else std[::-1]
            x = ((image.astype(np.float32) / 255 - order) / spread).transpose(2, 0, 1)[None]
        out = session.run(None, {name: np.ascontiguousarray(x)})[0][0]
        if contract.task == "camvid" and contract.output == "logits":
            return out.argmax(0)
        if contract.task == "planet" and contract.output == "logits":
            return 1 / (1 + np.exp(-out))
        return out

    return frame_to_result, contract, used


def learn_predict(learner_path: str, contract: Contract):
    """`frame_to_result` of the lesson's loop: `learn.predict` on each RGB frame."""
    from export.learner import infer_task, load_learner

    learn = load_learner(learner_path)
    task = infer_task(learn)
    if task != contract.task:
        raise UsageError(f"--learner {learner_path} is a {task} learner but the model is {contract.task}; "
                         f"give the learner the model was exported from")

    def frame_to_result(bgr: np.ndarray) -> np.ndarray:
        with learn.no_bar():
            _, decoded, probs = learn.predict(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if task == "planet":
            return probs.numpy()
        return decoded.numpy()  # camvid: the class-id map (argmax); biwi: the point in -1..1

    return frame_to_result


def measured(setup, way, name: str) -> dict:
    """A baseline's figures over the same frames, or why it did not run."""
    if isinstance(way, str):
        return {"unavailable": way}
    frame_to_result, device = way if isinstance(way, tuple) else (way, "cpu")
    short = []

    def run(frames: int):
        done = over_video(setup.video, frames, str(setup.scratch()), setup.model.contract, frame_to_result)
        if done < frames:
            short.append(done)

    result = setup.measure(lambda: run(len(setup.frames)), warm=lambda: run(min(WARM_FRAMES, len(setup.frames))))
    if short:
        return {"unavailable": f"OpenCV read only {min(short)} of the {len(setup.frames)} frames PyAV read, so "
                               f"{name} would not run on the same frames"}
    return {**result, "device": device}
