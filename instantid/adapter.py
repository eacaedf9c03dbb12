"""Loading the InstantID adapter file and turning face embeddings into identity tokens.

The adapter has two parts (spec section 5): the Resampler (``image_proj``)
and 70 pairs of face key/value projections (``ip_adapter``, keys
``{n}.to_k_ip.weight`` / ``{n}.to_v_ip.weight`` for odd n). Every dimension
is read from the file, so a file for another model family, a truncated file
or a plain IP-Adapter file is caught here with a message naming what was
expected and what was found.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import AdapterFileError
from .layers import SDXL_ATTN2_LAYERS, AttnKey
from .paths import ADAPTER_FOLDER, download_models_dir, folders_text
from .published import ADAPTER as PUBLISHED_ADAPTER
from .published import PublishedFile, download_hint, sha256_file
from .resampler import Resampler, ResamplerConfig

log = logging.getLogger(__name__)

DIM_HEAD = 64
_KV_KEY = re.compile(r"^(\d+)\.to_([kv])_ip\.weight$")
_REQUIRED_PROJ = ("latents", "proj_in.weight", "proj_in.bias", "proj_out.weight", "proj_out.bias",
                  "norm_out.weight", "norm_out.bias")

# Identities (tokens + face K/V) kept per adapter. One full-width identity holds ~10.7 MB of face K/V
# per face row, so the byte bound only bites for large face batches; both keep a long-running server
# that sees many different faces from growing.
IDENTITY_CACHE_ENTRIES = 8
IDENTITY_CACHE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class IdentityTokens:
    """Resampler output for one identity.

    cond: ``[F, Q, D]`` tokens of the face embedding(s), F = 1 or one per
        latent in the batch. uncond: ``[1, Q, D]`` = Resampler(zeros), what
        the reference feeds the unconditional CFG rows. float32, CPU; shared
        between Applies of the same identity, so never modified in place.
    """

    cond: torch.Tensor
    uncond: torch.Tensor


@dataclass(frozen=True)
class FaceKV:
    """Face keys and values for every patched layer, computed once per identity.

    per_layer[key] = (k_cond ``[F,Q,C]``, v_cond, k_uncond ``[1,Q,C]``, v_uncond), float32, CPU.
    The uncond pair is a constant of the adapter: the same tensors for every identity.
    Shared between Applies, so never modified in place.
    """

    per_layer: dict[AttnKey, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


class AdapterModule(nn.Module):
    """Resampler + face K/V projections, with the published state-dict layout."""

    def __init__(self, config: ResamplerConfig, kv_shapes: dict[int, tuple[int, int]]) -> None:
        super().__init__()
        self.image_proj = Resampler(config)
        self.ip_adapter = nn.ModuleDict()
        for n, (out_features, in_features) in sorted(kv_shapes.items()):
            pair = nn.Module()
            pair.to_k_ip = nn.Linear(in_features, out_features, bias=False)
            pair.to_v_ip = nn.Linear(in_features, out_features, bias=False)
            self.ip_adapter[str(n)] = pair


def _describe(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(sorted(keys)[:limit])
    return shown + (f" ... ({len(keys)} keys)" if len(keys) > limit else "")


def split_state_dict(sd: dict[str, torch.Tensor], path: str) -> tuple[dict, dict]:
    """Return (image_proj, ip_adapter) sub-dicts from either published layout."""
    if "image_proj" in sd and "ip_adapter" in sd and isinstance(sd["image_proj"], dict):
        return sd["image_proj"], sd["ip_adapter"]
    proj = {k[len("image_proj."):]: v for k, v in sd.items() if k.startswith("image_proj.")}
    kv = {k[len("ip_adapter."):]: v for k, v in sd.items() if k.startswith("ip_adapter.")}
    if proj and kv:
        return proj, kv
    name = os.path.basename(path)
    if any(k.startswith(("input_blocks.", "controlnet_", "down_blocks.", "model.diffusion_model.")) for k in sd):
        kind = "a UNet or ControlNet checkpoint"
    else:
        kind = "not an InstantID adapter"
    raise AdapterFileError(
        f"{name} is {kind}: expected top-level 'image_proj' and 'ip_adapter' entries, found {_describe(list(sd))}. "
        "Put the InstantID adapter (ip-adapter.bin from InstantX/InstantID) in models/instantid; "
        "IdentityNet goes in models/controlnet."
    )


def derive_config(proj: dict[str, torch.Tensor], kv: dict[str, torch.Tensor], path: str) -> tuple[ResamplerConfig, dict[int, tuple[int, int]]]:
    """Read every dimension from the tensors; raise AdapterFileError on anything inconsistent."""
    name = os.path.basename(path)
    if "proj.weight" in proj or "proj.0.weight" in proj or "perceiver_resampler.proj_in.weight" in proj:
        raise AdapterFileError(
            f"{name} is a plain IP-Adapter / FaceID file (image_proj has {_describe(list(proj))}), not InstantID. "
            "Use it with an IP-Adapter pack; for InstantID download ip-adapter.bin from InstantX/InstantID."
        )
    missing = [k for k in _REQUIRED_PROJ if k not in proj]
    if missing:
        raise AdapterFileError(f"{name}: the Resampler (image_proj) lacks {', '.join(missing)}; the file is incomplete or not InstantID.")
    latents, proj_in, proj_out = proj["latents"], proj["proj_in.weight"], proj["proj_out.weight"]
    dim, embedding_dim = proj_in.shape
    depth = len({k.split(".")[1] for k in proj if k.startswith("layers.")})
    if depth == 0 or "layers.0.0.to_q.weight" not in proj or "layers.0.1.1.weight" not in proj:
        raise AdapterFileError(f"{name}: the Resampler has no attention/feed-forward layers; the file is incomplete.")
    inner = proj["layers.0.0.to_q.weight"].shape[0]
    if inner % DIM_HEAD:
        raise AdapterFileError(f"{name}: Resampler attention width {inner} is not a multiple of {DIM_HEAD}.")
    config = ResamplerConfig(
        dim=dim, depth=depth, dim_head=DIM_HEAD, heads=inner // DIM_HEAD,
        num_queries=latents.shape[1], embedding_dim=embedding_dim,
        output_dim=proj_out.shape[0], ff_mult=proj["layers.0.1.1.weight"].shape[0] // dim,
    )
    if embedding_dim != 512:
        raise AdapterFileError(
            f"{name}: the Resampler takes {embedding_dim}-d input; InstantID takes the 512-d insightface face embedding. "
            "This looks like an IP-Adapter Plus file (CLIP vision input); use it with an IP-Adapter pack."
        )
    kv_shapes: dict[int, tuple[int, int]] = {}
    for key, tensor in kv.items():
        match = _KV_KEY.match(key)
        if not match:
            raise AdapterFileError(f"{name}: unexpected ip_adapter key {key!r}; expected '{{n}}.to_k_ip.weight' / '{{n}}.to_v_ip.weight'.")
        n = int(match.group(1))
        shape = tuple(tensor.shape)
        if len(shape) != 2 or shape[1] != config.output_dim:
            raise AdapterFileError(f"{name}: {key} has shape {list(shape)}; expected [channels, {config.output_dim}] (the Resampler's output width).")
        if kv_shapes.setdefault(n, shape) != shape:
            raise AdapterFileError(f"{name}: to_k_ip and to_v_ip of layer {n} differ in shape ({list(kv_shapes[n])} vs {list(shape)}).")
    expected = [n for n, _, _ in SDXL_ATTN2_LAYERS]
    missing_kv = [f"{n}.to_{t}_ip.weight" for n in expected for t in "kv" if f"{n}.to_{t}_ip.weight" not in kv]
    if missing_kv or sorted(kv_shapes) != expected:
        found = sorted(kv_shapes)
        raise AdapterFileError(
            f"{name}: expected face K/V weights for the 70 SDXL cross-attention layers (n = 1, 3, ..., 139), "
            f"found {len(found)} layers ({found[:3]}...{found[-2:] if found else ''}); missing {_describe(missing_kv)}. "
            "The file is truncated or made for another model family (InstantID exists for SDXL only)."
        )
    return config, kv_shapes


def _digest(t: torch.Tensor) -> bytes:
    """Content key of a tensor: same values, shape and dtype -> same key."""
    data = t.detach().to("cpu").contiguous()
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{tuple(data.shape)}|{data.dtype}".encode())
    h.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return h.digest()


class _Identity:
    """One cached identity: its tokens and, once asked for, its face K/V."""

    __slots__ = ("tokens", "kv", "nbytes")

    def __init__(self, tokens: IdentityTokens) -> None:
        self.tokens = tokens
        self.kv: FaceKV | None = None
        self.nbytes = tokens.cond.nbytes


class _IdentityCache:
    """Least-recently-used identities, bounded by count and by bytes (the adapter's uncond constants excluded)."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[bytes, _Identity] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return sum(item.nbytes for item in self._items.values())

    def get(self, key: bytes) -> _Identity | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def find(self, tokens: IdentityTokens) -> _Identity | None:
        with self._lock:
            return next((item for item in self._items.values() if item.tokens is tokens), None)

    def put(self, key: bytes, item: _Identity) -> None:
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            self._shrink()

    def grew(self, item: _Identity, extra: int) -> None:
        with self._lock:
            item.nbytes += extra
            self._shrink()

    def _shrink(self) -> None:
        while self._items and (len(self._items) > self.max_entries or self.nbytes > self.max_bytes):
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class InstantIDAdapter:
    """A loaded adapter: its weights in CPU RAM, plus the identities made with it so far.

    The weights are needed once per new identity (the Resampler makes 16
    tokens, then two small products per layer give the face K/V), well under
    a second on a CPU. Moving 845 MB to the GPU for that would push the UNet
    out on small cards, so they never leave RAM and are never handed to
    ComfyUI's memory manager: fp8 flags, partial loading and offload splits
    cannot reach them. Sampling only needs the face K/V (tens of MB), which
    the attention patch moves to wherever the UNet runs.
    """

    def __init__(self, module: AdapterModule, config: ResamplerConfig, kv_shapes: dict[int, tuple[int, int]], path: str) -> None:
        self.module = module
        self.config = config
        self.kv_shapes = kv_shapes
        self.path = path
        self._cache = _IdentityCache(IDENTITY_CACHE_ENTRIES, IDENTITY_CACHE_BYTES)
        self._constants_lock = threading.Lock()
        self._uncond_tokens: torch.Tensor | None = None
        self._uncond_kv: dict[AttnKey, tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def channels(self) -> dict[AttnKey, int]:
        """K/V output width per ComfyUI attn2 key."""
        return {key: self.kv_shapes[n][0] for n, key, _ in SDXL_ATTN2_LAYERS}

    def cache_info(self) -> dict[str, int]:
        """How many identities are cached and the bytes they hold (bounds included)."""
        return {"entries": len(self._cache), "bytes": self._cache.nbytes,
                "max_entries": self._cache.max_entries, "max_bytes": self._cache.max_bytes}

    def _resampler(self, x: torch.Tensor) -> torch.Tensor:
        """``[F, 1, 512]`` -> ``[F, Q, D]`` in float32 on the CPU, where the weights are."""
        return self.module.image_proj(x.to(device="cpu", dtype=torch.float32))

    def _project(self, tokens: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self.module.ip_adapter[str(n)]
        # K/V weights may be stored in fp16 (see load_adapter); the products are float32.
        return F.linear(tokens, pair.to_k_ip.weight.float()), F.linear(tokens, pair.to_v_ip.weight.float())

    @torch.no_grad()
    def _constants(self) -> tuple[torch.Tensor, dict[AttnKey, tuple[torch.Tensor, torch.Tensor]]]:
        """Resampler(zeros) and its K/V per layer: what every unconditional row sees, whatever the face."""
        with self._constants_lock:
            if self._uncond_kv is None:
                uncond = self._resampler(torch.zeros(1, 1, self.config.embedding_dim))
                self._uncond_kv = {key: self._project(uncond, n) for n, key, _ in SDXL_ATTN2_LAYERS}
                self._uncond_tokens = uncond
            return self._uncond_tokens, self._uncond_kv

    @torch.no_grad()
    def identity_tokens(self, embeddings: torch.Tensor) -> IdentityTokens:
        """Face embeddings ``[F, 512]`` (raw insightface vectors) -> IdentityTokens, computed once per embedding."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.config.embedding_dim:
            raise ValueError(f"identity_tokens expects [F, {self.config.embedding_dim}] embeddings, got {list(embeddings.shape)}")
        embeddings = embeddings.detach().to(device="cpu", dtype=torch.float32)
        key = b"embedding:" + _digest(embeddings)
        hit = self._cache.get(key)
        if hit is not None:
            return hit.tokens
        uncond, _ = self._constants()
        tokens = IdentityTokens(cond=self._resampler(embeddings[:, None, :]), uncond=uncond)
        self._cache.put(key, _Identity(tokens))
        return tokens

    @torch.no_grad()
    def face_kv(self, tokens: IdentityTokens) -> FaceKV:
        """Project the tokens through every layer's to_k_ip / to_v_ip, once per identity."""
        uncond, uncond_kv = self._constants()
        item = self._cache.find(tokens)
        if item is None:  # tokens not made by identity_tokens (or evicted since): key them by their values
            key = b"tokens:" + _digest(tokens.cond) + _digest(tokens.uncond)
            item = self._cache.get(key)
            if item is None:
                item = _Identity(tokens)
                self._cache.put(key, item)
        if item.kv is not None:
            return item.kv
        cond = tokens.cond.to(device="cpu", dtype=torch.float32)
        same_uncond = tokens.uncond is uncond or torch.equal(tokens.uncond, uncond)
        per_layer = {}
        for n, key, _ in SDXL_ATTN2_LAYERS:
            k_u, v_u = uncond_kv[key] if same_uncond else self._project(tokens.uncond.float(), n)
            per_layer[key] = (*self._project(cond, n), k_u, v_u)
        item.kv = FaceKV(per_layer=per_layer)
        self._cache.grew(item, sum(t.nbytes for kv in per_layer.values() for t in kv[:2]))
        return item.kv


def _is_pickle(path: str) -> bool:
    # comfy.utils.load_torch_file reads these two as safetensors and everything else with torch.load.
    return not path.lower().endswith((".safetensors", ".sft"))


def _check_published_pickle(path: str, size: int, file: PublishedFile) -> None:
    """A pickle with the published adapter's size must be the published adapter: hash it before unpickling anything."""
    if not _is_pickle(path) or size != file.size:
        return
    digest = sha256_file(path)  # remembered per unchanged file: a reload does not hash 1.7 GB again
    if digest != file.sha256:
        raise AdapterFileError(
            f"{os.path.basename(path)} has the size of the published {file.filename} ({file.size:,} bytes) but not its "
            f"sha256 ({digest}, published {file.sha256}): a damaged download or another file. It was not unpickled. "
            f"Delete {path} and download it again: {download_hint('adapter', download_models_dir())}."
        )


def read_adapter_file(path: str, published_file: PublishedFile = PUBLISHED_ADAPTER) -> dict[str, torch.Tensor]:
    """The raw state dict; pickles only with weights_only=True, and only after the published-size digest check.

    published_file: the size/sha256 a pickle is checked against (tests pass one for a file they built).
    Errors name the file, the folders ComfyUI searches and the fix.
    """
    import comfy.utils

    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise AdapterFileError(
            f"InstantID adapter not found: {path}. Put {published_file.filename} in {folders_text(ADAPTER_FOLDER)}: "
            f"{download_hint('adapter', download_models_dir())}, or download {published_file.url} by hand."
        )
    size = os.path.getsize(path)
    _check_published_pickle(path, size, published_file)
    try:
        return comfy.utils.load_torch_file(path, safe_load=True)
    except Exception as exc:  # the loaders raise many unrelated types for a bad file
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights_only" in str(exc) or "Unpickl" in type(exc).__name__ or "GLOBAL" in str(exc):
            raise AdapterFileError(
                f"{name} was refused: it is a pickle that contains code or objects, not just tensors "
                f"({text}). The real {published_file.filename} holds only tensors; re-download it from {published_file.url}."
            ) from exc
        raise AdapterFileError(
            f"{name} ({size:,} bytes) could not be read: {text}. The download is probably incomplete or the file is not "
            f"a model; the published {published_file.filename} is {published_file.size:,} bytes. "
            f"{download_hint('adapter', download_models_dir())}."
        ) from exc


def _face_kv_storage_dtype() -> torch.dtype:
    """float32 where the host keeps diffusion weights in fp32 (CPU), else fp16: half the RAM, and never fp8,
    which neither LayerNorm nor matmul accepts (--fp8_e4m3fn-unet makes unet_dtype() a float8 type)."""
    import comfy.model_management as mm

    return torch.float32 if mm.unet_dtype() in (torch.float32, torch.float64) else torch.float16


def adapter_from_state_dict(sd: dict[str, torch.Tensor], path: str) -> InstantIDAdapter:
    """Validate and wrap an adapter state dict (either published layout); ``path`` names it in errors."""
    proj, kv = split_state_dict(sd, path)
    config, kv_shapes = derive_config(proj, kv, path)
    with torch.device("meta"):
        module = AdapterModule(config, kv_shapes)
    state = {f"image_proj.{k}": v for k, v in proj.items()}
    state.update({f"ip_adapter.{k}": v for k, v in kv.items()})
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise AdapterFileError(f"{os.path.basename(path)}: tensors do not fit the InstantID layout: {exc}") from exc
    # The Resampler (82 M parameters) stays float32: it runs on the CPU, once per identity. The 140 face
    # K/V matrices (340 M) are only multiplied by 16 tokens, so 16-bit storage costs no accuracy that matters.
    module = module.to(dtype=torch.float32).eval().requires_grad_(False)
    storage = _face_kv_storage_dtype()
    if storage != torch.float32:
        for param in module.ip_adapter.parameters():
            stored = param.data.to(storage)
            if torch.isfinite(stored).all():  # a weight beyond fp16's range keeps float32
                param.data = stored
    log.info("Loaded InstantID adapter %s: Resampler %s, %d face K/V pairs (%s)", os.path.basename(path), config,
             len(kv_shapes), str(storage).replace("torch.", ""))
    return InstantIDAdapter(module, config, kv_shapes, path)


def load_adapter(path: str) -> InstantIDAdapter:
    """Read, validate and wrap the adapter file (``.bin`` pickle or flat ``.safetensors``)."""
    return adapter_from_state_dict(read_adapter_file(path), path)
