"""NT-Xent against hand arithmetic and a plain loop; projection head shapes; argument checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from imagerec.train.simclr import NTXentLoss, ProjectionHead


def test_ntxent_matches_hand_computed_value():
    # Views a=(1,0), b=(0,1) and their partners a'=(3,4)/5=(0.6,0.8), b'=(0,2)/2=(0,1); tau=0.5, so
    # logit = cosine / 0.5 = 2 * cosine. Cosines: a.b=0, a.a'=0.6, a.b'=0, b.a'=0.8, b.b'=1, a'.b'=0.8.
    # loss(anchor) = -positive_logit + log(sum of exp(logits) over the 3 other vectors):
    #   a : -1.2 + log(e^0 + e^1.2 + e^0)     = log(2 + e^1.2) - 1.2       = 0.471495
    #   b : -2.0 + log(e^0 + e^1.6 + e^2)     = log(1 + e^1.6 + e^2) - 2   = 0.590924
    #   a': -1.2 + log(e^1.2 + e^1.6 + e^1.6) = log(e^1.2 + 2e^1.6) - 1.2  = 1.382198
    #   b': -2.0 + log(e^0 + e^2 + e^1.6)     = same as b                  = 0.590924
    # mean = 3.035540 / 4 = 0.758885
    e = math.exp
    by_hand = (
        (math.log(2 + e(1.2)) - 1.2)
        + 2 * (math.log(1 + e(1.6) + e(2.0)) - 2.0)
        + (math.log(e(1.2) + 2 * e(1.6)) - 1.2)
    ) / 4
    assert by_hand == pytest.approx(0.758885, abs=1e-6)
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[3.0, 4.0], [0.0, 2.0]])  # not unit length: the loss normalises
    assert NTXentLoss(temperature=0.5)(z1, z2).item() == pytest.approx(by_hand, abs=1e-6)


def _loop_ntxent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """The SimCLR definition written out one anchor at a time."""
    z = [F.normalize(v, dim=0) for v in torch.cat([z1, z2]).double()]
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        denominator = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[positive]) / tau) / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("tau", [0.1, 0.2, 0.5, 1.0])
def test_ntxent_matches_loop_implementation(tau):
    gen = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(7, 16, generator=gen), torch.randn(7, 16, generator=gen)
    assert NTXentLoss(tau)(z1, z2).item() == pytest.approx(_loop_ntxent(z1, z2, tau), rel=1e-5)


def test_ntxent_gradient_flows_and_perfect_pairs_score_lower():
    z = torch.randn(8, 32, requires_grad=True)
    loss_same = NTXentLoss(0.2)(z, z)
    loss_same.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert loss_same.item() < NTXentLoss(0.2)(z.detach(), torch.randn(8, 32)).item()


@pytest.mark.parametrize("tau", [0.0, -0.5, float("nan"), 1e-5])
def test_ntxent_rejects_bad_temperature(tau):
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(tau)


def test_ntxent_rejects_bad_shapes():
    with pytest.raises(ValueError):
        NTXentLoss()(torch.randn(4, 8), torch.randn(5, 8))
    with pytest.raises(ValueError, match="at least 2"):
        NTXentLoss()(torch.randn(1, 8), torch.randn(1, 8))


def test_projection_head_shapes():
    head = ProjectionHead()
    assert head(torch.randn(4, 512)).shape == (4, 128)
    with pytest.raises(ValueError):
        ProjectionHead(512, 0, 128)


def test_build_simclr_takes_the_backbone_from_the_registry_and_makes_two_views():
    from imagerec.embed.base import ModelSpec, architecture
    from imagerec.train.augment import AugmentSettings
    from imagerec.train.simclr import build_simclr

    spec = ModelSpec(image_size=16)
    torch.manual_seed(0)
    model = build_simclr(spec, AugmentSettings(), temperature=0.5, device=torch.device("cpu"), channels_last=True)
    torch.manual_seed(0)
    fresh = architecture("resnet18").build(spec)
    for name, tensor in fresh.state_dict().items():  # seeded: the same initial weights as a registry build
        assert torch.equal(model.backbone.state_dict()[name], tensor), name
    assert model.head.net[0].in_features == architecture("resnet18").embedding_dim
    images = torch.randint(0, 256, (3, 16, 16, 3), dtype=torch.uint8)
    x = model.to_unit(images)
    assert x.shape == (3, 3, 16, 16) and 0 <= float(x.min()) and float(x.max()) <= 1
    views = model.two_views(x, torch.Generator().manual_seed(1))
    assert views.shape == (6, 3, 16, 16) and views.is_contiguous(memory_format=torch.channels_last)
    model.train(False)
    assert not model.backbone.training and not model.head.training
    with torch.no_grad(), model.autocast():
        loss = model.pair_loss(model.head(model.backbone(views)))
    assert loss.ndim == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("arch_name, count", [("resnet18", 5), ("efficientnet_lite0", 9)])
def test_stages_split_every_backbone_parameter_once_in_input_order(arch_name, count):
    from imagerec.embed.base import architecture

    arch = architecture(arch_name)
    backbone = arch.build(arch.spec(32))
    stages = arch.stages(backbone)
    assert len(stages) == count
    seen = [id(p) for stage in stages for p in stage.parameters()]
    assert sorted(seen) == sorted(id(p) for p in backbone.parameters())  # each parameter in exactly one stage
    order: list[int] = []
    hooks = [part.register_forward_hook(lambda module, args, out, i=i: order.append(i))
             for i, stage in enumerate(stages) for part in (stage if isinstance(stage, torch.nn.ModuleList) else [stage])]
    backbone.eval()(torch.randn(2, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    assert order == sorted(order) and set(order) == set(range(count))  # the input passes the stages in list order


def test_fixed_stages_get_no_gradient_and_keep_their_batch_norm_statistics():
    from imagerec.embed.base import ModelSpec, architecture
    from imagerec.train.augment import AugmentSettings
    from imagerec.train.simclr import build_simclr

    spec = ModelSpec(image_size=32)
    model = build_simclr(spec, AugmentSettings(), temperature=0.5, device=torch.device("cpu"), channels_last=False)
    stages = architecture("resnet18").stages(model.backbone)
    model.keep_fixed(stages[:3])
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.train()
    assert model.backbone.layer4.training and not model.backbone.layer2.training and not model.backbone.bn1.training
    optimiser = torch.optim.SGD(model.trainable(), lr=0.5)
    views = model.two_views(model.to_unit(torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)),
                            torch.Generator().manual_seed(0))
    model.pair_loss(model.head(model.backbone(views))).backward()
    optimiser.step()
    after = model.backbone.state_dict()
    fixed = ("conv1.", "bn1.", "layer1.", "layer2.")
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith(fixed))  # running stats included
    assert not torch.equal(after["layer4.1.conv2.weight"], before["layer4.1.conv2.weight"])
    assert not torch.equal(after["layer3.0.bn1.running_mean"], before["layer3.0.bn1.running_mean"])
    assert {id(p) for p in model.trainable()}.isdisjoint(id(p) for s in stages[:3] for p in s.parameters())
