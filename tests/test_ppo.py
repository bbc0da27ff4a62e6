"""trainers.ppo: GAE (eqs. 8-9) for the leader and for followers with inactive TTIs and churn,
masked entropy (eq. 13), k3 KL, the clipped losses (eq. 10), explained variance, LR schedule."""

import math

import pytest
import torch

from trainers.ppo import (
    cosine_with_warmup,
    explained_variance,
    gae,
    kl_to_reference,
    lr_scheduler,
    masked_entropy,
    normalize_advantages,
    ppo_losses,
)
from trainers.stackelberg.config import StackelbergPPOConfig

F64 = torch.float64
REWARDS = torch.tensor([[1.0, 0.0, 2.0]], dtype=F64)  # (1, 3)
VALUES = torch.tensor([[0.5, 0.2, 0.1]], dtype=F64)


def close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=F64), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------- GAE
def test_gae_three_steps_by_hand():
    adv, ret = gae(REWARDS, VALUES, gamma=0.9, lam=0.8)
    # t=2: delta = 2 + 0.9*0 - 0.1 = 1.9;            A = 1.9
    # t=1: delta = 0 + 0.9*0.1 - 0.2 = -0.11;        A = -0.11 + 0.72*1.9 = 1.258
    # t=0: delta = 1 + 0.9*0.2 - 0.5 = 0.68;         A = 0.68 + 0.72*1.258 = 1.58576
    close(adv, [[1.58576, 1.258, 1.9]])
    close(ret, [[1.58576 + 0.5, 1.258 + 0.2, 1.9 + 0.1]])  # eq. 9: R = A + V


def test_gae_lambda_one_is_discounted_return_minus_value():
    adv, ret = gae(REWARDS, VALUES, gamma=0.9, lam=1.0)
    # G2 = 2, G1 = 0 + 0.9*2 = 1.8, G0 = 1 + 0.9*1.8 = 2.62
    close(ret, [[2.62, 1.8, 2.0]])
    close(adv, [[2.62 - 0.5, 1.8 - 0.2, 2.0 - 0.1]])


def test_gae_lambda_zero_is_the_td_error():
    adv, _ = gae(REWARDS, VALUES, gamma=0.9, lam=0.0)
    close(adv, [[0.68, -0.11, 1.9]])


def test_gae_last_value_bootstraps_a_truncated_episode():
    adv, _ = gae(REWARDS, VALUES, gamma=0.9, lam=0.0, last_value=torch.tensor([1.0], dtype=F64))
    close(adv[:, 2], [2.0 + 0.9 * 1.0 - 0.1])


def test_gae_follower_links_across_an_inactive_step():
    rewards = torch.tensor([[1.0, 100.0, 2.0]], dtype=F64)  # the inactive step's numbers
    values = torch.tensor([[0.5, 50.0, 0.1]], dtype=F64)  # are ignored
    active = torch.tensor([[True, False, True]])
    adv, ret = gae(rewards, values, gamma=0.9, lam=0.8, active=active)
    # t=2: A = 2 - 0.1 = 1.9; t=0 links to t=2 with one gamma:
    # delta = 1 + 0.9*0.1 - 0.5 = 0.59; A = 0.59 + 0.72*1.9 = 1.958
    close(adv, [[1.958, 0.0, 1.9]])
    close(ret, [[2.458, 0.0, 2.0]])


def test_gae_follower_restart_breaks_the_chain():
    active = torch.tensor([[True, False, True]])
    starts = torch.tensor([[True, False, True]])  # a new UE takes the slot at t=2
    adv, _ = gae(REWARDS, VALUES, gamma=0.9, lam=0.8, active=active, starts=starts)
    close(adv, [[1.0 - 0.5, 0.0, 1.9]])  # t=0 is the last step of its trajectory: V_next = 0


def test_gae_rows_are_independent_and_any_leading_shape_works():
    gen = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(2, 3, 5, generator=gen), torch.randn(2, 3, 5, generator=gen)
    active = torch.rand(2, 3, 5, generator=gen) > 0.3
    starts = torch.rand(2, 3, 5, generator=gen) > 0.7
    adv, ret = gae(rewards, values, gamma=0.99, lam=0.95, active=active, starts=starts)
    for b in range(2):
        for i in range(3):
            row = gae(rewards[b, i][None], values[b, i][None], gamma=0.99, lam=0.95,
                      active=active[b, i][None], starts=starts[b, i][None])
            assert torch.equal(adv[b, i], row[0][0]) and torch.equal(ret[b, i], row[1][0])


# ------------------------------------------------------------------------ entropy, KL
def test_masked_entropy_of_uniform_over_k_allowed_is_log_k():
    logits = torch.tensor([[0.0, 9.0, 0.0, 0.0, -3.0]])  # only the zeros are allowed
    mask = torch.tensor([[True, False, True, True, False]])
    torch.testing.assert_close(masked_entropy(logits, mask), torch.tensor([math.log(3)]))


def test_masked_entropy_of_one_allowed_token_is_zero_without_nan():
    logits = torch.randn(2, 6, requires_grad=True)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[:, 4] = True  # e.g. the {EOS} padding past an action's end
    entropy = masked_entropy(logits, mask, temperature=0.3)
    assert entropy.tolist() == [0.0, 0.0]
    entropy.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_masked_entropy_at_temperature_matches_categorical():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 7, generator=gen)
    mask = torch.rand(4, 7, generator=gen) > 0.4
    mask[:, 0] = True
    reference = torch.distributions.Categorical(
        logits=logits.masked_fill(~mask, float("-inf")) / 0.5).entropy()
    torch.testing.assert_close(masked_entropy(logits, mask, temperature=0.5), reference)


def test_k3_kl_is_zero_for_equal_policies():
    logp = torch.log(torch.tensor([[0.5, 0.25, 1.0]]))
    assert kl_to_reference(logp, logp).tolist() == [0.0]


def test_k3_kl_is_non_negative_and_matches_hand_value():
    gen = torch.Generator().manual_seed(2)
    logp, ref = -torch.rand(64, 5, generator=gen) * 4, -torch.rand(64, 5, generator=gen) * 4
    assert (kl_to_reference(logp, ref) >= 0).all()
    # one token with ref/pi = 2: k3 = 2 - 1 - log 2
    kl = kl_to_reference(torch.tensor([[math.log(0.25)]]), torch.tensor([[math.log(0.5)]]))
    torch.testing.assert_close(kl, torch.tensor([1.0 - math.log(2)]))


def test_k3_kl_ignores_tokens_outside_the_token_mask():
    logp, ref = torch.tensor([[-1.0, -2.0, -5.0]]), torch.tensor([[-1.5, -1.0, -0.1]])
    token_mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(kl_to_reference(logp, ref, token_mask),
                               kl_to_reference(logp[:, :2], ref[:, :2]))


# ---------------------------------------------------------------------------- eq. 10
def batch(new_logp, old_logp, adv, new_v=None, old_v=None, ret=None):
    new_logp, old_logp = torch.tensor(new_logp, dtype=F64), torch.tensor(old_logp, dtype=F64)
    zeros = torch.zeros_like(new_logp)

    def as_t(x):
        return zeros if x is None else torch.tensor(x, dtype=F64)

    return dict(new_logp_action=new_logp, old_logp_action=old_logp,
                advantages=torch.tensor(adv, dtype=F64), new_values=as_t(new_v),
                old_values=as_t(old_v), returns=as_t(ret), entropy=zeros, kl=zeros)


RAW = StackelbergPPOConfig(normalize_advantages=False)


def test_ratio_one_gives_minus_mean_advantage_and_zero_diagnostics():
    inputs = batch([-3.0, -1.5, -0.2], [-3.0, -1.5, -0.2], [1.0, -2.0, 0.5])
    out = ppo_losses(**inputs, config=RAW)
    assert out["pg_loss"] == -inputs["advantages"].mean()
    assert out["clipfrac"] == 0 and out["approx_kl"] == 0
    assert out["ratio_mean"] == 1 and out["ratio_max"] == 1


def test_positive_advantage_gain_is_clipped_at_one_plus_eps():
    out = ppo_losses(**batch([math.log(1.5)], [0.0], [2.0]), config=RAW)  # ratio 1.5, eps 0.2
    assert out["pg_loss"].item() == pytest.approx(-1.2 * 2.0, abs=1e-12)
    assert out["clipfrac"] == 1


def test_negative_advantage_keeps_the_unclipped_ratio():
    out = ppo_losses(**batch([math.log(1.5)], [0.0], [-1.0]), config=RAW)
    assert out["pg_loss"].item() == pytest.approx(1.5, abs=1e-12)  # the pessimistic bound


def test_value_loss_clipped_by_hand():
    inputs = batch([0.0, 0.0], [0.0, 0.0], [0.0, 0.0], new_v=[1.5, 1.5], old_v=[1.0, 1.0],
                   ret=[2.0, 1.0])
    out = ppo_losses(**inputs, config=RAW)
    # row 0: unclipped (1.5-2)^2 = 0.25, clipped (1.2-2)^2 = 0.64 -> 0.64
    # row 1: unclipped (1.5-1)^2 = 0.25, clipped (1.2-1)^2 = 0.04 -> 0.25
    assert out["v_loss"].item() == pytest.approx(0.5 * (0.64 + 0.25) / 2, abs=1e-12)


def test_total_loss_combines_the_terms_with_config_coefficients():
    inputs = batch([-1.0, -2.0], [-1.1, -1.9], [1.0, -1.0], new_v=[0.3, 0.1],
                   old_v=[0.2, 0.2], ret=[1.0, 0.0])
    inputs["entropy"], inputs["kl"] = torch.tensor([2.0, 1.0], dtype=F64), torch.tensor(
        [0.1, 0.3], dtype=F64)
    out = ppo_losses(**inputs, config=RAW)
    expected = (out["pg_loss"] + 0.5 * out["v_loss"] - 0.01 * 1.5 + 0.02 * 0.2)
    torch.testing.assert_close(out["loss"], expected)
    assert out["entropy_loss"].item() == 1.5 and out["kl_loss"].item() == pytest.approx(0.2)


def test_single_element_minibatch_normalisation_has_no_nan():
    assert normalize_advantages(torch.tensor([3.0])).tolist() == [3.0]
    assert normalize_advantages(torch.tensor([2.0, 2.0])).tolist() == [0.0, 0.0]
    out = ppo_losses(**batch([-1.0], [-1.2], [3.0]), config=StackelbergPPOConfig())
    assert all(torch.isfinite(value).all() for value in out.values())


# ------------------------------------------------------------------- diagnostics, LR
def test_explained_variance_bounds():
    returns = torch.tensor([1.0, 2.0, 3.0, 6.0])
    assert explained_variance(returns.clone(), returns) == 1.0
    assert explained_variance(torch.full_like(returns, 3.0), returns) == 0.0  # the mean
    assert math.isnan(explained_variance(returns, torch.ones(4)))


def test_cosine_with_warmup_factors():
    assert [cosine_with_warmup(s, 10) for s in (0, 5, 10, 12)] == pytest.approx([1, 0.5, 0, 0])
    assert [cosine_with_warmup(s, 12, warmup=2) for s in (0, 1, 2, 7)] == pytest.approx(
        [0, 0.5, 1, 0.5])


@pytest.mark.parametrize("name, factor", [
    ("cosine", lambda s: cosine_with_warmup(s, 10, warmup=3)),
    ("linear", lambda s: s / 3 if s < 3 else (10 - s) / 7),
    ("constant_with_warmup", lambda s: min(s / 3, 1.0))])
def test_lr_scheduler_is_get_scheduler_with_the_design_curves(name, factor):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched, out = lr_scheduler(opt, name, total=10, warmup=3), []
    for _ in range(11):  # steps 0..total, one per epoch
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert out == pytest.approx([1e-3 * factor(s) for s in range(11)], abs=1e-15)
    with pytest.raises(ValueError, match="lr_scheduler_type = 'cosine_with_min_lr' is invalid"):
        lr_scheduler(opt, "cosine_with_min_lr", total=10)
