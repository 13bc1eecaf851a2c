"""A tiny Shap-E pipeline with random weights, saved like `openai/shap-e`.

A stand-in for the real checkpoint, which tests and CI cannot download (no network, no GPU,
gigabytes of weights): the real classes (`PriorTransformer`, `CLIPTextModelWithProjection`,
`CLIPTokenizer`, `HeunDiscreteScheduler` with the real scheduler settings, `ShapERenderer`) at toy
sizes, saved with `save_pretrained` in the real folder layout. Its objects are random blobs; only
the plumbing (a closed, coloured mesh, a preview of the right size, determinism) is meaningful.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import HeunDiscreteScheduler, PriorTransformer, ShapEPipeline
from diffusers.pipelines.shap_e import ShapERenderer
from transformers import CLIPTextModelWithProjection

from mmq.workers.diffusion.tiny import tiny_clip_text_config
from mmq.workers.tiny_tokenizers import tiny_clip_tokenizer

from .marching_cubes import lookup_table

SEED = 0
TEXT_DIM = 32  # the text embedding the prior is conditioned on
LATENT_DIM = 32  # width of each latent token
RENDERER_DIM = 8  # width of the renderer's MLP
# The prior's latent tokens become the first four renderer layers' weights, one token per row.
PARAM_SHAPES = ((RENDERER_DIM, 93), (RENDERER_DIM, RENDERER_DIM), (RENDERER_DIM, RENDERER_DIM),
                (RENDERER_DIM, RENDERER_DIM))
LATENT_TOKENS = sum(rows for rows, _ in PARAM_SHAPES)
# The renderer's first layer reads the point's position (3 values), then sin and cos of it at 15
# octaves (2^0 .. 2^14, three values each). Random weights on the high octaves make a field that
# changes sign between neighbouring grid points: a mesh of noise, ~600,000 triangles on a 64³ grid.
# The tiny renderer reads only the position and the lowest octaves: smooth blobs, ~36,000 triangles.
OCTAVES, SMOOTH_OCTAVES = 15, 2
# The field's offset (the bias of the renderer's signed-distance output). With random weights the
# field is positive everywhere: all inside, so the mesh is just the bounding box that the decoder
# closes every shape with. Shifted by this, 1-50% of the box is inside for the seeds and prompts
# tried, and the mesh is a few blobs.
SDF_BIAS = -0.2
SDF_OUTPUT = 0  # the first of the renderer's 12 outputs is the signed distance


def build_tiny_shap_e(folder: Path) -> None:
    """Build, seed and save a tiny `ShapEPipeline`."""
    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(SEED)  # same weights, byte for byte, on every build
    pipeline = ShapEPipeline(
        prior=_prior(),
        text_encoder=CLIPTextModelWithProjection(tiny_clip_text_config(tokenizer, TEXT_DIM)),
        tokenizer=tokenizer,
        scheduler=_scheduler(),
        shap_e_renderer=_renderer(),
    )
    pipeline.save_pretrained(folder)


def _prior() -> PriorTransformer:
    # openai/shap-e's prior/config.json, at toy sizes: no extra tokens, layer norm on the input.
    return PriorTransformer(
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=2,
        embedding_dim=LATENT_DIM,
        num_embeddings=LATENT_TOKENS,
        additional_embeddings=0,
        time_embed_act_fn="gelu",
        norm_in_type="layer",
        encoder_hid_proj_type=None,
        added_emb_type=None,
        time_embed_dim=4 * LATENT_DIM,
        embedding_proj_dim=TEXT_DIM,
        clip_embed_dim=2 * LATENT_DIM,  # a mean and a variance per latent value
    )


def _scheduler() -> HeunDiscreteScheduler:
    # openai/shap-e's scheduler/scheduler_config.json.
    return HeunDiscreteScheduler(
        num_train_timesteps=1024,
        beta_schedule="exp",
        prediction_type="sample",
        use_karras_sigmas=True,
        clip_sample=True,
        clip_sample_range=1.0,
    )


def _renderer() -> ShapERenderer:
    renderer = ShapERenderer(
        param_shapes=PARAM_SHAPES, d_latent=LATENT_DIM, d_hidden=RENDERER_DIM, n_output=12, n_hidden_layers=6
    )
    _smooth_first_layer(renderer)
    with torch.no_grad():
        renderer.mlp.mlp[-1].bias[SDF_OUTPUT] = SDF_BIAS
    # The real checkpoint carries the marching-cubes table in these buffers; they start as zeros.
    cases, masks = lookup_table()
    renderer.mesh_decoder.cases.copy_(cases)
    renderer.mesh_decoder.masks.copy_(masks)
    return renderer


def _smooth_first_layer(renderer: ShapERenderer) -> None:
    """Give the first layer no weight on the high octaves (see SMOOTH_OCTAVES)."""
    projection = renderer.params_proj.projections["nerstf__mlp__0__weight"]
    keep = torch.zeros(3 + 2 * 3 * OCTAVES, dtype=torch.bool)
    keep[:3 + 3 * SMOOTH_OCTAVES] = True  # the position, then sin at the low octaves
    keep[3 + 3 * OCTAVES:3 + 3 * (OCTAVES + SMOOTH_OCTAVES)] = True  # cos at the low octaves
    with torch.no_grad():
        # A generated weight is layer_norm(token . proj)[c] * norm.weight[c] + norm.bias[c] + proj.bias[c].
        projection.norm.weight[~keep] = 0
        projection.norm.bias[~keep] = 0
        projection.proj.bias.view(RENDERER_DIM, -1)[:, ~keep] = 0
