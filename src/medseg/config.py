"""Configuration: pydantic models, YAML presets and ``--set a.b=c`` overrides.

Every section rejects unknown keys, so a typo fails with the valid keys listed. A run writes its
resolved config to ``config.yaml`` and embeds it in every checkpoint.
"""

from __future__ import annotations

import difflib
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from medseg.data.augmentations import AUGMENTATIONS
from medseg.errors import ConfigError, did_you_mean

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _registered(value: str, names: list[str]) -> str:
    """``value`` when it is one of ``names`` (a registry's), else the error a Literal field gives."""
    if value not in names:
        raise PydanticCustomError("literal_error", "Input should be {expected}",
                                  {"expected": ", ".join(repr(n) for n in names)})
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    image_size: int = Field(256, ge=32, description="model input side; images are letterboxed to it")
    normalize: Literal["imagenet", "unit", "ct"] = Field(
        "imagenet", description="imagenet: (x/255 - ImageNet mean) / std; unit: x/255; ct (DICOM CT): the HU values "
        "clipped to the fixed data.window, then (HU - intensity_mean) / intensity_std, nnU-Net's CTNormalization "
        "(Isensee et al. 2021); the clip range reaches the network in 256 levels")
    intensity_mean: float | None = Field(None, description="normalize=ct: mean of the foreground (HU)")
    intensity_std: float | None = Field(None, gt=0, description="normalize=ct: standard deviation of the "
                                        "foreground (HU)")
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="seeded split when the data has none")
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    split_seed: int = 0
    cache: bool = Field(True, description="keep decoded, letterboxed images in memory (patch mode: resampled "
                        "images, while their total stays under 2 GB; larger sets are read from disk per patch)")
    patch_size: int | None = Field(None, ge=16, description="None: whole images letterboxed to image_size. An int: "
                                   "train on random square patches of this side (px) cut from the images resampled "
                                   "by data.scale; validation and inference slide patch_size windows over the whole "
                                   "image at that scale")
    scale: float = Field(1.0, gt=0, le=1, description="patch mode: resampling factor applied to every image (masks: "
                         "nearest) before patches are cut; 1.0 = native resolution")
    foreground_oversample: float = Field(0.33, ge=0, le=1, description="patch mode: share of patches centred on a "
                                         "random foreground pixel, the rest placed uniformly (nnU-Net samples a "
                                         "third around foreground, Isensee et al. 2021)")
    window: str | None = Field(None, description="DICOM window for grey images: none (the file's, else auto), "
                               "auto, soft_tissue, lung, bone, brain, or 'CENTER,WIDTH'")
    class_names: list[str] | None = Field(None, description="names of classes 0..K-1 (reports, DICOM SEG)")
    palette: list[list[int]] | None = Field(None, description="colour-coded masks: the RGB colour of each class "
                                            "0..K-1, e.g. [[0,0,0],[255,0,0],[0,255,0]]")
    invert_masks: bool = Field(False, description="binary (or 2-class) 0/255 masks: swap foreground and background "
                                 "(ISBI membranes are 0)")

    @field_validator("palette")
    @classmethod
    def _check_palette(cls, v: Any) -> Any:
        if v is not None and any(len(c) != 3 or not all(0 <= x <= 255 for x in c) for c in v):
            raise ValueError("each palette entry must be an RGB triple of 0..255")
        if v is not None and len({tuple(c) for c in v}) != len(v):
            raise ValueError("palette colours must be distinct")
        return v

    @field_validator("window", mode="before")
    @classmethod
    def _check_window(cls, v: Any) -> Any:
        from medseg.io.windowing import parse_window

        if v is None:
            return None
        v = str(v) if not isinstance(v, (list, tuple)) else ",".join(str(x) for x in v)
        try:
            parse_window(v)
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return None if v.strip().lower() in ("", "none", "file", "default") else v

    @model_validator(mode="after")
    def _ct_needs_its_figures(self) -> DataConfig:
        from medseg.io.windowing import fixed_window

        if self.normalize == "ct" and (self.intensity_mean is None or self.intensity_std is None
                                       or fixed_window(self.window) is None):
            raise ValueError("data.normalize=ct needs data.intensity_mean and data.intensity_std (HU) and a fixed "
                             "data.window (a preset or 'CENTER,WIDTH'): the HU clip")
        return self

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel (mean, std) on the 0..1 scale of the uint8 input, for normalize_batch.

        ``ct``: the uint8 input is the LINEAR VOI window of ``data.window`` (PS3.3 C.11.2.1.2), so
        ``u/255 = (HU - c + 0.5) / (w - 1) + 0.5``; solving for HU turns (HU - mean) / std into
        (u/255 - m') / s' with the m' and s' returned here.
        """
        if self.normalize == "imagenet":
            return IMAGENET_MEAN, IMAGENET_STD
        if self.normalize == "ct":
            from medseg.io.windowing import fixed_window

            center, width = fixed_window(self.window)
            span = max(width - 1.0, 1e-6)
            mean = 0.5 + (self.intensity_mean - center + 0.5) / span
            return (mean,) * 3, (self.intensity_std / span,) * 3
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


class ModelConfig(Section):
    arch: str = Field("unet", description="architecture name (medseg models lists them)")
    encoder: str = Field("resnet34", description="encoder name from segmentation-models-pytorch or tu-<timm>")
    encoder_weights: str | None = Field("auto", description="auto (imagenet when obtainable, else none), imagenet, "
                                        "a local file, or none")
    in_channels: int = Field(3, ge=1)
    classes: int = Field(1, ge=1, description="1 = binary (sigmoid), K > 1 = K classes (softmax)")
    # architecture options: None / off = the architecture's default; `medseg models` says which arch uses what
    base_channels: int | None = Field(None, ge=4, description="unet_classic: first-level width (64; 32, 16 small)")
    upsampling: Literal["bilinear", "transpose"] | None = Field(None, description="unet_classic decoder (bilinear)")
    attention: Literal["none", "cbam"] = Field("none", description="CBAM on the skip connections (U-Net-like archs)")
    deep_supervision: bool = Field(False, description="auxiliary logits at decoder levels in training (U-Nets)")
    edge_head: bool = Field(False, description="auxiliary boundary head trained on the mask's morphological gradient")
    dropout: float | None = Field(None, ge=0, lt=1, description="dropout before the head (pspnets, ASPP of deeplabs)")
    psp_bins: list[int] | None = Field(None, min_length=1, description="dicom-pspnet pyramid bins (1,3,5,7)")
    atrous_rates: list[int] | None = Field(None, min_length=3, max_length=3, description="deeplab ASPP rates")
    output_stride: Literal[8, 16, 32] | None = Field(None, description="encoder output stride (deeplabs, dicom-pspnet)")
    freeze_layers: int | None = Field(None, ge=0, description="freeze the first N encoder layers "
                                      "(dicom-vgg16-unet: 10)")
    freeze_stages: int | None = Field(None, ge=0, description="freeze the first N encoder stages")

    @field_validator("encoder_weights", mode="before")
    @classmethod
    def _none_string(cls, v: Any) -> Any:
        return None if isinstance(v, str) and v.lower() in {"none", "null", ""} else v

    @model_validator(mode="after")
    def _known_names(self) -> ModelConfig:
        """An unknown architecture or encoder, or an option the architecture does not use, is refused
        here, when the config is built, before any image is read (medseg.models.factory.check_names)."""
        from medseg.models.factory import check_names  # imports torch: only when a model is named

        check_names(self)
        return self


class LossConfig(Section):
    # binary (1 output channel, sigmoid) or multiclass (K channels, softmax) follows the model (medseg/losses.py)
    name: str = Field("dice_bce", description="a loss of medseg.losses.LOSSES (`medseg presets` lists them)")
    dice_weight: float = Field(1.0, ge=0, description="dice_bce / dice_ce: weight of the Dice term")
    bce_weight: float = Field(1.0, ge=0, description="dice_bce / dice_ce: weight of the cross-entropy (BCE/CE) term")
    alpha: float = Field(0.5, ge=0, le=1, description="dice_focal: alpha * Dice + (1 - alpha) * focal")
    gamma: float = Field(2.0, ge=0, description="focal, dice_focal: focusing parameter")
    tversky_alpha: float = Field(0.3, ge=0, description="tversky: weight of false positives")
    tversky_beta: float = Field(0.7, ge=0, description="tversky: weight of false negatives")
    class_weights: list[float] | Literal["auto"] | None = Field(
        None, description="per-class weights (binary: [background, foreground]); auto: from training pixel counts")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="BCE / CE label smoothing")
    include_background: bool = Field(True, description="multiclass Dice / Tversky / focal include class 0")
    boundary_weight: float = Field(0.0, ge=0, description="add CE weighted by a Gaussian of the distance to "
                                   "the true boundary, times this")
    boundary_sigma: float = Field(3.0, gt=0, description="width (pixels) of the boundary term's band")
    deep_supervision_weights: list[float] | None = Field(
        None, description="main + auxiliary output weights (default 1, 1/2, 1/4, 1/8, normalised)")
    edge_weight: float = Field(1.0, ge=0, description="weight of the edge-head loss (model.edge_head)")

    @field_validator("name")
    @classmethod
    def _known_loss(cls, v: str) -> str:
        from medseg.losses import LOSSES  # imports torch: only when a loss is named

        return _registered(v, LOSSES.names())


class OptimConfig(Section):
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    min_lr: float = Field(1e-6, ge=0, description="floor of every schedule (end of the cosine)")
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up (all schedules)")
    schedule: Literal["cosine", "step", "plateau", "constant"] = "cosine"
    milestones: list[int] = Field(default_factory=list, description="step: epochs where the lr changes")
    milestone_lrs: list[float] = Field(default_factory=list, description="step: the lr from each milestone on")
    plateau_factor: float = Field(0.5, gt=0, lt=1, description="plateau: lr multiplier when val Dice stalls")
    plateau_patience: int = Field(3, ge=1, description="plateau: epochs without improvement before a cut")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd momentum")

    @model_validator(mode="after")
    def _milestones_match(self) -> OptimConfig:
        if len(self.milestones) != len(self.milestone_lrs):
            raise ValueError(f"optim.milestones ({len(self.milestones)}) and optim.milestone_lrs "
                             f"({len(self.milestone_lrs)}) must have the same length")
        if self.schedule == "step" and not self.milestones:
            raise ValueError("the step schedule needs optim.milestones and optim.milestone_lrs")
        return self


#: ``train.augment`` values: the names registered in :data:`medseg.data.augmentations.AUGMENTATIONS`.
Augment = Literal[tuple(AUGMENTATIONS.names())]


class StageConfig(Section):
    """One stage of progressive training (the PSPNet tutorial: 3 stages, more data and augmentation each)."""

    epochs: int = Field(ge=1)
    lr: float = Field(gt=0)
    data_fraction: float = Field(1.0, gt=0, le=1, description="share of the training images used")
    augment: Augment = "mid"


class TrainConfig(Section):
    epochs: int = Field(100, ge=1, description="maximum epochs (with stages: their sum)")
    batch_size: int = Field(16, ge=1, description="images per forward pass on one process")
    effective_batch_size: int | None = Field(None, ge=1, description="images per optimiser step over all "
                                             "processes, reached by gradient accumulation (default: batch_size "
                                             "x processes); keeps the schedule when the number of processes changes")
    sync_batchnorm: bool = Field(False, description="multi-GPU runs: BatchNorm statistics over all processes "
                                 "(SyncBatchNorm); CPU runs keep per-process statistics")
    time_budget_min: float | None = Field(None, gt=0, description="the whole run (loading, training, validations, "
                                          "final checkpoint) ends within this many minutes; validations are "
                                          "shortened or skipped to fit")
    patience: int = Field(15, ge=1, description="early stopping: epochs without a better val Dice; ignored when "
                          "train.patience_min is set")
    patience_min: float | None = Field(None, gt=0, description="early stopping by time: stop after this many minutes "
                                       "of training without a better val Dice; when set it replaces train.patience "
                                       "(epochs), which is then ignored")
    val_every_s: float | None = Field(None, gt=0, description="validate at the first epoch end at least this many "
                                      "seconds after the previous validation (None: every epoch); the last epoch "
                                      "is validated too (as far as the time budget allows)")
    ema: float | None = Field(None, gt=0, lt=1, description="decay of an exponential moving average of the weights "
                              "(e.g. 0.999; warm-up min(decay, (1+n)/(10+n)) after n steps); when set, the average "
                              "is validated and saved in best.pt / last.pt. None: no average")
    tune_postprocess: bool = Field(True, description="at the end of the run, choose the threshold and "
                                   "post-processing on the val split as `medseg tune-postprocess` does (binary "
                                   "runs with a val split; inside the time budget, skipped with a note when it "
                                   "does not fit) and store them in the run (RUN/postprocess.json)")
    augment: Augment = "mid"
    compile: Literal["off", "on", "auto"] = Field(
        "off", description="torch.compile the training step: auto times eager and compiled steps on the first "
        "batch and keeps the faster (tried only for runs expected to train 5 min or more); on: compiled whenever "
        "it works; a compiler failure leaves the run eager (see medseg.engine.compile_step)")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    seed: int = 42
    num_workers: int = Field(0, ge=0, description="data-loading processes (0 = in the main process)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all cores)")
    checkpoint_every_s: float = Field(60.0, ge=0, description="write last.pt (resume state) at most this often; "
                                      "always at the end")
    sampler: Literal["uniform", "class_balanced"] = Field(
        "uniform", description="class_balanced oversamples images that contain rare classes")
    freeze_encoder_epoch: int | None = Field(None, ge=1, description="freeze the whole encoder from this epoch "
                                             "on; the decoder and head keep learning")
    unfreeze_encoder_epoch: int | None = Field(None, ge=1, description="unfreeze every encoder layer from this "
                                               "epoch on (after model.freeze_layers / freeze_stages)")
    stages: list[StageConfig] = Field(default_factory=list, description="progressive training stages; each "
                                      "sets lr, data fraction and augmentation")

    @field_validator("compile", "channels_last", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: Any) -> Any:
        """YAML 1.1 reads a bare on/off as true/false (``--set train.compile=on``): they mean "on"/"off"."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _stages_set_epochs(self) -> TrainConfig:
        if self.stages:
            total = sum(s.epochs for s in self.stages)
            if self.epochs != total:
                object.__setattr__(self, "epochs", total)
        return self


class InferConfig(Section):
    threshold: float = Field(0.5, gt=0, lt=1)
    batch_size: int = Field(8, ge=1)
    # how an image reaches the model (see medseg/inference/sliding.py)
    mode: Literal["auto", "letterbox", "sliding"] = Field(
        "auto", description="letterbox the whole image, slide windows over it, or auto: slide only when the "
        "image is much larger than the training images")
    train_side: int | None = Field(None, ge=1, description="median long side (px) of the training images, "
                                   "recorded by training; sliding windows tile at the training scale")
    sliding_above: float = Field(3.0, gt=1, description="auto mode slides when the long side exceeds this many "
                                 "times train_side (image_size when unknown)")
    overlap: float = Field(0.25, ge=0, lt=1, description="sliding-window overlap (Gaussian-weighted blending)")
    # test-time augmentation (see medseg/inference/tta.py)
    tta: bool = Field(False, description="average probabilities over flips and scales")
    tta_flips: list[Literal["h", "v", "hv"]] = Field(["h", "v"], description="h: left-right, v: up-down, hv: both")
    tta_scales: list[float] = Field([0.75, 1.0, 1.25], min_length=1, description="input scales (x image_size)")
    # post-processing of the thresholded mask, in this order (see medseg/inference/postprocess.py)
    min_object_fraction: float = Field(0.0, ge=0, lt=1, description="remove objects smaller than this fraction "
                                       "of the image area")
    largest_component: bool = Field(False, description="keep only the largest connected object")
    fill_holes: bool = Field(False, description="fill background enclosed by foreground")
    crf: bool = Field(False, description="refine probabilities with a dense CRF before thresholding (needs "
                      "pip install 'medseg[crf]')")

    @field_validator("tta_scales")
    @classmethod
    def _positive_scales(cls, v: list[float]) -> list[float]:
        if any(not 0.25 <= s <= 4 for s in v):
            raise ValueError("every scale must lie between 0.25 and 4")
        return v


class Config(Section):
    name: str = "custom"
    description: str = ""
    data: DataConfig = DataConfig()
    model: ModelConfig = Field(default_factory=ModelConfig)  # built (and checked) per Config
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    infer: InferConfig = InferConfig()

    @model_validator(mode="after")
    def _class_names_match(self) -> Config:
        names, k = self.data.class_names, max(2, self.model.classes)
        if names is not None and len(names) != k:
            raise ValueError(f"data.class_names has {len(names)} names but the labels are 0..{k - 1} "
                             f"(model.classes={self.model.classes}): give {k} names, background first")
        return self


def label_names(config: Config) -> list[str]:
    """Names of the label values 0..K-1 (binary: background, foreground); ``data.class_names`` when given."""
    if config.data.class_names:
        return list(config.data.class_names)
    k = config.model.classes
    return ["background", "foreground"] if k == 1 else ["background"] + [f"class {i}" for i in range(1, k)]


# ---------------------------------------------------------------------------------------- presets


def _preset_dir():
    return resources.files("medseg") / "presets"


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in _preset_dir().iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ConfigError(f"{source} is not valid YAML: {problem}{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a mapping of config sections, not {type(data).__name__}")
    return data


def preset_dict(name: str) -> dict[str, Any]:
    names = preset_names()
    if name not in names:
        raise ConfigError(f"unknown preset {name!r}{did_you_mean(name, names)}; valid presets: {', '.join(names)}")
    return _read_yaml((_preset_dir() / f"{name}.yaml").read_text(), f"preset {name}")


def describe_presets() -> dict[str, str]:
    return {n: preset_dict(n).get("description", "") for n in preset_names()}


# ---------------------------------------------------------------------------------------- merging


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["train.epochs=5", "model.encoder=resnet18"]`` -> nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value (for example train.epochs=20), got {item!r}")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r} conflicts with an earlier --set of {part!r}")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return out


def _explain(err: ValidationError) -> str:
    msgs = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            prefix = "".join(f"{part}." for part in e["loc"][:-1])  # the names of the section holding the key
            names = list(dict.fromkeys(k[len(prefix):].split(".")[0] for k in _dotted_keys() if k.startswith(prefix)))
            msgs.append(f"unknown key {loc!r}{_suggest_key(loc, names)}; valid keys here: {', '.join(names)}")
        elif e["type"] == "literal_error":
            expected = re.findall(r"'([^']*)'", str(e.get("ctx", {}).get("expected", "")))
            msgs.append(f"{loc}: {e.get('input')!r} is not one of {', '.join(expected)}"
                        f"{did_you_mean(e.get('input'), expected)}")
        else:
            msgs.append(f"{loc}: {e['msg']} (got {e.get('input')!r})")
    return "; ".join(msgs)


def _dotted_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every settable key of ``model`` as a dotted path (``optim.lr``, ``data.image_size`` ...)."""
    keys = []
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            keys += _dotted_keys(sub, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _suggest_key(loc: str, section_names: list[str]) -> str:
    """Did-you-mean with the full dotted key: the same leaf in another section (``lr`` -> ``optim.lr``),
    else the closest dotted key, else the closest name in the section."""
    keys = _dotted_keys()
    leaf = loc.rsplit(".", 1)[-1]
    same_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == leaf and k != loc]
    if len(same_leaf) == 1:
        return f" (did you mean {same_leaf[0]!r}?)"
    close = difflib.get_close_matches(loc, keys, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else did_you_mean(leaf, section_names)


def build_config(preset: str | None = None, file: str | Path | None = None,
                 overrides: list[str] | dict[str, Any] | None = None, base: dict[str, Any] | None = None) -> Config:
    """Resolve defaults <- ``base`` <- preset <- YAML file <- overrides into a validated :class:`Config`."""
    data: dict[str, Any] = dict(base or {})
    if preset:
        data = _merge(data, preset_dict(preset))
        data.setdefault("name", preset)
    if file:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {path} cannot be read as UTF-8 text ({type(err).__name__})") from None
        data = _merge(data, _read_yaml(text, f"config file {path}"))
    if overrides:
        over = parse_overrides(overrides) if isinstance(overrides, list) else overrides
        data = _merge(data, over)
    try:
        return validate(data)
    except ConfigError as err:
        if not file:
            raise
        also = " and --set" if overrides else ""
        raise ConfigError(f"{err} (settings from config file {file}{also})") from None


def resolve_config(config: Config | str | Path | None = None,
                   overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """The one configuration argument of :func:`medseg.train`, with ``overrides`` (``--set``) over it.

    ``config`` is a :class:`Config`, a YAML file (a :class:`~pathlib.Path`, or a ``str`` ending in ``.yaml``
    or ``.yml``: a saved ``config.yaml``, a hand-written file or a ``medseg plan`` output, over the defaults),
    or a preset name (``medseg presets``); None means the ``default`` preset. Raises ConfigError for an
    unknown preset or key, an invalid value, or a file that does not exist.
    """
    if isinstance(config, Config):
        return build_config(base=config.model_dump(mode="json"), overrides=overrides) if overrides else config
    if isinstance(config, Path) or str(config).lower().endswith((".yaml", ".yml")):
        return build_config(file=config, overrides=overrides)
    return build_config(preset=config or "default", overrides=overrides)


def validate(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"invalid configuration: {_explain(err)}") from None


def save_config(cfg: Config, path: Path) -> None:
    from medseg.io.files import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
