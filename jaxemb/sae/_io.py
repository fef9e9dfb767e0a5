"""Saving and loading SAEs in the SAELens and eai-sparsify directory layouts (no pickle, no torch).

Both layouts are a directory with a ``cfg.json`` and one safetensors file:

* SAELens: ``cfg.json`` (``architecture``, ``d_in``, ``d_sae``, ``dtype``, ``k`` /
  ``activation_fn_kwargs``, ``apply_b_dec_to_input``, ``normalize_activations``, ...) and
  ``sae_weights.safetensors`` with ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``,
  ``W_dec [d_sae, d_in]``, ``b_dec [d_in]`` (+ ``threshold`` for JumpReLU, ``b_gate``,
  ``r_mag``, ``b_mag`` instead of ``b_enc`` for Gated, only ``W_dec``/``b_dec`` for matching
  pursuit), as ``SAE.save_model`` writes them.
* eai-sparsify: ``cfg.json`` (``SparseCoderConfig`` fields + ``d_in``) and ``sae.safetensors``
  with ``encoder.weight [d_sae, d_in]``, ``encoder.bias [d_sae]``, ``W_dec [d_sae, d_in]``,
  ``b_dec [d_in]``, as ``SparseCoder.save_to_disk`` writes them (TopK SAEs only).

The weights file is exactly what those tools read. What they have no slot for — the jaxemb
class and its constructor arguments (stored in the safetensors header metadata) and any
variable that their tensors cannot reproduce bit for bit (an input scale, a learned
``log_threshold``) — rides along so that :func:`load_sae` restores a jaxemb SAE exactly: the
class and hyperparameters from the header, the variables in ``jaxemb_state.safetensors``
(written only when needed; the other tools ignore it). An input scale ``s != 1`` is folded
into the exported weights (``W_enc·s``, ``W_dec/s``, ``b_dec/s``), so the other tools compute
the same function.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxemb.sae._base import check_sae
from jaxemb.sae._config import SAEConfig, dtype_name

SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"
CFG = "cfg.json"
EXTRA = "jaxemb_state.safetensors"
_FORMATS = ("saelens", "sparsify")


def sae_configs() -> dict[str, type[SAEConfig]]:
    """The config class of every SAE variant, by variant name.

    Each variant module declares a frozen :class:`SAEConfig` subclass (its hyperparameters, its
    registry name, the module class and how SAELens / eai-sparsify store it); this is the
    registry :func:`sae_variants`, :func:`save_sae`, :func:`load_sae` and
    ``experiments/train_sae.py`` read.

    Returns:
      dict from variant name (``relu``, ``topk``, ``batchtopk``, ``jumprelu``, ``gated``,
      ``matryoshka``, ``matching_pursuit``) to its config class.

    Examples:
      >>> from jaxemb.sae import sae_configs
      >>> sae_configs()["topk"].__name__, sae_configs()["topk"].saelens_architecture
      ('TopKConfig', 'topk')
    """
    from jaxemb.sae._batchtopk import BatchTopKConfig
    from jaxemb.sae._gated import GatedConfig
    from jaxemb.sae._jumprelu import JumpReluConfig
    from jaxemb.sae._matryoshka import MatryoshkaConfig
    from jaxemb.sae._mp import MatchingPursuitConfig
    from jaxemb.sae._relu import ReluConfig
    from jaxemb.sae._topk import TopKConfig

    configs = (
        ReluConfig,
        TopKConfig,
        BatchTopKConfig,
        JumpReluConfig,
        GatedConfig,
        MatryoshkaConfig,
        MatchingPursuitConfig,
    )
    return {c.variant: c for c in configs}


def sae_variants() -> dict[str, type]:
    """The SAE variants available by name, e.g. ``{"topk": TopKSAE, "relu": ReluSAE, ...}``.

    Read from the configs' registry (:func:`sae_configs`): ``relu``, ``topk``, ``batchtopk``,
    ``jumprelu``, ``gated``, ``matryoshka``, ``matching_pursuit``.

    Returns:
      dict from variant name to its ``nnx.Module`` class.

    Examples:
      >>> from jaxemb.sae import sae_variants
      >>> sae_variants()["topk"].__name__
      'TopKSAE'
    """
    import jaxemb.sae as sae_pkg

    return {name: getattr(sae_pkg, c.module) for name, c in sae_configs().items()}


def _config_of(model: Any, where: str) -> SAEConfig:
    config = getattr(model, "config", None)
    if not isinstance(config, SAEConfig):
        raise ValueError(
            f"{where}: the model must be a jaxemb.sae variant carrying its config "
            f"(model.config, a jaxemb.sae.SAEConfig); {type(model).__name__} has none"
        )
    return config


def _config_class(cls_name: str) -> type[SAEConfig] | None:
    return {c.module: c for c in sae_configs().values()}.get(cls_name)


# ---------------------------------------------------------------------------------------------
# native state: every nnx variable of the module, flattened to "a.b.c" names


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _native_state(model: nnx.Module) -> dict[str, np.ndarray]:
    flat = _flatten(nnx.to_pure_dict(nnx.state(model)))
    return {k: np.asarray(v) for k, v in flat.items() if hasattr(v, "shape")}


def _set_native(model: nnx.Module, values: dict[str, np.ndarray], where: str) -> None:
    state = nnx.state(model)
    pure = nnx.to_pure_dict(state)

    def fill(tree, prefix):
        for key in list(tree):
            name = f"{prefix}{key}"
            if isinstance(tree[key], dict):
                fill(tree[key], name + ".")
            elif name in values:
                new = values[name]
                old = tree[key]
                if tuple(np.shape(new)) != tuple(np.shape(old)):
                    raise ValueError(
                        f"{where}: variable {name!r} must have shape {list(np.shape(old))}; "
                        f"found {list(np.shape(new))}"
                    )
                tree[key] = jnp.asarray(new)

    fill(pure, "")
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(model, state)


def _construct(config_cls: type[SAEConfig], values: dict[str, Any], where: str) -> nnx.Module:
    try:
        return config_cls.create(values).build(rngs=nnx.Rngs(0))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: cannot build {config_cls.module}({values}): {e}") from e


# ---------------------------------------------------------------------------------------------
# per-variant mapping between jaxemb variables and the tools' tensors


def _scale(native: dict[str, np.ndarray]) -> np.ndarray:
    return native.get("input_scale", np.ones((), np.float32))


def _folded(native: dict[str, np.ndarray], name: str) -> np.ndarray:
    """A weight with the input scale folded in, as fold_input_norm computes it."""
    value = native[name]
    s = _scale(native)
    if np.all(s == 1):
        return value
    s_j = jnp.asarray(s).astype(value.dtype)
    v = jnp.asarray(value)
    return np.asarray((v * s_j if name == "W_enc" else v / s_j).astype(value.dtype))


def _saelens_architecture(model: nnx.Module) -> str:
    return _config_of(model, "save_sae").architecture()


def _threshold(model: nnx.Module, native: dict[str, np.ndarray]) -> np.ndarray:
    theta = model.threshold
    theta = theta[...] if hasattr(theta, "get_value") or isinstance(theta, nnx.Variable) else theta
    theta = np.asarray(theta)
    dtype = native["W_dec"].dtype
    return np.broadcast_to(theta.astype(dtype), (model.d_sae,)).copy()


def _saelens_tensors(model: nnx.Module, native: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    arch = _saelens_architecture(model)
    out = {"W_dec": _folded(native, "W_dec"), "b_dec": _folded(native, "b_dec")}
    if arch != "matching_pursuit":
        out["W_enc"] = _folded(native, "W_enc")
    if arch == "gated":
        out["b_gate"] = native["b_gate"] if "b_gate" in native else native["b_enc"]
        out["r_mag"] = native["r_mag"]
        out["b_mag"] = native["b_mag"]
    elif arch != "matching_pursuit":
        out["b_enc"] = native["b_enc"]
    if arch == "jumprelu":
        out["threshold"] = _threshold(model, native)
    return out


def _native_from_saelens(
    names: set[str], tensors: dict[str, np.ndarray], cfg: dict[str, Any]
) -> dict[str, np.ndarray]:
    """jaxemb variables (of a module holding ``names``) implied by SAELens tensors."""
    t = {k: np.asarray(v) for k, v in tensors.items()}
    arch = cfg.get("architecture", "standard")
    W_dec, b_dec = t["W_dec"], t["b_dec"]
    W_enc = t.get("W_enc")
    if W_enc is None:  # matching pursuit: tied encoder
        W_enc = np.ascontiguousarray(W_dec.T)
    out = {"W_enc": W_enc, "W_dec": W_dec, "b_dec": b_dec}
    if arch == "gated":
        out["b_gate" if "b_gate" in names else "b_enc"] = t["b_gate"]
        out["r_mag"], out["b_mag"] = t["r_mag"], t["b_mag"]
    else:
        out["b_enc"] = t.get("b_enc", np.zeros(W_dec.shape[0], W_dec.dtype))
    if "threshold" in t:
        if "log_threshold" in names:
            with np.errstate(divide="ignore"):
                out["log_threshold"] = np.log(t["threshold"]).astype(t["threshold"].dtype)
        else:
            out["threshold"] = t["threshold"]
    return out


def _sparsify_tensors(model: nnx.Module, native: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "encoder.weight": np.ascontiguousarray(_folded(native, "W_enc").T),
        "encoder.bias": native["b_enc"],
        "W_dec": _folded(native, "W_dec"),
        "b_dec": _folded(native, "b_dec"),
    }


def _native_from_sparsify(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "W_enc": np.ascontiguousarray(np.asarray(tensors["encoder.weight"]).T),
        "b_enc": np.asarray(tensors["encoder.bias"]),
        "W_dec": np.asarray(tensors["W_dec"]),
        "b_dec": np.asarray(tensors["b_dec"]),
    }


# ---------------------------------------------------------------------------------------------
# configs


def _saelens_cfg(model: nnx.Module, dtype: Any) -> dict[str, Any]:
    arch = _saelens_architecture(model)
    cfg: dict[str, Any] = {
        "architecture": arch,
        "d_in": int(model.d_in),
        "d_sae": int(model.d_sae),
        "dtype": dtype_name(dtype),
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {},
    }
    if arch == "topk":
        k = int(model.k)
        cfg.update(
            k=k,
            rescale_acts_by_decoder_norm=False,
            activation_fn="topk",
            activation_fn_kwargs={"k": k},
        )
    else:
        cfg.update(activation_fn="relu", activation_fn_kwargs={})
    if arch == "matching_pursuit":
        cfg["residual_threshold"] = float(getattr(model, "residual_threshold", 0.0))
    return cfg


def _sparsify_cfg(model: nnx.Module) -> dict[str, Any]:
    d_in, d_sae = int(model.d_in), int(model.d_sae)
    return {
        "activation": "topk",
        "expansion_factor": max(1, d_sae // d_in),
        "normalize_decoder": bool(getattr(model, "normalize_decoder", True)),
        "num_latents": d_sae,
        "k": int(model.k),
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": d_in,
    }


# ---------------------------------------------------------------------------------------------
# public API


def save_sae(path: str | os.PathLike, sae: nnx.Module, format: str = "saelens") -> Path:
    """Writes an SAE as a SAELens or eai-sparsify directory that those tools load.

    ``format="saelens"``: ``cfg.json`` + ``sae_weights.safetensors`` (``W_enc``, ``b_enc``,
    ``W_dec``, ``b_dec``; ``threshold`` for JumpReLU and BatchTopK, which SAELens also saves as
    a JumpReLU; ``b_gate``/``r_mag``/``b_mag`` for Gated; ``W_dec``/``b_dec`` for matching
    pursuit). ``format="sparsify"`` (TopK-style SAEs, those with an integer ``k``): ``cfg.json``
    + ``sae.safetensors`` with ``encoder.weight [d_sae, d_in]``, ``encoder.bias``, ``W_dec``,
    ``b_dec``. The jaxemb class and constructor arguments go in the safetensors header
    metadata, and variables the tensors cannot reproduce exactly in ``jaxemb_state.safetensors``
    (only written when there are some), so :func:`load_sae` round-trips bit for bit.

    Args:
      path: directory to write (created; existing files of the same names are replaced).
      sae: a :mod:`jaxemb.sae` module (any registered variant).
      format: ``"saelens"`` or ``"sparsify"``.

    Returns:
      The directory, as a ``pathlib.Path``.

    Raises:
      ValueError: an unknown format, a model without the SAE layout, or a non-TopK model in
        the sparsify format.

    Examples:
      >>> import tempfile, json
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> model = sae.TopKSAE(8, 32, k=4, rngs=nnx.Rngs(0))
      >>> d = sae.save_sae(tempfile.mkdtemp(), model, format="sparsify")
      >>> sorted(p.name for p in d.iterdir())
      ['cfg.json', 'sae.safetensors']
      >>> json.loads((d / "cfg.json").read_text())["num_latents"]
      32

    References:
      SAELens ``SAE.save_model`` (``cfg.json`` + ``sae_weights.safetensors``, architectures
      ``standard``/``topk``/``jumprelu``/``gated``/``matching_pursuit``); eai-sparsify
      ``SparseCoder.save_to_disk`` (``cfg.json`` + ``sae.safetensors``).
    """
    from safetensors.numpy import save_file

    if format not in _FORMATS:
        raise ValueError(f"format must be one of {list(_FORMATS)}; got {format!r}")
    check_sae(sae, "sae")
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a str or os.PathLike; got {type(path).__name__}")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"path must be a directory; {path} is a file")
    native = _native_state(sae)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        if name not in native and not (name == "b_enc" and "b_gate" in native):
            raise ValueError(f"sae must hold a variable {name!r}; it has {sorted(native)}")
    dtype = native["W_dec"].dtype
    if format == "saelens":
        tensors = _saelens_tensors(sae, native)
        cfg = _saelens_cfg(sae, dtype)
        weights_name = SAELENS_WEIGHTS
        implied = _native_from_saelens(set(native), tensors, cfg)
    else:
        if not _config_of(sae, "save_sae").sparsify:
            raise ValueError(
                f"the sparsify layout holds per-row TopK SAEs (TopKSAE); {type(sae).__name__} "
                "is not one. Use format='saelens'."
            )
        tensors = _sparsify_tensors(sae, native)
        cfg = _sparsify_cfg(sae)
        weights_name = SPARSIFY_WEIGHTS
        implied = _native_from_sparsify(tensors)
    # What the tools' tensors (loaded into a fresh instance) would not reproduce bit for bit.
    config = _config_of(sae, "save_sae")
    fresh = _native_state(_construct(type(config), config.to_dict(), "save_sae"))
    extras = {}
    for name, value in native.items():
        got = implied.get(name, fresh.get(name))
        if got is None or got.dtype != value.dtype or got.shape != value.shape:
            extras[name] = value
        elif got.tobytes() != value.tobytes():
            extras[name] = value
    meta = {
        "format": "jaxemb",
        "jaxemb_class": type(sae).__name__,
        "jaxemb_init": json.dumps(config.to_dict()),
    }
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: _contiguous(v) for k, v in tensors.items()}, path / weights_name, meta)
    (path / CFG).write_text(json.dumps(cfg, indent=2))
    extra_path = path / EXTRA
    if extras:
        save_file({k: _contiguous(v) for k, v in extras.items()}, extra_path, meta)
    elif extra_path.exists():
        extra_path.unlink()
    return path


def _contiguous(value: np.ndarray) -> np.ndarray:
    # np.ascontiguousarray turns a 0-d array into shape [1]; keep the shape.
    return np.ascontiguousarray(value).reshape(np.shape(value))


def _read_cfg(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((path / CFG).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path / CFG} is not a readable JSON config: {e}") from e
    if not isinstance(cfg, dict):
        raise ValueError(f"{path / CFG} must hold a JSON object; got {type(cfg).__name__}")
    return cfg


def _read_weights(file: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open
    from safetensors.numpy import load_file

    try:
        tensors = load_file(file)
        with safe_open(file, framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - any parse failure gets the same message
        raise ValueError(f"{file} is not a readable safetensors file: {e}") from e
    return tensors, meta


def _check_tensors(
    file: Path, tensors: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]], dims: str
) -> None:
    for name, shape in expected.items():
        if name not in tensors:
            raise ValueError(
                f"{file}: tensor {name!r} is missing; expected shape {list(shape)} ({dims}); "
                f"found tensors {sorted(tensors)}"
            )
        if tuple(tensors[name].shape) != tuple(shape):
            raise ValueError(
                f"{file}: tensor {name!r} must have shape {list(shape)} ({dims}); "
                f"found {list(tensors[name].shape)}"
            )


def _cfg_int(cfg: dict, key: str, file: Path) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{file}: {key!r} must be a positive integer; got {value!r}")
    return value


_SAELENS_CLASSES = {
    "standard": "ReluSAE",
    "topk": "TopKSAE",
    "jumprelu": "JumpReluSAE",
    "gated": "GatedSAE",
    "batchtopk": "BatchTopKSAE",
    "matching_pursuit": "MatchingPursuitSAE",
}


def load_sae(path: str | os.PathLike) -> nnx.Module:
    """Loads an SAE directory in the SAELens or eai-sparsify layout (detected from its files).

    A directory with ``sae_weights.safetensors`` is read as SAELens (``architecture``
    ``standard`` → :class:`ReluSAE`, ``topk`` → :class:`TopKSAE`, ``jumprelu`` →
    :class:`JumpReluSAE`, ``gated`` → :class:`GatedSAE`, ``matching_pursuit`` →
    :class:`MatchingPursuitSAE`); one with ``sae.safetensors`` as eai-sparsify
    (:class:`TopKSAE`). A directory written by :func:`save_sae` comes back as the class it was
    saved from, bit for bit. SAELens options with no jaxemb counterpart are folded into the
    weights: ``apply_b_dec_to_input=False`` (``b_enc += b_dec @ W_enc``) and TopK's
    ``rescale_acts_by_decoder_norm=True`` (decoder rows normalised, the norms moved into the
    encoder). Only safetensors and JSON are read (no pickle).

    Args:
      path: the directory.

    Returns:
      The SAE module.

    Raises:
      ValueError: no such directory, an unknown layout, an unsupported architecture, or a
        missing or mis-shaped tensor (naming the tensor, the expected and the found shape).

    Examples:
      >>> import tempfile
      >>> import numpy as np
      >>> from flax import nnx
      >>> from jaxemb import sae
      >>> model = sae.TopKSAE(8, 32, k=4, rngs=nnx.Rngs(0))
      >>> back = sae.load_sae(sae.save_sae(tempfile.mkdtemp(), model))
      >>> type(back).__name__, back.k, bool(np.array_equal(back.W_enc[...], model.W_enc[...]))
      ('TopKSAE', 4, True)

    References:
      SAELens ``SAE.load_from_disk`` / ``handle_config_defaulting`` (``activation_fn_kwargs``
      of pre-6.0 TopK configs); eai-sparsify ``SparseCoder.load_from_disk``.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a str or os.PathLike; got {type(path).__name__}")
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"path must be an SAE directory; {path} does not exist or is not one")
    if (path / SAELENS_WEIGHTS).exists():
        layout, file = "saelens", path / SAELENS_WEIGHTS
    elif (path / SPARSIFY_WEIGHTS).exists():
        layout, file = "sparsify", path / SPARSIFY_WEIGHTS
    else:
        found = sorted(p.name for p in path.iterdir())
        raise ValueError(
            f"{path} is not an SAE directory in a known layout: expected cfg.json with "
            f"{SAELENS_WEIGHTS} (SAELens) or {SPARSIFY_WEIGHTS} (eai-sparsify); found {found}"
        )
    if not (path / CFG).exists():
        raise ValueError(f"{path} has {file.name} but no {CFG}; both are needed")
    cfg = _read_cfg(path)
    tensors, meta = _read_weights(file)
    where = str(file)

    if layout == "saelens":
        d_in, d_sae = _cfg_int(cfg, "d_in", path / CFG), _cfg_int(cfg, "d_sae", path / CFG)
        arch = cfg.get("architecture", "standard")
        if arch not in _SAELENS_CLASSES:
            raise ValueError(
                f"{path / CFG}: architecture {arch!r} is not supported; jaxemb reads "
                f"{sorted(_SAELENS_CLASSES)}"
            )
        activation = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu")) or "relu"
        if arch == "standard" and activation == "topk":  # SAELens < 6: TopK as "standard"
            arch = "topk"
        elif arch == "standard" and activation != "relu":
            raise ValueError(
                f"{path / CFG}: activation_fn {activation!r} is not supported for a standard "
                "SAE; jaxemb reads 'relu' and 'topk'"
            )
        expected: dict[str, tuple[int, ...]] = {"W_dec": (d_sae, d_in), "b_dec": (d_in,)}
        if arch != "matching_pursuit":
            expected["W_enc"] = (d_in, d_sae)
        if arch == "gated":
            expected.update(b_gate=(d_sae,), r_mag=(d_sae,), b_mag=(d_sae,))
        elif arch != "matching_pursuit":
            expected["b_enc"] = (d_sae,)
        if arch == "jumprelu":
            expected["threshold"] = (d_sae,)
        _check_tensors(file, tensors, expected, "d_in, d_sae from cfg.json")
        tensors = _fold_saelens_options(tensors, cfg, arch, where)
        default_cls = _SAELENS_CLASSES[arch]
        kwargs: dict[str, Any] = {"d_in": d_in, "d_sae": d_sae}
        if arch == "topk":
            k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ValueError(f"{path / CFG}: a topk SAE needs an integer k; got {k!r}")
            kwargs["k"] = k
    else:
        d_in = _cfg_int(cfg, "d_in", path / CFG)
        num_latents = cfg.get("num_latents", 0) or 0
        d_sae = num_latents or d_in * int(cfg.get("expansion_factor", 32))
        if cfg.get("activation", "topk") != "topk":
            raise ValueError(
                f"{path / CFG}: activation {cfg.get('activation')!r} is not supported; jaxemb "
                "reads sparsify TopK SAEs"
            )
        for flag in ("skip_connection", "transcode", "embed_skip", "gram_lookup"):
            if cfg.get(flag):
                raise ValueError(f"{path / CFG}: {flag}=true is not supported by jaxemb SAEs")
        expected = {
            "encoder.weight": (d_sae, d_in),
            "encoder.bias": (d_sae,),
            "W_dec": (d_sae, d_in),
            "b_dec": (d_in,),
        }
        _check_tensors(file, tensors, expected, "d_sae, d_in from cfg.json")
        default_cls = "TopKSAE"
        kwargs = {"d_in": d_in, "d_sae": d_sae, "k": _cfg_int(cfg, "k", path / CFG)}
        if "normalize_decoder" in cfg:
            kwargs["normalize_decoder"] = bool(cfg["normalize_decoder"])

    cls_name = meta.get("jaxemb_class", default_cls)
    cls = _config_class(cls_name)
    if cls is None:
        raise ValueError(
            f"{where}: the SAE class {cls_name!r} is not available in jaxemb.sae "
            f"(available: {sorted(c.module for c in sae_configs().values())})"
        )
    if "jaxemb_init" in meta:
        try:
            kwargs = json.loads(meta["jaxemb_init"])
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: unreadable jaxemb_init metadata: {e}") from e
    else:
        kwargs["param_dtype"] = dtype_name(tensors["W_dec"].dtype)
    model = _construct(cls, kwargs, where)
    have = _native_state(model)
    native = (
        _native_from_saelens(set(have), tensors, cfg)
        if layout == "saelens"
        else _native_from_sparsify(tensors)
    )
    native = {k: v for k, v in native.items() if k in have}
    extra_path = path / EXTRA
    if extra_path.exists():
        extras, _ = _read_weights(extra_path)
        unknown = sorted(set(extras) - set(have))
        if unknown:
            raise ValueError(
                f"{extra_path}: variables {unknown} do not exist in {cls.module}; it holds "
                f"{sorted(have)}"
            )
        native.update(extras)
    _set_native(model, native, where)
    return model


def _fold_saelens_options(
    t: dict[str, np.ndarray], cfg: dict[str, Any], arch: str, where: str
) -> dict[str, np.ndarray]:
    t = dict(t)
    for name in ("scaling_factor", "finetuning_scaling_factor"):
        if name in t and not np.all(t[name] == 1):
            raise ValueError(
                f"{where}: tensor {name!r} (a fine-tuning scale of the activations) is not "
                "supported unless it is all ones"
            )
    norm = cfg.get("normalize_activations", "none")
    if norm not in (None, "none", False):
        raise ValueError(
            f"{where}: normalize_activations={norm!r} is not supported (its scale is not stored "
            "in the file); fold it into the weights first (SAELens "
            "fold_activation_norm_scaling_factor)"
        )
    if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        n = np.linalg.norm(t["W_dec"].astype(np.float64), axis=1)
        n = np.maximum(n, 1e-12)
        dt = t["W_dec"].dtype
        t["W_enc"] = (t["W_enc"] * n[None, :]).astype(dt)
        t["b_enc"] = (t["b_enc"] * n).astype(dt)
        t["W_dec"] = (t["W_dec"] / n[:, None]).astype(dt)
    if cfg.get("apply_b_dec_to_input", True) is False:
        if arch == "matching_pursuit":
            t["b_dec"] = np.zeros_like(t["b_dec"])
        elif arch == "gated":
            b, W = t["b_dec"].astype(np.float64), t["W_enc"].astype(np.float64)
            r = np.exp(t["r_mag"].astype(np.float64))
            t["b_gate"] = (t["b_gate"] + b @ W).astype(t["b_gate"].dtype)
            t["b_mag"] = (t["b_mag"] + (b @ W) * r).astype(t["b_mag"].dtype)
        else:
            b, W = t["b_dec"].astype(np.float64), t["W_enc"].astype(np.float64)
            t["b_enc"] = (t["b_enc"] + b @ W).astype(t["b_enc"].dtype)
    return t
