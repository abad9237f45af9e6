"""Where a DGM run's class-IL errors come from (docs/dgm.md, "Why it falls short"): loads a checkpoint written by
`forgetless run --method dgmw|dgma --benchmark split-mnist --bench classes_per_task=1` and prints the auxiliary
classifier's test accuracy per learned class, with

- the discriminator's batch-norm statistics as trained (eval mode, what the run reports);
- the statistics re-estimated on the classifier's own training mix (real images of the newest class and
  generated images of the older ones), which a class-incremental learner may do;
- the statistics re-estimated on the test images themselves (an oracle, for diagnosis only);

and, for each, the share of wrongly classified old-class images that went to the newest class. With ``--judge``
it also trains an MLP on the real training images of every learned class (an oracle, for diagnosis only) and
prints, per class, the share of the generator's samples that this judge recognises next to the auxiliary
classifier's accuracy on the same samples: whether the samples are recognisable digits at all.

    OMP_NUM_THREADS=1 python bench/dgm_classifier_probe.py runs/dgm/dgmw-cpu-s1/checkpoints/task-10.pt \
        --data-dir ../shared/data --seed 1 [--judge]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from forgetless import checkpoint
from forgetless.benchmarks.base import build
from forgetless.methods.base import masked_logits
from forgetless.methods.dgm import DGM
from forgetless.nn.norm_statistics import cumulative_statistics


@torch.no_grad()
def aux_predictions(method: DGM, images_gan: torch.Tensor) -> torch.Tensor:
    """The auxiliary classifier's answers (eval mode, over the learned labels) for images in GAN space."""
    method.discriminator.eval()
    return torch.cat([masked_logits(method.discriminator(chunk)[1], method.seen).argmax(1)
                      for chunk in images_gan.split(500)])


def accuracy(method: DGM, x: torch.Tensor, y: torch.Tensor, newest: int) -> tuple[list[float], float]:
    pred = aux_predictions(method, method.to_gan(x))
    per_class = [float((pred[y == c] == c).float().mean()) for c in method.seen]
    wrong_old = (pred != y) & (y != newest)
    to_newest = float((pred[wrong_old] == newest).float().mean()) if bool(wrong_old.any()) else 0.0
    return per_class, to_newest


def reestimate_norms(method: DGM, images_gan: torch.Tensor, batch_size: int) -> None:
    """Cumulative batch-norm statistics of the discriminator over ``images_gan`` (already in GAN space)."""
    norms = [m for m in method.discriminator.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    method.discriminator.train()
    with cumulative_statistics(norms), torch.no_grad():
        for chunk in images_gan.split(batch_size):
            method.discriminator(chunk)


def judge_samples(method: DGM, tasks, gen: torch.Generator, per_class: int = 500, epochs: int = 3) -> None:
    """Train an MLP on real training images of the learned classes (GAN space), then score generated samples."""
    x = torch.cat([method.to_gan(t.train.inputs()).flatten(1) for t in tasks])
    y = torch.cat([t.train.y for t in tasks])
    torch.manual_seed(0)  # the judge's initialisation: the same numbers on every run
    judge = nn.Sequential(nn.Linear(x.shape[1], 400), nn.ReLU(), nn.Linear(400, method.info.n_outputs))
    opt = torch.optim.Adam(judge.parameters(), lr=1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(128):
            loss = F.cross_entropy(judge(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    print("  generated samples (eval mode, as replayed), per class: judge recognises / auxiliary classifier")
    for c in method.seen:
        fake = method.generate(torch.full((per_class,), c), generator=gen)
        with torch.no_grad():
            by_judge = float((judge(fake.flatten(1)).argmax(1) == c).float().mean())
        by_aux = float((aux_predictions(method, fake) == c).float().mean())
        print(f"    {c}: {100 * by_judge:.1f} / {100 * by_aux:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0, help="the run's --seed (the benchmark is built with it)")
    parser.add_argument("--judge", action="store_true", help="also score generated samples with a real-data MLP")
    args = parser.parse_args()

    state = checkpoint.read(args.checkpoint)  # a checkpoint is never unpickled: see forgetless/checkpoint.py
    method = state["method"]
    if not isinstance(method, DGM):
        raise SystemExit(f"{args.checkpoint}: not a dgmw/dgma checkpoint")
    learned = state["task_index"] + 1
    bench = build("split-mnist", "class", seed=args.seed, data_root=args.data_dir, classes_per_task=1)
    tasks = bench.tasks[:learned]
    x = torch.cat([t.test.inputs() for t in tasks])
    y = torch.cat([t.test.y for t in tasks])
    newest = int(tasks[-1].labels[0])
    gen = torch.Generator().manual_seed(0)

    trained = {k: v.clone() for k, v in method.discriminator.state_dict().items()}
    real = method.to_gan(tasks[-1].train.inputs())
    old = [c for c in method.seen if c != newest]
    fake = method.generate(torch.tensor(old).repeat_interleave(len(real)), generator=gen) if old else real[:0]
    mix = torch.cat([real, fake])
    rows = [("as trained (eval mode)", None),
            ("norms re-estimated on real newest + generated older classes",
             mix[torch.randperm(len(mix), generator=gen)]),
            ("norms re-estimated on the test images (oracle)",
             method.to_gan(x[torch.randperm(len(x), generator=gen)]))]
    print(f"after task {learned}, classes {method.seen}, newest {newest}")
    for name, images in rows:
        method.discriminator.load_state_dict(trained)
        if images is not None:
            reestimate_norms(method, images, method.config.batch_size)
        per_class, to_newest = accuracy(method, x, y, newest)
        shown = " ".join(f"{100 * v:.1f}" for v in per_class)
        print(f"  {name}: A = {100 * sum(per_class) / len(per_class):.2f}; per class {shown}; "
              f"old-class errors called {newest}: {100 * to_newest:.0f}%")
    if args.judge:
        method.discriminator.load_state_dict(trained)
        judge_samples(method, tasks, gen)


if __name__ == "__main__":
    main()
