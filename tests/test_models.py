"""The paper's networks: shapes, parameter counts and initialisation."""

import torch

from plasticollapse.models import MLP, ResNet18


def test_mlp_shapes_and_features_feed_the_classifier():
    model = MLP(784, (100, 100, 100), 10)
    x = torch.rand(5, 1, 28, 28)
    assert model.features(x).shape == (5, 100)
    assert torch.equal(model(x), model.classifier(model.features(x)))
    assert len(model.linears) == 4 and model.linears[-1] is model.classifier
    # 784-100-100-100-10: weights + biases
    assert sum(p.numel() for p in model.parameters()) == 784 * 100 + 2 * 100 * 100 + 1000 + 310


def test_mlp_init_is_kaiming_uniform_with_zero_biases():
    torch.manual_seed(0)
    model = MLP(784, (100,), 10)
    first = model.linears[0].weight
    bound = (2.0**0.5) * (3.0 / 784) ** 0.5  # gain sqrt(2) for ReLU, uniform(-b, b)
    assert first.abs().max() <= bound
    assert first.abs().max() > 0.95 * bound
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in model.linears)


def test_resnet18_cifar_variant():
    model = ResNet18(num_classes=10, in_channels=3, width=64, maxpool=True).eval()
    # The CIFAR ResNet-18 has about 11.17M parameters.
    assert 11.1e6 < sum(p.numel() for p in model.parameters()) < 11.2e6
    assert model.stem[0].kernel_size == (3, 3) and model.stem[0].stride == (1, 1)
    x = torch.rand(2, 3, 32, 32)
    assert model.features(x).shape == (2, 512)
    assert model(x).shape == (2, 10)


def test_narrow_resnet_without_maxpool_on_small_images():
    model = ResNet18(num_classes=10, in_channels=1, width=4, maxpool=False)
    assert not isinstance(model.stem[3], torch.nn.MaxPool2d)
    assert model(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    assert model.features(torch.rand(3, 1, 8, 8)).shape == (3, 32)
