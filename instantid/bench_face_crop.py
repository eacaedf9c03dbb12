"""Face crop and paste: geometry error and time per crop / paste at 1024x1024.

Run ``python -m instantid.bench_face_crop`` from the pack's folder. Needs no
ComfyUI and no models: faces are given as records, pictures are synthetic.
Prints a table and writes ``bench/face_crop.json``.

Measured:
- round trip (crop, then paste the unchanged crop) on a smooth picture (no
  detail finer than the crop can hold): max abs error in 8-bit levels (LSB),
  for rolls -90..90 degrees; and on random texture, where the error is the
  resampling blur itself, not geometry;
- keypoints after roll correction: distance between the moved keypoints and
  bright dots painted at the original keypoints, found again in the crop
  (centroid), and how level the eye line is;
- time: crop and paste of one face from a 2048x2048 photo to a 1024x1024
  crop (median of several runs), against one plain cubic ``cv2.warpAffine``
  to 1024x1024 of the same photo (the least any rotated crop must do).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from .face_crop import crop_faces
from .face_paste import paste_faces
from .faces import FaceRecord, Faces

PACK_DIR = Path(__file__).resolve().parent.parent
UPRIGHT = np.array([[-0.2, -0.12], [0.2, -0.12], [0.0, 0.08], [-0.15, 0.28], [0.15, 0.28]])
ROLLS = (-90, -60, -30, -10, 0, 10, 30, 60, 90)
LSB = 1 / 255


def _face(cx: float, cy: float, side: float, roll_deg: float, size: tuple[int, int]) -> FaceRecord:
    t = math.radians(roll_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    points = (UPRIGHT * side) @ rot.T + [cx, cy]
    box = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)
    return FaceRecord(box, points.astype(np.float32), np.ones(512, np.float32), 0.9, size)


def smooth_images(batch: int = 1, height: int = 512, width: int = 512, seed: int = 0, periods=(45, 90)) -> torch.Tensor:
    """IMAGE [B,H,W,3]: sums of sinusoids (periods in px), values inside 0.1..0.9."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = []
    for _ in range(batch):
        channels = []
        for _ in range(3):
            value = np.full((height, width), 0.5)
            for _ in range(3):
                angle, period, phase = rng.uniform(0, math.pi), rng.uniform(*periods), rng.uniform(0, 2 * math.pi)
                value += 0.13 * np.sin(2 * math.pi * (xs * math.cos(angle) + ys * math.sin(angle)) / period + phase)
            channels.append(value)
        frames.append(np.stack(channels, -1))
    return torch.from_numpy(np.stack(frames).astype(np.float32))


def round_trip_lsb(images: torch.Tensor, record: FaceRecord, **crop_args) -> float:
    crops, _, _, info = crop_faces(images, faces=Faces((record,)), **crop_args)
    out = paste_faces(images, crops, info, feather=8)
    return float((out - images).abs().max()) / LSB


def keypoint_error(roll: float, size: int = 512) -> tuple[float, float]:
    """(max distance in crop px between moved keypoints and the painted dots found in the crop, max |eye dy|)."""
    record = _face(size / 2 + 3.3, size / 2 - 5.1, 160.0, roll, (size, size))
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    dots = sum(np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 2.5**2)) for x, y in record.keypoints)
    images = torch.from_numpy(np.repeat(dots[None, ..., None], 3, -1).astype(np.float32))
    crops, _, faces, _ = crop_faces(images, faces=Faces((record,)), resize="size", width=1024, height=1024)
    picture = crops[0, ..., 0].double().numpy()
    cys, cxs = np.mgrid[0 : picture.shape[0], 0 : picture.shape[1]].astype(np.float64)
    worst = 0.0
    moved = faces.frames[0].keypoints.astype(np.float64)
    for x, y in moved:
        w = picture * (((cxs - x) ** 2 + (cys - y) ** 2) < 20**2)
        found = np.array([(w * cxs).sum() / w.sum(), (w * cys).sum() / w.sum()])
        worst = max(worst, float(np.hypot(*(found - [x, y]))))
    return worst, float(abs(moved[1, 1] - moved[0, 1]))


def _median_time(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timings(runs: int) -> dict:
    size = 2048
    images = smooth_images(1, size, size, seed=3, periods=(40, 90))
    record = _face(900.0, 700.0, 260.0, 15.0, (size, size))
    faces = Faces((record,))
    args = dict(padding=1.0, resize="size", width=1024, height=1024)
    crops, _, _, info = crop_faces(images, faces=faces, **args)
    frame = images[0].numpy()
    matrix = info.transforms[0].matrix
    baseline = _median_time(lambda: cv2.warpAffine(frame, matrix, (1024, 1024), flags=cv2.INTER_CUBIC), runs)
    crop = _median_time(lambda: crop_faces(images, faces=faces, **args), runs)
    paste = _median_time(lambda: paste_faces(images, crops, info, feather=16), runs)
    matched = _median_time(lambda: paste_faces(images, crops, info, feather=16, colour_match=True), runs)
    return {"source": f"{size}x{size}", "crop": "1024x1024", "face_px": 260, "roll_deg": 15, "runs": runs,
            "warp_baseline_s": baseline, "crop_s": crop, "paste_s": paste, "paste_colour_match_s": matched,
            "crop_over_baseline": crop / baseline, "paste_over_baseline": paste / baseline}


def geometry() -> dict:
    smooth = smooth_images(1, 512, 512, periods=(45, 90))
    results = {"round_trip_smooth_lsb": {}, "round_trip_shrinking_crop_lsb": {}, "keypoint_dot_error_px": {},
               "eye_line_dy_px": {}}
    for roll in ROLLS:
        results["round_trip_smooth_lsb"][roll] = round_trip_lsb(smooth, _face(251.3, 262.8, 90.0, roll, (512, 512)),
                                                                resize="size", width=1024, height=1024)
        dot, dy = keypoint_error(roll)
        results["keypoint_dot_error_px"][roll] = dot
        results["eye_line_dy_px"][roll] = dy
    coarse = smooth_images(1, 512, 512, periods=(360, 600))
    for out in (960, 512, 256):
        results["round_trip_shrinking_crop_lsb"][out] = round_trip_lsb(coarse, _face(250.5, 248.2, 340.0, 12.0, (512, 512)),
                                                                       padding=0.5, resize="size", width=out, height=out)
    rng = np.random.default_rng(1)
    texture = torch.from_numpy(rng.uniform(0.1, 0.9, (1, 512, 512, 3)).astype(np.float32))
    results["round_trip_random_texture_lsb"] = round_trip_lsb(texture, _face(251.3, 262.8, 90.0, 17.0, (512, 512)),
                                                              resize="size", width=1024, height=1024)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", default=str(PACK_DIR / "bench" / "face_crop.json"))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    result = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cv2_threads": cv2.getNumThreads(),
              "torch": torch.__version__, "opencv": cv2.__version__, **geometry(), "timing": timings(args.runs)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    rows = [
        ("round trip, smooth picture, rolls -90..90 (max)", f"{max(result['round_trip_smooth_lsb'].values()):.3f} LSB"),
        ("round trip, crop smaller than the region (max of 960/512/256 px)",
         f"{max(result['round_trip_shrinking_crop_lsb'].values()):.3f} LSB"),
        ("round trip, random texture (resampling blur, informative)", f"{result['round_trip_random_texture_lsb']:.1f} LSB"),
        ("keypoints vs painted dots in the crop, rolls -90..90 (max)", f"{max(result['keypoint_dot_error_px'].values()):.4f} px"),
        ("eye line after roll correction, |dy| (max)", f"{max(result['eye_line_dy_px'].values()):.2e} px"),
        ("crop 2048->1024 (median)", f"{result['timing']['crop_s'] * 1000:.1f} ms"),
        ("paste 1024->2048, feather 16 (median)", f"{result['timing']['paste_s'] * 1000:.1f} ms"),
        ("paste with colour match (median)", f"{result['timing']['paste_colour_match_s'] * 1000:.1f} ms"),
        ("one cubic warpAffine to 1024x1024 (baseline)", f"{result['timing']['warp_baseline_s'] * 1000:.1f} ms"),
        ("crop / baseline, paste / baseline",
         f"{result['timing']['crop_over_baseline']:.2f}, {result['timing']['paste_over_baseline']:.2f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"{name:<{width}}  {value}" for name, value in rows))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
