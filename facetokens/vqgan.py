"""The VQGAN image tokenizer: its config and the model (taming's VQModel without Lightning).

Encode: image in [-1, 1] -> encoder -> quant_conv -> nearest codebook entry -> grid x grid codes
(FFHQ, f=16: 16 x 16 = 256 codes of 1,024; OpenImages f=8: 32 x 32 = 1,024 codes of 8,192).
Decode: codes -> codebook vectors -> post_quant_conv -> decoder -> [0, 1]. Loading the files the
users download is `facetokens.vqgan_files`; `encode_batch` is what tokenize-images and generation
both encode faces with.

Only taming's `Encoder`, `Decoder` and `VectorQuantizer2` are imported (see environment.md):
`taming.models.vqgan` needs Lightning 1.x and torchvision.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from common.errors import UserError

DDCONFIG_KEYS = (
    "ch",
    "out_ch",
    "ch_mult",
    "num_res_blocks",
    "attn_resolutions",
    "in_channels",
    "resolution",
    "z_channels",
)


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class VQGANConfig:
    """The first-stage (VQModel) hyper-parameters that shape the weights."""

    embed_dim: int  # codebook vector size
    n_embed: int  # codebook entries (1,024 for FFHQ)
    ddconfig: dict = field(default_factory=dict)  # taming Encoder/Decoder keyword arguments

    @property
    def resolution(self) -> int:
        return int(self.ddconfig["resolution"])

    @property
    def downsampling(self) -> int:
        """The factor f: 2**4 = 16 for the FFHQ model (five ch_mult levels), 8 for four levels."""
        return 2 ** (len(self.ddconfig["ch_mult"]) - 1)

    @property
    def grid(self) -> int:
        """Codes per side: 256 / 16 = 16 for the FFHQ model."""
        return self.resolution // self.downsampling

    @property
    def codes_per_image(self) -> int:
        return self.grid**2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, params: dict, where: str = "config") -> VQGANConfig:
        if params.get("remap") is not None:
            raise UserError(f"{where}: codebook remapping (`remap`) is not supported")
        try:
            dd = dict(params["ddconfig"])
            config = cls(embed_dim=int(params["embed_dim"]), n_embed=int(params["n_embed"]), ddconfig=dd)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{where}: expected embed_dim, n_embed and ddconfig in the VQGAN params ({e})") from None
        missing = [k for k in DDCONFIG_KEYS if k not in dd]
        if missing:
            raise UserError(f"{where}: ddconfig lacks {', '.join(missing)}")
        dd.setdefault("double_z", False)
        dd.setdefault("dropout", 0.0)
        if dd["double_z"]:
            raise UserError(f"{where}: double_z is true: that is a KL autoencoder, not a VQGAN")
        return config


FFHQ_CONFIG = VQGANConfig(
    embed_dim=256,
    n_embed=1024,
    ddconfig={
        "double_z": False,
        "z_channels": 256,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": [1, 1, 2, 2, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [16],
        "dropout": 0.0,
    },
)


# ----------------------------------------------------------------------------- the model
class VQGAN(nn.Module):
    """taming's VQModel without Lightning: encoder, quant_conv, codebook, post_quant_conv, decoder."""

    def __init__(self, config: VQGANConfig, with_decoder: bool = True):
        super().__init__()
        from taming.modules.diffusionmodules.model import Decoder, Encoder
        from taming.modules.vqvae.quantize import VectorQuantizer2

        dd = config.ddconfig
        self.config = config
        with contextlib.redirect_stdout(io.StringIO()):  # taming's Decoder prints the z shape
            self.encoder = Encoder(**dd)
            self.quant_conv = nn.Conv2d(dd["z_channels"], config.embed_dim, 1)
            self.quantize = VectorQuantizer2(config.n_embed, config.embed_dim, beta=0.25, sane_index_shape=True)
            if with_decoder:
                self.post_quant_conv = nn.Conv2d(config.embed_dim, dd["z_channels"], 1)
                self.decoder = Decoder(**dd)
        self.eval().requires_grad_(False)

    @torch.no_grad()
    def encode_to_codes(self, images: torch.Tensor, bf16: bool = False) -> torch.Tensor:
        """(B, 3, H, W) RGB in [-1, 1] -> (B, grid*grid) int64 codes in raster order.

        With bf16 the convolutions run in bfloat16; the nearest-code search always runs in fp32.
        """
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
            h = self.quant_conv(self.encoder(images))
        _, _, (_, _, indices) = self.quantize(h.float())
        return indices.reshape(len(images), -1)

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, grid*grid) codes -> (B, 3, H, W) RGB in [0, 1]."""
        side = self.config.grid
        if codes.shape[1] != side * side:
            raise UserError(f"{codes.shape[1]} codes per face; this VQGAN decodes {side}x{side} = {side * side}")
        z = self.quantize.get_codebook_entry(
            codes.reshape(-1).long(), (codes.shape[0], side, side, self.config.embed_dim)
        )
        x = self.decoder(self.post_quant_conv(z))
        return (x.clamp(-1, 1) + 1) / 2


def build_vqgan(config: VQGANConfig, weights: dict[str, torch.Tensor], *, with_decoder: bool, where: str) -> VQGAN:
    model = VQGAN(config, with_decoder=with_decoder)
    own = model.state_dict()
    needed = {k: v for k, v in weights.items() if k in own}
    missing = sorted(set(own) - set(needed))
    if missing:
        raise UserError(
            f"{where}: {len(missing)} VQGAN weights missing (first: {missing[0]}); is it the right checkpoint?"
        )
    shapes = [k for k in needed if tuple(needed[k].shape) != tuple(own[k].shape)]
    if shapes:
        k = shapes[0]
        raise UserError(f"{where}: {k} has shape {tuple(needed[k].shape)}, the config expects {tuple(own[k].shape)}")
    model.load_state_dict({k: v.float() for k, v in needed.items()})
    return model


def encode_batch(model: VQGAN, images: torch.Tensor, device: str, bf16: bool) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> codes (B, grid*grid), normalised once to [-1, 1]."""
    if len(images) == 0:
        return torch.empty(0, model.config.codes_per_image, dtype=torch.long)
    x = images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    if not device.startswith("cuda"):
        x = x.contiguous()
    return model.encode_to_codes(x, bf16=bf16)
