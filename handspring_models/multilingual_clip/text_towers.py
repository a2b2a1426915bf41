"""Bidirectional (BERT-style) text towers: XLM-RoBERTa and DistilBERT, mean-pooled and projected.

Both are post-LayerNorm transformer encoders: each sublayer's output is added to its input and
then normalized. Module and parameter names follow Hugging Face's ``XLMRobertaModel`` and
``DistilBertModel`` one-to-one (``embeddings.word_embeddings.weight``,
``encoder.layer.0.attention.self.query.weight``, ``transformer.layer.0.attention.q_lin.weight``...),
so their checkpoints load as they are.

Texts in a batch are padded to the longest one; padding is masked out of attention and of the
pooling, so a text's vector does not depend on what it is batched with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime.kernels import Linear


@dataclass(frozen=True)
class TextTowerConfig:
    kind: str  # "xlm_roberta" or "distilbert"
    vocab_size: int
    width: int
    layers: int
    heads: int
    intermediate: int
    max_positions: int  # rows of the position table
    pad_id: int
    layer_norm_eps: float
    # The head after pooling: "mlp" (open_clip: Linear, exact GELU, Linear, no biases) or
    # "linear" (sentence-transformers' Dense without bias or activation).
    projection: str
    projection_hidden: int | None  # the MLP's hidden width (open_clip: (width + embed_dim) // 2)
    embed_dim: int
    type_vocab_size: int = 1  # XLM-RoBERTa's token-type table (one row, always row 0)
    # open_clip masks every pad id, even one a text spelled out ("<pad>"); sentence-transformers
    # masks what its tokenizer padded. Both agree on every other text.
    mask_pad_ids: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _embedding_table(rows: int, width: int) -> nn.Embedding:
    # Given storage, nn.Embedding skips its random init (see clip.model.CLIP for why that matters).
    return nn.Embedding(rows, width, _weight=torch.empty(rows, width))


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, keep: torch.Tensor) -> torch.Tensor:
    """[b, n, d] projections -> [b, n, d]; ``keep`` [b, n] is False at padding, which no query attends to."""
    b, n, d = q.shape
    q, k, v = (t.view(b, n, heads, d // heads).transpose(1, 2) for t in (q, k, v))  # [b, h, n, d/h]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
    return out.transpose(1, 2).reshape(b, n, d)


# ---------------------------------------------------------------- XLM-RoBERTa (HF XLMRobertaModel)

class XLMRobertaEmbeddings(nn.Module):
    def __init__(self, cfg: TextTowerConfig):
        super().__init__()
        self.pad_id = cfg.pad_id
        self.word_embeddings = _embedding_table(cfg.vocab_size, cfg.width)
        self.position_embeddings = _embedding_table(cfg.max_positions, cfg.width)
        self.token_type_embeddings = _embedding_table(cfg.type_vocab_size, cfg.width)
        self.LayerNorm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)

    def forward(self, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        # RoBERTa counts positions from pad_id + 1, over non-pad tokens only (so padding never shifts them).
        positions = torch.cumsum(keep, dim=1) * keep + self.pad_id
        dtype = self.LayerNorm.weight.dtype
        # The word table may be kept in the file's dtype (see Embedder.LOOKUP_TABLES): cast the rows.
        x = (self.word_embeddings(ids).to(dtype) + self.position_embeddings(positions)
             + self.token_type_embeddings.weight[0])
        return self.LayerNorm(x)


class XLMRobertaSelfAttention(nn.Module):
    def __init__(self, cfg: TextTowerConfig):
        super().__init__()
        self.heads = cfg.heads
        self.query = Linear(cfg.width, cfg.width)
        self.key = Linear(cfg.width, cfg.width)
        self.value = Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return _attention(self.query(x), self.key(x), self.value(x), self.heads, keep)


class XLMRobertaSublayerOutput(nn.Module):
    """dense, then LayerNorm of (that + the sublayer's input): HF's ``*Output`` modules."""

    def __init__(self, in_width: int, width: int, eps: float):
        super().__init__()
        self.dense = Linear(in_width, width)
        self.LayerNorm = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class XLMRobertaAttention(nn.Module):
    def __init__(self, cfg: TextTowerConfig):
        super().__init__()
        setattr(self, "self", XLMRobertaSelfAttention(cfg))  # HF's name: attention.self.query...
        self.output = XLMRobertaSublayerOutput(cfg.width, cfg.width, cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.output(getattr(self, "self")(x, keep), x)


class XLMRobertaIntermediate(nn.Module):
    def __init__(self, cfg: TextTowerConfig):
        super().__init__()
        self.dense = Linear(cfg.width, cfg.intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class XLMRobertaLayer(nn.Module):
    def __init__(self, cfg: TextTowerConfig):
        super().__init__()
        self.attention = XLMRobertaAttention(cfg)
        self.intermediate = XLMRobertaIntermediate(cfg)
        self.output = XLMRobertaSublayerOutput(cfg.intermediate, cfg.width, cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, keep)
        return self.output(self.intermediate(x), x)


class XLMRobertaEncoder(nn.Module):
    def __init__(self, cfg: TextTowerConfig):
        super().__init__()
        self.layer = nn.ModuleList(XLMRobertaLayer(cfg) for _ in range(cfg.layers))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, keep)
        return x


class XLMRobertaModel(nn.Module):
    """HF ``XLMRobertaModel`` without its pooler (open_clip builds it with ``add_pooling_layer=False``)."""

    def __init__(self, cfg: TextTowerConfig):
        super().__init__()
        self.embeddings = XLMRobertaEmbeddings(cfg)
        self.encoder = XLMRobertaEncoder(cfg)

    def forward(self, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embeddings(ids, keep), keep)


# ---------------------------------------------------------------- DistilBERT (HF DistilBertModel)

class DistilBertEmbeddings(nn.Module):
    def __init__(self, cfg: TextTowerConfig):
        super().__init__()
        self.word_embeddings = _embedding_table(cfg.vocab_size, cfg.width)
        self.position_embeddings = _embedding_table(cfg.max_positions, cfg.width)
        self.LayerNorm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)

    def forward(self, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        dtype = self.LayerNorm.weight.dtype
        x = self.word_embeddings(ids).to(dtype) + self.position_embeddings.weight[: ids.shape[1]]
        return self.LayerNorm(x)


class DistilBertSelfAttention(nn.Module):
    def __init__(self, cfg: TextTowerConfig):
        super().__init__()
        self.heads = cfg.heads
        self.q_lin = Linear(cfg.width, cfg.width)
        self.k_lin = Linear(cfg.width, cfg.width)
        self.v_lin = Linear(cfg.width, cfg.width)
        self.out_lin = Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.out_lin(_attention(self.q_lin(x), self.k_lin(x), self.v_lin(x), self.heads, keep))


class DistilBertFFN(nn.Module):
    def __init__(self, cfg: TextTowerConfig):
        super().__init__()
        self.lin1 = Linear(cfg.width, cfg.intermediate)
        self.lin2 = Linear(cfg.intermediate, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.gelu(self.lin1(x)))


class DistilBertLayer(nn.Module):
    def __init__(self, cfg: TextTowerConfig):
        super().__init__()
        self.attention = DistilBertSelfAttention(cfg)
        self.sa_layer_norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.ffn = DistilBertFFN(cfg)
        self.output_layer_norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = self.sa_layer_norm(self.attention(x, keep) + x)
        return self.output_layer_norm(self.ffn(x) + x)


class DistilBertTransformer(nn.Module):
    def __init__(self, cfg: TextTowerConfig):
        super().__init__()
        self.layer = nn.ModuleList(DistilBertLayer(cfg) for _ in range(cfg.layers))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, keep)
        return x


class DistilBertModel(nn.Module):
    def __init__(self, cfg: TextTowerConfig):
        super().__init__()
        self.embeddings = DistilBertEmbeddings(cfg)
        self.transformer = DistilBertTransformer(cfg)

    def forward(self, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.transformer(self.embeddings(ids, keep), keep)


# ---------------------------------------------------------------- pooling and projection heads

class MLPProjection(nn.Sequential):
    """open_clip's ``hf_proj_type: mlp``: Linear, exact GELU, Linear, no biases (``proj.0``, ``proj.2``)."""

    def __init__(self, width: int, hidden: int, embed_dim: int):
        super().__init__(Linear(width, hidden, bias=False), nn.GELU(), Linear(hidden, embed_dim, bias=False))


class Dense(nn.Module):
    """sentence-transformers' ``Dense`` module as the multilingual CLIP has it: no bias, identity activation."""

    def __init__(self, width: int, embed_dim: int):
        super().__init__()
        self.linear = Linear(width, embed_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def mean_pool(hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The mean over each row's non-pad tokens (start and end tokens included)."""
    weights = keep.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1)


class TextTower(nn.Module):
    """Encoder (``transformer``), mean pooling, projection (``proj`` or ``dense``)."""

    ENCODERS = {"xlm_roberta": XLMRobertaModel, "distilbert": DistilBertModel}

    def __init__(self, cfg: TextTowerConfig):
        super().__init__()
        if cfg.kind not in self.ENCODERS:
            raise ValueError(f"unknown text tower {cfg.kind!r}; known: {', '.join(self.ENCODERS)}")
        self.config = cfg
        self.transformer = self.ENCODERS[cfg.kind](cfg)
        if cfg.projection == "mlp":
            self.proj = MLPProjection(cfg.width, cfg.projection_hidden, cfg.embed_dim)
        elif cfg.projection == "linear":
            self.dense = Dense(cfg.width, cfg.embed_dim)
        else:
            raise ValueError(f"unknown projection {cfg.projection!r}")

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``ids`` [b, n] padded with ``pad_id`` after each row's ``lengths`` tokens -> [b, embed_dim],
        not normalized."""
        keep = torch.arange(ids.shape[1]) < lengths[:, None]
        if self.config.mask_pad_ids:
            keep &= ids != self.config.pad_id
        pooled = mean_pool(self.transformer(ids, keep), keep)
        return self.proj(pooled) if self.config.projection == "mlp" else self.dense(pooled)

