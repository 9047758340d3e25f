"""Hierarchical (ladder) VAE: what differs from the one-layer VAE. The registry contract
in test_models.py covers the rest once the variant is imported there."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import anomaly_vae.models.hvae  # noqa: F401  (registers "hvae")
from anomaly_vae.config import ModelConfig, TrainingConfig
from anomaly_vae.errors import ConfigError
from anomaly_vae.models import get_model
from anomaly_vae.models.hvae import precision_weighted
from anomaly_vae.training import train
from tests.conftest import correlated_normal, planted_anomalies


def build(shape=(6,), **overrides):
    config = ModelConfig(name="hvae", **({"hidden_dims": [16], "latent_dim": 3} | overrides))
    return get_model("hvae")(shape, config, torch.zeros(shape, dtype=torch.bool))


def noise(model, n: int, samples: int) -> torch.Tensor:
    return torch.randn(n, samples, model.noise_dim)


@pytest.mark.parametrize("shape", [(6,), (1, 4, 4)])
def test_shapes(shape):
    torch.manual_seed(0)
    model = build(shape, top_latent_dim=2)
    assert model.noise_dim == 3 + 2
    x = torch.randn(5, *shape)
    latent = model.sample_latent(x, noise(model, 5, 4))
    assert latent.z.shape == (5, 4, 3)
    assert latent.kl.shape == (5,)
    assert latent.log_weight_latent.shape == (5, 4)
    scores = model.scores(x, noise(model, 5, 4))
    assert tuple(scores) == model.score_names
    assert all(s.shape == (5,) and torch.isfinite(s).all() for s in scores.values())
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 3)
    torch.testing.assert_close(model.latent_mean(x), mu)
    assert model.reconstruct(x).shape == x.shape
    assert model.generate(7).shape == (7, *shape)


def test_needs_a_hidden_layer():
    with pytest.raises(ConfigError, match="hidden layer"):
        build(hidden_dims=[])


def test_kl_is_the_sum_of_two_positive_layer_kls():
    torch.manual_seed(0)
    model = build().eval()
    x, eps = torch.randn(10, 6), noise(model, 10, 3)
    kl1, kl2 = model.layer_kls(x, eps)
    assert kl1.shape == kl2.shape == (10,)
    assert (kl1 > 0).all() and (kl2 > 0).all()
    torch.testing.assert_close(model.sample_latent(x, eps).kl, kl1 + kl2)
    torch.testing.assert_close(model.loss_terms(x, eps)["kl"], (kl1 + kl2).mean())


def test_bottom_layer_kl_matches_a_monte_carlo_estimate():
    torch.manual_seed(0)
    model = build().eval()
    x, samples = torch.randn(3, 6), 100_000
    # One z2 per row (its noise repeated over the samples), many z1 given it.
    z2_noise = torch.randn(3, 1, model.top_latent_dim).expand(3, samples, -1)
    eps = torch.cat([z2_noise, torch.randn(3, samples, model.latent_dim)], dim=-1)
    with torch.no_grad():
        q = model.posterior(x, eps)
        closed, _ = q.layer_kls()
    posterior = torch.distributions.Normal(q.mu1, (0.5 * q.logvar1).exp())
    prior = torch.distributions.Normal(q.prior_mu1, (0.5 * q.prior_logvar1).exp())
    monte_carlo = (posterior.log_prob(q.z1) - prior.log_prob(q.z1)).sum(-1).mean(1)
    torch.testing.assert_close(closed, monte_carlo, atol=0.02, rtol=0.02)


def test_importance_weights_average_to_the_kl():
    # E_q[log q - log p] over both layers is the total KL: the IWAE weights and the ELBO's
    # KL term describe the same q and p.
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(3, 6)
    latent = model.sample_latent(x, noise(model, 3, 100_000))
    torch.testing.assert_close(-latent.log_weight_latent.mean(1), latent.kl, atol=0.03, rtol=0.02)


def test_precision_weighted_posterior_is_narrower_than_both_sources():
    torch.manual_seed(0)
    model = build()
    with torch.no_grad():
        q = model.posterior(torch.randn(20, 6), noise(model, 20, 4))
    up_logvar = q.up_logvar1.unsqueeze(1)
    assert (q.logvar1 < up_logvar).all() and (q.logvar1 < q.prior_logvar1).all()
    expected_var = 1 / (1 / up_logvar.exp() + 1 / q.prior_logvar1.exp())
    torch.testing.assert_close(q.logvar1.exp(), expected_var)
    up_mu = q.up_mu1.unsqueeze(1)
    expected_mu = expected_var * (up_mu / up_logvar.exp() + q.prior_mu1 / q.prior_logvar1.exp())
    torch.testing.assert_close(q.mu1, expected_mu)


def test_precision_weighting_is_stable_for_extreme_variances():
    mu, logvar = precision_weighted(
        torch.tensor([1.0, 1.0]),
        torch.tensor([-8.0, 8.0]),
        torch.tensor([-1.0, -1.0]),
        torch.tensor([8.0, -8.0]),
    )
    assert torch.isfinite(mu).all() and torch.isfinite(logvar).all()
    torch.testing.assert_close(mu, torch.tensor([1.0, -1.0]), atol=1e-6, rtol=0)  # precise wins


def test_iwae_bound_is_tighter_than_elbo_on_average():
    torch.manual_seed(0)
    model = build()
    scores = model.scores(torch.randn(200, 6), noise(model, 200, 64))
    assert scores["negative_iwae_bound"].mean() <= scores["negative_elbo"].mean()


def test_iwae_bound_reaches_log_p_x_estimated_by_sampling_the_prior():
    # log p(x) = log E_{z2 ~ N(0, I), z1 ~ p(z1|z2)} p(x | z1), estimated here without q:
    # with many samples the importance-weighted bound must reach it (Burda et al., 2016),
    # and the ELBO stay below. A wrong prior, proposal or log K term would miss it.
    torch.manual_seed(0)
    model = build(shape=(3,), hidden_dims=[8], latent_dim=1, top_latent_dim=1).eval()
    model.decoder_log_variance.fill_(math.log(0.5))  # wide: prior sampling then hits x
    x = torch.randn(6, 3)
    with torch.no_grad():
        z2 = torch.randn(400_000, 1)
        mu, logvar = model.prior_z1(z2)
        output = model.decode(mu + torch.exp(0.5 * logvar) * torch.randn_like(mu))
    likelihood = torch.distributions.Normal(output, math.sqrt(0.5))
    log_likelihood = likelihood.log_prob(x[:, None]).sum(-1).double()  # (6, samples)
    log_p = torch.logsumexp(log_likelihood, 1) - math.log(log_likelihood.shape[1])
    scores = model.scores(x, noise(model, 6, 20_000))
    torch.testing.assert_close(-scores["negative_iwae_bound"].double(), log_p, atol=0.1, rtol=0)
    assert (-scores["negative_elbo"] <= -scores["negative_iwae_bound"]).all()


def test_loss_falls_and_state_dict_round_trip_gives_same_scores():
    torch.manual_seed(0)
    model = build()
    x = torch.randn(256, 2) @ torch.randn(2, 6)
    fixed = torch.zeros(256, 1, model.noise_dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss_terms(x, fixed)["loss"].item()
    for _ in range(100):
        optimizer.zero_grad()
        model.loss_terms(x)["loss"].backward()
        optimizer.step()
    last = model.loss_terms(x, fixed)["loss"].item()
    assert math.isfinite(last) and last < first - 1.0

    copy = build()
    copy.load_state_dict(model.state_dict())
    eps = noise(model, 8, 4)
    for key, value in model.scores(x[:8], eps).items():
        torch.testing.assert_close(copy.scores(x[:8], eps)[key], value)


def test_ranks_planted_anomalies_above_normals():
    torch.manual_seed(0)
    rows = torch.as_tensor(correlated_normal(600, seed=0), dtype=torch.float32)
    model = build(hidden_dims=[32], latent_dim=2, top_latent_dim=2)
    config = TrainingConfig(epochs=20, learning_rate=3e-3, batch_size=64, patience=10)
    train(model, rows[:540], rows[540:], config)
    test = torch.as_tensor(
        np.vstack([correlated_normal(300, seed=1), planted_anomalies(30, seed=2)]),
        dtype=torch.float32,
    )
    labels = [0] * 300 + [1] * 30
    scores = model.scores(test, noise(model, len(test), 8))
    assert roc_auc_score(labels, scores["negative_elbo"]) > 0.9
