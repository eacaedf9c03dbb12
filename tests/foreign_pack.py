"""Stand-ins for other packs that live in the same graph as InstantID: an IP-Adapter-style attn2 pack and a depth ControlNet.

Facts of the protocol the IP-Adapter family (ComfyUI_IPAdapter_plus, PuLID,
cubiq's InstantID and their forks) uses, reproduced here in our own code:

- The pack clones the incoming model, then for every cross-attention key
  shallow-copies ``model_options["transformer_options"]``, its
  ``patches_replace`` and its ``attn2`` dicts. If nothing is registered at the
  key, it stores a new patch object there; if something is, it calls
  ``.add(callback, **kwargs)`` on **whatever object it finds** (it assumes its
  own class) and does not re-register anything.
- The patch object computes the text attention itself with
  ``optimized_attention(q, k, v, heads)`` (ignoring anything registered
  before it), then, for every (callback, kwargs) it holds whose
  ``sigma_start >= sigma >= sigma_end`` (sigma read from
  ``extra_options["sigmas"][0]``), adds ``callback(out, q, k, v,
  extra_options, **kwargs)``.

``ForeignAttn2Patch`` is that protocol (variant "with .add");
``PlainForeignPatch`` is a simpler pack whose object has no ``.add`` and which
registers by overwriting the key with ``set_model_attn2_replace`` (variant
"without .add"). Both add ``weight * SDPA(q, K_extra, V_extra)`` over their own
seeded random tokens, so their contribution is easy to see and to recompute.

The foreign ControlNet is ComfyUI's own ``ControlNetApplyAdvanced`` with a
second copy of the tiny SDXL ControlNet ("depth"); :class:`ContextSpy` records
the cross-attention context its control model receives.
"""

from __future__ import annotations

import collections
import re
import zlib

import torch

FOREIGN_TOKENS = 4
_KEY_RE = re.compile(r"^(input_blocks\.\d+|middle_block|output_blocks\.\d+)\.\d+\.transformer_blocks\.(\d+)\.attn2$")
CALLS: collections.Counter = collections.Counter()  # contributions computed, for tests that count them
_BLOCK = {"input_blocks": "input", "middle_block": "middle", "output_blocks": "output"}


def attn2_widths(model) -> dict[tuple[str, int, int], int]:
    """{attn2 key: inner width} of a ComfyUI MODEL, found independently of the pack's engine."""
    found = {}
    for name, module in model.model.diffusion_model.named_modules():
        m = _KEY_RE.match(name)
        if m:
            where, _, number = m.group(1).partition(".")
            block, block_id, index = _BLOCK[where], int(number or 0), int(m.group(2))
            found[(block, block_id, index)] = module.to_k.out_features
    return found


def extra_tokens(width: int, seed: int, key) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded K/V ``[1, FOREIGN_TOKENS, width]`` for one key, standing in for an image adapter's projected tokens."""
    g = torch.Generator().manual_seed(seed * 1000 + zlib.crc32(repr(key).encode()) % 997)
    return (torch.randn(1, FOREIGN_TOKENS, width, generator=g), torch.randn(1, FOREIGN_TOKENS, width, generator=g))


def extra_attention(out, q, k, v, extra_options, k_extra=None, v_extra=None, weight=1.0, **_):
    """The foreign contribution: ``weight * SDPA(q, K_extra, V_extra)`` (same for cond and uncond rows)."""
    from comfy.ldm.modules.attention import optimized_attention

    CALLS["extra"] += 1
    rows = q.shape[0]
    ke = k_extra.to(q.device, q.dtype).expand(rows, -1, -1)
    ve = v_extra.to(q.device, q.dtype).expand(rows, -1, -1)
    return weight * optimized_attention(q, ke, ve, extra_options["n_heads"])


class ForeignAttn2Patch:
    """IP-Adapter-style attn2 replacement: text attention + every added callback in its sigma window."""

    def __init__(self, callback=None, **kwargs) -> None:
        self.callback = [callback]
        self.kwargs = [kwargs]

    def add(self, callback, **kwargs) -> None:
        self.callback.append(callback)
        self.kwargs.append(kwargs)

    def __call__(self, q, k, v, extra_options):
        from comfy.ldm.modules.attention import optimized_attention

        out = optimized_attention(q, k, v, extra_options["n_heads"])
        sigma = float(extra_options["sigmas"].detach().cpu()[0]) if "sigmas" in extra_options else 1e9
        for callback, kwargs in zip(self.callback, self.kwargs, strict=True):
            if kwargs["sigma_end"] <= sigma <= kwargs["sigma_start"]:
                out = out + callback(out, q, k, v, extra_options, **kwargs)
        return out.to(q.dtype)


class PlainForeignPatch:
    """A foreign attn2 replacement with no ``.add``: text attention + its own tokens, ignoring what was there."""

    def __init__(self, k_extra: torch.Tensor, v_extra: torch.Tensor, weight: float) -> None:
        self.k_extra, self.v_extra, self.weight = k_extra, v_extra, weight

    def __call__(self, q, k, v, extra_options):
        from comfy.ldm.modules.attention import optimized_attention

        out = optimized_attention(q, k, v, extra_options["n_heads"])
        return out + extra_attention(out, q, k, v, extra_options, self.k_extra, self.v_extra, self.weight)


def _register_ipadapter_style(model, key, kwargs) -> None:
    """The IP-Adapter family's registration, step by step (see the module docstring)."""
    to = model.model_options["transformer_options"].copy()
    to["patches_replace"] = dict(to.get("patches_replace", {}))
    to["patches_replace"]["attn2"] = dict(to["patches_replace"].get("attn2", {}))
    if key not in to["patches_replace"]["attn2"]:
        to["patches_replace"]["attn2"][key] = ForeignAttn2Patch(extra_attention, **kwargs)
        model.model_options["transformer_options"] = to
    else:
        to["patches_replace"]["attn2"][key].add(extra_attention, **kwargs)


def apply_foreign(model, weight: float = 0.5, seed: int = 1, with_add: bool = True, keys=None):
    """What the foreign pack's Apply node returns: a clone of ``model`` with its attn2 patch on ``keys`` (default all)."""
    widths = attn2_widths(model)
    if len(widths) != 70:
        raise ValueError(f"the foreign pack expects an SDXL UNet with 70 attn2 layers, found {len(widths)}")
    m = model.clone()
    for key in keys or sorted(widths):
        k_extra, v_extra = extra_tokens(widths[key], seed, key)
        if with_add:
            _register_ipadapter_style(m, key, dict(k_extra=k_extra, v_extra=v_extra, weight=weight,
                                                   sigma_start=1e9, sigma_end=0.0))
        else:
            m.set_model_attn2_replace(PlainForeignPatch(k_extra, v_extra, weight), *key)
    return m


def attn2_patches(model) -> dict:
    return model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})


def snapshot(obj, _depth: int = 0):
    """A deep, comparable picture of ``obj``: tensors cloned, objects as (type, their attributes), functions by identity."""
    if _depth > 12:
        return ("...", id(obj))
    if isinstance(obj, torch.Tensor):
        return ("tensor", obj.detach().clone())
    if isinstance(obj, dict):
        return ("dict", {k: snapshot(v, _depth + 1) for k, v in obj.items()})
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, [snapshot(v, _depth + 1) for v in obj])
    if obj is None or isinstance(obj, (int, float, str, bool)):
        return obj
    if callable(obj) and not hasattr(obj, "__dict__") or isinstance(obj, type) or hasattr(obj, "__code__"):
        return ("callable", id(obj))
    if isinstance(obj, torch.nn.Module):
        return ("module", id(obj))
    return (type(obj).__name__, id(obj), snapshot(dict(vars(obj)), _depth + 1) if hasattr(obj, "__dict__") else repr(obj))


def same(a, b) -> bool:
    """Equality of two :func:`snapshot` pictures (tensors bit for bit)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# ----------------------------------------------------------------------------
# A foreign ControlNet ("depth") and a spy on the context it sees
# ----------------------------------------------------------------------------

def apply_depth_controlnet(positive, negative, control_net, hint: torch.Tensor, strength: float = 0.7):
    """ComfyUI's own ControlNetApplyAdvanced: what every depth/canny/pose workflow does."""
    import nodes as comfy_nodes

    return comfy_nodes.NODE_CLASS_MAPPINGS["ControlNetApplyAdvanced"]().apply_controlnet(
        positive, negative, control_net, hint, strength, 0.0, 1.0)


class ContextSpy:
    """Records the ``context`` every forward of a ControlNet's control model receives (shape and a copy)."""

    def __init__(self, control_net) -> None:
        self.model = control_net.control_model
        self.original = self.model.forward
        self.contexts: list[torch.Tensor] = []

        def spy(*args, **kwargs):
            self.contexts.append(kwargs["context"].detach().clone())
            return self.original(*args, **kwargs)

        self.model.forward = spy

    def token_counts(self) -> set[int]:
        return {int(c.shape[1]) for c in self.contexts}

    def close(self) -> None:
        if "forward" in vars(self.model):
            del self.model.forward

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
