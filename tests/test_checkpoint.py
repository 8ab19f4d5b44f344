import io
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from cyclemask.checkpoint import (load_discriminator, load_generator, load_generators,
                                  save_generators, save_network)
from cyclemask.config import DiscriminatorConfig, GeneratorConfig
from cyclemask.errors import CheckpointError
from cyclemask.image_tensors import eager_translate
from cyclemask.models import build_discriminator, build_generator


def _batch(seed=0, n=2, size=32):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _reference_state_dict(gen: nn.Module, with_running_stats: bool) -> "OrderedDict[str, torch.Tensor]":
    """A state dict laid out as the reference repository saves it, built by walking the
    modules by hand rather than through our save path. Old PyTorch versions also stored
    InstanceNorm running statistics, which the reference never used."""
    sd = OrderedDict()
    for name, mod in gen.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
            sd[f"{name}.weight"] = mod.weight.detach().clone()
            if mod.bias is not None:
                sd[f"{name}.bias"] = mod.bias.detach().clone()
        elif isinstance(mod, nn.InstanceNorm2d) and with_running_stats:
            sd[f"{name}.running_mean"] = torch.randn(mod.num_features)
            sd[f"{name}.running_var"] = torch.rand(mod.num_features) + 0.5
            sd[f"{name}.num_batches_tracked"] = torch.tensor(123)
    return sd


@pytest.mark.parametrize("running_stats", [False, True])
def test_reference_generator_file_imports_with_identical_outputs(tmp_path, running_stats):
    torch.manual_seed(1)
    gen = build_generator(GeneratorConfig(ngf=8, n_blocks=3)).eval()
    sd = _reference_state_dict(gen, running_stats)
    # The reference's key layout: residual blocks are model.10 .. model.12 here.
    assert "model.10.conv_block.1.weight" in sd and "model.12.conv_block.5.weight" in sd
    path = tmp_path / "latest_net_G_A.pth"
    torch.save(sd, path)
    loaded = load_generator(path)
    assert loaded.source == "reference"
    assert loaded.config == GeneratorConfig(ngf=8, n_blocks=3, norm="instance")
    assert bool(loaded.notes) == running_stats
    batch = _batch()
    assert np.array_equal(eager_translate(loaded.generator, batch), eager_translate(gen, batch))


def test_reference_full_size_keys_and_module_prefix(tmp_path):
    gen = build_generator(GeneratorConfig()).eval()
    sd = {"module." + k: v for k, v in _reference_state_dict(gen, True).items()}
    assert "module.model.10.conv_block.1.weight" in sd
    torch.save(sd, tmp_path / "g.pth")
    loaded = load_generator(tmp_path / "g.pth", ngf=64, n_blocks=9, norm="instance")
    assert loaded.config == GeneratorConfig()
    with pytest.raises(CheckpointError, match="has ngf=64, but ngf=32 was given"):
        load_generator(tmp_path / "g.pth", ngf=32)


def test_reference_batchnorm_and_dropout_inferred(tmp_path):
    gen = build_generator(GeneratorConfig(ngf=8, n_blocks=2, norm="batch", dropout=True)).eval()
    torch.save(gen.state_dict(), tmp_path / "bn.pth")
    loaded = load_generator(tmp_path / "bn.pth")
    assert loaded.config == GeneratorConfig(ngf=8, n_blocks=2, norm="batch", dropout=True)
    batch = _batch(3)
    assert np.array_equal(eager_translate(loaded.generator, batch), eager_translate(gen, batch))
    with pytest.raises(CheckpointError, match="batch-norm weights, but norm='instance'"):
        load_generator(tmp_path / "bn.pth", norm="instance")


def test_network_file_roundtrip_and_hash(tmp_path, tiny_generator):
    save_network(tmp_path / "g.pt", tiny_generator, direction="unmask")
    loaded = load_generator(tmp_path / "g.pt")
    assert loaded.direction == "unmask" and loaded.source == "cyclemask"
    assert loaded.config == tiny_generator.config
    batch = _batch(5)
    assert np.array_equal(eager_translate(loaded.generator, batch), eager_translate(tiny_generator, batch))
    # The file is plain tensors and builtins: weights_only loading reads it.
    raw = torch.load(tmp_path / "g.pt", weights_only=True)
    assert raw["versions"]["torch"] == torch.__version__
    # Edited weights are caught by the recorded hash.
    raw["state_dict"]["model.1.weight"][0, 0, 0, 0] += 1.0
    torch.save(raw, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="do not match their recorded sha256"):
        load_generator(tmp_path / "edited.pt")


def test_bundle_holds_both_directions(tmp_path):
    torch.manual_seed(0)
    a = build_generator(GeneratorConfig(ngf=8, n_blocks=2)).eval()
    b = build_generator(GeneratorConfig(ngf=8, n_blocks=2)).eval()
    save_generators(tmp_path / "gens.pt", {"mask": a, "unmask": b})
    both = load_generators(tmp_path / "gens.pt")
    assert sorted(both) == ["mask", "unmask"]
    batch = _batch()
    assert np.array_equal(eager_translate(both["unmask"].generator, batch), eager_translate(b, batch))
    with pytest.raises(CheckpointError, match="holds generators for mask, unmask: choose a direction"):
        load_generator(tmp_path / "gens.pt")
    assert load_generator(tmp_path / "gens.pt", direction="mask").direction == "mask"


def test_discriminator_roundtrip(tmp_path):
    d = build_discriminator(DiscriminatorConfig(ndf=8))
    save_network(tmp_path / "d.pt", d)
    d2 = load_discriminator(tmp_path / "d.pt")
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(d.eval()(x), d2(x))
    with pytest.raises(CheckpointError, match="not a cyclemask discriminator"):
        save_network(tmp_path / "g.pt", build_generator(GeneratorConfig(ngf=8, n_blocks=1)))
        load_discriminator(tmp_path / "g.pt")


def test_refuses_pickled_objects_and_garbage(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt: not a readable checkpoint"):
        load_generator(tmp_path / "evil.pt")
    (tmp_path / "junk.pth").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="junk.pth: not a readable checkpoint"):
        load_generator(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_generator(tmp_path / "absent.pth")
    torch.save({"a": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a ResNet generator"):
        load_generator(tmp_path / "other.pth")


def test_import_is_light():
    # Importing the package and its stages must not pull in TensorRT or ONNX Runtime.
    code = ("import sys, cyclemask, cyclemask.models, cyclemask.checkpoint, cyclemask.train, "
            "cyclemask.export, cyclemask.engine; "
            "print(sorted(m for m in ('tensorrt', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
