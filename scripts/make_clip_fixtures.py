#!/usr/bin/env python3
"""Write the Hugging Face parity fixture for cpt's CLIP implementation.

Usage:
    pip install torch transformers safetensors
    python3 scripts/make_clip_fixtures.py [--root tests/fixtures/hf]

Runs fully offline: the model is built from a tiny `CLIPConfig` with random init (no hub
access). It writes

    config.json, model.safetensors      from model.save_pretrained(...)
    reference.safetensors               inputs and reference outputs computed by transformers

into <root>/clip-tiny/, and (re)writes its section of <root>/README.md between two marker lines
(make_hf_fixtures.py rewrites the whole README, so run this script after it).

Determinism: float32, torch.use_deterministic_algorithms(True), one thread, eager attention,
torch.manual_seed(SEED) before building the model and a separately seeded torch.Generator for
the inputs. Re-running with the same torch/transformers versions gives the same tensors.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)  # keeps CPU reductions in a fixed order

import safetensors  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPConfig, CLIPModel  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SEED = 2001
BEGIN = "<!-- make_clip_fixtures.py: begin -->"
END = "<!-- make_clip_fixtures.py: end -->"

VOCAB = 100
PAD_ID, BOS_ID, EOS_ID = 0, 1, 3  # EOS != 2: transformers pools at the first EOS position
TEXT_LEN = 8
BATCH = 4
CHANNELS, IMAGE, PATCH = 3, 16, 4

TEXT = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=TEXT_LEN,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    pad_token_id=PAD_ID,
    bos_token_id=BOS_ID,
    eos_token_id=EOS_ID,
)
# The vision tower uses exact GELU so that both supported activations are checked.
VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_channels=CHANNELS,
    image_size=IMAGE,
    patch_size=PATCH,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
)

# Gradients stored per parameter: the 0-d logit scale, both projections, the vision embeddings,
# and one attention and one MLP projection per tower (weights and a bias). All of them would
# double the folder's size; the global norm covers every parameter.
GRADS = [
    "logit_scale",
    "text_projection.weight",
    "visual_projection.weight",
    "vision_model.embeddings.class_embedding",
    "vision_model.embeddings.patch_embedding.weight",
    "vision_model.embeddings.position_embedding.weight",
    "vision_model.pre_layrnorm.weight",
    "vision_model.post_layernorm.bias",
    "vision_model.encoder.layers.0.self_attn.q_proj.weight",
    "vision_model.encoder.layers.1.mlp.fc2.bias",
    "text_model.embeddings.position_embedding.weight",
    "text_model.encoder.layers.0.self_attn.v_proj.weight",
    "text_model.encoder.layers.1.self_attn.out_proj.bias",
    "text_model.encoder.layers.1.mlp.fc1.weight",
    "text_model.final_layer_norm.weight",
]


def build_model() -> CLIPModel:
    cfg = CLIPConfig(
        text_config=TEXT,
        vision_config=VISION,
        projection_dim=16,
        logit_scale_init_value=2.6592,
    )
    torch.manual_seed(SEED)
    model = CLIPModel(cfg).to(torch.float32)
    model.config._attn_implementation = "eager"
    model.text_model.config._attn_implementation = "eager"
    model.vision_model.config._attn_implementation = "eager"
    # HF initialises LayerNorm weights to 1 and biases to 0. Perturb them (same seed stream),
    # and move the logit scale off its default, so that a loader which drops one of them cannot
    # pass the parity check.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
        model.logit_scale.fill_(2.3)
    model.eval()
    return model


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(SEED + 1)
    pixels = torch.randn((BATCH, CHANNELS, IMAGE, IMAGE), generator=g, dtype=torch.float32)
    # Captions: BOS, words in [4, VOCAB), EOS, then PAD up to TEXT_LEN, with EOS at positions
    # 7 (no padding), 4, 2 and 5. EOS (3) is below every word id, so the legacy rule
    # (eos_token_id == 2: argmax over the ids) pools at a word, not at EOS.
    eos_at = [7, 4, 2, 5]
    rows = []
    for pos in eos_at:
        words = torch.randint(4, VOCAB, (pos - 1,), generator=g).tolist()
        row = [BOS_ID] + words + [EOS_ID] + [PAD_ID] * (TEXT_LEN - pos - 1)
        rows.append(row)
    ids = torch.tensor(rows, dtype=torch.int64)
    assert ids.shape == (BATCH, TEXT_LEN)
    return pixels, ids


SECTION = """\
{begin}
## CLIP fixture

Generated by `scripts/make_clip_fixtures.py` (offline, random init, float32, eager attention,
deterministic; torch {torch}, transformers {transformers}, safetensors {safetensors}). Run it
after `make_hf_fixtures.py`, which rewrites this README and drops this section.

`clip-tiny/`: a `CLIPModel` with both towers of hidden size 32, intermediate 64, 2 layers,
4 heads, layer_norm_eps 1e-5, projection_dim 16. Text: vocab 100, max_position_embeddings 8,
`quick_gelu`, pad 0, bos 1, **eos 3** (not 2, so transformers pools at the first EOS). Vision:
3 channels, 16x16 images, 4x4 patches (16 + 1 positions), exact `gelu`. LayerNorm weights are
`1 + 0.1*randn`, biases `0.1*randn`, and `logit_scale` is 2.3 (not the init value 2.6592), so
that a loader which drops one of them fails. `model.safetensors` is what `save_pretrained`
writes: `logit_scale` is 0-d and there are no `position_ids` buffers.

reference.safetensors (batch 4; floats f32, ids i64):

| name | shape | meaning |
| --- | --- | --- |
| `pixel_values` | [4, 3, 16, 16] | standard normal, seeded |
| `input_ids` | [4, 8] | BOS, words in [4, 100), EOS at positions 7, 4, 2, 5, then pad (0) |
| `logits_per_image` | [4, 4] | `model(input_ids, pixel_values).logits_per_image` |
| `text_embeds`, `image_embeds` | [4, 16] | L2-normalised projected embeddings |
| `loss` | [1] | `return_loss=True`: symmetric InfoNCE (checked against a hand-written one) |
| `grad_norm` | [1] | L2 norm of the gradients of `loss` over all parameters (summed in float64) |
| `grad.<name>` | HF shape | gradient of `loss` for {ngrads} parameters, `logit_scale` (0-d) among them |
| `legacy_text_embeds` | [4, 16] | `text_embeds` with `text_model.eos_token_id = 2`: the legacy rule pools at the first argmax of the ids, a word here (EOS 3 is below every word id) |

Files:

{files}
{end}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REPO / "tests" / "fixtures" / "hf")
    args = ap.parse_args()
    root: Path = args.root
    folder = root / "clip-tiny"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)

    model = build_model()
    model.save_pretrained(folder, safe_serialization=True)
    # The saved folder must load back without missing or unexpected keys.
    _, info = CLIPModel.from_pretrained(folder, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    assert not bad, bad

    pixels, ids = inputs()
    ref: dict[str, torch.Tensor] = {"pixel_values": pixels, "input_ids": ids}

    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, pixel_values=pixels, return_loss=True)
    # Cross-check transformers' loss against the symmetric InfoNCE written out here.
    with torch.no_grad():
        labels = torch.arange(BATCH)
        lt = out.logits_per_text
        manual = (torch.nn.functional.cross_entropy(lt, labels) + torch.nn.functional.cross_entropy(lt.T, labels)) / 2
        assert torch.allclose(manual, out.loss, atol=1e-6), (manual, out.loss)
    out.loss.backward()
    ref["logits_per_image"] = out.logits_per_image.detach().contiguous()
    ref["text_embeds"] = out.text_embeds.detach().contiguous()
    ref["image_embeds"] = out.image_embeds.detach().contiguous()
    ref["loss"] = out.loss.detach().reshape(1)
    named = dict(model.named_parameters())
    ref["grad_norm"] = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in named.values())).float().reshape(1)
    for name in GRADS:
        ref[f"grad.{name}"] = named[name].grad.detach().contiguous().clone()

    # The legacy pooling rule (eos_token_id == 2: argmax over the ids), same weights and inputs.
    model.text_model.eos_token_id = 2
    with torch.no_grad():
        legacy = model(input_ids=ids, pixel_values=pixels)
    ref["legacy_text_embeds"] = legacy.text_embeds.contiguous()
    first_eos = (ids == EOS_ID).int().argmax(-1)
    assert not torch.equal(first_eos, ids.argmax(-1)), "the legacy rule must pool elsewhere"

    save_file({k: v.contiguous() for k, v in ref.items()}, str(folder / "reference.safetensors"))
    total = sum(f.stat().st_size for f in folder.iterdir())
    print(f"{folder}: {len(ref)} reference tensors, loss={ref['loss'].item():.6f}, {total} bytes", file=sys.stderr)

    files = "\n".join(f"- `clip-tiny/{f.name}` ({f.stat().st_size} bytes)" for f in sorted(folder.iterdir()))
    section = SECTION.format(
        begin=BEGIN,
        end=END,
        torch=torch.__version__,
        transformers=transformers.__version__,
        safetensors=safetensors.__version__,
        ngrads=len(GRADS),
        files=files,
    )
    readme = root / "README.md"
    text = readme.read_text() if readme.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    readme.write_text(text)


if __name__ == "__main__":
    main()
