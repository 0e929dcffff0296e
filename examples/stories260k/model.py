"""The whole pretrained stories260K (Andrej Karpathy's llama2.c "tinyllamas", MIT) as an ordinary
nn.Module, written the way llama2.c's model.py writes it: token embedding, 5 transformer blocks
(RMSNorm, grouped-query attention with RoPE and a causal mask, RMSNorm, SwiGLU feed-forward,
residuals), a final RMSNorm and a classifier tied to the embedding. ``model(tokens)`` returns the
logits of every position, ``[1, T, vocab]``.

The module code follows llama2.c's model.py (Copyright (c) 2023 Andrej Karpathy, MIT licence; the
licence text is in data/README.md), without dropout, KV cache, training or generation helpers.

Names this file defines:

* ``model``           the Transformer with the trained weights of the shipped checkpoint
* ``example_inputs``  ``(tokens,)``: one ``[1, MASEC_SEQ_LEN]`` int64 tensor, BOS + a TinyStories
                      prompt (a new BOS + the prompt again while too short, then truncated)
* ``tokenizer``       llama2.c's tokenizer: ``encode(str) -> list[int]`` (with BOS),
                      ``decode(list[int]) -> str``
* ``calibration_data`` a list of ``(tokens,)`` input tuples, ``[1, MASEC_SEQ_LEN]`` windows of the
                      calibration split of TinyStories (masec.models.tinystories)
* ``evaluate(model) -> float``  perplexity (lower is better) on the evaluation split, never
                      calibration text: ~4,096 tokens in non-overlapping windows of
                      ``MASEC_SEQ_LEN`` tokens, the length the compiled hardware is built for.
                      Float32 stories260K: 7.69 at 32 tokens, 7.01 at 64, 6.55 at 128.

Environment variables:

* ``MASEC_CHECKPOINT``  path of any llama2.c ("v0") checkpoint; default the shipped
                        ``data/stories260k/stories260K.bin``
* ``MASEC_TOKENIZER``   its llama2.c tokenizer (``tok512.bin``, ``tokenizer.bin``); default the
                        shipped ``tok512.bin``, which fits only 512-token vocabularies
* ``MASEC_LAYERS``      keep only the first N transformer blocks (quick tests); default all
* ``MASEC_SEQ_LEN``     length of the example input and of the evaluation windows; default 32
* ``MASEC_ATTN``        ``sdpa`` (default: ``F.scaled_dot_product_attention(..., is_causal=True)``)
                        or ``explicit`` (matmul, scale, additive -inf mask, softmax, matmul)
* ``MASEC_DATA``        the data folder (default the repository's ``data/``)

    masec compile examples/stories260k/model.py --format mxint8 --out out/stories260k
"""
import math
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from masec.errors import MasecError
from masec.models import env_int
from masec.models.llama2c import data_file, load_checkpoint, load_tokenizer
from masec.models.tinystories import calibration_ids, evaluation_ids, perplexity, windows


@dataclass
class ModelArgs:
    dim: int = 64
    n_layers: int = 5
    n_heads: int = 8
    n_kv_heads: Optional[int] = 4
    vocab_size: int = 512
    hidden_dim: Optional[int] = 172
    norm_eps: float = 1e-5
    max_seq_len: int = 512
    flash: bool = True


class RMSNorm(torch.nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def _norm(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x):
        output = self._norm(x.float()).type_as(x)
        return output * self.weight


def precompute_freqs_cis(dim: int, end: int, theta: float = 10000.0):
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: (dim // 2)].float() / dim))
    t = torch.arange(end, device=freqs.device)  # type: ignore
    freqs = torch.outer(t, freqs).float()  # type: ignore
    freqs_cos = torch.cos(freqs)  # real part
    freqs_sin = torch.sin(freqs)  # imaginary part
    return freqs_cos, freqs_sin


def reshape_for_broadcast(freqs_cis: torch.Tensor, x: torch.Tensor):
    ndim = x.ndim
    assert 0 <= 1 < ndim
    assert freqs_cis.shape == (x.shape[1], x.shape[-1])
    shape = [d if i == 1 or i == ndim - 1 else 1 for i, d in enumerate(x.shape)]
    return freqs_cis.view(shape)


def apply_rotary_emb(
    xq: torch.Tensor,
    xk: torch.Tensor,
    freqs_cos: torch.Tensor,
    freqs_sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:

    # reshape xq and xk to match the complex representation
    xq_r, xq_i = xq.float().reshape(xq.shape[:-1] + (-1, 2)).unbind(-1)
    xk_r, xk_i = xk.float().reshape(xk.shape[:-1] + (-1, 2)).unbind(-1)

    # reshape freqs_cos and freqs_sin for broadcasting
    freqs_cos = reshape_for_broadcast(freqs_cos, xq_r)
    freqs_sin = reshape_for_broadcast(freqs_sin, xq_r)

    # apply rotation using real numbers
    xq_out_r = xq_r * freqs_cos - xq_i * freqs_sin
    xq_out_i = xq_r * freqs_sin + xq_i * freqs_cos
    xk_out_r = xk_r * freqs_cos - xk_i * freqs_sin
    xk_out_i = xk_r * freqs_sin + xk_i * freqs_cos

    # flatten last two dimensions
    xq_out = torch.stack([xq_out_r, xq_out_i], dim=-1).flatten(3)
    xk_out = torch.stack([xk_out_r, xk_out_i], dim=-1).flatten(3)

    return xq_out.type_as(xq), xk_out.type_as(xk)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """torch.repeat_interleave(x, dim=2, repeats=n_rep)"""
    bs, slen, n_kv_heads, head_dim = x.shape
    if n_rep == 1:
        return x
    return (
        x[:, :, :, None, :]
        .expand(bs, slen, n_kv_heads, n_rep, head_dim)
        .reshape(bs, slen, n_kv_heads * n_rep, head_dim)
    )


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_kv_heads = args.n_heads if args.n_kv_heads is None else args.n_kv_heads
        assert args.n_heads % self.n_kv_heads == 0
        self.n_local_heads = args.n_heads
        self.n_local_kv_heads = self.n_kv_heads
        self.n_rep = self.n_local_heads // self.n_local_kv_heads
        self.head_dim = args.dim // args.n_heads
        self.wq = nn.Linear(args.dim, args.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * self.head_dim, args.dim, bias=False)
        self.flash = args.flash
        if not self.flash:
            mask = torch.full((1, 1, args.max_seq_len, args.max_seq_len), float("-inf"))
            mask = torch.triu(mask, diagonal=1)
            self.register_buffer("mask", mask, persistent=False)

    def forward(
        self,
        x: torch.Tensor,
        freqs_cos: torch.Tensor,
        freqs_sin: torch.Tensor,
    ):
        bsz, seqlen, _ = x.shape

        # QKV
        xq, xk, xv = self.wq(x), self.wk(x), self.wv(x)
        xq = xq.view(bsz, seqlen, self.n_local_heads, self.head_dim)
        xk = xk.view(bsz, seqlen, self.n_local_kv_heads, self.head_dim)
        xv = xv.view(bsz, seqlen, self.n_local_kv_heads, self.head_dim)

        # RoPE relative positional embeddings
        xq, xk = apply_rotary_emb(xq, xk, freqs_cos, freqs_sin)

        # grouped multiquery attention: expand out keys and values
        xk = repeat_kv(xk, self.n_rep)  # (bs, seqlen, n_local_heads, head_dim)
        xv = repeat_kv(xv, self.n_rep)  # (bs, seqlen, n_local_heads, head_dim)

        # make heads into a batch dimension
        xq = xq.transpose(1, 2)  # (bs, n_local_heads, seqlen, head_dim)
        xk = xk.transpose(1, 2)
        xv = xv.transpose(1, 2)

        # flash implementation
        if self.flash:
            output = F.scaled_dot_product_attention(xq, xk, xv, attn_mask=None, dropout_p=0.0, is_causal=True)
        else:
            # manual implementation
            scores = torch.matmul(xq, xk.transpose(2, 3)) / math.sqrt(self.head_dim)
            scores = scores + self.mask[:, :, :seqlen, :seqlen]   # (bs, n_local_heads, seqlen, cache_len + seqlen)
            scores = F.softmax(scores.float(), dim=-1).type_as(xq)
            output = torch.matmul(scores, xv)  # (bs, n_local_heads, seqlen, head_dim)

        # restore time as batch dimension and concat heads
        output = output.transpose(1, 2).contiguous().view(bsz, seqlen, -1)

        # final projection into the residual stream
        output = self.wo(output)
        return output


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, layer_id: int, args: ModelArgs):
        super().__init__()
        self.n_heads = args.n_heads
        self.dim = args.dim
        self.head_dim = args.dim // args.n_heads
        self.attention = Attention(args)
        self.feed_forward = FeedForward(dim=args.dim, hidden_dim=args.hidden_dim)
        self.layer_id = layer_id
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)

    def forward(self, x, freqs_cos, freqs_sin):
        h = x + self.attention.forward(self.attention_norm(x), freqs_cos, freqs_sin)
        out = h + self.feed_forward.forward(self.ffn_norm(h))
        return out


class Transformer(nn.Module):
    def __init__(self, params: ModelArgs):
        super().__init__()
        self.params = params
        self.vocab_size = params.vocab_size
        self.n_layers = params.n_layers

        self.tok_embeddings = nn.Embedding(params.vocab_size, params.dim)
        self.layers = torch.nn.ModuleList()
        for layer_id in range(params.n_layers):
            self.layers.append(TransformerBlock(layer_id, params))
        self.norm = RMSNorm(params.dim, eps=params.norm_eps)
        self.output = nn.Linear(params.dim, params.vocab_size, bias=False)

        # share the unembedding parameters with the embedding parameters
        self.tok_embeddings.weight = self.output.weight  # https://paperswithcode.com/method/weight-tying

        # some useful precompute for the RoPE relative positional embeddings
        freqs_cos, freqs_sin = precompute_freqs_cis(self.params.dim // self.params.n_heads, self.params.max_seq_len)
        self.register_buffer("freqs_cos", freqs_cos, persistent=False)
        self.register_buffer("freqs_sin", freqs_sin, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _bsz, seqlen = tokens.shape
        h = self.tok_embeddings(tokens)
        freqs_cos = self.freqs_cos[:seqlen]
        freqs_sin = self.freqs_sin[:seqlen]

        for layer in self.layers:
            h = layer(h, freqs_cos, freqs_sin)
        h = self.norm(h)
        logits = self.output(h)  # the logits of every position: [bsz, seqlen, vocab_size]
        return logits


# ---------------------------------------------------------------------------------------------
# The pretrained weights, the tokenizer and the data.

CHECKPOINT = os.environ.get("MASEC_CHECKPOINT") or str(data_file("stories260k", "stories260K.bin"))
N_LAYERS = env_int("MASEC_LAYERS", None)
SEQ_LEN = env_int("MASEC_SEQ_LEN", 32)
ATTN = os.environ.get("MASEC_ATTN", "sdpa") or "sdpa"
if ATTN not in ("sdpa", "explicit"):
    raise MasecError(f"MASEC_ATTN={ATTN!r}: expected 'sdpa' or 'explicit'")
PROMPT = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the "
          "park. One day, she saw a big red ball under a tree.")
CALIBRATION_SAMPLES = 16
EVAL_TOKENS = 4096
metric_name = "perplexity"


def load_model(path=CHECKPOINT, n_layers: Optional[int] = N_LAYERS, attn: str = ATTN,
               max_seq_len: Optional[int] = None) -> Transformer:
    """A Transformer with the weights of the llama2.c checkpoint ``path`` (first ``n_layers``
    blocks when given; ``attn`` is 'sdpa' or 'explicit')."""
    ck = load_checkpoint(path)
    c = ck.config
    if not ck.config.shared_classifier:
        raise MasecError(f"{path}: unshared classifier; this model ties the output to the embedding")
    keep = c.n_layers if n_layers is None else min(n_layers, c.n_layers)
    args = ModelArgs(dim=c.dim, n_layers=keep, n_heads=c.n_heads, n_kv_heads=c.n_kv_heads,
                     vocab_size=c.vocab_size, hidden_dim=c.hidden_dim,
                     max_seq_len=max(c.seq_len, max_seq_len or 0, SEQ_LEN), flash=(attn == "sdpa"))
    m = Transformer(args)
    with torch.no_grad():
        m.tok_embeddings.weight.copy_(ck.tok_embeddings)
        for layer, w in zip(m.layers, ck.layers):
            layer.attention_norm.weight.copy_(w["attention_norm"])
            layer.ffn_norm.weight.copy_(w["ffn_norm"])
            for name in ("wq", "wk", "wv", "wo"):
                getattr(layer.attention, name).weight.copy_(w[name])
            for name in ("w1", "w2", "w3"):
                getattr(layer.feed_forward, name).weight.copy_(w[name])
        m.norm.weight.copy_(ck.norm)
    return m.eval()


def load_tokenizer_for(model: Transformer):
    path = os.environ.get("MASEC_TOKENIZER")
    if not path:
        if model.vocab_size != 512:
            raise MasecError(f"{CHECKPOINT}: vocabulary of {model.vocab_size} tokens; set "
                             "MASEC_TOKENIZER to its llama2.c tokenizer (the shipped tok512.bin has 512)")
        path = data_file("stories260k", "tok512.bin")
    return load_tokenizer(path, model.vocab_size)


model = load_model()
tokenizer = load_tokenizer_for(model)


def _prompt_tokens(seq_len: int) -> torch.Tensor:
    ids = tokenizer.encode(PROMPT)
    while len(ids) < seq_len:   # a new story: BOS + the prompt again
        ids += tokenizer.encode(PROMPT)
    return torch.tensor(ids[:seq_len], dtype=torch.long)[None]


example_inputs = (_prompt_tokens(SEQ_LEN),)
calibration_data = [(w,) for w in windows(calibration_ids(tokenizer, CALIBRATION_SAMPLES * SEQ_LEN),
                                          SEQ_LEN, CALIBRATION_SAMPLES)]


def evaluate(model: nn.Module, seq_len: int = SEQ_LEN, n_tokens: int = EVAL_TOKENS) -> float:
    """Perplexity of ``model`` (tokens ``[1, T]`` -> logits ``[1, T, vocab]``) on the first
    ``n_tokens`` tokens of the evaluation split, in full non-overlapping windows of ``seq_len``."""
    n_windows = max(1, n_tokens // seq_len)
    ids = evaluation_ids(tokenizer, n_windows * seq_len + 1)
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        return perplexity(model, ids, window=seq_len)
    finally:
        if was_training:
            model.train()
