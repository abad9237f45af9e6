"""Cross-check of ``hnet`` against the hypernetwork authors' own library, hypnettorch (not a dependency).

Two measurements, both in the split-MNIST setting of Appendix C (chunked hypernetwork 10,10 ReLU, chunks of
42,000, task and chunk embeddings of 96, target MLP 784-400-400-10, beta 0.01, Adam 1e-3, batch 128):

``ent``: HNET+ENT in class-IL (S-CL3 of Table 1) built from hypnettorch's ``ChunkedHMLP``, ``MLP`` and its
  regularizer (``calc_fix_target_reg`` with the ``calc_delta_theta`` lookahead), trained exactly as the
  authors' ``train_splitMNIST.py`` does (fresh Adam per task for the hypernetwork and for the task embedding,
  2000 iterations per task, each task on its own two output units, Xavier-uniform weights and zero biases as
  their ``generate_classifier``), on forgetless's own split-MNIST tensors (``val_fraction=0``), and evaluated
  by lowest entropy over each task's own units. Compare with
  ``forgetless run --method hnet --benchmark split-mnist --scenario class --seed S --bench val_fraction=0.0``.
``step``: the time of one hypnettorch training step (task 5, regularizer over 4 past tasks) against one plain
  Adam step of the same MLP, measured as ``bench_hnet.py`` measures forgetless's step, then forgetless's own.

hypnettorch is not installed by ``make setup``; it is a pure-Python wheel whose dependencies forgetless
already has, so it can be used without touching the environment:
``pip download --no-deps hypnettorch==0.0.4 -d /tmp/hyp && python -m zipfile -e /tmp/hyp/*.whl /tmp/hyp/pkg``,
then ``PYTHONPATH=/tmp/hyp/pkg python bench/hnet_reference.py ent --seeds 0,1 --data-dir ../shared/data``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from bench_hnet import _medians, plain_mlp_step, step_timings
from torch import nn

from forgetless import benchmarks
from forgetless.methods.base import TrainConfig

try:
    import hypnettorch.utils.hnet_regularizer as hreg
    import hypnettorch.utils.optim_step as opstep
    from hypnettorch.hnets.chunked_mlp_hnet import ChunkedHMLP
    from hypnettorch.mnets.mlp import MLP
except ImportError:  # pragma: no cover - optional third-party reference
    sys.exit("hypnettorch is not importable: see this script's docstring for how to make it available")

LR, BETA, ITERATIONS, BATCH, N_TASKS, UNITS = 1e-3, 0.01, 2000, 128, 5, 2


def build(n_tasks: int = N_TASKS) -> tuple[MLP, ChunkedHMLP]:
    mnet = MLP(n_in=784, n_out=10, hidden_layers=[400, 400], no_weights=True, verbose=False)
    hnet = ChunkedHMLP(mnet.param_shapes, chunk_size=42000, chunk_emb_size=96, cond_in_size=96, layers=[10, 10],
                       num_cond_embs=n_tasks, activation_fn=nn.ReLU(), verbose=False)
    for w in hnet.layer_weight_tensors:  # the authors' classifier hypernetwork: Xavier-uniform, zero biases
        nn.init.xavier_uniform_(w)
    for b in hnet.layer_bias_vectors:
        nn.init.zeros_(b)
    return mnet, hnet


def train_step(mnet: MLP, hnet: ChunkedHMLP, t: int, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
               emb_opt: torch.optim.Optimizer, targets: list[torch.Tensor] | None) -> float:
    opt.zero_grad()
    emb_opt.zero_grad()
    logits = mnet.forward(x, weights=hnet.forward(cond_id=t))[:, UNITS * t:UNITS * (t + 1)]
    loss = F.cross_entropy(logits, y - UNITS * t)
    loss.backward(retain_graph=targets is not None)
    if targets is not None:  # Eq. 2 at the lookahead, as in the authors' train_class_one_t
        d_theta = opstep.calc_delta_theta(opt, False, lr=LR, detach_dt=True)
        (BETA * hreg.calc_fix_target_reg(hnet, t, targets=targets, dTheta=d_theta, mnet=mnet)).backward()
    opt.step()
    emb_opt.step()
    return float(loss.detach())


def run_ent(seed: int, data_dir: str | None) -> tuple[float, list[float]]:
    torch.manual_seed(seed)
    bench = benchmarks.build("split-mnist", "class", seed, data_dir, val_fraction=0.0)
    mnet, hnet = build()
    g = torch.Generator().manual_seed(seed)
    for t, task in enumerate(bench.tasks):
        x_all, y_all = task.train.inputs().flatten(1), task.train.y
        opt = torch.optim.Adam(hnet.unconditional_params, lr=LR)
        emb_opt = torch.optim.Adam([hnet.conditional_params[t]], lr=LR)
        targets = hreg.get_current_targets(t, hnet) if t > 0 else None
        order, pos = torch.randperm(len(y_all), generator=g), 0
        for _ in range(ITERATIONS):
            if pos + BATCH > len(order):
                order, pos = torch.randperm(len(y_all), generator=g), 0
            idx = order[pos:pos + BATCH]
            pos += BATCH
            train_step(mnet, hnet, t, x_all[idx], y_all[idx], opt, emb_opt, targets)
    per_task = []
    with torch.no_grad():
        weights = [hnet.forward(cond_id=e) for e in range(N_TASKS)]
        for task in bench.tasks:
            x, y = task.test.inputs().flatten(1), task.test.y
            entropies, answers = [], []
            for e, w in enumerate(weights):
                logits = mnet.forward(x, weights=w)[:, UNITS * e:UNITS * (e + 1)]
                logp = torch.log_softmax(logits, -1)
                entropies.append(-(logp.exp() * logp).sum(-1))
                answers.append(logits.argmax(-1) + UNITS * e)
            chosen = torch.stack(entropies).argmin(0)
            pred = torch.stack(answers).gather(0, chosen[None])[0]
            per_task.append(100 * float((pred == y).float().mean()))
    return statistics.mean(per_task), per_task


def step_ratio(repeat: int = 30) -> tuple[float, float]:
    """Median thread-CPU seconds of one hypnettorch step (task 5) and of one plain MLP Adam step, measured as
    ``bench_hnet.step_timings`` measures forgetless's step."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(BATCH, 784, generator=g)
    y = torch.randint(8, 10, (BATCH,), generator=g)
    mnet, hnet = build()
    opt = torch.optim.Adam(hnet.unconditional_params, lr=LR)
    emb_opt = torch.optim.Adam([hnet.conditional_params[4]], lr=LR)
    targets = hreg.get_current_targets(4, hnet)
    plain_step = plain_mlp_step(x.view(BATCH, 1, 28, 28), y, TrainConfig(optimizer="adam", lr=LR))
    hnet_cpu = _medians(lambda: train_step(mnet, hnet, 4, x, y, opt, emb_opt, targets), repeat)[1]
    return hnet_cpu, _medians(plain_step, repeat)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("ent", "step"))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    if args.what == "step":
        hnet_s, plain_s = step_ratio()
        print(f"hypnettorch step {hnet_s * 1e3:.2f} ms, plain MLP step {plain_s * 1e3:.2f} ms "
              f"(thread CPU, medians): {hnet_s / plain_s:.2f}x")
        print(f"forgetless hnet step, same minutes: {step_timings(repeat=30)[1]['note'].split('; ')[-1]}")
        return
    means = []
    for seed in (int(s) for s in args.seeds.split(",")):
        start = time.time()
        mean, per_task = run_ent(seed, args.data_dir)
        means.append(mean)
        print(f"seed {seed}: HNET+ENT class-IL {mean:.2f} (per task {', '.join(f'{a:.2f}' for a in per_task)}), "
              f"{time.time() - start:.0f} s", flush=True)
    if len(means) > 1:
        print(f"mean {statistics.mean(means):.2f} +- {statistics.stdev(means):.2f} over {len(means)} seeds")


if __name__ == "__main__":
    main()
