"""Channel gates and gated networks (forgetless.nn.gates): binary stochastic gates, surrogate gradients,
batched streams, the gated ResNet block."""

from __future__ import annotations

import pytest
import torch

from forgetless.nn import backbones
from forgetless.nn.gates import (
    GateBank,
    GatedResNet,
    GatedSimpleCNN,
    GatingModule,
    gate,
    set_gate_noise,
    sparsity_loss,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_gates_binary_stochastic_in_training_deterministic_at_test():
    torch.manual_seed(0)
    bank = GateBank(4, 6, n_tasks=2, bias=0.0)
    h = torch.randn(2, 32, 4, 5, 5)
    bank.train()
    g = bank(h, [0, 1])
    assert g.shape == (2, 32, 6)
    assert set(g.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(g, bank(h, [0, 1]))  # Gumbel noise in training
    bank.eval()
    logits = bank.modules_[1](h[1].mean(dim=(2, 3)))
    assert torch.equal(bank(h, [0, 1])[1], (logits > 0).float())


def test_gate_gradient_is_the_sigmoid_surrogate():
    torch.manual_seed(0)
    module = GatingModule(3, 5, bias=0.0)
    module.train()
    bank = GateBank(3, 5, n_tasks=1)
    bank.modules_[0] = module
    g = bank(torch.randn(8, 3, 4, 4), [0], shared_input=True)
    g.sum().backward()
    assert module.fc2.weight.grad is not None and module.fc2.weight.grad.abs().sum() > 0


def test_noise_free_training_gates_threshold_but_keep_the_surrogate_gradient():
    torch.manual_seed(0)
    bank = GateBank(3, 5, n_tasks=1, bias=0.0)
    set_gate_noise(bank, False)
    bank.train()
    h = torch.randn(16, 3, 4, 4)
    g = bank(h, [0], shared_input=True)
    module = bank.modules_[0]
    assert torch.equal(g, bank(h, [0], shared_input=True))  # no noise
    g.sum().backward()
    assert module.fc2.bias.grad.abs().sum() > 0


def test_frozen_gating_module_stays_in_eval_and_allowed_mask_closes_channels():
    bank = GateBank(3, 4, n_tasks=2, bias=5.0)  # every gate open
    bank.settle(0, torch.tensor([0.0, 0.2, 0.0, 1.0]))
    bank.train()
    assert not bank.modules_[0].training and bank.modules_[1].training
    assert not any(p.requires_grad for p in bank.modules_[0].parameters())
    g = bank(torch.randn(10, 3, 4, 4), [0], shared_input=True)
    assert torch.equal(g[0], torch.tensor([0.0, 1.0, 0.0, 1.0]).expand(10, 4))
    assert bank.frozen.tolist() == [False, True, False, True]


def test_sparsity_loss_is_eq5_without_lambda():
    gates = [torch.tensor([[[1.0, 0.0, 1.0, 1.0]]]), torch.tensor([[[0.0, 1.0]]])]
    assert sparsity_loss(gates).item() == pytest.approx((3 / 4 + 1 / 2) / 2)


def test_streams_are_batched_yet_equal_to_single_streams():
    torch.manual_seed(0)
    cnn = backbones.create("simple-cnn", (1, 12, 12), width=6)
    net = gate(cnn, n_tasks=3, bias=0.0)
    assert isinstance(net, GatedSimpleCNN)
    net.eval()
    x = torch.rand(5, 1, 12, 12)
    feats, gates = net(x, [0, 1, 2])
    assert feats.shape == (3, 5, 6) and [g.shape for g in gates] == [(3, 5, 6)] * 3
    for t in range(3):
        single, _ = net(x, [t])
        torch.testing.assert_close(feats[t], single[0])


def test_gated_resnet_block_matches_fig3():
    torch.manual_seed(0)
    resnet = backbones.create("resnet18", (3, 8, 8), width=4, task_bn=2)
    net = gate(resnet, n_tasks=2, bias=0.0)
    assert isinstance(net, GatedResNet)
    assert len(net.banks) == 1 + 2 * 8  # stem + two gate banks per basic block
    # the second gates of a downsampling block decide the shortcut's kernels too
    down = [blk for blk in net.blocks if blk.downsample]
    assert len(down) == 3
    kernels = net.kernels()
    assert len(kernels[-1].convs) == 1 and any(len(k.convs) == 2 for k in kernels)
    net.eval()
    x = torch.rand(4, 3, 8, 8)
    feats, gates = net(x, [0, 1])
    assert feats.shape == (2, 4, 32)
    single, _ = net(x, [1])
    torch.testing.assert_close(feats[1], single[0])
    assert float(net.macs(gates, 3).max()) <= net.dense_macs(3) + sum(b.macs() for b in net.banks)
