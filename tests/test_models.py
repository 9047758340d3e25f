"""Contract over the registry: every variant gets the same checks (shapes, loss
falls, losses built as stated, save/load). Per-variant tests only for what differs."""

import math

import pytest
import torch

from anomaly_vae.config import ModelConfig
from anomaly_vae.errors import ConfigError
from anomaly_vae.models import available_models, get_model

VARIANTS = available_models()


def build(name: str, shape=(6,), **overrides):
    config = ModelConfig(name=name, hidden_dims=[16], latent_dim=3, **overrides)
    return get_model(name)(shape, config, torch.zeros(shape, dtype=torch.bool))


def test_unknown_model_lists_the_available_ones():
    with pytest.raises(ConfigError, match=r"unknown model 'nope'; available: .*vae"):
        get_model("nope")


@pytest.mark.parametrize("name", VARIANTS)
def test_shapes(name):
    model = build(name)
    x = torch.randn(5, 6)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 3)
    assert model.decode(mu).shape == (5, 6)
    scores = model.scores(x, torch.randn(5, 4, 3))
    assert set(scores) == {"reconstruction_error", "negative_elbo", "negative_iwae_bound"}
    assert all(s.shape == (5,) and torch.isfinite(s).all() for s in scores.values())


@pytest.mark.parametrize("name", VARIANTS)
def test_loss_falls_on_small_data(name):
    torch.manual_seed(0)
    model = build(name)
    x = torch.randn(256, 2) @ torch.randn(2, 6)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss_terms(x, noise=torch.zeros(256, 1, 3))["loss"].item()
    for _ in range(150):
        optimizer.zero_grad()
        model.loss_terms(x)["loss"].backward()
        optimizer.step()
    last = model.loss_terms(x, noise=torch.zeros(256, 1, 3))["loss"].item()
    assert math.isfinite(last) and last < first - 1.0


@pytest.mark.parametrize("name", VARIANTS)
def test_state_dict_round_trip_gives_same_scores(name):
    model, copy = build(name), build(name)
    copy.load_state_dict(model.state_dict())
    x, noise = torch.randn(8, 6), torch.randn(8, 4, 3)
    for key, value in model.scores(x, noise).items():
        torch.testing.assert_close(copy.scores(x, noise)[key], value)


def test_loss_is_reconstruction_plus_beta_times_kl():
    torch.manual_seed(0)
    x, noise = torch.randn(10, 6), torch.randn(10, 1, 3)
    for beta in (0.25, 1.0, 4.0):
        terms = build("vae", beta=beta).loss_terms(x, noise)
        assert terms["kl"] > 0
        torch.testing.assert_close(terms["loss"], terms["reconstruction"] + beta * terms["kl"])


def test_kl_matches_a_monte_carlo_estimate():
    mu, logvar = torch.tensor([[0.5, -1.0]]), torch.tensor([[-0.5, 0.3]])
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
    z = q.sample((200_000,))
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean()
    closed = get_model("vae").kl_divergence(mu, logvar)
    assert closed.item() == pytest.approx(monte_carlo.item(), abs=0.01)


def test_gaussian_and_bernoulli_likelihoods_are_exact_log_densities():
    shape = (3,)
    binary = torch.tensor([False, True, True])
    model = get_model("vae")(shape, ModelConfig(hidden_dims=[4], latent_dim=2), binary)
    with torch.no_grad():
        model.decoder_log_variance.copy_(torch.tensor([0.4, 0.0, 0.0]))  # a buffer by default
    x = torch.tensor([[0.3, 1.0, 0.0]])
    output = torch.tensor([[0.1, 2.0, -1.0]])  # mean; logit; logit
    expected = -(
        torch.distributions.Normal(0.1, math.exp(0.2)).log_prob(torch.tensor(0.3))
        + torch.distributions.Bernoulli(logits=torch.tensor(2.0)).log_prob(torch.tensor(1.0))
        + torch.distributions.Bernoulli(logits=torch.tensor(-1.0)).log_prob(torch.tensor(0.0))
    )
    torch.testing.assert_close(model.reconstruction_nll(x, output), expected.reshape(1))


def test_iwae_bound_is_tighter_than_elbo_on_average():
    torch.manual_seed(0)
    model = build("vae")
    x = torch.randn(200, 6)
    scores = model.scores(x, torch.randn(200, 64, 3))
    # -IWAE <= -ELBO in expectation (Burda et al., 2016).
    assert scores["negative_iwae_bound"].mean() <= scores["negative_elbo"].mean()
