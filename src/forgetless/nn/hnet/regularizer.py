"""The hypernetwork output regularizer of von Oswald et al. (2020), Eq. 2, with its one-step lookahead.

While task T is learned, the total loss is

    L_task(Theta, e_T) + beta / |S| * sum_{t in S} || f_h(e_t, Theta*) - f_h(e_t, Theta + dTheta) ||^2

where Theta* is the hypernetwork before task T (its outputs for the stored embeddings are the fixed
*targets*), dTheta is the step the optimiser would take on L_task alone (the lookahead, treated as a
constant), and S holds every past task or, in the stochastic variant of Appendix D, at most K of them drawn
at random each step. The squared distance is summed over target weights and averaged over the tasks in S
(the ``beta/(T-1)`` of Eq. 2).

How it is computed (the speed of the whole method rests on it). The hypernetwork's output layer is linear,
so chunk i of task t is z_ti V (z the input of that layer with a 1 appended, V = [W; b]) and its target is
z*_ti V* (the same under Theta*). With y = [z, z*] and U = [V; V*] (rows stacked), the chunk's error is
y diag(1, -1) U, so summed over all chunks

    sum ||z V - z* V*||^2 = sum( (Y^T Y) o (U U^T) o s ),   s = [[1, -1], [-1, 1]] blockwise,

two Gram matrices of size 2(width+1); the gradient for V is 2 ((Y^T Y) o s)[:m] U, accumulated straight
into the output layer's ``.grad``. A step therefore costs a few [2(width+1) x chunk_size] products whatever
the number of past tasks; the past tasks' weights are never generated; the memory kept is one frozen output
layer, not one weight vector per past task. The unused tail of the last chunk is left out exactly (those
columns count only for the other chunks).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ... import precision
from .hypernetwork import HyperNetwork, with_ones

# ---------------------------------------------------------------------------------------------- lookahead

def host_steps(optimizer: torch.optim.Optimizer) -> dict[int, int]:
    """Adam's step count per parameter (by id), kept on the host. A fused optimiser keeps ``state["step"]``
    on the device, so reading it at every lookahead would stall the host on every step; this mirror is read
    from the state once and then advanced by a step hook exactly as Adam advances it (parameters with a
    gradient)."""
    steps = getattr(optimizer, "_forgetless_host_steps", None)
    if steps is None:
        steps = {id(p): int(optimizer.state[p]["step"]) for g in optimizer.param_groups for p in g["params"]
                 if "step" in optimizer.state.get(p, {})}

        def advance(opt, *_):
            for group in opt.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        steps[id(p)] = steps.get(id(p), 0) + 1

        optimizer.register_step_post_hook(advance)
        optimizer._forgetless_host_steps = steps
    return steps


@torch.no_grad()
def optimizer_lookahead(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor],
                        out: Sequence[torch.Tensor | None] | None = None,
                        scratch: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None) -> list[torch.Tensor]:
    """``params`` after the step ``optimizer.step()`` would take with their current ``.grad``, computed
    without touching the parameters or the optimiser state (Adam and SGD, as configured in their groups).

    ``out`` optionally names, per parameter, a tensor to write the result into; ``scratch`` maps a parameter's
    index to two preallocated buffers shaped like it (Adam's moments): reusing them for the large output layer
    saves allocating (and faulting in) fresh memory every step.
    """
    out = list(out) if out is not None else [None] * len(params)
    scratch = scratch or {}
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    steps = host_steps(optimizer) if isinstance(optimizer, torch.optim.Adam) else {}
    result: list[torch.Tensor | None] = [None] * len(params)
    batches: dict[tuple[int, float], list[int]] = {}  # small Adam parameters sharing (group, step): foreach ops
    for i, p in enumerate(params):
        group = group_of[id(p)]
        if p.grad is None:
            result[i] = p.detach() if out[i] is None else out[i].copy_(p)
            continue
        grad = p.grad if not group.get("weight_decay") else p.grad + group["weight_decay"] * p.detach()
        state = optimizer.state.get(p, {})
        if isinstance(optimizer, torch.optim.Adam):
            if group.get("amsgrad"):
                raise TypeError("the lookahead does not support Adam with amsgrad")
            step = float(steps.get(id(p), 0) + 1)
            if i in scratch or out[i] is not None or "exp_avg" not in state:
                result[i] = _adam_lookahead(p, grad, state, group, step, out[i], *scratch.get(i, (None, None)))
            else:
                batches.setdefault((id(group), step), []).append(i)
        elif isinstance(optimizer, torch.optim.SGD):
            momentum, buf = group.get("momentum", 0), state.get("momentum_buffer")
            if momentum:
                d = grad.clone() if buf is None else buf * momentum + (1 - group.get("dampening", 0)) * grad
                grad = grad + momentum * d if group.get("nesterov") else d
            result[i] = torch.add(p.detach(), grad, alpha=-group["lr"], out=out[i])
        else:
            raise TypeError(f"the lookahead is implemented for Adam and SGD, not {type(optimizer).__name__}")
    for (gid, step), index in batches.items():
        group = next(g for g in optimizer.param_groups if id(g) == gid)
        beta1, beta2 = group["betas"]
        s, c2 = (beta2 / (1 - beta2**step)) ** 0.5, (1 - beta2) / beta2
        ps = [params[i].detach() for i in index]
        grads = [params[i].grad for i in index]
        if group.get("weight_decay"):
            grads = torch._foreach_add(grads, ps, alpha=group["weight_decay"])
        states = [optimizer.state[params[i]] for i in index]
        m = torch._foreach_lerp(grads, [st["exp_avg"] for st in states], beta1)
        v = torch._foreach_addcmul([st["exp_avg_sq"] for st in states], grads, grads, value=c2)
        torch._foreach_sqrt_(v)
        torch._foreach_add_(v, group["eps"] / s)
        shifted = torch._foreach_addcdiv(ps, m, v, value=-float(group["lr"]) / ((1 - beta1**step) * s))
        for i, t in zip(index, shifted, strict=True):
            result[i] = t
    return result  # type: ignore[return-value]


def _adam_lookahead(p, grad, state, group, step, out=None, m_buf=None, v_buf=None) -> torch.Tensor:
    """One parameter's Adam step, written as p' = p - lr/bc1 * m' / (sqrt(v'/bc2) + eps) with
    m' = b1 m + (1-b1) g and v' = b2 (v + (1-b2)/b2 g^2): each operation one pass, in the given buffers."""
    beta1, beta2 = group["betas"]
    s, c2 = (beta2 / (1 - beta2**step)) ** 0.5, (1 - beta2) / beta2
    if "exp_avg" in state:
        m = torch.lerp(grad, state["exp_avg"], beta1, out=m_buf)
        v = torch.addcmul(state["exp_avg_sq"], grad, grad, value=c2, out=v_buf)
    else:
        m = torch.mul(grad, 1 - beta1, out=m_buf)
        v = torch.mul(grad, grad, out=v_buf).mul_(c2)
    v.sqrt_().add_(group["eps"] / s)
    return torch.addcdiv(p.detach(), m, v, value=-float(group["lr"]) / ((1 - beta1**step) * s), out=out)


# ------------------------------------------------------------------------------------------ gram algebra

def _signs(m: int, like: torch.Tensor) -> torch.Tensor:
    s = torch.ones(2 * m, 2 * m, dtype=like.dtype, device=like.device)
    s[:m, m:] = -1
    s[m:, :m] = -1
    return s


def _gram_parts(y: torch.Tensor, u: torch.Tensor, r: int, signs: torch.Tensor):
    """Value and Gram pieces of sum over rows of ||z V - z* V*||^2 (last chunk: columns < r only).

    y = [z, z*]: [k, chunks, 2m]; u = [V; V*]: [2m, chunk_size].
    Returns (value, [(S, G, columns), ...]) with S = Y^T Y over the rows a column block belongs to and
    G = (U U^T) o signs over that column block.
    """
    two_m = y.shape[-1]
    rows = y.reshape(-1, two_m)
    s_all = rows.T @ rows
    tail = r < u.shape[1]
    head_cols = slice(0, r) if tail else slice(None)
    uh = u[:, head_cols]
    g_head = (uh @ uh.T) * signs
    parts = [(s_all, g_head, head_cols)]
    value = (s_all * g_head).sum()
    if tail:  # columns >= r exist in every chunk but the last
        last = y[:, -1]
        s_rest = s_all - last.T @ last
        ut = u[:, r:]
        g_tail = (ut @ ut.T) * signs
        parts.append((s_rest, g_tail, slice(r, None)))
        value = value + (s_rest * g_tail).sum()
    return value, parts


# ------------------------------------------------------------------------------------------ regularizer

# ------------------------------------------------------------------------------------------ regularizer

class OutputRegularizer:
    """Eq. 2 as a reusable piece: ``begin_task`` freezes the targets, ``backward`` adds the penalty's gradient.

    ``beta``: strength; ``lookahead``: evaluate at Theta + dTheta (else at Theta); ``max_tasks``: the
    stochastic variant (at most K random past tasks per step; None = all).
    """

    def __init__(self, beta: float, lookahead: bool = True, max_tasks: int | None = None) -> None:
        self.beta = float(beta)
        self.lookahead = bool(lookahead)
        self.max_tasks = max_tasks
        self.embeddings: torch.Tensor | None = None
        self._z_star: torch.Tensor | None = None  # [P, chunks, m]: output-layer inputs (and 1) under Theta*
        self._u: torch.Tensor | None = None  # [2m, chunk_size]: rows 0..m-1 scratch for V, rows m.. = V*
        self._signs: torch.Tensor | None = None
        self._scratch: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # lookahead buffers (output layer)

    @property
    def active(self) -> bool:
        return self.beta > 0 and self.embeddings is not None and len(self.embeddings) > 0

    @torch.no_grad()
    @precision.float32
    def begin_task(self, hnet: HyperNetwork, past: Sequence[int] | None = None) -> None:
        """Fix the targets f_h(e_t, Theta*) for the past tasks (default: every stored embedding)."""
        past = list(range(hnet.n_tasks)) if past is None else list(past)
        if not past or self.beta <= 0:
            self.end_task()
            return
        was_training = hnet.training
        hnet.eval()
        theta = [p.detach().clone() for p in hnet.theta()]
        self.embeddings = hnet.embedding_matrix(past).detach().clone()
        self._z_star = with_ones(hnet.features(self.embeddings, theta))
        v_star = hnet.output_layer(theta)
        self._u = torch.cat([v_star, v_star], dim=0)
        self._signs = _signs(v_star.shape[0], v_star)
        self._scratch = {len(theta) - 1: (torch.empty_like(v_star), torch.empty_like(v_star))}
        hnet.train(was_training)

    def end_task(self) -> None:
        """Drop the per-task tensors (they are rebuilt at the next task; checkpoints stay small)."""
        self.embeddings = self._z_star = self._u = self._signs = None
        self._scratch = {}

    @staticmethod
    def _valid_columns(hnet: HyperNetwork) -> int:
        """Positions of the last chunk that are real target weights (the rest is truncated)."""
        return hnet.n_outputs - (hnet.n_chunks - 1) * hnet.chunk_size

    def select(self, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """Indices of the past tasks regularised this step (None = all)."""
        n = len(self.embeddings)
        if self.max_tasks is None or n <= self.max_tasks:
            return None
        return torch.randperm(n, generator=generator)[: self.max_tasks].to(self.embeddings.device)

    def targets(self, hnet: HyperNetwork) -> torch.Tensor:
        """The frozen targets f_h(e_t, Theta*) as weight vectors [P, n] (for inspection and tests)."""
        m = self._z_star.shape[-1]
        out = self._z_star @ self._u[m:]
        return out.reshape(len(out), -1)[:, : hnet.n_outputs]

    def _past(self, index):
        if index is None:
            return self.embeddings, self._z_star
        return self.embeddings[index], self._z_star[index]

    @precision.float32
    def penalty(self, hnet: HyperNetwork, theta: Sequence[torch.Tensor] | None = None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        """(1/|S|) sum_{t in S} ||f_h(e_t, Theta*) - f_h(e_t, theta)||^2 (without beta), differentiable."""
        theta = list(theta) if theta is not None else hnet.theta()
        embs, z_star = self._past(index)
        y = torch.cat([with_ones(hnet.features(embs, theta)), z_star], dim=-1)
        m = z_star.shape[-1]
        u = torch.cat([hnet.output_layer(theta), self._u[m:]], dim=0)
        value, _ = _gram_parts(y, u, self._valid_columns(hnet), self._signs)
        return value / len(embs)

    @precision.float32
    def backward(self, hnet: HyperNetwork, optimizer: torch.optim.Optimizer,
                 generator: torch.Generator | None = None) -> torch.Tensor | None:
        """Call after ``task_loss.backward()`` and before ``optimizer.step()``: adds beta * the gradient of the
        penalty at Theta + dTheta to Theta's gradients (dTheta constant); returns the penalty value.

        Same result as ``(beta * penalty(hnet, theta + dTheta)).backward()``, but the output layer at
        Theta + dTheta is written in place into a scratch buffer and its gradient accumulated straight into
        ``.grad`` by one matrix product: no autograd graph, no copies of the large matrix.
        """
        if not self.active:
            return None
        theta = hnet.theta()
        m = self._z_star.shape[-1]
        u = self._u
        if self.lookahead:  # the shifted output layer is written straight into the scratch rows of U
            shifted = optimizer_lookahead(optimizer, theta, out=[None] * (len(theta) - 1) + [u[:m]],
                                          scratch=self._scratch)
        else:
            shifted = [p.detach() for p in theta[:-1]]
            u[:m].copy_(theta[-1].detach())
        # The small parameters (chunk embeddings, hidden layers) at Theta + dTheta, as leaves: since dTheta is
        # a constant, the gradient with respect to them is the gradient with respect to Theta.
        small = [s.detach().requires_grad_(p.requires_grad) for p, s in zip(theta[:-1], shifted[:-1], strict=True)]
        embs, z_star = self._past(self.select(generator))
        z = with_ones(hnet.features(embs, [*small, None]))
        y = torch.cat([z.detach(), z_star], dim=-1)
        with torch.no_grad():
            value, parts = _gram_parts(y, u, self._valid_columns(hnet), self._signs)
        scale = self.beta / len(embs)
        if z.requires_grad:
            # d/dY of sum(S o G) with S = Y^T Y is 2 Y G: its z half, without the tail for the last chunk's rows
            grad_z = 2 * y @ parts[0][1][:, :m]
            if len(parts) > 1:
                grad_z[:, :-1] += 2 * y[:, :-1] @ parts[1][1][:, :m]
            z.backward(grad_z.mul_(scale))
            with torch.no_grad():
                for p, s in zip(theta[:-1], small, strict=True):
                    if s.grad is not None:
                        p.grad = s.grad if p.grad is None else p.grad.add_(s.grad)
        v = theta[-1]
        with torch.no_grad():
            if v.grad is None:
                v.grad = torch.zeros_like(v)
            for s, _, cols in parts:
                coef = (s * self._signs)[:m].mul_(2)  # d/dV of sum(S o (U U^T) o signs) = 2 (S o signs)[:m] U
                v.grad[:, cols].addmm_(coef, u[:, cols], alpha=scale)
        return value / len(embs)
