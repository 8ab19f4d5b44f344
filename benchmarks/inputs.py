"""Inputs for the parity suite and the benchmarks: real faces from ../shared/data when present,
else a synthetic textured set; benchmark videos and image folders built from either.

Synthetic images are never flat: a constant input has zero variance at every InstanceNorm,
which then amplifies float rounding noise, so two correct backends can differ by many LSB on
it. Each synthetic face has a shaded background, a textured face ellipse, eyes, mouth and
sensor-like noise.

This module is not part of the installed package (see variants.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CYCLEMASK_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"
#: Domain A faces (no mask), the "mask" direction's input: tight, aligned photos.
SHARED_FACES = SHARED_DATA / "faces" / "observations_pairs" / "without_mask"
#: Domain B faces (a mask on), the "unmask" direction's input.
SHARED_MASKED_FACES = SHARED_DATA / "faces" / "observations_pairs" / "with_mask"
SHARED_VIDEO = SHARED_DATA / "video" / "head-pose-face-detection-female-and-male.mp4"


def _blur3(img: np.ndarray) -> np.ndarray:
    """3x3 Gaussian blur, kernel [1, 2, 1] / 4 in each direction, borders reflected (as
    cv2.GaussianBlur with ksize 3 and sigma 0), in numpy: a GPU check machine may lack OpenCV."""
    k = (0.25, 0.5, 0.25)
    p = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="reflect")
    rows = k[0] * p[:-2] + k[1] * p[1:-1] + k[2] * p[2:]
    return k[0] * rows[:, :-2] + k[1] * rows[:, 1:-1] + k[2] * rows[:, 2:]


def synthetic_face(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """One uint8 RGB face-like image with texture everywhere."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = yy / max(height - 1, 1), xx / max(width - 1, 1)
    c0, c1 = rng.uniform(30, 220, 3), rng.uniform(30, 220, 3)
    fx, fy, phase = rng.uniform(3, 9), rng.uniform(3, 9), rng.uniform(0, 2 * np.pi)
    img = (1 - x)[..., None] * c0 + x[..., None] * c1
    img += 18 * np.sin(2 * np.pi * (fx * x + fy * y) + phase)[..., None]
    cy, cx = 0.52 + rng.uniform(-0.05, 0.05), 0.5 + rng.uniform(-0.05, 0.05)
    ry, rx = rng.uniform(0.32, 0.42), rng.uniform(0.24, 0.32)
    r2 = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2
    skin = np.array([225.0, 172.0, 140.0]) * rng.uniform(0.45, 1.05) + rng.uniform(-12, 12, 3)
    shade = np.clip(1.05 - 0.35 * r2, 0.6, 1.05)[..., None]
    face = r2 < 1
    img[face] = (skin * shade)[face] + 6 * np.sin(40 * x + 33 * y)[face][:, None]
    hair = face & (y < cy - 0.6 * ry)
    img[hair] = rng.uniform(20, 90, 3) + 10 * np.sin(90 * x)[hair][:, None]
    for ex in (cx - 0.4 * rx, cx + 0.4 * rx):  # eyes
        eye = ((y - (cy - 0.15 * ry)) / 0.05) ** 2 + ((x - ex) / 0.07) ** 2 < 1
        img[eye] = rng.uniform(10, 70, 3)
    mouth = ((y - (cy + 0.5 * ry)) / 0.04) ** 2 + ((x - cx) / (0.5 * rx)) ** 2 < 1
    img[mouth] = rng.uniform([120, 30, 40], [200, 80, 90])
    img += rng.normal(0, 6, img.shape)
    img = _blur3(np.clip(img, 0, 255).astype(np.float32))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def synthetic_faces(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """n synthetic faces [n, size, size, 3] and their labels ("synthetic-00", ...)."""
    rng = np.random.default_rng(seed)
    return (np.stack([synthetic_face(size, size, rng) for _ in range(n)]),
            [f"synthetic-{i:02d}" for i in range(n)])


def face_inputs(size: int, n_faces: int, n_noise: int = 0, *, seed: int = 0,
                faces_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """uint8 [N, size, size, 3] parity inputs, their labels, and which of them are faces.

    The first `n_faces` real faces of `faces_dir` (default: the shared domain-A faces; sorted,
    centre-cropped, area-resized by `export.verify.verification_images`), or synthetic faces
    when that folder is absent; then `n_noise` uniform-noise images, which push activations to
    their extremes. Labels are file names relative to the folder, "synthetic-NN" or "noise-N".
    """
    from cyclemask.export.verify import verification_images

    d = Path(faces_dir) if faces_dir is not None else SHARED_FACES
    if d.is_dir():
        images, sources = verification_images(size, n_random=0, image_dir=d, n_real=n_faces)
        labels = [os.path.relpath(s, d) for s in sources]
    else:
        images, labels = synthetic_faces(n_faces, size, seed)
    rng = np.random.default_rng(seed + 1)
    noise = rng.integers(0, 256, (n_noise, size, size, 3), dtype=np.uint8)
    is_face = np.array([True] * len(images) + [False] * n_noise)
    return np.concatenate([images, noise]), labels + [f"noise-{i}" for i in range(n_noise)], is_face


def calibration_faces(size: int, n: int, direction: str = "mask", *, faces_dir: str | os.PathLike | None = None,
                      seed: int = 1000) -> np.ndarray:
    """uint8 [n, size, size, 3] faces to calibrate a quantiser on: the LAST `n` (sorted) of the
    direction's shared faces (or of `faces_dir`), so never among the first ones `face_inputs`
    compares on when the folder holds more than both; seeded synthetic faces (another seed than
    the inputs') when the folder is absent."""
    from cyclemask.image_arrays import center_crop_resize
    from cyclemask.image_files import list_images, read_image

    d = Path(faces_dir) if faces_dir is not None else direction_faces(direction)
    paths = list_images(d)[-n:] if d.is_dir() else []
    if not paths:
        return synthetic_faces(n, size, seed)[0]
    return np.stack([center_crop_resize(read_image(p), size, interpolation="area") for p in paths])


def direction_faces(direction: str) -> Path:
    """The shared faces a direction translates: unmasked faces for "mask", masked for "unmask"."""
    return SHARED_MASKED_FACES if direction == "unmask" else SHARED_FACES


def source_description(faces_dir: str | os.PathLike | None = None) -> str:
    d = Path(faces_dir) if faces_dir is not None else SHARED_FACES
    return f"real faces ({d})" if d.is_dir() else "synthetic textured faces (../shared absent)"


# ------------------------------------------------------------------------------------------------
# Benchmark inputs: a video and an image folder of a chosen length
# ------------------------------------------------------------------------------------------------


def _video_frames(limit: int) -> list[np.ndarray]:
    """Up to `limit` RGB frames of the shared clip, or synthetic 480x270 frames."""
    if SHARED_VIDEO.is_file():
        import cv2

        cap = cv2.VideoCapture(str(SHARED_VIDEO), cv2.CAP_FFMPEG)
        frames = []
        while len(frames) < limit:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
        cap.release()
        if frames:
            return frames
    rng = np.random.default_rng(0)
    return [synthetic_face(270, 480, rng) for _ in range(min(limit, 16))]


def make_video(path: str | os.PathLike, n_frames: int, fps: float = 25.0) -> Path:
    """An mp4 (mp4v) of exactly n_frames: the shared clip's frames (or synthetic ones), cycled."""
    import cv2

    path = Path(path)
    frames = _video_frames(n_frames)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write an mp4v video here")
    for i in range(n_frames):
        writer.write(cv2.cvtColor(frames[i % len(frames)], cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def make_image_folder(path: str | os.PathLike, n_images: int) -> Path:
    """A folder of n_images JPEG faces: the shared faces (copied, cycled), or synthetic ones."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    from cyclemask.image_files import list_images, write_image

    real = list_images(SHARED_FACES)[:n_images] if SHARED_FACES.is_dir() else []
    rng = np.random.default_rng(0)
    for i in range(n_images):
        dst = path / f"{i:05d}.jpg"
        if real:
            shutil.copyfile(real[i % len(real)], dst)
        else:
            write_image(dst, synthetic_face(180, 150, rng))
    return path
