"""Continual-learning methods: ``create(name, benchmark_info, backbone=None, **config) -> Method``.

Each module registers its methods with ``@register``; every module of this package is imported here,
so adding a method is adding a module. One file per method family, named after the paper's method:

=========================================  ======================  ===============================================
registry name                              file                    paper
=========================================  ======================  ===============================================
ccgn                                       ccgn.py                 Abati et al. 2020, conditional channel gating
dgmw, dgma                                 dgm.py                  Ostapenko et al. 2019, dynamic generative memory
spacenet, static-sparse, spacenet-reh.     spacenet.py             Sokar et al. 2021, SpaceNet
hnet                                       hnet.py                 von Oswald et al. 2020, task-conditioned hypernets
hnet-tir, hnet-r                           hnet_replay.py          von Oswald et al. 2020 (+ VAE replay)
piggyback, affine-simple, affine-full      piggyback.py            Mallya et al. 2018; Mancini et al. 2018
packnet                                    packnet.py              Mallya & Lazebnik 2018, PackNet
hat                                        hat.py                  Serra et al. 2018, hard attention to the task
classifier-only, individual                pretrained.py           Mancini et al. 2018's references
ewc, online-ewc                            ewc.py                  Kirkpatrick et al. 2017; Schwarz et al. 2018
si                                         si.py                   Zenke et al. 2017, synaptic intelligence
mas                                        mas.py                  Aljundi et al. 2018, memory-aware synapses
lwf                                        lwf.py                  Li & Hoiem 2017, learning without forgetting
replay                                     replay.py               experience replay (Chaudhry et al. 2019)
agem                                       agem.py                 Chaudhry et al. 2019, A-GEM
icarl                                      icarl.py                Rebuffi et al. 2017, iCaRL
dgr, dgr-distill                           dgr.py                  Shin et al. 2017, deep generative replay
finetune                                   finetune.py             fine-tuning (lower bound)
joint                                      joint.py                joint training (upper bound)
=========================================  ======================  ===============================================

Shared bases: ``base.py`` (the Method protocol, registry), ``sequential.py`` (a single-head classifier
trained task after task), ``rehearsal.py`` (replay and distillation from a previous model),
``published_strengths.py`` (the baselines' published regularisation strengths).
"""

from __future__ import annotations

import importlib
import pkgutil

from ..training import Batch, Context, TrainConfig, label_mask, make_optimizer, masked_logits
from .base import METHODS, Method, create, register, resolve_config

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "METHODS", "Batch", "Context", "Method", "TrainConfig", "create", "label_mask", "make_optimizer",
    "masked_logits", "register", "resolve_config",
]
