"""Contract over the registry: every variant gets the same checks (shapes, loss
falls, losses built as stated, save/load). Per-variant tests only for what differs."""

import dataclasses
import logging
import math

import pytest
import torch

from anomaly_vae.config import (
    IMAGE_MIN_LOG_VARIANCE,
    TABLE_MIN_LOG_VARIANCE,
    TABLE_TRIM_FRACTION,
    ModelConfig,
    TrainingConfig,
)
from anomaly_vae.errors import ConfigError
from anomaly_vae.models import BaseVAE, available_models, base, get_model, register
from anomaly_vae.models.base import LOGVAR_LIMIT
from anomaly_vae.training import train

VARIANTS = available_models()


IMAGE = (1, 8, 8)


def build(name: str, shape=None, **overrides):
    """A tiny model of variant ``name``: tables of 6 features, or 8x8 images for image-only
    variants; conditional variants get a 2-dimensional condition."""
    cls = get_model(name)
    shape = shape or ((6,) if "table" in cls.data_kinds else IMAGE)
    tiny = {"hidden_dims": [16], "latent_dim": 3, "conv_channels": [4, 8], "kl_warmup_epochs": 0}
    config = ModelConfig(name=name, **(tiny | overrides))
    condition_dim = 2 if cls.uses_condition else 0
    return cls(shape, config, torch.zeros(shape, dtype=torch.bool), condition_dim)


def inputs(model, n: int, samples: int = 4):
    """``(x, noise, condition)`` of the right shapes for ``model``."""
    x = torch.randn(n, *model.input_shape)
    noise = torch.randn(n, samples, model.noise_dim)
    condition = torch.randn(n, model.condition_dim) if model.condition_dim else None
    return x, noise, condition


def test_unknown_model_lists_the_available_ones():
    with pytest.raises(ConfigError, match=r"unknown model 'nope'; available: .*vae"):
        get_model("nope")


def test_a_variant_registers_only_under_its_listed_name_and_module():
    # The name list is read without importing the variants; it must match what they register.
    assert [get_model(name).registry_name for name in VARIANTS] == VARIANTS
    for name in ("unlisted", "vae"):  # "vae" is listed, but with the module vae.py
        with pytest.raises(ValueError, match="VARIANT_MODULES"):
            register(name)(type("Toy", (BaseVAE,), {}))


def structured(model, n: int) -> torch.Tensor:
    """Rows on a 2-D linear manifold in the model's input space (learnable, not noise)."""
    generator = torch.Generator().manual_seed(0)
    size = math.prod(model.input_shape)
    basis = torch.randn(2, size, generator=generator)
    return (torch.randn(n, 2, generator=generator) @ basis).reshape(n, *model.input_shape)


SHAPES = [
    (name, shape)
    for name in VARIANTS
    for kind, shape in (("table", (6,)), ("image", IMAGE))
    if kind in get_model(name).data_kinds
]


@pytest.mark.parametrize(("name", "shape"), SHAPES)
def test_shapes(name, shape):
    model = build(name, shape=shape)
    x, noise, condition = inputs(model, 5)
    assert model.latent_mean(x, condition).shape[0] == 5
    assert model.reconstruct(x, condition).shape == x.shape
    scores = model.scores(x, noise, condition)
    assert tuple(scores) == model.score_names
    assert scores.keys() >= {"reconstruction_error", "negative_elbo"}
    assert all(s.shape == (5,) and torch.isfinite(s).all() for s in scores.values())
    generated = model.generate(3, None if condition is None else condition[:3])
    assert generated.shape == (3, *shape)


@pytest.mark.parametrize("name", VARIANTS)
def test_loss_falls_on_small_data(name):
    torch.manual_seed(0)
    model = build(name)
    x = structured(model, 256)
    _, fixed_noise, condition = inputs(model, 256, samples=1)
    fixed_noise = torch.zeros_like(fixed_noise)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss_terms(x, fixed_noise, condition)["loss"].item()
    for _ in range(150):
        optimizer.zero_grad()
        model.loss_terms(x, condition=condition)["loss"].backward()
        optimizer.step()
    last = model.loss_terms(x, fixed_noise, condition)["loss"].item()
    assert math.isfinite(last) and last < first - 1.0


@pytest.mark.parametrize("name", VARIANTS)
def test_state_dict_round_trip_gives_same_scores(name):
    model, copy = build(name), build(name)
    copy.load_state_dict(model.state_dict())
    x, noise, condition = inputs(model, 8)
    for key, value in model.scores(x, noise, condition).items():
        torch.testing.assert_close(copy.scores(x, noise, condition)[key], value)


def test_declared_config_fields_are_model_config_fields_and_cover_it():
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    declared = [set(get_model(name).config_fields) for name in VARIANTS]
    assert all(names <= fields for names in declared)
    assert set().union(*declared) == fields  # a new field is logged for the runs it affects


# A value for each ModelConfig field some variant does not read, unlike build()'s.
OTHER_VALUES = {
    "beta": 3.0,
    "hidden_dims": [5, 7],
    "dropout": 0.5,
    "conv_channels": [2],
    "kl_warmup_epochs": 3,
    "capacity": 4.0,
    "capacity_epochs": 2,
    "top_latent_dim": 2,
    "codebook_size": 3,
    "code_slots": 2,
    "commitment_cost": 0.9,
    "codebook_decay": 0.5,
}


def _fingerprint(name, shape, **overrides):
    """Weights, a training step's loss terms and the scores of a seeded tiny model."""
    torch.manual_seed(0)
    model = build(name, shape=shape, **overrides)
    x, noise, condition = inputs(model, 16)
    weights = {key: value.clone() for key, value in model.state_dict().items()}
    model.on_epoch_start(2, 10)
    terms = model.loss_terms(x, condition=condition)
    model.eval()
    return weights, terms, model.scores(x, noise, condition)


@pytest.mark.parametrize(("name", "shape"), SHAPES)
def test_a_model_setting_a_variant_does_not_declare_changes_nothing(name, shape):
    # Runs log only the declared settings (tracking.run_params): an undeclared one must
    # have no effect, or a run would hide a setting that shaped it.
    undeclared = sorted(
        {f.name for f in dataclasses.fields(ModelConfig)} - set(get_model(name).config_fields)
    )
    weights, terms, scores = _fingerprint(name, shape)
    for field in undeclared:
        other_weights, other_terms, other_scores = _fingerprint(
            name, shape, **{field: OTHER_VALUES[field]}
        )
        for mine, other in ((weights, other_weights), (terms, other_terms), (scores, other_scores)):
            assert mine.keys() == other.keys(), field
            for key in mine:
                torch.testing.assert_close(other[key], mine[key], msg=f"{field}: {key}")


def test_untrimmed_loss_is_reconstruction_plus_beta_times_kl():
    torch.manual_seed(0)
    x, noise = torch.randn(10, 6), torch.randn(10, 1, 3)
    for beta in (0.25, 1.0, 4.0):
        terms = build("vae", beta=beta, trim_fraction=0.0).loss_terms(x, noise)
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


def test_beta_vae_warms_up_the_kl_weight_and_selects_only_after():
    model = build("beta-vae", beta=4.0, kl_warmup_epochs=10)
    weights = []
    for epoch in (1, 6, 11, 30):
        model.on_epoch_start(epoch, 100)
        weights.append(model.kl_weight())
    assert weights == [0.0, 2.0, 4.0, 4.0]
    model.on_epoch_start(5, 100)
    assert not model.schedule_finished
    model.on_epoch_start(11, 100)
    assert model.schedule_finished


@pytest.mark.parametrize(
    ("schedule", "ends_at", "named"),
    [
        ({"kl_warmup_epochs": 10}, 11, "model.kl_warmup_epochs=10"),
        ({"kl_warmup_epochs": 0, "capacity": 5.0}, 50, "model.capacity_epochs=50"),
    ],
)
def test_beta_vae_stopped_before_its_schedule_keeps_the_trained_weights(
    schedule, ends_at, named, caplog
):
    # Selection starts once the schedule has finished; a shorter fit used to restore the
    # untrained initial weights and report best epoch 0.
    torch.manual_seed(0)
    model = build("beta-vae", **schedule)
    x = torch.randn(64, 6)
    model.initialise_from_data(x)  # what train() does first: the start it must move away from
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = TrainingConfig(epochs=3, min_steps=0, patience=5)
    with caplog.at_level(logging.WARNING, logger="anomaly_vae.training"):
        history = train(model, x[:48], x[48:], config)
    moved = [not torch.equal(p, start[name]) for name, p in model.named_parameters()]
    assert all(moved)
    assert history.best_epoch == 3 and not history.stopped_early
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"ended at epoch 3, before its schedule finished at epoch {ends_at}" in warning
    assert named in warning and "raise training.epochs" in warning


@pytest.mark.parametrize("beta", [0.25, 4.0])
def test_beta_vae_controlled_capacity_objective(beta):
    model = build("beta-vae", beta=beta, kl_warmup_epochs=0, capacity=5.0, capacity_epochs=10)
    model.on_epoch_start(5, 100)
    reconstruction, kl = torch.tensor([3.0]), torch.tensor([1.0])
    expected = 3.0 + beta * abs(1.0 - 2.5)  # C(5) = 5 * 5/10
    assert model.objective(reconstruction, kl).item() == pytest.approx(expected)


def test_cvae_scores_depend_on_the_condition():
    model = build("cvae")
    x, noise, condition = inputs(model, 6)
    other = model.scores(x, noise, condition + 3.0)["negative_elbo"]
    assert not torch.allclose(model.scores(x, noise, condition)["negative_elbo"], other)
    assert model.generate(4, condition[:4]).shape == (4, 6)
    with pytest.raises(ValueError, match="needs a condition"):
        model.encode(x)


def test_conv_vae_rejects_sizes_that_do_not_divide_by_the_stride():
    with pytest.raises(ConfigError, match="does not divide by the total stride 4"):
        build("conv-vae", shape=(1, 10, 10))
    assert build("conv-vae", shape=(3, 16, 12)).reconstruct(torch.rand(2, 3, 16, 12)).shape == (
        2,
        3,
        16,
        12,
    )


def test_iwae_bound_is_tighter_than_elbo_on_average():
    torch.manual_seed(0)
    model = build("vae")
    x = torch.randn(200, 6)
    scores = model.scores(x, torch.randn(200, 64, 3))
    # -IWAE <= -ELBO in expectation (Burda et al., 2016).
    assert scores["negative_iwae_bound"].mean() <= scores["negative_elbo"].mean()


def _linear_gaussian_vae(
    name: str, beta: float
) -> tuple[BaseVAE, torch.distributions.Distribution]:
    """A one-layer linear VAE whose encoder is the exact posterior of its decoder's model
    z ~ N(0, I), x | z ~ N(W z + b, diag(psi)), with that model's marginal N(b, W W^T + psi).

    W's columns are orthogonal under psi^-1, so the posterior covariance
    (I + W^T psi^-1 W)^-1 is diagonal, as the encoder's is.
    """
    torch.manual_seed(0)
    features, k = 5, 2
    config = ModelConfig(
        name=name,
        hidden_dims=[],
        latent_dim=k,
        beta=beta,
        kl_warmup_epochs=3,
        trim_fraction=0.0,
        min_log_variance=-20.0,
    )
    model = get_model(name)((features,), config).eval()
    psi = torch.tensor([0.3, 0.5, 0.2, 0.8, 0.4])
    orthonormal, _ = torch.linalg.qr(torch.randn(features, k))
    weight = psi.sqrt()[:, None] * orthonormal * torch.tensor([2.0, 0.7])
    bias = torch.randn(features)
    covariance = torch.linalg.inv(torch.eye(k) + weight.T @ (weight / psi[:, None]))
    gain = covariance @ (weight.T / psi)  # posterior mean = gain (x - b)
    logvar = torch.log(torch.diagonal(covariance))
    with torch.no_grad():
        model.decoder[0].weight.copy_(weight)
        model.decoder[0].bias.copy_(bias)
        model.decoder_log_variance.copy_(psi.log())
        model.encoder[0].weight.zero_()
        model.encoder[0].weight[:k] = gain
        model.encoder[0].bias[:k] = -gain @ bias
        model.encoder[0].bias[k:] = LOGVAR_LIMIT * torch.atanh(logvar / LOGVAR_LIMIT)
    marginal = torch.distributions.MultivariateNormal(bias, weight @ weight.T + torch.diag(psi))
    return model, marginal


@pytest.mark.parametrize(("name", "beta"), [("vae", 1.0), ("vae", 4.0), ("beta-vae", 4.0)])
def test_elbo_and_iwae_equal_log_p_x_when_the_posterior_is_exact(name, beta):
    # With q(z|x) = p(z|x) both bounds are tight: every importance weight is p(x), and
    # the ELBO's expectation is log p(x). This pins the Gaussian constants, the closed-form
    # KL, the log-mean-exp (a log K off: "tighter than the ELBO" would still hold) and that
    # the scores are the true ELBO whatever the training's KL weight (beta, warm-up).
    model, marginal = _linear_gaussian_vae(name, beta)
    model.on_epoch_start(1, 10)  # beta-vae: KL weight 0 in this epoch's training loss
    x = marginal.sample((20,)) * 1.5
    log_p = marginal.log_prob(x)
    for samples in (1, 16):
        scores = model.scores(x, torch.randn(20, samples, 2))
        torch.testing.assert_close(-scores["negative_iwae_bound"], log_p, atol=1e-4, rtol=1e-5)
    elbo = -model.scores(x, torch.randn(20, 20_000, 2))["negative_elbo"]
    torch.testing.assert_close(elbo, log_p, atol=0.1, rtol=0)


def test_min_log_variance_auto_is_lower_for_tables_and_a_set_value_wins():
    assert build("vae").min_log_variance == TABLE_MIN_LOG_VARIANCE  # build: None = auto
    assert build("conv-vae").min_log_variance == IMAGE_MIN_LOG_VARIANCE > TABLE_MIN_LOG_VARIANCE
    floor = build("conv-vae").log_variance_floor
    assert torch.all(floor == IMAGE_MIN_LOG_VARIANCE)
    assert torch.all(build("conv-vae", min_log_variance=-2.0).log_variance_floor == -2.0)
    assert torch.all(build("vae", min_log_variance=-3.0).log_variance_floor == -3.0)


def test_trim_fraction_auto_trims_tables_only_and_a_set_value_wins():
    assert build("vae").trim_fraction == TABLE_TRIM_FRACTION > 0  # build: trim_fraction=None
    assert build("conv-vae").trim_fraction == 0.0  # a near-constant pixel must keep its variance
    assert build("vae", trim_fraction=0.2).trim_fraction == 0.2
    assert build("conv-vae", trim_fraction=0.2).trim_fraction == 0.2


def test_quantisation_floor_bounds_the_decoder_variance_per_feature():
    model = build("vae")  # min_log_variance -6
    model.set_feature_steps(torch.tensor([0.0, 1e-4, 1.0, 2.0, 0.0, 0.0]))
    expected = torch.tensor([-6.0, -6.0, math.log(1 / 12), math.log(4 / 12), -6.0, -6.0])
    with torch.no_grad():
        model.decoder_log_variance.fill_(-20.0)  # what a perfect reconstruction would set
    torch.testing.assert_close(model.log_variance(), expected)
    output = torch.zeros(50, 1, 6)
    torch.testing.assert_close(model._calibrated_log_variance(output, output), expected)


@pytest.mark.parametrize(("cap", "steps_per_epoch"), [(3, 3), (0, 20), (50, 20)])
def test_an_epoch_is_at_most_max_epoch_batches(cap, steps_per_epoch):
    """training.max_epoch_batches: 200 rows in batches of 10 are 20 steps an epoch; a cap
    of 3 makes each epoch 3 steps (a fresh random subset), 0 or a larger cap does not."""
    model = build("vae")
    steps = 0
    loss_terms = model.loss_terms

    def counted(*args, **kwargs):
        nonlocal steps
        steps += model.training
        return loss_terms(*args, **kwargs)

    model.loss_terms = counted
    config = TrainingConfig(epochs=2, batch_size=10, min_steps=0, patience=5, max_epoch_batches=cap)
    history = train(model, structured(model, 200), structured(model, 20), config)
    assert len(history.epochs) == 2 and steps == 2 * steps_per_epoch


@pytest.mark.parametrize("progress", [True, False])
def test_a_fit_off_a_terminal_says_how_it_goes_in_lines(progress, capsys, monkeypatch):
    """No bar is drawn off a terminal (pytest's stderr is not one): with progress on, a
    line every PROGRESS_LINE_SECONDS (here, every epoch) says so instead."""
    import anomaly_vae.training as training

    monkeypatch.setattr(training, "PROGRESS_LINE_SECONDS", 0.0)
    model = build("vae")
    config = TrainingConfig(epochs=3, batch_size=10, min_steps=0, patience=5, progress=progress)
    train(model, structured(model, 60), structured(model, 20), config)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("training:")]
    assert len(lines) == (3 if progress else 0)
    if progress:
        assert lines[-1].startswith("training: epoch 3/3, loss ")


@pytest.mark.parametrize("binary", ["none", "some", "all"])
def test_the_likelihood_takes_each_feature_from_its_own_distribution(binary):
    """-log p(x|z) = the Gaussian term for Gaussian features plus the cross-entropy of
    the logits for Bernoulli ones, however the features are mixed."""
    mask = {"none": [False] * 6, "some": [True, False] * 3, "all": [True] * 6}[binary]
    model = get_model("vae")(
        (6,), ModelConfig(hidden_dims=[8], latent_dim=2), torch.tensor(mask), 0
    )
    torch.manual_seed(0)
    x = (torch.rand(5, 1, 6) > 0.5).float()
    output = torch.randn(5, 3, 6)
    logvar = model.log_variance()
    gaussian = 0.5 * (math.log(2 * math.pi) + logvar + (x - output) ** 2 * torch.exp(-logvar))
    bernoulli = torch.nn.functional.binary_cross_entropy_with_logits(
        output, x.expand_as(output), reduction="none"
    )
    expected = torch.where(torch.tensor(mask), bernoulli, gaussian).sum(-1)
    torch.testing.assert_close(model.reconstruction_nll(x, output), expected)


def test_the_bar_never_shows_new_losses_beside_a_stale_epoch_count(monkeypatch):
    """On a terminal the bar redraws at its mininterval with the epoch count; it used to
    redraw every epoch for the losses, beside the count of its last interval (0/N and
    the losses of epoch 60, say)."""
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    model = build("vae")
    config = TrainingConfig(epochs=30, batch_size=10, min_steps=0, patience=50, progress=True)
    train(model, structured(model, 60), structured(model, 20), config)
    frames = [frame for frame in terminal.getvalue().split("\r") if "loss=" in frame]
    assert frames and frames[-1].lstrip().startswith("training: 100%")
    assert not [frame for frame in frames if " 0/30 " in frame]
    # Stopped early: the last frame counts every epoch run, the last one included.
    terminal.seek(0)
    terminal.truncate()
    stopping = TrainingConfig(epochs=300, batch_size=10, min_steps=0, patience=3, progress=True)
    history = train(model, structured(model, 60), structured(model, 20), stopping)
    assert history.stopped_early
    last = [frame for frame in terminal.getvalue().split("\r") if "loss=" in frame][-1]
    assert f" {len(history.epochs)}/300 " in last, last


def test_the_bar_is_closed_when_an_epoch_raises(monkeypatch):
    """A callback's error (or Ctrl-C) mid-fit ends the bar's line before the message;
    an open bar left the error written onto the bar's line."""
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def interrupt(epoch: int, metrics: dict[str, float]) -> None:
        if epoch == 3:
            raise KeyboardInterrupt

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    model = build("vae")
    config = TrainingConfig(epochs=30, batch_size=10, min_steps=0, patience=50, progress=True)
    with pytest.raises(KeyboardInterrupt) as caught:
        train(model, structured(model, 60), structured(model, 20), config, on_epoch=interrupt)
    # While `caught` holds the traceback, and with it train's frame and its bar.
    assert caught.tb is not None
    assert terminal.getvalue().endswith("\n")


@pytest.mark.parametrize(("name", "shape"), SHAPES)
def test_the_decoder_is_calibrated_a_batch_of_rows_at_a_time(name, shape, monkeypatch):
    """calibrate_decoder decodes the training rows in batches: in one pass its activations
    grew with the rows. The variance is that of one pass."""
    torch.manual_seed(0)
    model = build(name, shape).eval()
    x, noise, condition = inputs(model, 50, samples=1)
    model.calibrate_decoder(x, noise, condition)  # 50 rows: one batch
    whole = model.decoder_log_variance.clone()
    with torch.no_grad():
        model.decoder_log_variance.zero_()
    decoded = []
    decode = model.decode

    def counting_decode(z, *args, **kwargs):
        decoded.append(z.shape[0])
        return decode(z, *args, **kwargs)

    monkeypatch.setattr(model, "decode", counting_decode)
    monkeypatch.setattr(base, "CALIBRATION_BATCH_ROWS", 16, raising=False)
    model.calibrate_decoder(x, noise, condition)
    assert max(decoded) <= 16 and sum(decoded) == 50
    torch.testing.assert_close(model.decoder_log_variance, whole)


@pytest.mark.parametrize(("name", "shape"), SHAPES)
def test_the_decoder_calibration_squares_the_errors_where_they_were_decoded(
    name, shape, monkeypatch
):
    """The difference of the training rows and their reconstructions, its square and the
    errors the square was copied into were three copies of the rows' values beside the
    reconstructions (0.25 GB each for 15,000 images of 64 x 64, the peak of the fit). One
    batch's errors are squared in the reconstructions' memory; the variance is the same,
    bit for bit."""
    torch.manual_seed(0)
    model = build(name, shape).eval()
    x, noise, condition = inputs(model, 50, samples=1)
    with torch.no_grad():
        target, output = model._calibration_reconstruction(x, noise, condition)
        expected = model._log_variance_of_errors((target.expand_as(output) - output).pow(2))
    decoded, squared = [], []
    reconstruction, of_errors = model._calibration_reconstruction, model._log_variance_of_errors

    def recording_reconstruction(*args):
        pair = reconstruction(*args)
        decoded.append(pair[1].data_ptr())
        return pair

    def recording_of_errors(error):
        squared.append(error.data_ptr())
        return of_errors(error)

    monkeypatch.setattr(model, "_calibration_reconstruction", recording_reconstruction)
    monkeypatch.setattr(model, "_log_variance_of_errors", recording_of_errors)
    model.calibrate_decoder(x, noise, condition)  # 50 rows: one batch
    assert len(decoded) == 1 and squared == decoded
    assert torch.equal(model.decoder_log_variance, expected.reshape_as(model.decoder_log_variance))


def test_the_calibration_trims_a_block_of_columns_at_a_time(monkeypatch):
    """topk returns most of what it is given, with int64 indices: over every training
    row's squared errors at once it held 3 times them (0.57 GB for a 1,000,000-row
    table). The variance is that of the whole, to float rounding."""
    torch.manual_seed(0)
    model = build("vae", trim_fraction=0.1).eval()
    x, noise, _ = inputs(model, 50, samples=1)
    model.calibrate_decoder(x, noise)  # 300 values: one block
    whole = model.decoder_log_variance.clone()
    given = []
    topk = torch.topk

    def counting_topk(values, *args, **kwargs):
        given.append(values.numel())
        return topk(values, *args, **kwargs)

    monkeypatch.setattr(torch, "topk", counting_topk)
    monkeypatch.setattr(base, "TRIM_BLOCK_VALUES", 100, raising=False)
    model.calibrate_decoder(x, noise)
    assert given == [100, 100, 100]  # 2 of the 6 columns at a time
    torch.testing.assert_close(model.decoder_log_variance, whole)
