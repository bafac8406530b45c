"""Tests for the eps-networks (U-Net, MLP), their building blocks, and the classifiers in ``models``."""

import pytest
import torch

from models.classifier import MNISTFeatureNet, NoisyClassifier, NoisyMLPClassifier
from models.embeddings import ConditionEmbedding, SinusoidalEmbedding
from models.layers import AttentionBlock, ResBlock, default_num_groups, group_norm
from models.mlp import MLP
from models.unet import UNet

TINY_UNET = dict(base_channels=8, channel_mult=(1, 2, 2), emb_dim=32, num_heads=2)


def randomize_zero_params(net: torch.nn.Module) -> torch.nn.Module:
    """Give zero-initialised parameters random values so that every input actually influences the output."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return net


@pytest.fixture(autouse=True)
def _seed_and_single_thread():
    # Tiny networks: one intra-op thread is faster than two on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def make_nets(num_classes=0):
    return [
        MLP(dim=2, hidden=32, depth=2, emb_dim=16, num_classes=num_classes),
        UNet(**TINY_UNET, num_classes=num_classes),
    ]


def make_input(net, batch=3):
    return torch.randn(batch, 2) if isinstance(net, MLP) else torch.randn(batch, 1, 28, 28)


# ----------------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("net", make_nets(), ids=["mlp", "unet"])
def test_output_shape_and_zero_init(net):
    x = make_input(net)
    out = net(x, torch.linspace(-10.0, 9.0, 3))
    assert out.shape == x.shape
    assert torch.all(out == 0), "final layer should be zero-initialised"


def test_mlp_accepts_trailing_shape_and_scalar_noise_label():
    net = randomize_zero_params(MLP(dim=6, hidden=16, depth=1, emb_dim=8))
    x = torch.randn(4, 2, 3)
    out = net(x, torch.tensor(0.5))
    assert out.shape == x.shape
    torch.testing.assert_close(out, net(x, torch.full((4,), 0.5)))


def test_mlp_float64():
    net = MLP(dim=2, hidden=16, depth=1, emb_dim=8).double()
    out = net(torch.randn(5, 2, dtype=torch.float64), torch.zeros(5, dtype=torch.float64))
    assert out.dtype == torch.float64


def test_default_unet_size():
    net = UNet()
    n_params = sum(p.numel() for p in net.parameters())
    assert 0.5e6 < n_params < 2e6
    assert net(torch.randn(2, 1, 28, 28), torch.zeros(2)).shape == (2, 1, 28, 28)


def test_unet_other_geometry():
    net = UNet(in_channels=3, image_size=16, base_channels=8, channel_mult=(1, 2), attn_resolutions=(8,), emb_dim=16)
    assert net(torch.randn(2, 3, 16, 16), torch.zeros(2)).shape == (2, 3, 16, 16)


# ----------------------------------------------------------------------------------------------------- errors
def test_unet_bad_image_size_at_construction():
    with pytest.raises(ValueError, match="image_size 30 cannot be halved 2 times.*multiples of 4"):
        UNet(image_size=30, channel_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="attn_resolutions"):
        UNet(attn_resolutions=(5,))


@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (2, 3, 28, 28), (2, 28, 28), (2, 1, 28, 14)])
def test_unet_bad_input_shape_at_forward(shape):
    net = UNet(**TINY_UNET)
    with pytest.raises(ValueError, match=r"expected x of shape \[B, 1, 28, 28\]"):
        net(torch.randn(shape), torch.zeros(shape[0]))


def test_bad_noise_label_shape():
    net = MLP(dim=2, hidden=16, depth=1, emb_dim=8)
    with pytest.raises(ValueError, match="noise_label must have shape"):
        net(torch.randn(3, 2), torch.zeros(4))
    with pytest.raises(ValueError, match=r"expected x of shape \[B, 2\]"):
        net(torch.randn(3, 3), torch.zeros(3))


@pytest.mark.parametrize("net", make_nets(), ids=["mlp", "unet"])
def test_unconditional_net_rejects_labels(net):
    with pytest.raises(ValueError, match="num_classes=0"):
        net(make_input(net), torch.zeros(3), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("net", make_nets(num_classes=10), ids=["mlp", "unet"])
def test_conditional_net_label_range(net):
    x, t = make_input(net), torch.zeros(3)
    assert net(x, t, torch.tensor([0, 9, 10])).shape == x.shape  # 10 = null label
    assert net(x, t).shape == x.shape  # y=None -> null label
    for bad in ([0, 11, 1], [-1, 0, 1]):
        with pytest.raises(ValueError, match="out of range"):
            net(x, t, torch.tensor(bad))
    with pytest.raises(ValueError, match="integer"):
        net(x, t, torch.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        net(x, t, torch.zeros(2, dtype=torch.long))


def test_group_norm_groups():
    assert default_num_groups(64) == 16 and default_num_groups(256) == 32 and default_num_groups(24) == 6
    assert default_num_groups(3) == 1
    with pytest.raises(ValueError, match="does not divide channels=30"):
        group_norm(30, num_groups=4)
    with pytest.raises(ValueError, match="num_heads"):
        AttentionBlock(channels=30, num_heads=4)


# ------------------------------------------------------------------------------------------------ conditioning
@pytest.mark.parametrize("net", make_nets(num_classes=4), ids=["mlp", "unet"])
def test_output_depends_on_noise_label_and_class(net):
    net = randomize_zero_params(net).eval()
    x = make_input(net, batch=2)
    t = torch.tensor([-2.0, 3.0])
    y = torch.tensor([0, 1])
    base = net(x, t, y)
    assert not torch.allclose(base, net(x, t + 0.5, y), atol=1e-5)
    assert not torch.allclose(base, net(x, t, torch.tensor([2, 4])), atol=1e-5)
    assert not torch.allclose(base, net(x, t), atol=1e-5)  # null label differs from real labels
    torch.testing.assert_close(net(x, t), net(x, t, torch.tensor([4, 4])))


def test_embeddings():
    emb = SinusoidalEmbedding(num_channels=8)
    v = torch.linspace(-10, 9, 5)
    out = emb(v)
    assert out.shape == (5, 8) and out.abs().max() <= 1
    torch.testing.assert_close(out[:, :4] ** 2 + out[:, 4:] ** 2, torch.ones(5, 4))
    cond = ConditionEmbedding(emb_dim=16, num_classes=3)
    assert cond(v, torch.tensor([0, 1, 2, 3, 3]), batch_size=5).shape == (5, 16)
    with pytest.raises(ValueError, match="even"):
        SinusoidalEmbedding(num_channels=7)


def test_resblock_changes_channels():
    block = ResBlock(in_channels=8, out_channels=16, emb_dim=4, scale_shift=False)
    assert block(torch.randn(2, 8, 6, 6), torch.randn(2, 4)).shape == (2, 16, 6, 6)


# ------------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("net", make_nets(num_classes=3), ids=["mlp", "unet"])
def test_gradients_flow(net):
    x = make_input(net).requires_grad_(True)
    loss = net(x, torch.randn(3), torch.tensor([0, 1, 3])).square().sum() + net(x, torch.randn(3)).sum()
    loss.backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    final = net.linear_out if isinstance(net, MLP) else net.conv_out
    assert final.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------ classifiers
def test_noisy_classifier():
    clf = NoisyClassifier(num_classes=10, base_channels=8, channel_mult=(1, 2, 2), emb_dim=16, attn_resolutions=(7,))
    x = torch.randn(3, 1, 28, 28, requires_grad=True)
    logits = clf(x, torch.randn(3))
    assert logits.shape == (3, 10)
    (grad,) = torch.autograd.grad(logits.log_softmax(-1)[:, 2].sum(), x)
    assert grad.shape == x.shape and grad.abs().sum() > 0
    with pytest.raises(ValueError, match="expected x of shape"):
        clf(torch.randn(3, 1, 32, 32), torch.zeros(3))
    with pytest.raises(ValueError, match="num_classes"):
        NoisyClassifier(num_classes=1)


def test_noisy_mlp_classifier():
    clf = NoisyMLPClassifier(dim=2, num_classes=5, hidden=32, depth=2, emb_dim=16)
    x = torch.randn(4, 2, requires_grad=True)
    logits = clf(x, torch.randn(4))
    assert logits.shape == (4, 5)
    (grad,) = torch.autograd.grad(logits.logsumexp(-1).sum(), x)
    assert grad.abs().sum() > 0


def test_mnist_feature_net():
    net = MNISTFeatureNet().eval()
    x = torch.randn(3, 1, 28, 28)
    assert net(x).shape == (3, 10)
    feats = net.features(x)
    assert feats.shape == (3, 128) and (feats >= 0).all()
    with pytest.raises(ValueError, match="expected x of shape"):
        net(torch.randn(3, 28, 28))


def test_bf16_precision_policy_lives_in_the_score_wrapper():
    """model.precision = "bf16" autocasts the network only (runnable on CPU here; the config allows it on GPUs):
    the score comes back in the input's dtype, close to the fp32 score, and the fp32 path is untouched."""
    from models.score import ScoreModel
    from sde import make_sde

    torch.manual_seed(0)
    net = UNet(
        image_size=8,
        in_channels=1,
        base_channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(4,),
        dropout=0.0,
    )
    for p in net.parameters():  # move off the zero-initialised output layer so the output is not trivially 0
        p.data.add_(0.05 * torch.randn_like(p))
    sde = make_sde("vp")
    x, t = torch.randn(4, 1, 8, 8), torch.full((4,), 0.5)
    fp32 = ScoreModel(net, sde, "fp32")(x, t)
    bf16 = ScoreModel(net, sde, "bf16")(x, t)
    assert bf16.dtype == torch.float32 and fp32.abs().mean() > 0.1
    rel = (bf16 - fp32).norm() / fp32.norm()
    assert 0 < rel < 0.05, rel  # bf16 rounding (8-bit mantissa) shows, but only at the percent level
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        ScoreModel(net, sde, "fp8")
