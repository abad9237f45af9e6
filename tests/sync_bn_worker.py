"""Run under ``torch.distributed.run`` by tests/test_distributed.py: one batch-norm step of a 9-sample batch
cut into uneven rank shards (5 + 4); each rank saves what it computed to argv[1]/rank{R}.pt."""

from __future__ import annotations

import sys

import torch
from torch import nn

from forgetless import distributed

if __name__ == "__main__":
    distributed.init(torch.device("cpu"))
    rank, world = distributed.rank(), distributed.world_size()
    torch.manual_seed(0)
    x, target = torch.randn(9, 3, 4, 4), torch.randn(9, 3, 4, 4)
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    shard = x[rank::world].clone().requires_grad_(True)
    out = bn(shard)
    loss = ((out - target[rank::world]) ** 3).mean()  # the shard's mean loss, as the training loops have
    loss.backward()
    share = len(shard) / len(x)
    distributed.all_reduce_gradients(bn.parameters(), share)
    torch.save({"out": out.detach(), "input_grad": shard.grad * share, "weight_grad": bn.weight.grad,
                "bias_grad": bn.bias.grad, "running_mean": bn.running_mean, "running_var": bn.running_var},
               f"{sys.argv[1]}/rank{rank}.pt")
