import math, torch, torch.nn as nn, torch.nn.functional as F
def precompute_freqs_cis(dim, end, theta=10000.0):
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: (dim // 2)].float() / dim))
    t = torch.arange(end)
    freqs = torch.outer(t, freqs).float()
    return torch.cos(freqs), torch.sin(freqs)
def reshape_for_broadcast(freqs_cis, x):
    ndim = x.ndim
    shape = [d if i == 1 or i == ndim - 1 else 1 for i, d in enumerate(x.shape)]
    return freqs_cis.view(shape)
def apply_rotary_emb(xq, xk, freqs_cos, freqs_sin):
    xq_r, xq_i = xq.float().reshape(xq.shape[:-1] + (-1, 2)).unbind(-1)
    xk_r, xk_i = xk.float().reshape(xk.shape[:-1] + (-1, 2)).unbind(-1)
    freqs_cos = reshape_for_broadcast(freqs_cos, xq_r)
    freqs_sin = reshape_for_broadcast(freqs_sin, xq_r)
    xq_out_r = xq_r * freqs_cos - xq_i * freqs_sin
    xq_out_i = xq_r * freqs_sin + xq_i * freqs_cos
    xk_out_r = xk_r * freqs_cos - xk_i * freqs_sin
    xk_out_i = xk_r * freqs_sin + xk_i * freqs_cos
    xq_out = torch.stack([xq_out_r, xq_out_i], dim=-1).flatten(3)
    xk_out = torch.stack([xk_out_r, xk_out_i], dim=-1).flatten(3)
    return xq_out.type_as(xq), xk_out.type_as(xk)
def repeat_kv(x, n_rep):
    bs, slen, n_kv_heads, head_dim = x.shape
    if n_rep == 1: return x
    return (x[:, :, :, None, :].expand(bs, slen, n_kv_heads, n_rep, head_dim).reshape(bs, slen, n_kv_heads * n_rep, head_dim))
class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__(); self.eps = eps; self.weight = nn.Parameter(torch.ones(dim))
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
class Block(nn.Module):
    def __init__(self, dim=64, n_heads=8, n_kv=4, flash=True):
        super().__init__()
        self.n_heads, self.n_kv, self.hd = n_heads, n_kv, dim // n_heads
        self.wq = nn.Linear(dim, dim, bias=False); self.wk = nn.Linear(dim, n_kv*self.hd, bias=False)
        self.wv = nn.Linear(dim, n_kv*self.hd, bias=False); self.wo = nn.Linear(dim, dim, bias=False)
        self.norm = RMSNorm(dim); self.flash = flash
        c, s = precompute_freqs_cis(self.hd, 64)
        self.register_buffer("freqs_cos", c, persistent=False); self.register_buffer("freqs_sin", s, persistent=False)
        mask = torch.full((1, 1, 64, 64), float("-inf")); mask = torch.triu(mask, diagonal=1)
        self.register_buffer("mask", mask)
    def forward(self, x):
        bsz, seqlen, _ = x.shape
        h = self.norm(x)
        xq, xk, xv = self.wq(h), self.wk(h), self.wv(h)
        xq = xq.view(bsz, seqlen, self.n_heads, self.hd)
        xk = xk.view(bsz, seqlen, self.n_kv, self.hd)
        xv = xv.view(bsz, seqlen, self.n_kv, self.hd)
        xq, xk = apply_rotary_emb(xq, xk, self.freqs_cos[:seqlen], self.freqs_sin[:seqlen])
        xk = repeat_kv(xk, self.n_heads // self.n_kv); xv = repeat_kv(xv, self.n_heads // self.n_kv)
        xq, xk, xv = xq.transpose(1, 2), xk.transpose(1, 2), xv.transpose(1, 2)
        if self.flash:
            out = F.scaled_dot_product_attention(xq, xk, xv, attn_mask=None, dropout_p=0.0, is_causal=True)
        else:
            scores = torch.matmul(xq, xk.transpose(2, 3)) / math.sqrt(self.hd)
            scores = scores + self.mask[:, :, :seqlen, :seqlen]
            scores = F.softmax(scores.float(), dim=-1).type_as(xq)
            out = torch.matmul(scores, xv)
        out = out.transpose(1, 2).contiguous().view(bsz, seqlen, -1)
        return x + self.wo(out)


import os

torch.manual_seed(0)
model = Block(flash=os.environ.get("MASEC_ATTN", "sdpa") == "sdpa").eval()
example_inputs = (torch.randn(1, 16, 64),)
