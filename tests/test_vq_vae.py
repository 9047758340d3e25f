"""What is special about the VQ-VAE: the quantized latent, the EMA codebook with dead-code
restarts, the straight-through gradient, the commitment loss and the scores built on them.
The registry contract (tests/test_models.py) covers the rest."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import anomaly_vae.models.vq_vae  # noqa: F401  (registers "vq-vae")
from anomaly_vae.config import ModelConfig
from anomaly_vae.errors import ConfigError
from anomaly_vae.models import get_model
from tests.conftest import correlated_normal, planted_anomalies

IMAGE = (1, 8, 8)


def build(shape=(6,), **overrides):
    """A tiny VQ-VAE: 8 codes of size 2, 3 code slots per table row (images: 2x2 positions)."""
    settings = {"hidden_dims": [16], "latent_dim": 2, "codebook_size": 8, "code_slots": 3}
    config = ModelConfig(name="vq-vae", conv_channels=[4, 8], **(settings | overrides))
    return get_model("vq-vae")(shape, config)


def train(model, x, steps, lr=1e-2, batch_size=128):
    """Adam on random batches of ``x``, then calibrate the decoder as the training loop does."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.initialise_from_data(x)
    model.train()
    for _ in range(steps):
        rows = torch.randint(x.shape[0], (min(batch_size, x.shape[0]),))
        optimizer.zero_grad()
        model.loss_terms(x[rows])["loss"].backward()
        optimizer.step()
    model.eval()
    model.calibrate_decoder(x, torch.zeros(x.shape[0], 1, model.noise_dim))
    return model


def table(n, seed=0):
    return torch.tensor(correlated_normal(n, seed), dtype=torch.float32)


@pytest.mark.parametrize(("shape", "vectors"), [((6,), 3), (IMAGE, 4)])
def test_shapes_and_scores_ignore_the_noise(shape, vectors):
    torch.manual_seed(0)
    model = build(shape).eval()
    x = torch.rand(5, *shape)
    assert model.noise_dim == 0
    assert model.latent_mean(x).shape == (5, vectors * 2)
    assert model.reconstruct(x).shape == x.shape
    scores = model.scores(x, torch.zeros(5, 4, 0))
    assert tuple(scores) == model.score_names
    assert all(s.shape == (5,) and torch.isfinite(s).all() for s in scores.values())
    for name, value in model.scores(x, torch.randn(5, 2, 3)).items():  # any noise, same scores
        torch.testing.assert_close(value, scores[name])


def test_images_must_divide_by_the_stride():
    with pytest.raises(ConfigError, match="does not divide by the total stride 4"):
        build((1, 10, 10))


def test_loss_is_reconstruction_plus_commitment_and_elbo_adds_log_k_per_vector():
    torch.manual_seed(0)
    model = build(commitment_cost=0.5, trim_fraction=0.0).eval()
    x = table(20)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    terms = model.loss_terms(x)
    torch.testing.assert_close(terms["loss"], terms["reconstruction"] + 0.5 * terms["kl"])
    scores = model.scores(x, torch.zeros(20, 1, 0))
    # The commitment term is the squared distance to the chosen codes, summed over 3 slots.
    torch.testing.assert_close(terms["kl"], 3 * scores["code_distance"].mean())
    nll = model.reconstruction_nll(x, model.decode(model.latent_mean(x)))
    torch.testing.assert_close(scores["negative_elbo"] - nll, torch.full((20,), 3 * math.log(8)))
    # Eval mode changes nothing: the codebook, its EMAs and the decoder variance are as before.
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_ema_update_moves_used_codes_to_their_means_and_restarts_the_rest():
    model = build(codebook_decay=0.9)
    vectors = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0], [0.0, 7.0]])
    model.update_codebook(vectors, torch.tensor([0, 0, 1, 1]))
    # From zero EMAs one step gives the mean exactly, up to the Laplace smoothing.
    torch.testing.assert_close(
        model.codebook[:2], torch.tensor([[2.0, 0.0], [0.0, 6.0]]), rtol=1e-2, atol=0
    )
    torch.testing.assert_close(model.ema_count[:2], torch.tensor([0.2, 0.2]))
    # The six unused codes were restarted on encoder outputs of the batch.
    restarted = model.codebook[2:]
    assert (torch.cdist(restarted, vectors).min(1).values == 0).all()
    assert "codebook" in model.state_dict() and "codebook" not in dict(model.named_parameters())


@pytest.mark.parametrize("shape", [(6,), IMAGE])
def test_straight_through_gives_the_encoder_reconstruction_gradients(shape):
    torch.manual_seed(0)
    model = build(shape).train()
    model.loss_terms(torch.rand(16, *shape))["reconstruction"].backward()
    first = next(module for module in model.encoder.modules() if hasattr(module, "weight"))
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


def test_loss_falls_on_structured_rows():
    torch.manual_seed(0)
    model = build().eval()
    x = table(256)
    first = model.loss_terms(x)["loss"].item()
    last = train(model, x, steps=150).loss_terms(x)["loss"].item()
    assert math.isfinite(last) and last < first - 1.0


def test_dead_code_restarts_bring_unused_codes_back_to_the_data():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(8, 6, generator=generator)
    x = centres.repeat(40, 1) + 0.1 * torch.randn(320, 6, generator=generator)  # 8 clusters
    model = build(code_slots=1)
    with torch.no_grad():  # a collapsed codebook: every code but one far from any encoding
        model.codebook[1:] = 100.0
        model.ema_count.fill_(1.0)
        model.ema_sum.copy_(model.codebook)
    train(model, x, steps=200)
    # Without restarts the EMA never moves an unchosen code, and only code 0 would be used.
    assert model.quantize(model.encode_vectors(x))[0].unique().numel() >= 4


def test_state_dict_round_trip_gives_same_scores():
    torch.manual_seed(0)
    x = table(64)
    model, copy = train(build(), x, steps=20), build().eval()
    copy.load_state_dict(model.state_dict())  # the codebook and its EMAs are buffers
    noise = torch.zeros(64, 1, 0)
    for name, value in model.scores(x, noise).items():
        torch.testing.assert_close(copy.scores(x, noise)[name], value)


def test_ranks_planted_anomalies_above_normal_rows():
    torch.manual_seed(0)
    model = build(hidden_dims=[32], codebook_size=16, code_slots=4)
    train(model, table(600), steps=300, lr=3e-3)
    x = np.vstack([correlated_normal(300, seed=1), planted_anomalies(30, seed=2)])
    labels = np.r_[np.zeros(300), np.ones(30)]
    scores = model.scores(torch.tensor(x, dtype=torch.float32), torch.zeros(330, 1, 0))
    for name in ("reconstruction_error", "negative_elbo"):
        assert roc_auc_score(labels, scores[name].numpy()) > 0.9, name
