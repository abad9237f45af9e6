"""Task-conditioned hypernetworks (von Oswald et al., 2020): task embedding -> flat target weight vector.

``FullHyperNetwork`` is an MLP from the task embedding to every target weight at once (Sec. 2.1).
``ChunkedHyperNetwork`` (Sec. 2.2) produces the target weights chunk by chunk from the pair (task embedding,
chunk embedding); the learned chunk embeddings are shared by all tasks, and the concatenated chunks are
truncated to the target size. All chunks, and all the task embeddings asked for, go through the network as
one batch, so generating the weights of T tasks is a handful of matrix products, never a Python loop.

The trainable parameters split into ``theta`` (the weights the output regularizer protects, including the
chunk embeddings) and the task embeddings, one ``nn.Parameter`` per task, learned with their task and then
frozen. ``forward(emb, theta=None)`` evaluates the network with its own ``theta`` or with an explicit list
of tensors in the same order (the regularizer's lookahead evaluates it at ``theta + delta``).

Layer weights are stored input-major (``h @ W + b``, W of shape [in, out]) so that the output layer's rows
are contiguous chunk-length vectors; the regularizer relies on that layout for its Gram products.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError, choices

ACTIVATIONS = {
    "relu": F.relu,
    "elu": F.elu,
    "leaky-relu": F.leaky_relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "linear": None,
}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown hypernetwork activation {name!r}; valid: {choices(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _init_layers(sizes: Sequence[int]) -> tuple[nn.ParameterList, nn.ParameterList, nn.Parameter]:
    """Hidden layers (weights [in, out], biases) and the output layer as one [in + 1, out] matrix whose last
    row is the bias. Xavier-uniform weights and zero biases, as the authors initialise their hypernetworks
    (Xavier is symmetric in fan-in and fan-out, so the [in, out] layout changes nothing)."""
    weights, biases = nn.ParameterList(), nn.ParameterList()
    for a, b in itertools.pairwise(sizes[:-1]):
        w = torch.empty(a, b)
        nn.init.xavier_uniform_(w)
        weights.append(nn.Parameter(w))
        biases.append(nn.Parameter(torch.zeros(b)))
    out = torch.zeros(sizes[-2] + 1, sizes[-1])
    nn.init.xavier_uniform_(out[:-1])
    return weights, biases, nn.Parameter(out)


def with_ones(z: torch.Tensor) -> torch.Tensor:
    """Append a 1 to every feature vector, so the output layer's bias acts as its last weight row."""
    return torch.cat([z, z.new_ones(*z.shape[:-1], 1)], dim=-1)


class HyperNetwork(nn.Module):
    """An MLP whose last layer is linear; subclasses say what enters it (``features``).

    ``theta`` is [extra parameters..., W0, b0, W1, b1, ..., V] with V = [W_out; b_out] the output layer as one
    [width + 1, chunk_size] matrix; every output is one row of ``features @ W_out + b_out``: a chunk of
    ``chunk_size`` target weights (a single chunk for a full hypernetwork).
    """

    n_chunks: int = 1
    chunk_size: int = 0

    def __init__(self, n_outputs: int, emb_dim: int, emb_std: float = 1.0, activation_name: str = "relu") -> None:
        super().__init__()
        if n_outputs < 1 or emb_dim < 1:
            raise ConfigError(f"a hypernetwork needs n_outputs >= 1 and emb_dim >= 1, got {n_outputs}, {emb_dim}")
        activation(activation_name)
        self.n_outputs = int(n_outputs)
        self.emb_dim = int(emb_dim)
        self.emb_std = float(emb_std)
        self.activation_name = activation_name
        self.embeddings = nn.ParameterList()

    # ------------------------------------------------------------------------------------- embeddings
    def add_embedding(self, generator: torch.Generator | None = None) -> nn.Parameter:
        """A new trainable task embedding drawn from N(0, emb_std^2) (the authors' initialisation)."""
        ref = self.theta()[0]
        value = torch.randn(self.emb_dim, generator=generator) * self.emb_std
        emb = nn.Parameter(value.to(device=ref.device, dtype=ref.dtype))
        self.embeddings.append(emb)
        return emb

    def freeze_embeddings(self) -> None:
        """Stored embeddings stay fixed while later tasks are learned (Appendix C)."""
        for emb in self.embeddings:
            emb.requires_grad_(False)

    def embedding_matrix(self, index: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """The stored embeddings (or those in ``index``) stacked as rows."""
        embs = torch.stack(list(self.embeddings))
        return embs if index is None else embs[torch.as_tensor(index, device=embs.device)]

    @property
    def n_tasks(self) -> int:
        return len(self.embeddings)

    # ------------------------------------------------------------------------------------------ theta
    def theta(self) -> list[nn.Parameter]:
        return [*[p for pair in zip(self.weights, self.biases, strict=True) for p in pair], self.out_layer]

    def n_theta(self) -> int:
        return sum(p.numel() for p in self.theta())

    @staticmethod
    def output_layer(theta: Sequence[torch.Tensor]) -> torch.Tensor:
        """V = [W_out; b_out], the output layer within ``theta`` ([width + 1, chunk_size])."""
        return theta[-1]

    def features(self, embs: torch.Tensor, theta: Sequence[torch.Tensor]) -> torch.Tensor:  # pragma: no cover
        """Input of the output layer for each (task, chunk): [T, n_chunks, width]."""
        raise NotImplementedError

    def forward(self, emb: torch.Tensor, theta: Sequence[torch.Tensor] | None = None,
                truncate: bool = True) -> torch.Tensor:
        """Target weights for embedding ``emb`` ([d] -> [n]) or a batch of them ([T, d] -> [T, n]).

        ``truncate=False`` keeps the unused tail of the last chunk (length ``n_chunks * chunk_size``):
        cheaper to backpropagate through when the consumer ignores it (``TargetNetwork`` does).
        """
        single = emb.dim() == 1
        embs = emb.unsqueeze(0) if single else emb
        theta = list(theta) if theta is not None else self.theta()
        v = self.output_layer(theta)
        z = with_ones(self.features(embs, theta))
        # one product with V = [W; b] (not addmm with slices of it): the backward is then a single product too
        out = (z.reshape(-1, z.shape[-1]) @ v).reshape(embs.shape[0], -1)
        if truncate and out.shape[1] != self.n_outputs:
            out = out[:, : self.n_outputs]
        return out.reshape(-1) if single else out  # reshape, not [0]: its backward is free

    def _hidden(self, h: torch.Tensor, layers: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Activation, then each of ``layers`` (followed by the activation): the output layer's input."""
        act = activation(self.activation_name)
        if act is not None:
            h = act(h)
        for w, b in layers:
            h = h @ w + b
            if act is not None:
                h = act(h)
        return h

    @staticmethod
    def _layers(params: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(zip(params[0::2], params[1::2], strict=True))


class FullHyperNetwork(HyperNetwork):
    """MLP from the task embedding to all ``n_outputs`` target weights (the toy regression's hypernetwork)."""

    def __init__(self, n_outputs: int, emb_dim: int, hidden: Sequence[int] = (10, 10), activation_name: str = "relu",
                 emb_std: float = 1.0) -> None:
        super().__init__(n_outputs, emb_dim, emb_std, activation_name)
        self.hidden = tuple(int(h) for h in hidden)
        self.weights, self.biases, self.out_layer = _init_layers([emb_dim, *self.hidden, n_outputs])
        self.n_chunks, self.chunk_size = 1, self.n_outputs

    def features(self, embs, theta):
        layers = self._layers(theta[:-1])
        if not layers:
            return embs.unsqueeze(1)
        w0, b0 = layers[0]
        return self._hidden(embs @ w0 + b0, layers[1:]).unsqueeze(1)


class ChunkedHyperNetwork(HyperNetwork):
    """MLP from (task embedding, chunk embedding) to one chunk of ``chunk_size`` target weights.

    ``theta`` = [chunk embeddings (n_chunks x chunk_emb_dim), W0, b0, ..., V]. The first layer acts on the
    concatenation [e, c]; it is applied as e W0[:d] + c W0[d:] so the (task, chunk) pairs are never
    materialised: a batch of T embeddings gives a [T, n_chunks, hidden] tensor by broadcasting.
    """

    def __init__(self, n_outputs: int, emb_dim: int, chunk_size: int, chunk_emb_dim: int,
                 hidden: Sequence[int] = (10, 10), activation_name: str = "elu", emb_std: float = 1.0,
                 chunk_emb_std: float = 1.0) -> None:
        super().__init__(n_outputs, emb_dim, emb_std, activation_name)
        if chunk_size < 1 or chunk_emb_dim < 1:
            raise ConfigError(f"chunk_size and chunk_emb_dim must be >= 1, got {chunk_size}, {chunk_emb_dim}")
        self.chunk_size = int(chunk_size)
        self.chunk_emb_dim = int(chunk_emb_dim)
        self.n_chunks = math.ceil(n_outputs / chunk_size)
        self.hidden = tuple(int(h) for h in hidden)
        self.chunk_embeddings = nn.Parameter(torch.randn(self.n_chunks, chunk_emb_dim) * chunk_emb_std)
        self.weights, self.biases, self.out_layer = _init_layers([emb_dim + chunk_emb_dim, *self.hidden, chunk_size])

    def theta(self) -> list[nn.Parameter]:
        return [self.chunk_embeddings, *super().theta()]

    def features(self, embs, theta):
        chunks, layers = theta[0], self._layers(theta[1:-1])
        t, d = embs.shape[0], self.emb_dim
        if not layers:  # no hidden layer: the output layer reads [e, c] directly
            return torch.cat([embs.unsqueeze(1).expand(t, self.n_chunks, d),
                              chunks.unsqueeze(0).expand(t, self.n_chunks, self.chunk_emb_dim)], dim=2)
        w0, b0 = layers[0]
        # [T, 1, h] + [1, C, h]: every (task, chunk) pair through the first layer at once.
        h = (embs @ w0[:d]).unsqueeze(1) + (chunks @ w0[d:] + b0).unsqueeze(0)
        return self._hidden(h, layers[1:])


def build(n_outputs: int, emb_dim: int, hidden: Sequence[int], chunk_size: int | None, chunk_emb_dim: int,
          activation_name: str, emb_std: float = 1.0, chunk_emb_std: float = 1.0) -> HyperNetwork:
    """A chunked hypernetwork when ``chunk_size`` is set (and smaller than the target), else a full one."""
    if chunk_size and chunk_size < n_outputs:
        return ChunkedHyperNetwork(n_outputs, emb_dim, chunk_size, chunk_emb_dim, hidden, activation_name, emb_std,
                                   chunk_emb_std)
    return FullHyperNetwork(n_outputs, emb_dim, hidden, activation_name, emb_std)
