"""The CIFAR-form ResNets and DenseNet: shapes, stems, quantizable layers, reconstruction units."""
import pytest
import torch
from torch import nn

from ptqlib.models.zoo import build_model, quantizable_layers, reconstruction_units

ARCHS = ["resnet18", "resnet50", "densenet121", "airbench_small"]
_MODELS: dict = {}


def model_for(arch: str, num_classes: int = 7) -> nn.Module:
    """One model per architecture for the whole file (DenseNet-121 takes a while to build)."""
    if arch not in _MODELS:
        torch.manual_seed(0)
        _MODELS[arch] = build_model(arch, num_classes, 3, 32).eval()
    return _MODELS[arch]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [32, 64])
def test_forward_shape(arch, size):
    model = model_for(arch)
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_stem_is_cifar_form(arch):
    model = model_for(arch)
    name, stem = quantizable_layers(model)[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1) and stem.padding == (1, 1)
    if arch != "airbench_small":  # airbench pools inside its blocks, never in the stem
        assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    # the first stage keeps the input resolution
    feats = {}
    first_block = next(m for n, m in model.named_modules() if n in ("layer1.0", "features.denseblock1", "stem"))
    hook = first_block.register_forward_hook(lambda m, i, o: feats.setdefault("x", o))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    hook.remove()
    assert feats["x"].shape[-2:] == (32, 32)


@pytest.mark.parametrize("arch", ARCHS)
def test_quantizable_layers_in_forward_order(arch):
    model = model_for(arch)
    layers = quantizable_layers(model)
    assert layers[0][0] in ("conv1", "features.conv0", "stem.0")
    assert layers[-1][0] in ("fc", "classifier")
    assert isinstance(layers[-1][1], nn.Linear) and layers[-1][1].out_features == 7
    # forward order: the order in which the layers actually run
    ran = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: ran.append(n)) for n, m in layers]
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert ran == [n for n, _ in layers]


@pytest.mark.parametrize("arch", ARCHS)
def test_units_chain_equals_model(arch):
    model = model_for(arch)
    x = torch.randn(2, 3, 32, 32)
    units = reconstruction_units(model)
    with torch.no_grad():
        want = model(x)
        h = x
        for u in units:
            h = u.module(h)
    assert h.shape == want.shape
    assert torch.allclose(h, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_layer_in_exactly_one_unit(arch):
    model = model_for(arch)
    units = reconstruction_units(model)
    names = [n for u in units for n in u.layers]
    assert sorted(names) == sorted(n for n, _ in quantizable_layers(model))
    assert len(names) == len(set(names))
    assert names == [n for n, _ in quantizable_layers(model)]  # units follow the forward order
    # units share parameters with the model (no copies)
    params = {id(p) for p in model.parameters()}
    assert all(id(p) in params for u in units for p in u.module.parameters())
    assert units[0].name == "stem" and units[-1].name == "classifier"
    assert units[-1].layers[-1] == quantizable_layers(model)[-1][0]


@pytest.mark.parametrize("arch, blocks", [("resnet18", 8), ("resnet50", 16), ("densenet121", 58 + 3),
                                          ("airbench_small", 3)])
def test_unit_counts(arch, blocks):
    # ResNet: stem + residual blocks + classifier; DenseNet-121: 58 dense layers + 3 transitions
    units = reconstruction_units(model_for(arch))
    assert len(units) == 1 + blocks + 1
    if arch != "densenet121":
        assert units[-1].layers == ["fc"]  # the fc is a unit of its own


def test_any_number_of_classes_and_channels():
    model = build_model("resnet18", 200, 1, 64).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 200)


def test_unknown_arch_is_a_clear_error():
    from ptqlib.models import zoo

    with pytest.raises(ValueError, match="resnet18"):
        zoo.build_model("vgg16", 10, 3, 32)


@pytest.mark.parametrize("arch, last_block, shape", [("resnet18", "layer4.1", (512, 4, 4)),
                                                     ("resnet50", "layer4.2", (2048, 4, 4)),
                                                     ("airbench_small", "blocks.2", (128, 4, 4))])
def test_last_block_unit_ends_at_its_feature_map(arch, last_block, shape):
    """BRECQ fits the last block to its feature map (as the authors do); pooling is the classifier's."""
    units = reconstruction_units(model_for(arch))
    assert units[-2].name == last_block
    h = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for u in units[:-1]:
            h = u.module(h)
    assert h.shape == (2, *shape)
    assert not any(isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) for m in units[-2].module.modules())


def test_airbench_small_fits_16_pixel_images():
    model = build_model("airbench_small", 10, 3, 16).eval()
    units = reconstruction_units(model)
    h = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        want = model(h)
        for u in units[:-1]:
            h = u.module(h)
        assert h.shape == (3, 128, 2, 2)  # three blocks halve 16 pixels to 2
        assert torch.allclose(units[-1].module(h), want, atol=1e-6)
    with pytest.raises(ValueError, match="at least 8"):
        build_model("airbench_small", 10, 3, 4)


def test_airbench_width_scales_channels_and_spans_ten_times_the_weights():
    from ptqlib.models.zoo import build_model, scaled_widths
    assert scaled_widths(1.0) == (32, 32, 64, 128) and scaled_widths(0.5) == (16, 16, 32, 64)
    counts = {w: sum(p.numel() for p in build_model("airbench_small", 10, 3, 16, width=w).parameters())
              for w in (0.5, 1.0, 1.6)}
    assert counts[1.0] == sum(p.numel() for p in build_model("airbench_small", 10, 3, 16).parameters())
    assert 9.5 < counts[1.6] / counts[0.5] < 11  # the scale study's 10x span
    with pytest.raises(ValueError, match="width"):
        build_model("resnet18", 10, 3, 32, width=2)
