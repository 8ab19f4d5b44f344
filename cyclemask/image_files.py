"""Reading and writing image files: every stage (training data, data prep, runtime) uses these,
so a bad file gets the same clear message everywhere and outputs are always written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import cvlog
from .errors import InputError

# The permissions a plain open() gives a new file (writers that create files by other means use it).
# Read once at import (os.umask can only be read by setting it, which is not thread-safe later).
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under folder, recursively, in a stable (sorted) order; hidden files skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and is_image_path(name):
                found.append(Path(dirpath) / name)
    return sorted(found)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to uint8 RGB HWC.

    Grayscale, RGBA/LA (alpha dropped), CMYK JPEG and 16-bit files are converted, and an EXIF
    orientation is applied (the pixels come back as a viewer shows them); a file that is
    missing, not an image, or truncated raises InputError naming it.
    """
    import cv2

    cvlog.apply()
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"{p}: cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise InputError(f"{p}: empty file")
    # libjpeg decodes a truncated JPEG with a grey tail and only a warning: refuse it instead.
    if data[:2] == b"\xff\xd8" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise InputError(f"{p}: truncated JPEG (no end-of-image marker)")
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        # Not IMREAD_UNCHANGED: that also ignores the EXIF orientation, and a phone photo would be
        # read on its side (no face found, and written back sideways without the tag).
        img = cv2.imdecode(buf, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    except cv2.error as exc:  # raised, not returned as None, e.g. past OpenCV's pixel limit
        too_big = "MAX_IMAGE_PIXELS" in str(exc)
        raise InputError(
            f"{p}: image too large to decode (over OpenCV's limit of 2^30 pixels)" if too_big
            else f"{p}: not a decodable image ({str(exc).strip().splitlines()[-1][:200]})"
        ) from None
    if img is None:
        raise InputError(f"{p}: not a decodable image")
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating):
            img = (np.clip(img, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        else:
            raise InputError(f"{p}: unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    elif img.ndim == 3 and img.shape[2] == 2:  # gray + alpha
        img = cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        raise InputError(f"{p}: unsupported image layout {img.shape}")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise InputError(f"{p}: image has no pixels")
    return np.ascontiguousarray(img)


def encode_image(image: np.ndarray, suffix: str, quality: int = 95) -> bytes:
    import cv2

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"expected a uint8 RGB HWC image; got {image.dtype} {list(image.shape)}")
    params: list[int] = []
    if suffix.lower() in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    ok, buf = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise InputError(f"cannot encode an image as {suffix}")
    return buf.tobytes()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write under a partial name beside path, then rename: no kill, full disk or Ctrl-C ever
    leaves half a file under path (see cyclemask.outputs). A write that fails raises OutputError
    naming path and the cause (still an OSError)."""
    from .outputs import commit_partial, create_partial, discard_partial, output_error

    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = create_partial(p)
    except OSError as exc:
        raise output_error(p, exc) from None
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        commit_partial(tmp, p)
    except BaseException as exc:
        discard_partial(tmp)
        if isinstance(exc, OSError):
            raise output_error(p, exc) from None
        raise


def write_image(path: str | os.PathLike, image: np.ndarray, quality: int = 95) -> None:
    """Encode by the file's suffix and write atomically."""
    suffix = Path(path).suffix or ".png"
    write_bytes_atomic(path, encode_image(image, suffix, quality))
