"""The short path: 'Apply InstantID (photo)' equals the three-node graph; 'InstantID Best Of' ranks by identity.

The photo node must give bitwise the model patches and conditioning of
analyzer -> Face Analyze (defaults) -> Apply InstantID; the reference images
are chosen so that any other face choice or combine rule would differ.
Best Of's expected order is computed here from Face Analyze's embeddings and
numpy's cosine, not by the ranking code.
"""
# ruff: noqa: F811  (pytest fixtures imported from face_fixtures are redefined as arguments)

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from e2e_models import load_graph, run_v3
from face_fixtures import blank_images, build_model_pack, face_analyzer, face_pack_root, paint_face  # noqa: F401
from PIL import Image

import nodes as comfy_nodes

N = comfy_nodes.NODE_CLASS_MAPPINGS
SIZE = 128


@pytest.fixture(scope="module")
def graph(base_dir):
    return load_graph(str(base_dir), SIZE, seed=3)


def two_face_references() -> torch.Tensor:
    """Two reference photos; in the first, the largest face is NOT the most confident one."""
    images = blank_images(512, 512, batch=2)
    paint_face(images, 20, 30, 80, 84, frame=0, green=60, red=230)    # large, score ~0.71
    paint_face(images, 250, 60, 50, 60, frame=0, green=0, blue=220)   # small, score 0.95
    paint_face(images, 160, 150, 70, 80, frame=1, red=220, blue=240)  # another photo of "the same person"
    return images


def pose_photo() -> torch.Tensor:
    return paint_face(blank_images(256, 256), 120, 20, 70, 90)


def same(a, b, path="", seen=None) -> None:
    """Assert two patch/conditioning structures are bitwise the same (tensors equal in dtype, shape and value)."""
    seen = set() if seen is None else seen
    if a is b or (id(a), id(b)) in seen:
        return
    seen.add((id(a), id(b)))
    assert type(a) is type(b), f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), f"{path}: tensors differ"
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), f"{path}: arrays differ"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{path}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for key in a:
            same(a[key], b[key], f"{path}[{key!r}]", seen)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]", seen)
    elif isinstance(a, torch.nn.Module) or callable(a) and not hasattr(a, "__dict__"):
        assert a is b, f"{path}: different {type(a).__name__} objects"
    elif hasattr(a, "__dict__"):
        same(vars(a), vars(b), f"{path}.", seen)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), f"{path}: NaN vs {b}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


def _three_nodes(g, image, pose_image=None, **apply):
    faces = run_v3("InstantIDFaceAnalyze", face_analyzer=g["analyzer"], image=image, face_choice="largest",
                   face_index=0, no_face_policy="error", weights="")[0]
    pose = None
    if pose_image is not None:
        pose = run_v3("InstantIDFaceAnalyze", face_analyzer=g["analyzer"], image=pose_image, face_choice="largest",
                      face_index=0, no_face_policy="error", weights="")[0]
    return run_v3("InstantIDApply", model=g["unet"], positive=g["positive"], negative=g["negative"], instantid=g["adapter"],
                  control_net=g["control_net"], faces=faces, pose_faces=pose, **apply), faces


def _photo_node(g, image, pose_image=None, **apply):
    return run_v3("InstantIDApplyPhoto", model=g["unet"], positive=g["positive"], negative=g["negative"],
                  instantid=g["adapter"], control_net=g["control_net"], face_analyzer=g["analyzer"], image=image,
                  pose_image=pose_image, **apply)


def _patches(model) -> dict:
    return model.model_options["transformer_options"]["patches_replace"]["attn2"]


def _sample(model, positive, negative):
    latent = N["EmptyLatentImage"]().generate(SIZE, SIZE, 1)[0]
    return N["KSampler"]().sample(model, 11, 2, 4.5, "euler", "normal", positive, negative, latent)[0]["samples"]


APPLY = dict(ip_weight=0.7, cn_strength=0.6, start_at=0.1, end_at=0.9, combine="norm_average", placement="contain")


@pytest.mark.parametrize("with_pose", [False, True], ids=["own-pose", "pose-photo"])
def test_photo_node_is_bitwise_the_three_node_graph(graph, with_pose):
    image = two_face_references()
    pose = pose_photo() if with_pose else None
    (model_a, pos_a, neg_a), faces = _three_nodes(graph, image, pose, **APPLY)
    model_b, pos_b, neg_b, faces_b = _photo_node(graph, image, pose, **APPLY)
    assert len(faces.found) == 2 and faces.found[0].bbox[0] == pytest.approx(20, abs=2)  # the large, less confident face
    same(faces_b, faces, "faces")
    same(_patches(model_b), _patches(model_a), "attn2")
    same(pos_b, pos_a, "positive")
    same(neg_b, neg_a, "negative")
    assert torch.equal(_sample(model_b, pos_b, neg_b), _sample(model_a, pos_a, neg_a))


def test_the_comparison_sees_a_different_face_choice(graph):
    """The check above would catch a photo node that chose faces differently (here: by score)."""
    image = two_face_references()
    (model_a, pos_a, _), _ = _three_nodes(graph, image, **APPLY)
    by_score = run_v3("InstantIDFaceAnalyze", face_analyzer=graph["analyzer"], image=image, face_choice="score",
                      face_index=0, no_face_policy="error", weights="")[0]
    model_c, pos_c, _ = run_v3("InstantIDApply", model=graph["unet"], positive=graph["positive"], negative=graph["negative"],
                               instantid=graph["adapter"], control_net=graph["control_net"], faces=by_score, **APPLY)
    with pytest.raises(AssertionError):
        same(_patches(model_c), _patches(model_a))
    with pytest.raises(AssertionError):
        same(pos_c, pos_a)


def test_photo_node_without_a_face_stops_with_the_frame_number(graph):
    with pytest.raises(ValueError, match="frame 1 of 1"):
        _photo_node(graph, blank_images(128, 128), **APPLY)


# ---------------------------------------------------------------- Best Of


def candidates() -> torch.Tensor:
    """Six 'generated' images: the identity itself (twice, a tie), three other faces, one without a face."""
    images = blank_images(256, 256, batch=6)
    paint_face(images, 100, 60, 70, 90, frame=0, red=215, blue=215)  # another person
    paint_face(images, 60, 60, 80, 100, frame=1)                      # the identity, red 255 blue 255
    # frame 2: no face
    paint_face(images, 60, 60, 80, 100, frame=3, red=250, blue=240)  # close to the identity
    paint_face(images, 60, 60, 80, 100, frame=4)                      # the identity again: ties with frame 1
    paint_face(images, 90, 40, 70, 100, frame=5, red=225, blue=220)  # further away
    return images


def _expected(face_analyzer, identity_faces, images):
    """Scores from Face Analyze's embeddings and numpy's cosine, and the order by the documented rule."""
    ident = identity_faces.found[0].embedding.astype(np.float64)
    scores = []
    for i in range(images.shape[0]):
        faces = run_v3("InstantIDFaceAnalyze", face_analyzer=face_analyzer, image=images[i:i + 1], face_choice="largest",
                       face_index=0, no_face_policy="skip", weights="")[0]
        if not faces.found:
            scores.append(float("nan"))
            continue
        e = faces.found[0].embedding.astype(np.float64)
        scores.append(float(ident @ e / (np.linalg.norm(ident) * np.linalg.norm(e))))
    with_face = sorted((i for i, s in enumerate(scores) if not math.isnan(s)), key=lambda i: (-round(scores[i], 9), i))
    return scores, with_face + [i for i, s in enumerate(scores) if math.isnan(s)]


@pytest.fixture
def identity(face_analyzer):
    photo = paint_face(blank_images(256, 256), 50, 40, 90, 110)
    return run_v3("InstantIDFaceAnalyze", face_analyzer=face_analyzer, image=photo, face_choice="largest",
                  face_index=0, no_face_policy="error", weights="")[0]


def _best_of(face_analyzer, identity, images, k):
    return N["InstantIDBestOf"].execute(images=images, faces=identity, face_analyzer=face_analyzer, k=k, combine="average")


def test_best_of_orders_by_similarity(face_analyzer, identity):
    images = candidates()
    scores, order = _expected(face_analyzer, identity, images)
    assert order[:2] == [1, 4] and order[-1] == 2 and len(set(np.round(scores, 6)) - {np.nan}) >= 4, (scores, order)
    out = _best_of(face_analyzer, identity, images, 3)
    best, indices, got, no_face = out.args
    assert indices == order[:3]
    np.testing.assert_allclose(got, [scores[i] for i in order[:3]], atol=1e-6)
    assert torch.equal(best, images[order[:3]])
    assert no_face == [False, False, True, False, False, False]
    text = out.ui.as_dict()["text"][0]
    assert text.splitlines()[0].startswith("#1 image 2:") and "no face found in image(s) 3: ranked last" in text


def test_best_of_k_larger_than_the_batch_keeps_all_with_no_face_last(face_analyzer, identity):
    images = candidates()
    scores, order = _expected(face_analyzer, identity, images)
    best, indices, got, _ = _best_of(face_analyzer, identity, images, 50).args
    assert indices == order and best.shape[0] == 6 and math.isnan(got[-1])
    assert torch.equal(best, images[order])


def test_best_of_k_zero_is_a_clear_error(face_analyzer, identity):
    with pytest.raises(ValueError, match="k must be at least 1"):
        _best_of(face_analyzer, identity, candidates(), 0)


# ---------------------------------------------------------------- Best Of through the API


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from server import Server

    base = tmp_path_factory.mktemp("best-of-server")
    build_model_pack(base / "models" / "insightface")
    (base / "input").mkdir(exist_ok=True)
    images = candidates()
    for i in range(images.shape[0]):
        Image.fromarray(np.round(images[i].numpy() * 255).astype(np.uint8)).save(base / "input" / f"gen{i}.png")
    identity_photo = paint_face(blank_images(256, 256), 50, 40, 90, 110)[0].numpy()
    Image.fromarray(np.round(identity_photo * 255).astype(np.uint8)).save(base / "input" / "identity.png")
    srv = Server(base)
    yield srv
    srv.stop()


def _best_of_prompt(k: int, count: int = 6) -> dict:
    prompt = {
        "a": {"class_type": "InstantIDFaceAnalyzerLoader", "inputs": {"model_pack": "antelopev2", "provider": "CPU", "det_size": 640}},
        "i": {"class_type": "LoadImage", "inputs": {"image": "identity.png"}},
        "f": {"class_type": "InstantIDFaceAnalyze", "inputs": {"face_analyzer": ["a", 0], "image": ["i", 0], "face_choice": "largest",
                                                               "face_index": 0, "no_face_policy": "error", "weights": ""}},
    }
    batch = None
    for n in range(count):
        prompt[f"g{n}"] = {"class_type": "LoadImage", "inputs": {"image": f"gen{n}.png"}}
        if batch is None:
            batch = [f"g{n}", 0]
        else:
            prompt[f"b{n}"] = {"class_type": "ImageBatch", "inputs": {"image1": batch, "image2": [f"g{n}", 0]}}
            batch = [f"b{n}", 0]
    prompt["best"] = {"class_type": "InstantIDBestOf", "inputs": {"images": batch, "faces": ["f", 0], "face_analyzer": ["a", 0],
                                                                  "k": k, "combine": "average"}}
    prompt["save"] = {"class_type": "SaveImage", "inputs": {"images": ["best", 0], "filename_prefix": f"best{k}"}}
    return prompt


@pytest.mark.server
def test_best_of_sorts_a_batch_through_the_api(server, face_analyzer):
    images = candidates()
    identity_faces = run_v3("InstantIDFaceAnalyze", face_analyzer=face_analyzer,
                            image=paint_face(blank_images(256, 256), 50, 40, 90, 110), face_choice="largest",
                            face_index=0, no_face_policy="error", weights="")[0]
    _, order = _expected(face_analyzer, identity_faces, images)
    entry = server.run_prompt(_best_of_prompt(4))
    assert entry["status"]["status_str"] == "success", entry["status"]
    saved = entry["outputs"]["save"]["images"]
    assert len(saved) == 4
    for rank, img in enumerate(saved):
        with Image.open(server.base / "output" / img["subfolder"] / img["filename"]) as picture:
            pixels = np.asarray(picture.convert("RGB"))
        expected = np.round(images[order[rank]].numpy() * 255).astype(np.uint8)
        assert np.array_equal(pixels, expected), f"rank {rank + 1} is not image {order[rank] + 1}"
    assert entry["outputs"]["best"]["text"][0].startswith(f"#1 image {order[0] + 1}:")


@pytest.mark.server
def test_best_of_k_zero_is_refused_at_the_api(server):
    status, body = server.post("/prompt", {"prompt": _best_of_prompt(0, count=2)})
    assert status == 400 and "best" in body.get("node_errors", {}), body
    assert "k" in str(body["node_errors"]["best"])
