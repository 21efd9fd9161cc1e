"""Per-GPU memory of one training step: model states plus what the step itself holds.

``step_memory`` adds, in bytes, for one micro-step of packed rows on one GPU under DeepSpeed ZeRO-3 with
gradient checkpointing per decoder layer (the shapes come from the profile's configs, so a real-width
slice and the full model go through the same formulas):

* **model states**: bf16 weights of every parameter and, for trainable ones, bf16 gradients, fp32
  master weights and the two Adam moments (2 + 16 bytes), sharded over the GPUs;
* **gathered parameters**: ZeRO-3 gathers each leaf module whole for its forward and backward (a GptOss
  MoE block is one leaf: all 32 experts of a layer), and prefetches the next: two of the largest;
* **checkpointed layer inputs**: one hidden state (tokens x hidden, bf16) per decoder layer;
* **one layer's recompute**: during a layer's backward its forward is re-run and every tensor autograd
  saves is alive with the gradients being made. Attention: ``eager`` holds score-sized tensors
  (rows x heads x L x (L + 1), the sink column included; ``packed_eager`` the same per sample, bounded
  by a sample that fills its row), ``flex_attention`` only q/k/v/output-sized ones
  and the log-sum-exp. MoE: every token goes through ``k`` experts, each keeping its input, the
  gate/up projections and the SwiGLU intermediates;
* **vision tower**: transformers returns every hidden state the tower makes (medkit reads layer -2), so
  all of them exist at once (tiles x patches x width per layer); trained, they are also kept for backward;
* **projector**: pixel-shuffled features and the MLP's activations, kept for backward (it always trains);
* **loss**: the unembedding runs on supervised positions only, one checkpointed chunk at a time
  (``medkit.model.loss``): bf16 and fp32 logits, log-softmax and their gradients for one chunk;
* **runtime**: the CUDA context and allocator slack (a constant on a GPU, none on the CPU).

The element counts per token below are the tensors of transformers' GptOss / CLIP code paths at the
pinned version; ``benchmarks/paper_slice_memory.py`` checks the sum against a measured step of a
real-width slice (results in benchmarks/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medkit.model.loss import CHUNK_TOKENS
from medkit.profiles import Profile
from medkit.training.stages import StageConfig

BF16, FP32 = 2, 4
TRAINABLE_STATE_BYTES = 16  # gradients, fp32 master weights, Adam m and v (DeepSpeed's 18 minus the bf16 weight)
CUDA_RUNTIME_BYTES = int(1.5 * 2**30)  # CUDA context, cuBLAS/NCCL workspaces, allocator slack
# tensors of one decoder layer kept for (or made during) its backward, in units of tokens x hidden:
# two RMSNorm outputs and their inputs, the o_proj output and the residual sums
LAYER_HIDDEN_COPIES = 6
# eager attention: the score-sized tensors alive at once (scores + mask, scores with the sink column,
# its softmax kept for backward, and the gradient of each in the backward)
EAGER_SCORE_COPIES = 4
# MoE experts, per token and routed expert: the expert's input (hidden), gate_up (2 x intermediate),
# the clamps, sigmoid, GLU and (up + 1) terms and their product (7 x intermediate), its output and the
# routing-weighted output (2 x hidden); the backward adds the gradient of its largest (gate_up)
MOE_HIDDEN_PER_EXPERT, MOE_INTERMEDIATE_PER_EXPERT = 3, 11
# vision layers: hidden states per layer are returned whole; one layer's working set on top (attention
# output, the MLP's two intermediates)
VISION_WORKING_COPIES = 4


@dataclass(frozen=True)
class StepShape:
    """One micro-step on one GPU: ``rows`` packed rows of ``row_length`` tokens, with ``tiles`` image tiles
    and ``supervised_tokens`` positions whose next token is trained."""

    rows: int
    row_length: int
    tiles: int = 0
    supervised_tokens: int | None = None  # None: every token (an upper bound)

    @property
    def tokens(self) -> int:
        return self.rows * self.row_length

    @property
    def supervised(self) -> int:
        return self.tokens if self.supervised_tokens is None else self.supervised_tokens


@dataclass(frozen=True)
class StepMemory:
    breakdown: dict[str, int] = field(default_factory=dict)  # component -> bytes per GPU

    @property
    def total_bytes(self) -> int:
        return sum(self.breakdown.values())


@dataclass(frozen=True)
class Dimensions:
    """The sizes the formulas need, read off the profile's model configs."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    experts_per_token: int
    vocab: int
    vision_hidden: int
    vision_intermediate: int
    vision_layers: int
    vision_tokens: int  # per tile, CLS included where the encoder has one
    tokens_per_tile: int  # visual tokens one tile becomes in the LM (after pixel shuffle)
    projector_input: int  # the pixel-shuffled feature width


def dimensions(profile: Profile) -> Dimensions:
    from medkit.model.build import model_config

    config = model_config(profile)  # configs only: no weights, no meta model
    text, vision = config.text_config, config.vision_config
    cls = 1 if config.vision_feature_select_strategy == "default" else 0
    return Dimensions(
        hidden=text.hidden_size, intermediate=text.intermediate_size, layers=text.num_hidden_layers,
        heads=text.num_attention_heads, kv_heads=text.num_key_value_heads, head_dim=text.head_dim,
        experts_per_token=text.num_experts_per_tok, vocab=text.vocab_size,
        vision_hidden=vision.hidden_size, vision_intermediate=vision.intermediate_size,
        vision_layers=vision.num_hidden_layers, vision_tokens=config.patches_per_side ** 2 + cls,
        tokens_per_tile=config.tokens_per_tile,
        projector_input=int(vision.hidden_size / config.downsample_ratio ** 2),
    )


def attention_bytes(d: Dimensions, shape: StepShape, implementation: str) -> int:
    """One layer's attention tensors alive during its recompute and backward."""
    t = shape.tokens
    qkv = t * (2 * d.heads + 2 * d.kv_heads) * d.head_dim  # q, k, v and the output, before the o_proj
    rotated = t * (d.heads + d.kv_heads) * d.head_dim  # q and k after rotary
    projections = 2 * (qkv + rotated) * BF16  # and their gradients
    if implementation in ("eager", "packed_eager"):
        # packed_eager's scores are per sample: this is its worst case, one sample filling the row
        scores = shape.rows * d.heads * shape.row_length * (shape.row_length + 1)
        return projections + EAGER_SCORE_COPIES * scores * BF16
    if implementation == "flex_attention":
        return projections + t * d.heads * FP32  # the log-sum-exp the sinks are applied with
    raise ValueError(f"no memory model for attention {implementation!r}")


def moe_bytes(d: Dimensions, shape: StepShape) -> int:
    per_expert = MOE_HIDDEN_PER_EXPERT * d.hidden + MOE_INTERMEDIATE_PER_EXPERT * d.intermediate
    return shape.tokens * d.experts_per_token * per_expert * BF16


def vision_bytes(d: Dimensions, shape: StepShape) -> int:
    per_tile_state = d.vision_tokens * d.vision_hidden
    states = (d.vision_layers + 1) * per_tile_state  # output_hidden_states: every layer's output
    working = VISION_WORKING_COPIES * per_tile_state + 2 * d.vision_tokens * d.vision_intermediate
    return shape.tiles * (states + working) * BF16


def projector_bytes(d: Dimensions, shape: StepShape) -> int:
    tokens = shape.tiles * d.tokens_per_tile
    # shuffled features and their LayerNorm (4 x vision width), the two Linear outputs and the GELU
    return tokens * (2 * d.projector_input + 3 * d.hidden) * BF16


def loss_bytes(d: Dimensions, shape: StepShape, chunk_tokens: int = CHUNK_TOKENS) -> int:
    chunk = min(shape.supervised, chunk_tokens)
    # bf16 logits, their fp32 copy, the log-softmax, and the gradients of the fp32 and bf16 logits
    return chunk * d.vocab * (BF16 + FP32 + FP32 + FP32 + BF16)


def step_memory(profile: Profile, stage: StageConfig, shape: StepShape, *, num_gpus: int,
                gradient_checkpointing: bool = True, on_gpu: bool = False,
                counts=None, trainable: int | None = None) -> StepMemory:
    """Peak bytes on one of ``num_gpus`` GPUs (ZeRO-3 shards the model states over them); ``on_gpu``
    adds the CUDA runtime. Without gradient checkpointing every layer keeps its whole working set.
    ``trainable``: the trained parameter count when it is not the stage's parts (LoRA adapters)."""
    from medkit.training.compute_plan import model_counts

    counts = counts or model_counts(profile)
    d = dimensions(profile)
    trainable = counts.trainable(stage.trainable) if trainable is None else trainable
    t = shape.tokens
    layer = attention_bytes(d, shape, profile.model.attn_implementation) + moe_bytes(d, shape) \
        + LAYER_HIDDEN_COPIES * t * d.hidden * BF16
    kept_layers = 1 if gradient_checkpointing else d.layers
    breakdown = {
        "model states": (BF16 * counts.total + TRAINABLE_STATE_BYTES * trainable) // num_gpus,
        "gathered params": 2 * BF16 * counts.largest_leaf if num_gpus > 1 else 0,
        "layer inputs": d.layers * t * d.hidden * BF16 if gradient_checkpointing else 0,
        "layer recompute": kept_layers * layer,
        "embeddings": 3 * t * d.hidden * BF16,  # embedded tokens, with the image features scattered in, the final norm
        "vision tower": vision_bytes(d, shape),
        "projector": projector_bytes(d, shape),
        "loss": loss_bytes(d, shape),
        "runtime": CUDA_RUNTIME_BYTES if on_gpu else 0,
    }
    return StepMemory(breakdown)
