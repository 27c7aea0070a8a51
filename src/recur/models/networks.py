"""The two deep-learning models of the paper, built from MONAI networks.

* :class:`PreNet` (model "Pre"): a small 2D MONAI ``ResNet`` encoder over the 12 channels of the
  pre-ablation crop (4 phases x 3 slices) and a linear head -> one ER logit.
* :class:`PrePostNet` (model "PrePost"): ONE shared encoder applied to the pre and the post
  crop (the two time points go through it as one batch, so a hook on the encoder sees both),
  the feature sequence (pre, post) -> ``torch.nn.GRU`` -> linear head -> one ER logit.

Both return logits of shape ``(B, 1)``; the probability is ``sigmoid(logit)``. With
``aux_outputs > 0`` a network also has ``aux_head``, a linear layer on the same features as
the ER head (PrePost: the GRU state), and ``forward_aux`` returns ``(logit, aux)``: multi-task
learning of measured quantities beside ER (``train.margin_target``); ``forward`` stays the ER
logit alone, so scoring and Grad-CAM ignore the auxiliary head.
The encoder's last convolutional block is ``encoder.layer4`` (the Grad-CAM target layer).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import ResNet
from torch import nn

#: Image channels per time point: 4 phases x 3 slices.
CHANNELS_PER_TIMEPOINT = 12
#: ROI channels per time point when the tumour outline is an input (``train.roi_channel``).
ROI_CHANNELS = 3
#: The model names of the workflow, with the number of time points each one reads.
MODEL_TIMEPOINTS: dict[str, int] = {"Pre": 1, "PrePost": 2}
#: Name of the encoder's last convolutional block inside both networks (for Grad-CAM).
ENCODER_LAST_BLOCK = "encoder.layer4"


def make_encoder(
    in_channels: int,
    widths: Sequence[int],
    blocks: Sequence[int],
    max_pool: bool,
) -> ResNet:
    """A small 2D MONAI ResNet (basic blocks) that maps ``(B, C, H, W)`` to ``(B, widths[-1])``.

    The stem is a 7x7 stride-2 convolution and (``max_pool``) a stride-2 max-pool, so a
    128x128 crop reaches the last block at 4x4 (8x8 without the max-pool, at about twice the
    cost): cheap enough to train on a CPU in minutes.
    """
    if len(widths) != 4 or len(blocks) != 4:
        raise ValueError("the encoder needs exactly 4 widths and 4 block counts")
    return ResNet(
        block="basic",
        layers=list(blocks),
        block_inplanes=list(widths),
        spatial_dims=2,
        n_input_channels=in_channels,
        conv1_t_size=7,
        conv1_t_stride=2,
        no_max_pool=not max_pool,
        feed_forward=False,
    )


class PreNet(nn.Module):
    """Pre model: CNN encoder over the pre-ablation crop -> ER logit.

    Input ``(B, 12, H, W)``; output ``(B, 1)``.
    """

    def __init__(
        self,
        widths: Sequence[int],
        blocks: Sequence[int],
        dropout: float,
        max_pool: bool,
        in_channels: int = CHANNELS_PER_TIMEPOINT,
        aux_outputs: int = 0,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.encoder = make_encoder(in_channels, widths, blocks, max_pool)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(widths[-1], 1))
        self.aux_head = nn.Linear(widths[-1], aux_outputs) if aux_outputs > 0 else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"PreNet expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(ER logit (B, 1), auxiliary outputs (B, aux_outputs) or None)``."""
        return _with_aux(self, self.features(x))


class PrePostNet(nn.Module):
    """PrePost model: shared CNN encoder per time point -> GRU over (pre, post) -> ER logit.

    Input ``(B, T=2, 12, H, W)``; output ``(B, 1)``. The encoder runs once on the
    ``(B*T, 12, H, W)`` stack, so its activations (and Grad-CAM maps) come in the order
    ``[b0 pre, b0 post, b1 pre, ...]``.
    """

    def __init__(
        self,
        widths: Sequence[int],
        blocks: Sequence[int],
        hidden: int,
        dropout: float,
        max_pool: bool,
        in_channels: int = CHANNELS_PER_TIMEPOINT,
        aux_outputs: int = 0,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.encoder = make_encoder(in_channels, widths, blocks, max_pool)
        self.rnn = nn.GRU(input_size=widths[-1], hidden_size=hidden, batch_first=True)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, 1))
        self.aux_head = nn.Linear(hidden, aux_outputs) if aux_outputs > 0 else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The GRU state after the post step, ``(B, hidden)``."""
        if x.ndim != 5 or x.shape[2] != self.in_channels:
            raise ValueError(
                f"PrePostNet expects (B, T, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        b, t = x.shape[:2]
        feats = self.encoder(x.reshape(b * t, *x.shape[2:])).reshape(b, t, -1)
        _, h_last = self.rnn(feats)  # (num_layers=1, B, hidden): state after the post step
        return h_last[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(ER logit (B, 1), auxiliary outputs (B, aux_outputs) or None)``."""
        return _with_aux(self, self.features(x))


def _with_aux(net: nn.Module, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ER head and (when the network has one) the auxiliary head on the same features."""
    aux = net.aux_head(feats) if net.aux_head is not None else None
    return net.head(feats), aux


class EnsembleNet(nn.Module):
    """The mean ER logit of member networks of one model (the full model and its cross-fitting
    fold models, ``train.signature: ensemble``). Input and output as the members'."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 1:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


def build_model(
    name: str,
    widths: Sequence[int],
    blocks: Sequence[int],
    hidden: int,
    dropout: float,
    max_pool: bool,
    in_channels: int = CHANNELS_PER_TIMEPOINT,
    aux_outputs: int = 0,
) -> nn.Module:
    """The network of model ``name`` ("Pre" or "PrePost") over ``in_channels`` per time point,
    with ``aux_outputs`` auxiliary regression outputs beside the ER logit (multi-task)."""
    if name == "Pre":
        return PreNet(widths, blocks, dropout, max_pool, in_channels, aux_outputs)
    if name == "PrePost":
        return PrePostNet(widths, blocks, hidden, dropout, max_pool, in_channels, aux_outputs)
    raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODEL_TIMEPOINTS)}")
