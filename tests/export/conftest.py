"""Fixtures of the export tests: a tiny generator, its FP32/FP16 graphs (exported once per
session: the dynamo exporter takes seconds even for a tiny model), and checkpoint files."""

from __future__ import annotations

from pathlib import Path

import pytest

from cyclemask.checkpoint import save_generators
from export_helpers import SIZE, make_generator


@pytest.fixture(scope="session")
def gen_a():
    return make_generator(0)


@pytest.fixture(scope="session")
def gen_b():
    return make_generator(1)


@pytest.fixture(scope="session")
def graphs(tmp_path_factory, gen_a):
    """(fp32 path, fp16 path) of gen_a at SIZE px, with direction metadata."""
    from cyclemask.export.fp16 import to_fp16
    from cyclemask.export.onnx import export_onnx

    d = tmp_path_factory.mktemp("graphs")
    gen_a.train()  # export must not depend on, or change, the caller's mode
    p32 = export_onnx(gen_a, d / "mask.onnx", image_size=SIZE,
                      metadata={"direction": "mask", "checkpoint_sha256": "ab" * 32})
    assert gen_a.training, "export_onnx changed the caller's module mode"
    gen_a.eval()
    p16 = to_fp16(p32, d / "mask.fp16.onnx")
    return p32, p16


@pytest.fixture(scope="session")
def bundle(tmp_path_factory, gen_a, gen_b) -> Path:
    """A cyclemask generator bundle (mask = gen_a, unmask = gen_b) recording image size SIZE."""
    p = tmp_path_factory.mktemp("ckpt") / "generators.pt"
    save_generators(p, {"mask": gen_a, "unmask": gen_b}, extra={"image_size": SIZE})
    return p
