"""The InstantID Resampler (``image_proj``): one 512-d face embedding -> 16 tokens.

A Perceiver-style resampler: learned latent queries attend to the projected
face embedding and to themselves. Published config: dim 1280, depth 4,
heads 20 x 64, 16 queries, embedding 512, output 2048, ff_mult 4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ResamplerConfig:
    dim: int = 1280
    depth: int = 4
    dim_head: int = 64
    heads: int = 20
    num_queries: int = 16
    embedding_dim: int = 512
    output_dim: int = 2048
    ff_mult: int = 4


class PerceiverAttention(nn.Module):
    """Queries from the latents; keys/values from [face tokens, latents]."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        self.dim_head = dim_head
        self.heads = heads
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.dim_head).transpose(1, 2)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """x ``[B, N, dim]``, latents ``[B, Q, dim]`` -> ``[B, Q, dim]``."""
        x = self.norm1(x)
        latents = self.norm2(latents)
        b, q_len, _ = latents.shape
        q = self._heads(self.to_q(latents))
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
        k, v = self._heads(k), self._heads(v)
        # Scale split over q and k as in the reference, softmax in float32.
        scale = 1.0 / math.sqrt(math.sqrt(self.dim_head))
        scores = (q * scale) @ (k * scale).transpose(-2, -1)
        weights = torch.softmax(scores.float(), dim=-1).to(scores.dtype)
        out = (weights @ v).transpose(1, 2).reshape(b, q_len, -1)
        return self.to_out(out)


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    inner = dim * mult
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, inner, bias=False),
        nn.GELU(),
        nn.Linear(inner, dim, bias=False),
    )


class Resampler(nn.Module):
    """Face embedding(s) ``[B, N, 512]`` -> identity tokens ``[B, 16, 2048]``.

    State-dict keys match the published ``image_proj`` exactly (``latents``,
    ``proj_in.*``, ``layers.{i}.0.*`` attention, ``layers.{i}.1.{0,1,3}.*``
    feed-forward, ``proj_out.*``, ``norm_out.*``).
    """

    def __init__(self, config: ResamplerConfig) -> None:
        super().__init__()
        self.config = config
        self.latents = nn.Parameter(torch.randn(1, config.num_queries, config.dim) / config.dim**0.5)
        self.proj_in = nn.Linear(config.embedding_dim, config.dim)
        self.proj_out = nn.Linear(config.dim, config.output_dim)
        self.norm_out = nn.LayerNorm(config.output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PerceiverAttention(config.dim, config.dim_head, config.heads),
                    _feed_forward(config.dim, config.ff_mult),
                ]
            )
            for _ in range(config.depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latents = self.latents.repeat(x.shape[0], 1, 1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))
