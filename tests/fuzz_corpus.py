"""A seeded corpus of malformed inputs across every kind of file medseg reads (no fixtures here).

:func:`make_corpus` writes, under one folder:

- ``images/`` + ``masks/``: a data set where each broken image has a good mask and each broken mask a
  good image (same stem), plus good control pairs; images truncated at random offsets, zero bytes,
  wrong extension, valid magic followed by garbage, huge declared sizes, CMYK, 16-bit, palette,
  alpha, EXIF-rotated, animated GIF, multi-page TIFF...; masks in every encoding, broken or odd;
- ``dicom/``: CT slices without pixel data, with wrong lengths, unknown transfer syntax, missing or
  contradictory tags, zero or negative window width, NaN or zero rescale slope, truncated files...;
- ``labels/volumes`` and ``labels/labelme`` (for ``reference/ct`` and ``reference/``): broken NRRD
  headers, NIfTI with NaN, malformed LabelMe JSON;
- ``configs/``: bad YAML, wrong types, unknown keys; ``models/``: truncated ``.pt``, random ``.onnx``.

Each entry says whether medseg must use the file (``ok``), must refuse it naming it (``error``), or
may do either (``either``: e.g. a file cut after its last pixel). Same seed, same corpus.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tests._dicom_factories import ct_slice


@dataclass(frozen=True)
class Case:
    kind: str  # image, mask, dicom, label, config, model
    name: str  # what was broken
    path: Path
    expect: str  # ok, error, either


def _picture(rng, h: int, w: int) -> np.ndarray:
    img = rng.normal(150, 30, (h, w, 3))
    img[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] -= 80
    return np.clip(img, 0, 255).astype(np.uint8)


def _mask(h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
    return m


def _encode(arr_or_img, fmt: str, **kw) -> bytes:
    im = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_declaring(w: int, h: int) -> bytes:
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))


def _image_variants(rng, h: int, w: int) -> list[tuple[str, str, str, bytes]]:
    """(name, extension, expectation, bytes) of one round of broken or odd images."""
    pic = _picture(rng, h, w)
    png, jpg = _encode(pic, "PNG"), _encode(pic, "JPEG", quality=90)
    cut = int(rng.integers(20, len(jpg) - 200))
    exif = Image.Exif()
    exif[0x0112] = int(rng.integers(2, 9))
    frames = [Image.fromarray(_picture(rng, h, w)) for _ in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    tif = io.BytesIO()
    frames[0].save(tif, "TIFF", save_all=True, append_images=frames[1:])
    garbage = rng.integers(0, 256, int(rng.integers(10, 4000)), dtype=np.uint8).tobytes()
    return [
        ("truncated jpeg", ".jpg", "error", jpg[:cut]),
        ("truncated png", ".png", "error", png[: int(rng.integers(40, len(png) * 0.8))]),
        ("zero bytes", ".png", "error", b""),
        ("zero bytes jpeg", ".jpg", "error", b""),
        ("png named jpg", ".jpg", "ok", png),
        ("jpeg named tif", ".tif", "ok", jpg),
        ("png magic then garbage", ".png", "error", png[:8] + garbage),
        ("jpeg magic then garbage", ".jpg", "error", b"\xff\xd8\xff\xe0" + garbage),
        ("tiff magic then garbage", ".tif", "error", b"II*\x00" + garbage),
        ("gif magic then garbage", ".gif", "error", b"GIF89a" + garbage),
        ("random bytes", ".bmp", "error", garbage),
        ("huge declared size", ".png", "error", _png_declaring(int(rng.integers(20000, 90000)),
                                                               int(rng.integers(20000, 90000)))),
        ("cmyk jpeg", ".jpg", "ok", _encode(Image.fromarray(pic).convert("CMYK"), "JPEG")),
        ("16-bit grey png", ".png", "ok", _encode(Image.fromarray(pic[..., 0].astype(np.uint16) * 257), "PNG")),
        ("16-bit grey tiff", ".tif", "ok", _encode(Image.fromarray(pic[..., 0].astype(np.uint16) * 200), "TIFF")),
        ("float tiff", ".tif", "ok", _encode(Image.fromarray(pic[..., 0].astype(np.float32) / 255), "TIFF")),
        ("palette png", ".png", "ok", _encode(Image.fromarray(pic).convert("P"), "PNG")),
        ("rgba png", ".png", "ok", _encode(Image.fromarray(np.dstack([pic, pic[..., :1]])), "PNG")),
        ("grey+alpha png", ".png", "ok", _encode(Image.fromarray(np.dstack([pic[..., 0], pic[..., 1]]), "LA"), "PNG")),
        ("exif-rotated jpeg", ".jpg", "ok", _encode(pic, "JPEG", exif=exif.tobytes())),
        ("animated gif", ".gif", "ok", gif.getvalue()),
        ("multi-page tiff", ".tif", "ok", tif.getvalue()),
        ("1-bit png", ".png", "ok", _encode(Image.fromarray(pic[..., 0] > 128), "PNG")),
        ("one pixel", ".png", "ok", _encode(pic[:1, :1], "PNG")),
    ]


def _mask_variants(rng, h: int, w: int) -> list[tuple[str, str, str, bytes]]:
    """(name, extension, expectation, bytes) of one round of mask encodings, broken or odd."""
    m = _mask(h, w)
    png = _encode(m, "PNG")
    colour = np.zeros((h, w, 3), np.uint8)
    colour[: h // 2] = (255, 0, 0)
    colour[h // 2 :, : w // 2] = (0, 255, 0)
    colour[h // 2 :, w // 2 :] = (0, 0, 255)
    noisy = np.clip(m.astype(np.int16) + rng.integers(-20, 21, m.shape), 0, 255).astype(np.uint8)
    photo = _picture(rng, h, w)[..., 0]
    nan = (m / 255).astype(np.float32)
    nan[0, 0] = np.nan
    exif = Image.Exif()
    exif[0x0112] = 3
    return [
        ("0/255 png", ".png", "ok", png),
        ("0/1 png", ".png", "ok", _encode(m // 255, "PNG")),
        ("16-bit mask", ".png", "ok", _encode(m.astype(np.uint16) * 257, "PNG")),
        ("label map", ".png", "ok", _encode((m // 255) * np.uint8(rng.integers(1, 5)), "PNG")),
        ("palette mask", ".png", "ok", _encode(Image.fromarray(m // 255).convert("P"), "PNG")),
        ("1-bit mask", ".png", "ok", _encode(Image.fromarray(m > 0), "PNG")),
        ("jpeg mask", ".jpg", "ok", _encode(m, "JPEG", quality=70)),
        ("noisy mask", ".png", "ok", _encode(noisy, "PNG")),
        ("rgb grey mask", ".png", "ok", _encode(np.repeat(m[..., None], 3, axis=2), "PNG")),
        ("alpha-only mask", ".png", "ok", _encode(np.dstack([np.zeros((h, w, 3), np.uint8), m]), "PNG")),
        ("exif-rotated mask", ".jpg", "ok", _encode(m, "JPEG", quality=95, exif=exif.tobytes())),
        ("empty mask", ".png", "ok", _encode(np.zeros((h, w), np.uint8), "PNG")),
        ("colour mask", ".png", "error", _encode(colour, "PNG")),
        ("photo as mask", ".png", "error", _encode(photo, "PNG")),
        ("float mask with NaN", ".tif", "error", _encode(nan, "TIFF")),
        ("wrong-size mask", ".png", "error", _encode(_mask(h + 3, w - 2), "PNG")),
        ("truncated mask", ".png", "error", png[: int(rng.integers(40, len(png) * 0.8))]),
        ("zero-byte mask", ".png", "error", b""),
        ("text as mask", ".png", "error", b"this is not a mask\n"),
    ]


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_images(root: Path, rng, rounds: int) -> list[Case]:
    """``root/images`` + ``root/masks``: broken images with good masks, broken masks with good images,
    and two good control pairs."""
    cases = []
    for r in range(rounds):
        h, w = int(rng.integers(24, 80)), int(rng.integers(24, 80))
        for i, (name, ext, expect, data) in enumerate(_image_variants(rng, h, w)):
            stem = f"img_r{r}_{i:02d}"
            cases.append(Case("image", name, _write(root / "images" / f"{stem}{ext}", data), expect))
            shape = {"one pixel": (1, 1)}.get(name, (h, w))
            if name in ("animated gif", "multi-page tiff", "exif-rotated jpeg"):
                with Image.open(root / "images" / f"{stem}{ext}") as im:
                    from PIL import ImageOps

                    shape = ImageOps.exif_transpose(im).size[::-1]
            _write(root / "masks" / f"{stem}_mask.png", _encode(_mask(*shape), "PNG"))
        for i, (name, ext, expect, data) in enumerate(_mask_variants(rng, h, w)):
            stem = f"msk_r{r}_{i:02d}"
            _write(root / "images" / f"{stem}.png", _encode(_picture(rng, h, w), "PNG"))
            cases.append(Case("mask", name, _write(root / "masks" / f"{stem}_mask{ext}", data), expect))
    for k in range(2):
        _write(root / "images" / f"control_{k}.png", _encode(_picture(rng, 40, 50), "PNG"))
        _write(root / "masks" / f"control_{k}_mask.png", _encode(_mask(40, 50), "PNG"))
    return cases


def _dicom_variants(path: Path, rng) -> list[tuple[str, str]]:
    """Write one round of broken CT slices next to ``path``; (name, expectation) per file."""
    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    out = []

    def slice_(name: str, expect: str, change=None, *, raw: bytes | None = None) -> None:
        target = path / f"{len(out):02d}_{name.replace(' ', '_')}.dcm"
        hu = rng.integers(0, 2000, (16, 16)).astype(np.int16)
        ct_slice(target, hu, window=(40.0, 400.0))
        if change is not None:
            ds = pydicom.dcmread(target)
            change(ds)
            ds.save_as(target, enforce_file_format=False)
        if raw is not None:
            data = target.read_bytes()
            target.write_bytes(raw if raw != b"CUT" else data[: int(rng.integers(132, len(data) - 10))])
        out.append((name, expect))

    def set_raw(tag: int, vr: str, value: bytes):
        return lambda ds: ds.__setitem__(tag, RawDataElement(Tag(tag), vr, len(value), value, 0, False, True))

    slice_("good", "ok")
    slice_("no pixel data", "error", lambda ds: delattr(ds, "PixelData"))
    slice_("short pixel data", "error", lambda ds: setattr(ds, "PixelData", ds.PixelData[: int(rng.integers(2, 400))]))
    slice_("long pixel data", "either", lambda ds: setattr(ds, "PixelData", ds.PixelData + b"\0" * 64))
    slice_("unknown transfer syntax", "error",
           lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", "1.2.3.4.5.6.7.8"))
    slice_("no rows", "error", lambda ds: delattr(ds, "Rows"))
    slice_("rows and columns contradict pixel data", "error", lambda ds: setattr(ds, "Rows", 40))
    slice_("bits allocated 8 with 16-bit data", "either", lambda ds: setattr(ds, "BitsAllocated", 8))
    slice_("colour samples on a grey image", "error", lambda ds: setattr(ds, "SamplesPerPixel", 3))
    slice_("zero window width", "ok", lambda ds: setattr(ds, "WindowWidth", 0))
    slice_("negative window width", "ok", lambda ds: setattr(ds, "WindowWidth", -200))
    slice_("NaN rescale slope", "either", set_raw(0x00281053, "DS", b"NaN "))
    slice_("zero rescale slope", "ok", lambda ds: setattr(ds, "RescaleSlope", 0))
    slice_("unparseable rescale slope", "either", set_raw(0x00281053, "DS", b"abc "))
    slice_("no photometric interpretation", "either", lambda ds: delattr(ds, "PhotometricInterpretation"))
    slice_("truncated file", "error", raw=b"CUT")
    slice_("preamble then garbage", "error",
           raw=b"\0" * 128 + b"DICM" + rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    slice_("zero bytes", "error", raw=b"")
    return out


def make_dicom(root: Path, rng, rounds: int) -> list[Case]:
    cases = []
    for r in range(rounds):
        folder = root / "dicom" / f"round{r}"
        folder.mkdir(parents=True)
        for (name, expect), path in zip(_dicom_variants(folder, rng), sorted(folder.iterdir()), strict=True):
            cases.append(Case("dicom", name, path, expect))
    return cases


def make_labels(root: Path, rng) -> list[Case]:
    """``root/labels`` (volumes and LabelMe) for the CT series in ``root/reference`` (+ its images)."""
    import SimpleITK as sitk

    from tests._dicom_factories import ct_series

    ct_series(root / "reference" / "ct", n=3, size=16)
    Image.fromarray(_picture(rng, 30, 40)).save(root / "reference" / "photo.png")
    labels = root / "labels" / "volumes"
    labels.mkdir(parents=True)
    cases = []
    vol = sitk.GetImageFromArray(np.ones((3, 16, 16), np.uint8))
    vol.SetOrigin((-10.0, -20.0, 10.0))
    vol.SetSpacing((0.5, 0.5, 2.5))
    sitk.WriteImage(vol, str(labels / "good.nrrd"))
    cases.append(Case("label", "good nrrd", labels / "good.nrrd", "ok"))
    text = (labels / "good.nrrd").read_bytes()
    head, _, body = text.partition(b"\n\n")
    broken = {
        "nrrd header cut": head[: len(head) // 2],
        "nrrd unknown type": head.replace(b"type: unsigned char", b"type: quaternion") + b"\n\n" + body,
        "nrrd sizes larger than data": head.replace(b"sizes: 16 16 3", b"sizes: 160 160 30") + b"\n\n" + body,
        "nrrd garbage header": b"NRRD0004\n" + rng.integers(0, 256, 200, dtype=np.uint8).tobytes(),
    }
    for name, data in broken.items():
        cases.append(Case("label", name, _write(labels / f"{name.replace(' ', '_')}.nrrd", data), "error"))
    values = np.ones((3, 16, 16), np.float32)
    values[:, 4:8, 4:8] = np.nan
    nan = sitk.GetImageFromArray(values)
    nan.CopyInformation(vol)
    sitk.WriteImage(nan, str(labels / "nan.nii.gz"))  # ITK's NIfTI reader turns NaN into 0
    cases.append(Case("label", "nifti with NaN", labels / "nan.nii.gz", "either"))
    sitk.WriteImage(nan, str(labels / "nan.nrrd"))
    cases.append(Case("label", "nrrd with NaN", labels / "nan.nrrd", "error"))
    cases.append(Case("label", "truncated nifti", _write(labels / "cut.nii.gz", (labels / "nan.nii.gz")
                                                          .read_bytes()[:60]), "error"))
    good = {"imagePath": "photo.png", "imageHeight": 30, "imageWidth": 40,
            "shapes": [{"label": "lesion", "points": [[5, 5], [20, 5], [20, 20]], "shape_type": "polygon"}]}
    labelme = {
        "labelme good": (json.dumps(good), "ok"),
        "labelme not json": ("{imagePath: photo.png,", "error"),
        "labelme a list": ("[1, 2, 3]", "error"),
        "labelme no size": (json.dumps({**good, "imageHeight": None}), "error"),
        "labelme points are text": (json.dumps({**good, "shapes": [{"label": "x", "points": "abc"}]}), "error"),
        "labelme shapes not a list": (json.dumps({**good, "shapes": 7}), "error"),
        "labelme huge size": (json.dumps({**good, "imageHeight": 200000, "imageWidth": 200000}), "error"),
        "labelme negative size": (json.dumps({**good, "imageHeight": -5}), "error"),
        "labelme two points polygon": (json.dumps({**good, "shapes": [{"label": "x", "points": [[1, 1], [2, 2]]}]}),
                                       "error"),
        "labelme zero bytes": ("", "error"),
    }
    for i, (name, (text, expect)) in enumerate(labelme.items()):
        cases.append(Case("label", name, _write(root / "labels" / "labelme" / f"lm{i:02d}.json", text.encode()),
                          expect))
    return cases


def make_configs(root: Path) -> list[Case]:
    texts = {
        "yaml syntax error": "train: {epochs: 3\nmodel: [",
        "tabs in yaml": "train:\n\tepochs: 3\n",
        "wrong type": "train:\n  epochs: many\n",
        "negative value": "train:\n  epochs: -4\n",
        "unknown key": "train:\n  epoch: 3\n",
        "unknown section": "trainer:\n  epochs: 3\n",
        "a list": "- 1\n- 2\n",
        "a scalar": "42\n",
        "binary garbage": "\x00\x01\x02\xff",
        "section is a list": "train: [1, 2]\n",
    }
    cases = []
    for i, (name, text) in enumerate(texts.items()):
        path = root / "configs" / f"c{i:02d}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("latin-1"))
        cases.append(Case("config", name, path, "error"))
    return cases


def make_models(root: Path, rng, checkpoint: Path | None) -> list[Case]:
    models = root / "models"
    models.mkdir()
    cases = []
    if checkpoint is not None:
        data = checkpoint.read_bytes()
        cut = int(rng.integers(100, len(data) - 100))
        cases.append(Case("model", "truncated .pt", _write(models / "cut.pt", data[:cut]), "error"))
    import torch

    buf = io.BytesIO()
    torch.save({"weights": [1, 2, 3]}, buf)
    cases += [
        Case("model", "random .pt", _write(models / "random.pt", rng.integers(0, 256, 5000, np.uint8).tobytes()),
             "error"),
        Case("model", "zero-byte .pt", _write(models / "empty.pt", b""), "error"),
        Case("model", "torch file without a model", _write(models / "other.pt", buf.getvalue()), "error"),
        Case("model", "random .onnx", _write(models / "random.onnx", rng.integers(0, 256, 5000, np.uint8).tobytes()),
             "error"),
        Case("model", "zero-byte .onnx", _write(models / "empty.onnx", b""), "error"),
        Case("model", "empty run folder", models / "run_without_checkpoint", "error"),
    ]
    (models / "run_without_checkpoint").mkdir()
    return cases


def make_corpus(root: Path, *, seed: int = 14, rounds: int = 4, checkpoint: Path | None = None) -> list[Case]:
    """Write the whole corpus under ``root`` (see the module docstring); the cases, in a fixed order."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    return (make_images(root / "data", rng, rounds) + make_dicom(root, rng, rounds) + make_labels(root, rng)
            + make_configs(root) + make_models(root, rng, checkpoint))
