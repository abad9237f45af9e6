"""Data-parallel training of one run over several processes (``torchrun`` / ``forgetless run --nproc N``).

How (the reading written down): every rank builds the same benchmark and method from the same seeds and runs
the method's own loop on its shard of each global batch (:meth:`~forgetless.training.Context.batches`). The
loops call :func:`all_reduce_gradients` right after ``backward()`` and before any gradient surgery, clipping
or ``optimizer.step()``: every rank then holds the global batch's gradient, steps identical optimisers and
stays bit-identical. This keeps each method's loop (masks, projections, lookahead regularisers, rewiring) as
it is, which wrapping in ``DistributedDataParallel`` would not: DDP reduces inside ``backward()`` of one
module, while several methods step optimisers over parameters of several modules or add gradients after the
backward. For a plain backward the two are the same arithmetic.

What is not a gradient (importance estimates, masks, buffers, rewiring choices) is computed by every rank on
the same full data with the same per-task generator, so it agrees without communication; at each task
boundary :func:`broadcast_module` copies rank 0's parameters and buffers (a safeguard: they already agree).
Batch norm normalises the global batch on every rank (:mod:`forgetless.sync_batch_norm`, installed by
:func:`init`), so networks with batch norm train as in one process. Methods whose training cannot be kept
in step this way refuse (:data:`UNSUPPORTED`).

With one process nothing here communicates and no process group exists: results are bit-identical to a run
without this module.
"""

from __future__ import annotations

import atexit
import datetime
import hashlib
import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from . import sync_batch_norm
from .errors import ConfigError

# Methods that refuse world_size > 1, with why (the README's method table lists them).
UNSUPPORTED: dict[str, str] = {
    name: "its generative replay (GAN/VAE) trains in loops not kept in step across ranks"
    for name in ("dgmw", "dgma", "dgr", "dgr-distill", "hnet-tir", "hnet-r")
}
# Test hook: a directory where every rank writes a digest of its state after each task.
DIGEST_DIR_ENV = "FORGETLESS_RANK_DIGESTS"


def env_world_size() -> int:
    """The world size torchrun announces in the environment (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    """Whether a process group of more than one rank is active."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def init(device: torch.device) -> torch.device:
    """Join the process group torchrun's environment describes (``gloo`` on CPU, ``nccl`` on CUDA) and return
    this rank's device (``cuda:LOCAL_RANK`` on CUDA). Without torchrun, or with one process, nothing happens
    and ``device`` is returned as it is. Idempotent."""
    if env_world_size() <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30), **kwargs)
        atexit.register(shutdown)
    sync_batch_norm.install()  # every batch norm normalises the global batch, as in one process
    return device


# (global batch rows, this rank, world) while a method trains on a shard cut by Context.batches
_shard: tuple[int, int, int] | None = None


def set_shard(global_rows: int | None, rank_: int = 0, world: int = 1) -> None:
    """Record that the batch being trained on is rows ``rank_::world`` of ``global_rows`` (None: no shard)."""
    global _shard
    _shard = None if global_rows is None or world <= 1 else (global_rows, rank_, world)


def per_sample_noise(shape: tuple[int, ...] | torch.Size, draw) -> torch.Tensor:
    """``draw(shape)``, the random numbers of a training forward with one row per sample (CCGN's Gumbel gate
    noise). On a shard of the global batch it draws the global batch's numbers and keeps this rank's rows: the
    noise of one process, so the ranks' samples do not share noise (every rank would draw the same) and
    the random stream stays where one process leaves it."""
    if _shard is not None:
        rows, r, world = _shard
        if len(shape) and shape[0] == len(range(r, rows, world)):
            return draw((rows, *shape[1:]))[r::world]
    return draw(tuple(shape))


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_method(name: str, method: Any = None) -> None:
    """ConfigError when method ``name`` (the built ``method``: some refuse only in one configuration) cannot
    train data-parallel and more than one rank runs."""
    if world_size() <= 1:
        return
    why = UNSUPPORTED.get(name)
    if why is None and name == "ccgn" and getattr(getattr(method, "config", None), "memory", None) == "generative":
        why = "memory=generative trains per-task GANs in loops not kept in step across ranks (memory=buffer works)"
    if why is not None:
        raise ConfigError(f"method {name!r} does not run data-parallel (world size {world_size()}): {why}; "
                          "run it in one process")


def all_reduce_gradients(params: Iterable[torch.Tensor], share: float = 1.0) -> None:
    """Replace every ``.grad`` by the global batch's gradient: the sum over ranks of ``share`` x the rank's
    gradient, where ``share`` is the rank's fraction of the global batch (the average when shards are equal;
    exact for a mean loss plus batch-independent terms when they are not). A parameter whose gradient is None
    on every rank stays None (the optimiser skips it, as in one process); one with a gradient on some rank only
    gets the reduced gradient everywhere. One flat buffer per dtype and device: few collectives per step."""
    if not is_distributed():
        return
    params = list(dict.fromkeys(p for p in params if p.requires_grad))  # an optimiser may list one twice
    if not params:
        return
    device = params[0].device
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    dist.all_reduce(present)
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for p, seen in zip(params, present.tolist(), strict=True):
        if seen:
            groups.setdefault((p.dtype, p.device), []).append(p)
    for group in groups.values():
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group])
        if share != 1.0:
            flat.mul_(share)
        dist.all_reduce(flat)
        offset = 0
        for p in group:
            n = p.numel()
            value = flat[offset : offset + n].view_as(p)
            if p.grad is None:
                p.grad = value.clone()
            else:
                p.grad.copy_(value)
            offset += n


def optimizer_params(*optimizers: torch.optim.Optimizer | None) -> list[torch.Tensor]:
    """Every parameter the optimisers step (what :func:`all_reduce_gradients` reduces)."""
    return [p for o in optimizers if o is not None for g in o.param_groups for p in g["params"]]


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module`` (in place)."""
    if not is_distributed():
        return
    for t in module.state_dict(keep_vars=True).values():
        if not isinstance(t, torch.Tensor) or not t.numel():
            continue
        # as raw bytes: gloo has no bool (masks) or some integer types; same bits whatever the dtype
        data = t.data
        raw = data.contiguous().view(-1).view(torch.uint8)
        dist.broadcast(raw, src)
        if not data.is_contiguous():  # raw was a copy
            data.copy_(raw.view(data.dtype).view(data.shape))


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (picklable) on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def reduce_mean(value: float) -> float:
    """The mean of a per-rank number over ranks (for metrics measured on a rank's shard)."""
    if not is_distributed():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / world_size()


def state_digest(obj: Any) -> str:
    """sha256 over the tensors and python numbers of ``obj``'s checkpoint tree (its whole decided state, python
    side included; strings are left out: they are names and output paths, which only rank 0 writes)."""
    from . import checkpoint

    h = hashlib.sha256()

    def walk(node: Any) -> None:
        if isinstance(node, torch.Tensor):
            t = node.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(k)
                walk(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v)
        elif isinstance(node, (bool, int, float)) or node is None:
            h.update(repr(node).encode())

    walk(checkpoint.encode(obj))
    return h.hexdigest()


def parameter_digest(module: nn.Module) -> str:
    """sha256 over ``module``'s parameters (what the all-reduced steps must have kept identical)."""
    h = hashlib.sha256()
    for name, p in module.named_parameters():
        t = p.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def write_digests(module: nn.Module, task_index: int, parameters: str) -> None:
    """Test hook: with ``$FORGETLESS_RANK_DIGESTS`` set, write this rank's parameter digest (taken before the
    task-boundary broadcast) and full-state digest (after it) for task ``task_index``."""
    where = os.environ.get(DIGEST_DIR_ENV)
    if not where:
        return
    os.makedirs(where, exist_ok=True)
    with open(os.path.join(where, f"rank{rank()}-task{task_index}.txt"), "w") as f:
        f.write(f"parameters {parameters}\nstate {state_digest(module)}\n")


def task_boundary(module: nn.Module, task_index: int) -> None:
    """After a task: rank 0's parameters and buffers on every rank (see the module docstring), and the test
    hook's digests (parameters before the broadcast, so a drift is not hidden by it)."""
    if not is_distributed():
        return
    parameters = parameter_digest(module) if os.environ.get(DIGEST_DIR_ENV) else ""
    broadcast_module(module)
    write_digests(module, task_index, parameters)


def assert_same_parameters(module: nn.Module) -> None:
    """AssertionError unless every rank's ``module`` has the same parameters and buffers (for tests)."""
    if not is_distributed():
        return
    mine = state_digest(module)
    digests: list[Any] = [None] * world_size()
    dist.all_gather_object(digests, mine)
    assert all(d == mine for d in digests), f"ranks differ: {digests}"
