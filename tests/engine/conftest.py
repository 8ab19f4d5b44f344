"""Fixtures for the runtime tests: tiny generators (ngf 8, 2 blocks, 64 px), a checkpoint
bundle holding both directions, and the 'mask' generator exported to an ONNX graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SIZE = 64


def _tiny(seed: int):
    from cyclemask.config import GeneratorConfig
    from cyclemask.models import build_generator

    torch.manual_seed(seed)
    return build_generator(GeneratorConfig(ngf=8, n_blocks=2)).eval()


@pytest.fixture(scope="session")
def tiny_pair():
    """{"mask": G_A, "unmask": G_B}: two different seeded tiny generators."""
    return {"mask": _tiny(0), "unmask": _tiny(1)}


@pytest.fixture(scope="session")
def bundle_path(tmp_path_factory, tiny_pair) -> Path:
    from cyclemask.checkpoint import save_generators

    path = tmp_path_factory.mktemp("ckpt") / "generators.pt"
    save_generators(path, tiny_pair, extra={"train_config": {"crop_size": SIZE, "load_size": 72}})
    return path


def export_graph(generator, path: Path, direction: str) -> Path:
    """The graph cyclemask-export writes (the export package's FP32 exporter)."""
    from cyclemask.export.onnx import export_onnx

    return Path(export_onnx(generator, path, image_size=SIZE, metadata={"direction": direction}))


@pytest.fixture(scope="session")
def mask_graph(tmp_path_factory, tiny_pair) -> Path:
    return export_graph(tiny_pair["mask"], tmp_path_factory.mktemp("onnx") / "mask.onnx", "mask")


@pytest.fixture
def batch64(rng) -> np.ndarray:
    return rng.integers(0, 256, size=(3, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def two_faces() -> np.ndarray:
    """Grace Hopper's public-domain portrait (inside matplotlib's wheel), twice side by side,
    the second mirrored and smaller: one picture, two faces of different sizes."""
    import cv2
    import matplotlib

    from cyclemask.image_files import read_image

    p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not p.is_file():
        pytest.skip(f"matplotlib's sample portrait {p} is absent in this installation")
    img = cv2.resize(read_image(p), (256, 300), interpolation=cv2.INTER_AREA)
    small = np.full_like(img, 128)
    small[60:285, 40:232] = cv2.resize(img[:, ::-1], (192, 225), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.concatenate([img, small], axis=1))
