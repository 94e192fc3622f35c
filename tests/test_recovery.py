"""The one recovery recipe (compress/recovery.py) and best-epoch selection (train.fit's select)."""
import copy

import pytest
import torch
from torch import nn

from compress import recovery as RV
from compress.distill import DistillError, RecoverConfig, held_out_score
from compress.train import TrainConfig, fit


def test_plan_scales_batch_and_learning_rate_with_the_photos():
    few = RV.plan(RecoverConfig(epochs=1), 512, labelled=True)
    some = RV.plan(RecoverConfig(epochs=1), 2000, labelled=True)
    many = RV.plan(RecoverConfig(epochs=15), 50_000, labelled=True)
    assert many.config.batch_size == 128 and many.config.lr == pytest.approx(0.1)
    assert many.holdout == 1000 and many.config.warmup_epochs == 0.5
    assert few.config.batch_size < some.config.batch_size <= many.config.batch_size
    assert few.config.lr < some.config.lr < many.config.lr          # short runs stay near the start
    for p in (few, some, many):
        assert (p.steps_per_epoch >= RV.MIN_STEPS_PER_EPOCH or p.config.batch_size == RV.MIN_BATCH) and p.config.planned
        assert (p.config.temperature, p.config.alpha, p.config.attention) == (2.0, 0.5, 50.0)
        assert p.n_train + p.holdout == p.n_photos
        assert "batch" in " ".join(p.reasons)


def test_plan_keeps_what_the_user_gave():
    given = RecoverConfig(epochs=2, lr=0.003, batch_size=32, temperature=4.0, alpha=0.9, attention=0.0,
                          warmup_epochs=0.0, holdout=0)
    p = RV.plan(given, 5000, labelled=True)
    assert p.config == given and p.holdout == 0 and p.reasons == ()


def test_label_free_photos_train_with_alpha_one_and_a_given_alpha_below_one_is_a_message():
    assert RV.plan(RecoverConfig(), 1000, labelled=False).config.alpha == 1.0
    with pytest.raises(DistillError, match="have no labels.*α = 0.5"):
        RV.plan(RecoverConfig(alpha=0.5), 1000, labelled=False)
    with pytest.raises(DistillError, match="no labels.*fine-tuning trains on labels"):
        RV.plan(RecoverConfig(method="finetune"), 1000, labelled=False)


def test_too_few_photos_for_the_held_out_slice_is_a_message():
    with pytest.raises(DistillError, match=r"at least 48 training photos .* there are 40"):
        RV.plan(RecoverConfig(), 40, labelled=True)
    assert RV.plan(RecoverConfig(holdout=0), 40, labelled=True).n_train == 40


def test_minutes_become_epochs_from_a_timed_step():
    # 10,000 photos: 9,000 train at batch 128 = 71 steps; 0.5 s a step -> 35.5 s an epoch
    p = RV.plan(RecoverConfig(minutes=3), 10_000, labelled=True, step_seconds=0.5)
    assert p.steps_per_epoch == 71 and p.config.epochs == int(180 // (71 * 0.5)) and p.config.minutes is None
    with pytest.raises(DistillError, match="holds 8% of one epoch"):
        RV.plan(RecoverConfig(minutes=0.05), 10_000, labelled=True, step_seconds=0.5)
    with pytest.raises(DistillError, match="shorter than one training step"):
        RV.plan(RecoverConfig(minutes=0.05), 10_000, labelled=True, step_seconds=5.0)


def _batches(n=4, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 8, 8, generator=g), torch.randint(0, 3, (size,), generator=g)) for _ in range(n)]


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


@pytest.mark.parametrize("scores, best", [([10.0, 5.0, 4.0, 3.0], 0), ([1.0, 2.0, 5.0, 3.0], 2)])
def test_fit_keeps_the_best_scoring_weights_the_start_included(scores, best):
    model = _net()
    start = copy.deepcopy(model.state_dict())
    states, calls = [], iter(scores)

    def select(m):
        states.append(copy.deepcopy(m.state_dict()))
        return next(calls)
    res = fit(model, _batches(), TrainConfig(epochs=3, lr=0.5, warmup_epochs=0, channels_last=False),
              torch.device("cpu"), select=select)
    assert res.best_epoch == best and res.start_score == scores[0]
    assert [r.held_out for r in res.history] == scores[1:]
    kept = model.state_dict()
    assert all(torch.equal(kept[k], states[best][k]) for k in kept)
    if best == 0:
        assert all(torch.equal(kept[k], start[k]) for k in kept)         # training only hurt: the start stays


def test_held_out_score_without_labels_is_agreement_with_the_teacher():
    teacher = _net().eval()
    unlabelled = [(x, torch.full_like(y, -1)) for x, y in _batches()]
    score = held_out_score(unlabelled, teacher, torch.device("cpu"))
    assert score(copy.deepcopy(teacher)) == 100.0
    labelled = held_out_score(_batches(), teacher, torch.device("cpu"))
    assert 0.0 <= labelled(teacher) <= 100.0


def test_a_minutes_budget_shorter_than_an_epoch_is_one_message_before_any_training(cifar_asset, cifar_tar):
    from test_cli import run_cli
    r = run_cli("run", "--model", "resnet18_cifar10", "--prune-ratio", "0.5", "--recover-minutes", "0.05",
                "--train-data", str(cifar_tar), "--train-limit", "5000", "--data", "none", "--runs", "2",
                "--warmup", "1", "--no-history")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "of one epoch" in r.stderr and "Give at least" in r.stderr
    r = run_cli("run", "--model", "resnet18_cifar10", "--prune-ratio", "0.5", "--recover-minutes", "1",
                "--distill-epochs", "2", "--train-data", str(cifar_tar))
    assert r.returncode == 2 and "Choose one recovery" in r.stderr


@pytest.mark.parametrize("prefer_reestimated", [True, False])
def test_the_held_out_photos_choose_between_trained_and_reestimated_batchnorm(prefer_reestimated):
    from compress.distill import with_batchnorm_choice
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    photos = [(torch.randn(16, 3, 4, 4) + 5.0, torch.zeros(16, dtype=torch.long)) for _ in range(4)]
    trained = model[1].running_mean.clone()                 # zeros: what "training" left

    def score(m):                                           # a stand-in for held-out top-1
        far = float(m[1].running_mean.abs().sum())
        return far if prefer_reestimated else -far
    choose = with_batchnorm_choice(score, photos, max_images=64)
    chosen = choose(model)
    moved = not torch.equal(model[1].running_mean, trained)
    assert moved == prefer_reestimated                      # the better statistics stay in the model
    assert chosen == score(model)
