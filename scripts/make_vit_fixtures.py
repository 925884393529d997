#!/usr/bin/env python3
"""Write Hugging Face parity fixtures for cpt's ViT and ViT-MAE implementations.

Usage:
    pip install torch transformers safetensors
    python3 scripts/make_vit_fixtures.py [--out tests/fixtures/hf]

Runs fully offline: every model is built from a tiny `ViTConfig` / `ViTMAEConfig` with random
init (no hub access). For each variant it writes tests/fixtures/hf/<variant>/ with

    config.json, model.safetensors   from model.save_pretrained(...) (see the notes on names)
    reference.safetensors            inputs and the outputs transformers computes from them

and (re)writes the ViT section of tests/fixtures/hf/README.md between two marker lines, leaving
the rest of that file (written by make_hf_fixtures.py) alone. make_hf_fixtures.py rewrites the
whole README, so run this script after it.

Determinism: float32 everywhere, torch.use_deterministic_algorithms(True), one thread, eager
attention, torch.manual_seed(<per-variant seed>) before building each model and separately seeded
torch.Generators for the inputs.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import torch

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)  # keeps CPU reductions in a fixed order

import safetensors  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    ViTConfig,
    ViTForImageClassification,
    ViTMAEConfig,
    ViTMAEForPreTraining,
)
from transformers.models.vit_mae.modeling_vit_mae import build_2d_sinusoidal_position_embedding  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BATCH = 3
BEGIN = "<!-- make_vit_fixtures.py: begin -->"
END = "<!-- make_vit_fixtures.py: end -->"

VIT = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    hidden_act="gelu",
    layer_norm_eps=1e-12,
    image_size=16,
    patch_size=4,
    num_channels=3,
    qkv_bias=True,
    initializer_range=0.1,
    num_labels=5,
)

MAE = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    hidden_act="gelu",
    layer_norm_eps=1e-12,
    image_size=16,
    patch_size=4,
    num_channels=3,
    qkv_bias=True,
    initializer_range=0.1,
    decoder_hidden_size=16,
    decoder_num_hidden_layers=2,
    decoder_num_attention_heads=2,
    decoder_intermediate_size=32,
    mask_ratio=0.75,
    norm_pix_loss=False,
)


def perturb(model: torch.nn.Module) -> None:
    """transformers initialises LayerNorms to 1/0, biases and MAE's mask token to 0. Give them
    random values (same seed stream) so that a loader which drops one cannot pass."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if re.search(r"(layernorm[^.]*|decoder_norm)\.weight$", name):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias") or name.endswith("mask_token"):
                p.copy_(0.1 * torch.randn_like(p))


def sincos(grid: int, width: int) -> torch.Tensor:
    """The MAE paper's fixed 2-D sin-cos table with a zero CLS row, as transformers'
    `initialize_weights` builds it (its halves swapped: [sin_w | cos_w | sin_h | cos_h])."""
    table = build_2d_sinusoidal_position_embedding(grid, grid, embed_dim=width, cls_token=True)
    half = table.shape[-1] // 2
    return torch.cat([table[..., half:], table[..., :half]], dim=-1).unsqueeze(0)


def hf_names(model: torch.nn.Module, folder: Path) -> dict[str, str]:
    """Map each in-memory parameter name to its name in the saved file. transformers 5 renames
    modules in memory (`vit.layers.0.attention.q_proj`) but saves the original checkpoint names
    (`vit.encoder.layer.0.attention.attention.query`); matching tensors by value finds the
    pairing without copying transformers' rename table (every tensor here is distinct)."""
    saved = load_file(str(folder / "model.safetensors"))
    out = {}
    for name, p in model.named_parameters():
        hits = [k for k, v in saved.items() if v.shape == p.shape and torch.equal(v, p.detach())]
        assert len(hits) == 1, (name, hits)
        out[name] = hits[0]
    assert len(set(out.values())) == len(out) == len(saved), "saved names are not a bijection"
    return out


def grads(model: torch.nn.Module, names: dict[str, str], ref: dict) -> None:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    total = sum((p.grad.double() ** 2).sum() for _, p in named)
    ref["grad_norm"] = torch.sqrt(total).float().reshape(1)
    for name, p in named:
        ref[f"grad.{names[name]}"] = p.grad.detach().float().contiguous().clone()


def pixels(seed: int, channels: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, channels, size, size, generator=g)


def write_vit(folder: Path, seed: int) -> dict:
    torch.manual_seed(seed)
    config = ViTConfig(**VIT)
    model = ViTForImageClassification._from_config(config, attn_implementation="eager", dtype=torch.float32)
    perturb(model)
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    names = hf_names(model, folder)

    ref = {"pixel_values": pixels(seed + 1, VIT["num_channels"], VIT["image_size"])}
    g = torch.Generator().manual_seed(seed + 2)
    ref["labels"] = torch.randint(0, VIT["num_labels"], (BATCH,), generator=g, dtype=torch.int64)
    out = model(ref["pixel_values"], labels=ref["labels"], output_hidden_states=True)
    hidden = model.vit(ref["pixel_values"]).last_hidden_state
    ref["logits"] = out.logits.detach().float().contiguous()
    ref["loss"] = out.loss.detach().reshape(1).float()
    ref["last_hidden_state"] = hidden.detach().contiguous()
    ref["cls_features"] = hidden[:, 0].detach().contiguous()
    out.loss.backward()
    grads(model, names, ref)
    return ref


def write_mae(folder: Path, seed: int, overrides: dict, hub_names: bool) -> dict:
    torch.manual_seed(seed)
    kw = dict(MAE)
    kw.update(overrides)
    config = ViTMAEConfig(**kw)
    model = ViTMAEForPreTraining._from_config(config, attn_implementation="eager", dtype=torch.float32)
    # transformers 5 zeroes both fixed tables at init (its own init order skips the sin-cos fill);
    # published checkpoints carry the sin-cos tables, so put them in as MAE defines them.
    grid = config.image_size // config.patch_size
    with torch.no_grad():
        model.vit.embeddings.position_embeddings.copy_(sincos(grid, config.hidden_size))
        model.decoder.decoder_pos_embed.copy_(sincos(grid, config.decoder_hidden_size))
    perturb(model)
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    if hub_names:
        # transformers 5 saves decoder layers as `decoder.decoder_encoder.layer.N`; published
        # checkpoints (facebook/vit-mae-*) use `decoder.decoder_layers.N`. Write that spelling and
        # check transformers reads it back whole.
        path = folder / "model.safetensors"
        saved = load_file(str(path))
        renamed = {k.replace("decoder.decoder_encoder.layer.", "decoder.decoder_layers."): v for k, v in saved.items()}
        save_file(renamed, str(path), metadata={"format": "pt"})
        back, info = ViTMAEForPreTraining.from_pretrained(folder, output_loading_info=True)
        assert not any(info.values()), info
        for (n, a), (_, b) in zip(model.named_parameters(), back.named_parameters()):
            assert torch.equal(a, b), n
    names = hf_names(model, folder)

    num_patches = grid * grid
    ref = {"pixel_values": pixels(seed + 1, config.num_channels, config.image_size)}
    g = torch.Generator().manual_seed(seed + 2)
    ref["noise"] = torch.rand(BATCH, num_patches, generator=g)
    out = model(ref["pixel_values"], noise=ref["noise"])
    encoded = model.vit(ref["pixel_values"], noise=ref["noise"])
    ref["logits"] = out.logits.detach().contiguous()
    ref["loss"] = out.loss.detach().reshape(1).float()
    ref["mask"] = out.mask.detach().float().contiguous()
    ref["ids_restore"] = out.ids_restore.to(torch.int64).contiguous()
    ref["last_hidden_state"] = encoded.last_hidden_state.detach().contiguous()
    out.loss.backward()
    grads(model, names, ref)

    # Features without masking: mask_ratio 0 and noise in ascending order keep every patch in
    # place; cpt's MAE features are the mean of the patch tokens (CLS excluded).
    with torch.no_grad():
        model.config.mask_ratio = 0.0
        ascending = torch.arange(num_patches, dtype=torch.float32).expand(BATCH, -1)
        full = model.vit(ref["pixel_values"], noise=ascending).last_hidden_state
        model.config.mask_ratio = kw["mask_ratio"]
    ref["unmasked_hidden_state"] = full.contiguous()
    ref["mean_features"] = full[:, 1:].mean(dim=1).contiguous()
    return ref


# name -> (writer, seed)
VARIANTS = {
    "vit-tiny": lambda folder: write_vit(folder, 2001),
    "mae-tiny": lambda folder: write_mae(folder, 2002, {}, hub_names=True),
    "mae-normpix": lambda folder: write_mae(
        folder, 2003, dict(num_channels=1, norm_pix_loss=True, mask_ratio=0.6), hub_names=False
    ),
}

SECTION = """\
{begin}
## ViT and ViT-MAE fixtures

Generated by `scripts/make_vit_fixtures.py` (offline, random init, float32, eager attention,
deterministic; torch {torch}, transformers {transformers}, safetensors {safetensors}). Run it after
`make_hf_fixtures.py`, which rewrites this README and drops this section.

| folder | model | what differs |
| --- | --- | --- |
| `vit-tiny` | `ViTForImageClassification` | hidden 32, 2 layers, 4 heads, MLP 64, image 16, patch 4, 3 channels, 5 labels, GELU, qkv bias |
| `mae-tiny` | `ViTMAEForPreTraining` | encoder as `vit-tiny`; decoder hidden 16, 2 layers, 2 heads, MLP 32; mask ratio 0.75; weights under the published names `decoder.decoder_layers.N.*` |
| `mae-normpix` | `ViTMAEForPreTraining` | as `mae-tiny` but 1 channel, mask ratio 0.6, `norm_pix_loss`; weights exactly as transformers 5 saves them (`decoder.decoder_encoder.layer.N.*`) |

LayerNorm weights are `1 + 0.1*randn`, biases and MAE's `mask_token` `0.1*randn` (transformers
would leave them at 1 and 0). MAE's fixed `vit.embeddings.position_embeddings` and
`decoder.decoder_pos_embed` hold the 2-D sin-cos tables (zero CLS row) built with transformers'
`build_2d_sinusoidal_position_embedding`, halves swapped as its `initialize_weights` does:
transformers 5 leaves them zero at random init, published checkpoints carry the tables.

reference.safetensors (batch 3; floats f32, ids i64; `<name>` is the saved parameter name):

| name | shape | meaning |
| --- | --- | --- |
| `pixel_values` | [3, C, 16, 16] | standard normal, seeded |
| `labels` (ViT) | [3] | in [0, 5) |
| `logits` | ViT [3, 5]; MAE [3, 16, 4·4·C] | model outputs |
| `loss` | [1] | cross-entropy (ViT); masked-patch MSE (MAE) |
| `last_hidden_state` | ViT [3, 17, 32]; MAE [3, 1 + kept, 32] | final-layernormed encoder output |
| `cls_features` (ViT) | [3, 32] | `last_hidden_state[:, 0]` |
| `noise` (MAE) | [3, 16] | uniform [0, 1), seeded |
| `mask`, `ids_restore` (MAE) | [3, 16] | transformers' `random_masking` outputs for `noise` |
| `unmasked_hidden_state` (MAE) | [3, 17, 32] | encoder output with `mask_ratio` 0 and ascending noise |
| `mean_features` (MAE) | [3, 32] | mean over the patch tokens of `unmasked_hidden_state` |
| `grad_norm` | [1] | L2 norm of all trainable gradients of `loss` (fixed sin-cos tables excluded) |
| `grad.<name>` | HF shape | gradient of every trainable parameter |

Files:

{files}
{end}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "hf")
    args = ap.parse_args()
    root: Path = args.out
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, write in VARIANTS.items():
        folder = root / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        ref = write(folder)
        save_file({k: v.contiguous() for k, v in ref.items()}, str(folder / "reference.safetensors"))
        size = sum(f.stat().st_size for f in folder.iterdir())
        assert size < 300_000, f"{name} is {size} bytes"
        print(f"{name}: {len(ref)} reference tensors, loss={ref['loss'].item():.6f}, {size} bytes", file=sys.stderr)
        for f in sorted(folder.iterdir()):
            lines.append(f"- `{name}/{f.name}` ({f.stat().st_size} bytes)")

    section = SECTION.format(
        begin=BEGIN,
        end=END,
        torch=torch.__version__,
        transformers=transformers.__version__,
        safetensors=safetensors.__version__,
        files="\n".join(lines),
    )
    readme = root / "README.md"
    text = readme.read_text() if readme.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    readme.write_text(text)


if __name__ == "__main__":
    main()
