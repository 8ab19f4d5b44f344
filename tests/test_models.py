import pytest
import torch
from torch import nn

from cyclemask.config import DiscriminatorConfig, GeneratorConfig
from cyclemask.errors import ConfigError
from cyclemask.models import (ResnetGenerator, build_discriminator, build_generator, count_macs,
                              count_parameters)


def test_paper_generator_parameter_count():
    assert count_parameters(ResnetGenerator(GeneratorConfig())) == 11_378_179


def test_paper_generator_macs_at_256():
    g = ResnetGenerator(GeneratorConfig()).eval()
    assert count_macs(g, (1, 3, 256, 256)) == 49_551_507_456


def test_patchgan_is_70x70_and_matches_reference_size():
    d = build_discriminator(DiscriminatorConfig())
    assert count_parameters(d) == 2_764_737
    # Receptive field of one output: 70 px for n_layers 3 (kernel 4; strides 2, 2, 2, 1, 1).
    rf, jump = 1, 1
    for m in d.model:
        if isinstance(m, nn.Conv2d):
            rf += (m.kernel_size[0] - 1) * jump
            jump *= m.stride[0]
    assert rf == 70
    assert not any(isinstance(m, nn.Sigmoid) for m in d.modules())
    assert d(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)


@pytest.mark.parametrize("norm, bias", [("instance", True), ("batch", False), ("none", False)])
def test_conv_bias_only_with_instance_norm(norm, bias):
    g = ResnetGenerator(GeneratorConfig(ngf=8, n_blocks=2, norm=norm))
    assert (g.model[1].bias is not None) == bias
    assert g.model[-2].bias is not None  # the 7x7 head always has a bias
    norms = [m for m in g.modules() if isinstance(m, nn.InstanceNorm2d)]
    for m in norms:
        assert not m.affine and not m.track_running_stats


def test_generator_structure_keys_match_reference():
    keys = set(ResnetGenerator(GeneratorConfig()).state_dict())
    assert "model.10.conv_block.1.weight" in keys
    assert "model.18.conv_block.5.weight" in keys
    assert "model.19.weight" in keys and "model.26.weight" in keys
    g = ResnetGenerator(GeneratorConfig(dropout=True))
    assert any(isinstance(m, nn.Dropout) for m in g.modules())
    assert "model.10.conv_block.6.weight" in g.state_dict()


def test_generator_shapes_and_range():
    g = build_generator(GeneratorConfig(ngf=8, n_blocks=6)).eval()
    y = g(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 3, 64, 64)
    assert y.abs().max() <= 1.0


def test_init_is_normal_0_002_with_zero_bias():
    torch.manual_seed(0)
    g = build_generator(GeneratorConfig(ngf=32, n_blocks=6))
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, nn.Conv2d)])
    assert abs(w.mean().item()) < 1e-3
    assert w.std().item() == pytest.approx(0.02, rel=0.02)
    assert all(m.bias.abs().max() == 0 for m in g.modules() if isinstance(m, nn.Conv2d) and m.bias is not None)
    d = build_discriminator(DiscriminatorConfig(ndf=8, norm="batch"))
    bn = [m for m in d.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bn and all(m.bias.abs().max() == 0 for m in bn)
    assert torch.cat([m.weight for m in bn]).mean().item() == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("kwargs, match", [
    ({"ngf": 0}, "ngf must be a positive integer"),
    ({"n_blocks": -1}, "n_blocks must be a positive integer"),
    ({"norm": "layer"}, "norm must be one of instance, batch, syncbatch, none; got 'layer'"),
    ({"dropout": "yes"}, "dropout must be true or false"),
])
def test_generator_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        GeneratorConfig(**kwargs)


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown GeneratorConfig keys: colour"):
        GeneratorConfig.from_dict({"ngf": 8, "colour": 1})
    assert GeneratorConfig.from_dict(GeneratorConfig(ngf=16).to_dict()) == GeneratorConfig(ngf=16)
    with pytest.raises(ConfigError, match="n_layers must be a positive integer"):
        DiscriminatorConfig(n_layers=0)
