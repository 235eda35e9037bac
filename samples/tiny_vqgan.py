"""A tiny randomly initialised VQGAN for tests and the demo, written in the real file formats.

`write_tiny_vqgan` writes a taming `project.yaml` (Net2NetTransformer layout) and a Lightning-style
`last.ckpt`, so tests and the demo load it through the same code that reads the FFHQ model.
`TINY_CONFIG` has the FFHQ model's geometry (f=16, 1,024 codes: 16 x 16 codes a face); `TINY_F8_CONFIG`
the OpenImages one of the paper's Table 5 (f=8, 8,192 codes: 32 x 32 = 1,024 codes a face).
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from common.fileio import atomic_path
from facetokens.vqgan import VQGAN, VQGANConfig
from facetokens.vqgan_files import FIRST_STAGE_PREFIX

TINY_CONFIG = VQGANConfig(
    embed_dim=32,
    n_embed=1024,
    ddconfig={
        "double_z": False,
        "z_channels": 32,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 32,
        "ch_mult": [1, 1, 2, 2, 4],
        "num_res_blocks": 1,
        "attn_resolutions": [16],
        "dropout": 0.0,
    },
)

TINY_F8_CONFIG = VQGANConfig(
    embed_dim=16,
    n_embed=8192,
    ddconfig={
        "double_z": False,
        "z_channels": 32,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 32,
        "ch_mult": [1, 1, 2, 2],
        "num_res_blocks": 1,
        "attn_resolutions": [],
        "dropout": 0.0,
    },
)


def tiny_vqgan(seed: int = 0, config: VQGANConfig = TINY_CONFIG) -> VQGAN:
    """A randomly initialised small VQGAN (3.4M parameters with TINY_CONFIG) that still maps 256x256 to its grid.

    Its codebook is spread like the encoder's output so that codes are well separated (no near-ties).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VQGAN(config)
        with torch.no_grad():
            probe = torch.rand(2, 3, 256, 256) * 2 - 1
            spread = model.quant_conv(model.encoder(probe)).std()
            codebook = model.quantize.embedding.weight
            codebook.copy_(torch.randn(codebook.shape) * spread)
    return model


def tiny_project_yaml(config: VQGANConfig = TINY_CONFIG) -> dict:
    """A config in the layout of taming's `2021-04-23T18-19-01-project.yaml` (Net2NetTransformer)."""
    return {
        "model": {
            "base_learning_rate": 4.5e-06,
            "target": "taming.models.cond_transformer.Net2NetTransformer",
            "params": {
                "cond_stage_config": "__is_unconditional__",
                "first_stage_config": {
                    "target": "taming.models.vqgan.VQModel",
                    "params": {
                        "ckpt_path": "logs/tiny_vqgan/checkpoints/last.ckpt",
                        "embed_dim": config.embed_dim,
                        "n_embed": config.n_embed,
                        "ddconfig": dict(config.ddconfig),
                        "lossconfig": {"target": "taming.modules.losses.DummyLoss"},
                    },
                },
                "transformer_config": {
                    "target": "taming.modules.transformer.mingpt.GPT",
                    "params": {
                        "block_size": config.codes_per_image,
                        "n_embd": 64,
                        "n_head": 2,
                        "n_layer": 1,
                        "vocab_size": config.n_embed,
                    },
                },
            },
        },
        "data": {"target": "main.DataModuleFromConfig", "params": {"batch_size": 2, "num_workers": 8}},
    }


def lightning_checkpoint(model: VQGAN) -> dict:
    """A dict shaped like the FFHQ `last.ckpt`: the whole transformer's state, first stage under its prefix."""
    state = {FIRST_STAGE_PREFIX + k: v for k, v in model.state_dict().items()}
    state["transformer.tok_emb.weight"] = torch.zeros(model.config.n_embed, 64)
    return {
        "epoch": 12,
        "global_step": 123456,
        "pytorch-lightning_version": "1.0.8",
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val/loss'}": {
                "monitor": "val/loss",
                "best_model_score": torch.tensor(4.25),
                "best_model_path": "logs/tiny/checkpoints/last.ckpt",
            }
        },
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-6, "betas": (0.9, 0.95), "params": [0, 1]}]}],
        "lr_schedulers": [],
        "state_dict": state,
    }


def write_tiny_vqgan(folder: Path, seed: int = 0, config: VQGANConfig = TINY_CONFIG) -> dict[str, Path]:
    """Write `project.yaml` (Net2NetTransformer layout) and a Lightning-style `last.ckpt` of a tiny random VQGAN."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_vqgan(seed, config)
    paths = {"config": folder / "project.yaml", "ckpt": folder / "last.ckpt"}
    with atomic_path(paths["config"]) as tmp:
        tmp.write_text(yaml.safe_dump(tiny_project_yaml(model.config), sort_keys=False), encoding="utf-8")
    with atomic_path(paths["ckpt"]) as tmp:
        torch.save(lightning_checkpoint(model), tmp)
    return paths
