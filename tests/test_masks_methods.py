"""The mask-family methods on synthetic data: old tasks bit-identical, the shared pretrained baseline,
frozen binary masks, PackNet's ownership, HAT's protection, storage accounting, bad configs."""

from __future__ import annotations

import pytest
import torch

from forgetless import methods, runner
from forgetless.errors import ConfigError
from forgetless.methods.pretrained import baseline_parameters, parameter_ratio
from forgetless.nn.masks import masked_layers
from forgetless.nn.taskwise import task_norms
from forgetless.training import Context

from conftest import learn_task_by_task, synthetic_benchmark

pytestmark = pytest.mark.usefixtures("one_thread")

QUICK = {"epochs": 2, "pretrain_epochs": 2, "hidden": (24, 24), "batch_size": 32}
CONFIGS = {
    "classifier-only": QUICK,
    "individual": QUICK,
    "piggyback": QUICK,
    "affine-simple": QUICK,
    "affine-full": {**QUICK, "surrogate": "sigmoid", "channel_wise": True},
    "packnet": {**QUICK, "retrain_epochs": 1, "prune_last": True},
    "hat": {"epochs": 6, "hidden": (24, 24), "lr_patience": 2},
}



@pytest.fixture(scope="module")
def bench():
    torch.manual_seed(0)
    return synthetic_benchmark("task", n_tasks=3, classes_per_task=2, per_class=40)


def _learn_all(name, bench, **overrides):
    torch.manual_seed(0)  # as the runner does before building the method
    method = methods.create(name, bench.info(), **{**CONFIGS[name], **overrides})
    return method, learn_task_by_task(method, bench)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_old_tasks_stay_bit_identical(name, bench):
    _, history = _learn_all(name, bench)
    for j in range(len(bench.tasks)):
        for later in history[j + 1:]:
            assert torch.equal(later[j], history[j][j]), f"{name}: task {j} changed"


def test_transfer_methods_share_the_pretrained_baseline(bench):
    first = {}
    for name in ("classifier-only", "individual", "piggyback", "affine-simple"):
        torch.manual_seed(0)
        method = methods.create(name, bench.info(), **CONFIGS[name])
        method.train()
        method.learn(bench.tasks[0], Context(generator=torch.Generator().manual_seed(100), n_tasks=3))
        method.eval()
        with torch.no_grad():
            first[name] = (method.predict(bench.tasks[0].test.inputs(), 0),
                           torch.cat([p.detach().flatten() for p in method.backbone.parameters()]))
    ref_out, ref_w = first["classifier-only"]
    for out, w in first.values():
        assert torch.equal(out, ref_out) and torch.equal(w, ref_w)


@pytest.mark.parametrize("name", ["piggyback", "affine-full"])
def test_masks_are_binary_frozen_and_the_backbone_untouched(name, bench):
    torch.manual_seed(0)
    method = methods.create(name, bench.info(), **CONFIGS[name])
    method.learn(bench.tasks[0], Context(generator=torch.Generator().manual_seed(0), n_tasks=3))
    pretrained = {k: v.clone() for k, v in method.backbone.state_dict().items()}
    for i in (1, 2):
        method.learn(bench.tasks[i], Context(generator=torch.Generator().manual_seed(i), task_index=i, n_tasks=3))
    layers = masked_layers(method.backbone)
    assert len(layers) == 2
    for layer in layers:
        assert torch.equal(layer.weight, pretrained[_key(method, layer) + ".weight"])
        for t in (1, 2):
            state = layer.state(t)
            assert state.scores is None and state.mask.dtype == torch.bool
            assert not any(p.requires_grad for p in state.parameters())
    report = method.report()["masks"]
    assert set(report) == {"1", "2"} and all(0 <= v["ones"] <= 1 for v in report["1"].values())


def _key(method, layer):
    return next(n for n, m in method.backbone.named_modules() if m is layer)


def test_affine_storage_is_one_bit_per_weight_plus_ks_and_batch_norm(bench):
    method, _ = _learn_all("affine-simple", bench)
    layers = masked_layers(method.backbone)
    entries = sum(layer.weight.numel() for layer in layers)
    bn = sum(4 * n.num_features for n in task_norms(method.backbone))
    ks = 2 * len(layers)  # k1, k2 learned; k0 fixed before batch norm, k3 = 0
    base = baseline_parameters(method.backbone)
    assert base == method.baseline_params == (64 * 24 + 24) + (24 * 24 + 24) + 2 * (2 * 24)  # + one BN slot
    expected = (base + 2 * (entries / 32 + ks + bn)) / base
    storage = method.storage()
    assert storage["params_ratio"] == pytest.approx(expected)
    assert storage["mask_bits"] == 2 * entries
    assert parameter_ratio(100, [320], [10]) == pytest.approx(1.2)


def test_individual_and_classifier_only_storage(bench):
    ind, _ = _learn_all("individual", bench)
    assert ind.storage()["params_ratio"] == pytest.approx(3.0)
    clf, _ = _learn_all("classifier-only", bench)
    assert clf.storage()["params_ratio"] == 1.0


def test_packnet_owns_disjoint_weights_and_freezes_old_ones(bench):
    method, _ = _learn_all("packnet", bench, prune=(0.5, 0.75))
    for layer in masked_layers(method.backbone):
        owner = layer.packnet_owner
        n = owner.numel()
        first = int((owner == 1).sum())
        assert first == pytest.approx(0.5 * n, abs=2)  # the first task keeps half
        assert set(owner.unique().tolist()) <= {0, 1, 2, 3}
        assert torch.all(layer.weight[owner == 0] == 0)  # released weights are zero
        for t in range(3):  # task t sees what tasks 1..t+1 own
            assert torch.equal(layer.state(t).mask, (owner > 0) & (owner <= t + 1))
    assert method.storage()["owner_bits_per_weight"] == 2
    assert "owners" in method.report()


def test_packnet_does_not_prune_the_last_task_by_default(bench):
    method, _ = _learn_all("packnet", bench, prune_last=False)
    for layer in masked_layers(method.backbone):
        assert int((layer.packnet_owner == 0).sum()) == 0  # the last task took every free weight


def test_hat_cumulates_masks_and_blocks_used_weights(bench):
    torch.manual_seed(0)
    method = methods.create("hat", bench.info(), **CONFIGS["hat"])
    method.learn(bench.tasks[0], Context(generator=torch.Generator().manual_seed(0), n_tasks=3))
    cum = [c.clone() for c in method.cumulated()]
    masks0 = method.masks(0, method.config.smax)
    assert all(torch.equal(c, m) for c, m in zip(cum, masks0, strict=True))
    w_before = [u.layer.weight.detach().clone() for u in method.units]
    method.learn(bench.tasks[1], Context(generator=torch.Generator().manual_seed(1), task_index=1, n_tasks=3))
    masks1 = method.masks(1, method.config.smax)
    assert all(torch.equal(c, torch.maximum(a, b)) for c, a, b in zip(method.cumulated(), cum, masks1, strict=True))
    # weights between two units fully used by task 0 did not move
    post, pre = cum[1], cum[0]
    used = (post.view(-1, 1) == 1) & (pre.view(1, -1) == 1)
    assert used.any()
    assert torch.equal(method.units[1].layer.weight[used], w_before[1][used])
    assert method.report()["units_used"].keys() == {"0", "1"}


def test_hat_refuses_normalised_backbones_and_other_scenarios():
    info = synthetic_benchmark("task", n_tasks=2, shape=(3, 8, 8)).info()
    with pytest.raises(ConfigError, match="normalisation layer 'bn1'"):
        methods.create("hat", info, backbone="resnet18")
    with pytest.raises(ConfigError, match="scenario"):
        methods.create("piggyback", synthetic_benchmark("class", n_tasks=2).info())


def test_bad_mask_configs_are_one_line_errors(bench):
    with pytest.raises(ConfigError, match="prune"):
        methods.create("packnet", bench.info(), prune=(1.5,))
    with pytest.raises(ConfigError, match="threshold"):
        methods.create("piggyback", bench.info(), mask_scale=1e-3)
    with pytest.raises(ConfigError, match="surrogate"):
        methods.create("affine-simple", bench.info(), surrogate="tanh")


def test_a_masked_run_checkpoints_and_resumes(bench, tmp_path):
    cfg = {**QUICK, "epochs": 1, "pretrain_epochs": 1}
    full = runner.run("affine-full", bench, seed=1, config=cfg, quiet=True)
    out = tmp_path / "run"
    runner.run("affine-full", bench, seed=1, config=cfg, out=out, quiet=True, keep_checkpoints=True)
    (out / "checkpoints" / "task-3.pt").unlink()
    (out / "results.json").unlink()
    resumed = runner.run("affine-full", bench, seed=1, config=cfg, out=out, resume=True, quiet=True)
    assert resumed["accuracy"] == full["accuracy"]
    assert resumed["storage"]["params_ratio"] == pytest.approx(full["storage"]["params_ratio"])


def test_hat_sparsity_regulariser_frees_units(bench):
    used = {}
    for lamb in (0.0, 4.0):
        torch.manual_seed(0)
        method = methods.create("hat", bench.info(), **{**CONFIGS["hat"], "lamb": lamb, "lr_patience": 0})
        method.learn(bench.tasks[0], Context(generator=torch.Generator().manual_seed(0), n_tasks=3))
        used[lamb] = sum(float((m > 0.5).float().mean()) for m in method.masks(0, method.config.smax))
    assert used[4.0] < used[0.0]
