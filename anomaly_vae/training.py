"""The training loop: Adam on mini-batches, early stopping on validation loss."""

from __future__ import annotations

import copy
import functools
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from anomaly_vae.config import TrainingConfig
from anomaly_vae.errors import ConfigError
from anomaly_vae.models.base import BaseVAE

logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]
# (row indices (b,) into x_train, the loop's generator) -> the model's input of those rows
BatchInput = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
LOSS_TERMS = ("loss", "reconstruction", "kl")
PROGRESS_LINE_SECONDS = 60.0  # off a terminal, with progress on: a line this often
# With progress on, a fit of at least this many rows (or images) says on stderr, on a
# terminal or off it, when each step around training starts (phase_line): on large tables
# each step takes long enough in silence to look like a hang. Below it no line: small
# fits (tests, `make demo`), whose steps pass unnoticed, print as before.
PHASE_LINE_ROWS = 200_000
PHASE_LINE_BYTES = 50_000_000  # and reading a table file of this size (175,000 such rows)


@dataclass
class TrainingHistory:
    """Per-epoch losses (batch means, nats per row) and where training stopped."""

    epochs: list[dict[str, float]] = field(default_factory=list)  # train_* and val_* per epoch
    best_epoch: int = 0  # 1-based epoch whose weights were kept
    stopped_early: bool = False
    seconds: float = 0.0
    # The schedule in effect: training.epochs and patience after stretched_schedule
    # (0 in models saved before these were recorded), and the batches of one epoch.
    epoch_limit: int = 0
    patience: int = 0
    batches_per_epoch: int = 0

    @property
    def best(self) -> dict[str, float]:
        return self.epochs[self.best_epoch - 1]


@functools.cache
def warm_up_optimizer() -> None:
    """Build a throwaway Adam optimizer. Adam's first construction in a process imports
    ``torch._dynamo`` (a one-off cost per process); called before fits that are timed
    against each other, so that the first of them is not charged for it."""
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def shows_phases(config: TrainingConfig, rows: int = 0, file_bytes: int = 0) -> bool:
    """Whether a fit with ``config`` names its step on ``rows`` rows (or images), or on
    a file of ``file_bytes`` bytes, in a :func:`phase_line`: with progress on, from
    ``PHASE_LINE_ROWS`` rows or ``PHASE_LINE_BYTES`` bytes."""
    return config.progress and (rows >= PHASE_LINE_ROWS or file_bytes >= PHASE_LINE_BYTES)


def phase_line(step: str) -> None:
    """``step ...`` on stderr, as a step of a large fit starts (``reading big.csv (285
    MB)``): between the training bar and the summary, such steps took seconds in silence."""
    print(f"{step} ...", file=sys.stderr, flush=True)


def full_pass_batches(rows: int, batch_size: int) -> int:
    """The batches of one pass over ``rows`` training rows (or images) in batches of
    ``batch_size``, a last batch smaller than half a batch dropped (tiny batches give
    noisy steps); ``training.max_epoch_batches`` may cap an epoch below it.

    >>> full_pass_batches(300, 128), full_pass_batches(350, 128), full_pass_batches(50, 128)
    (2, 3, 1)
    """
    return max(1, round(rows / min(batch_size, rows)))


def stretched_schedule(config: TrainingConfig, batches_per_epoch: int) -> tuple[int, int]:
    """``(epochs, patience)``, both multiplied by the smallest whole factor that gives at
    least ``config.min_steps`` optimizer steps (factor 1 when there are enough already).

    >>> stretched_schedule(TrainingConfig(epochs=200, patience=15, min_steps=2000), 2)
    (1000, 75)
    >>> stretched_schedule(TrainingConfig(epochs=200, patience=15, min_steps=2000), 80)
    (200, 15)
    """
    if config.patience is None:
        raise ValueError("training.patience is auto (None): resolve it with resolve_patience")
    factor = max(1, math.ceil(config.min_steps / (config.epochs * batches_per_epoch)))
    return config.epochs * factor, config.patience * factor


def train(
    model: BaseVAE,
    x_train: torch.Tensor,
    x_val: torch.Tensor,
    config: TrainingConfig,
    on_epoch: EpochCallback | None = None,
    condition_train: torch.Tensor | None = None,
    condition_val: torch.Tensor | None = None,
    batch_input: BatchInput | None = None,
) -> TrainingHistory:
    """Fit ``model`` in place and restore the weights of the best validation epoch.

    Model selection starts when the model's schedule (beta-vae's KL warm-up) has
    finished; if the epoch limit comes first, the last epoch's weights are kept, with a
    warning naming the settings to change.

    ``x_train (n, *shape)`` and ``x_val (m, *shape)`` float32; conditional models
    also take ``condition_train (n, c)`` and ``condition_val (m, c)``. ``batch_input``,
    when given, makes each training batch from its row indices (augmentation such as
    data.augmentation.ShiftedImages); ``x_train`` itself still initialises the model and
    calibrates the decoder. ``config.patience`` must be a number (the detector resolves
    auto with ``config.resolve_patience``). Seeded from ``config.seed``: the same data
    and config give the same weights.
    """
    start = time.perf_counter()
    model.initialise_from_data(x_train)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # dropout and the reparameterisation noise use the global RNG
    # fused: one kernel for the whole update instead of a dozen per tensor, whose overhead
    # weighs on the small MLPs trained here (same algorithm, float rounding aside).
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
    )
    # Fixed validation noise: epoch-to-epoch changes in val loss then reflect the model only.
    val_noise = torch.randn(x_val.shape[0], 1, model.noise_dim, generator=generator)
    history = TrainingHistory()
    best_loss, best_state, stale = float("inf"), copy.deepcopy(model.state_dict()), 0
    batch_size = min(config.batch_size, x_train.shape[0])
    n_batches = full_pass_batches(x_train.shape[0], config.batch_size)
    if config.max_epoch_batches > 0:
        n_batches = min(n_batches, config.max_epoch_batches)
    epochs, patience = stretched_schedule(config, n_batches)
    history.epoch_limit, history.patience, history.batches_per_epoch = epochs, patience, n_batches

    # disable=None: tqdm draws only on a terminal, so logs and CI output stay clean.
    bar = tqdm(
        total=epochs,
        desc="training",
        unit="epoch",
        disable=True if not config.progress else None,
        mininterval=0.25,
    )
    # Off a terminal (a log, a container) a long fit would say nothing for minutes.
    progress_lines = config.progress and bar.disable
    last_line = start
    # Closed on every way out (an early stop, divergence, an error or Ctrl-C in an
    # epoch or in on_epoch): an open bar leaves the terminal line to the next message.
    try:
        for epoch in range(1, epochs + 1):
            model.on_epoch_start(epoch, epochs)
            model.train()
            order = torch.randperm(x_train.shape[0], generator=generator)
            totals = dict.fromkeys(LOSS_TERMS, 0.0)
            for batch_index in range(n_batches):
                rows = order[batch_index * batch_size : (batch_index + 1) * batch_size]
                condition = None if condition_train is None else condition_train[rows]
                x = x_train[rows] if batch_input is None else batch_input(rows, generator)
                terms = model.loss_terms(x, condition=condition)
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                optimizer.step()
                for key in LOSS_TERMS:
                    totals[key] += terms[key].item()
            model.eval()
            with torch.no_grad():
                val_terms = model.loss_terms(x_val, noise=val_noise, condition=condition_val)
            metrics = {f"train_{k}": totals[k] / n_batches for k in LOSS_TERMS}
            metrics |= {f"val_{k}": val_terms[k].item() for k in LOSS_TERMS}
            if not (math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["val_loss"])):
                remedy = f"lower training.learning_rate (now {config.learning_rate:g})"
                if "beta" in model.config_fields:  # vq-vae, for one, does not read it
                    remedy += f" or model.beta (now {model.config.beta:g})"
                raise ConfigError(
                    f"training diverged at epoch {epoch} (train loss {metrics['train_loss']}, "
                    f"validation loss {metrics['val_loss']}): {remedy}"
                )
            history.epochs.append(metrics)
            if on_epoch is not None:
                on_epoch(epoch, metrics)
            # The losses and the count move together: update() redraws both at its
            # mininterval (a redraw for the losses alone showed them beside a stale count),
            # and counts this epoch before any early stop (an iterating bar ends one behind).
            bar.set_postfix(
                loss=f"{metrics['train_loss']:.3g}",
                val=f"{metrics['val_loss']:.3g}",
                kl=f"{metrics['val_kl']:.3g}",
                refresh=False,
            )
            bar.update()
            if progress_lines and time.perf_counter() - last_line >= PROGRESS_LINE_SECONDS:
                last_line = time.perf_counter()
                print(
                    f"training: epoch {epoch}/{epochs}, loss {metrics['train_loss']:.3g}, "
                    f"val {metrics['val_loss']:.3g} ({last_line - start:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
            if not model.schedule_finished:
                continue  # the objective is still changing: no model selection yet
            # An improvement must beat the best by a relative 1e-4, so noise does not reset
            # patience.
            if history.best_epoch == 0 or metrics["val_loss"] < best_loss - 1e-4 * abs(best_loss):
                best_loss, best_state, stale = (
                    metrics["val_loss"],
                    copy.deepcopy(model.state_dict()),
                    0,
                )
                history.best_epoch = epoch
            else:
                stale += 1
                if stale >= patience:
                    history.stopped_early = True
                    break
    finally:
        bar.close()
    if history.best_epoch == 0:
        # The epoch limit came before the schedule finished, so no epoch was selected.
        # The initial weights (best_state so far) are no model at all: keep the last epoch's.
        best_loss, best_state = history.epochs[-1]["val_loss"], model.state_dict()
        history.best_epoch = len(history.epochs)
        _warn_unfinished_schedule(model, config, len(history.epochs))
    model.load_state_dict(best_state)
    model.eval()
    if shows_phases(config, x_train.shape[0]) and model.config.decoder_variance == "calibrated":
        items = "images" if x_train.dim() > 2 else "rows"  # (n, C, H, W) or (n, d)
        phase_line(f"calibrating the decoder variance on {x_train.shape[0]:,} training {items}")
    model.calibrate_decoder(
        x_train,
        torch.randn(x_train.shape[0], 1, model.noise_dim, generator=generator),
        condition_train,
    )
    history.seconds = time.perf_counter() - start
    logger.info(
        "trained %d epoch%s in %.1fs (best epoch %d, val loss %.4g)",
        len(history.epochs),
        "s" if len(history.epochs) != 1 else "",
        history.seconds,
        history.best_epoch,
        best_loss,
    )
    return history


def _warn_unfinished_schedule(model: BaseVAE, config: TrainingConfig, epochs: int) -> None:
    """Say that training ended after ``epochs`` epochs, before ``model``'s schedule finished."""
    fields = model.schedule_fields
    values = ", ".join(f"model.{name}={getattr(model.config, name)}" for name in fields)
    stretched = f" (training.epochs={config.epochs}, stretched by training.min_steps)"
    logger.warning(
        "%s: training ended at epoch %d%s, before its schedule finished at epoch %d (%s); "
        "kept the last epoch's weights without model selection: raise training.epochs "
        "to at least %d or lower %s",
        model.registry_name,
        epochs,
        stretched if epochs != config.epochs else "",
        model.schedule_epochs,
        values,
        model.schedule_epochs,
        " or ".join(f"model.{name}" for name in fields),
    )
