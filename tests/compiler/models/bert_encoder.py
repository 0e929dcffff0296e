"""Two post-LN BERT encoder layers written the way HuggingFace's BertLayer writes them, with a
constant padding mask (the last 3 of 12 tokens are padding): query/key/value linears,
view + permute into heads, ``matmul / sqrt(d)``, ``+ extended_attention_mask`` with
``(1 - mask) * -10000``, softmax, ``matmul``, permute back, dense + residual + LayerNorm, GELU
intermediate, dense + residual + LayerNorm. Random weights (bit-exactness only)."""
import math

import torch
import torch.nn as nn


class BertSelfAttention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.num_attention_heads = heads
        self.attention_head_size = hidden // heads
        self.all_head_size = hidden
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(0.1)

    def transpose_for_scores(self, x):
        new_x_shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
        x = x.view(new_x_shape)
        return x.permute(0, 2, 1, 3)

    def forward(self, hidden_states, attention_mask):
        query_layer = self.transpose_for_scores(self.query(hidden_states))
        key_layer = self.transpose_for_scores(self.key(hidden_states))
        value_layer = self.transpose_for_scores(self.value(hidden_states))
        attention_scores = torch.matmul(query_layer, key_layer.transpose(-1, -2))
        attention_scores = attention_scores / math.sqrt(self.attention_head_size)
        attention_scores = attention_scores + attention_mask
        attention_probs = nn.functional.softmax(attention_scores, dim=-1)
        attention_probs = self.dropout(attention_probs)
        context_layer = torch.matmul(attention_probs, value_layer)
        context_layer = context_layer.permute(0, 2, 1, 3).contiguous()
        new_context_layer_shape = context_layer.size()[:-2] + (self.all_head_size,)
        return context_layer.view(new_context_layer_shape)


class BertLayer(nn.Module):
    def __init__(self, hidden=32, heads=4, intermediate=64):
        super().__init__()
        self.attention = BertSelfAttention(hidden, heads)
        self.attn_dense = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.act = nn.GELU()
        self.output_dense = nn.Linear(intermediate, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x, attention_mask):
        a = self.attn_norm(self.attn_dense(self.attention(x, attention_mask)) + x)
        return self.output_norm(self.output_dense(self.act(self.intermediate(a))) + a)


class BertEncoder(nn.Module):
    def __init__(self, layers=2, tokens=12, padding=3, hidden=32):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(hidden) for _ in range(layers)])
        mask = torch.ones(1, tokens)
        mask[:, tokens - padding:] = 0
        self.register_buffer("attention_mask", mask)

    def forward(self, x):
        extended = (1.0 - self.attention_mask[:, None, None, :]) * -10000.0
        for layer in self.layer:
            x = layer(x, extended)
        return x


torch.manual_seed(0)
model = BertEncoder().eval()
example_inputs = (torch.randn(1, 12, 32),)
