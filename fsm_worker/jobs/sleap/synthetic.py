"""A tiny synthetic labelled dataset (``.pkg.slp``) built from numpy: bright blobs with three nodes.

For tests and ``fsm-worker demo --sleap``; nothing is downloaded. Needs ``sleap-io`` (the ``sleap`` extra).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NODES = ("head", "thorax", "tail")


def make_labels(path: Path, frames: int = 20, size: int = 128, seed: int = 0) -> Path:
    """Write ``frames`` labelled ``size`` by ``size`` frames (one animal each) to ``path`` with embedded images."""
    import imageio.v3 as iio
    import sleap_io as sio

    rng = np.random.default_rng(seed)
    image_dir = path.parent / f".{path.name}.frames"
    image_dir.mkdir(parents=True, exist_ok=True)
    skeleton = sio.Skeleton(list(NODES), edges=[("head", "thorax"), ("thorax", "tail")])
    yy, xx = np.mgrid[0:size, 0:size]
    points_per_frame, files = [], []
    for index in range(frames):
        centre = rng.uniform(size * 0.3, size * 0.7, size=2)
        angle = rng.uniform(0, 2 * np.pi)
        step = np.array([np.cos(angle), np.sin(angle)]) * size * 0.12
        points = np.stack([centre + step, centre, centre - step])
        image = np.zeros((size, size), dtype=np.float64)
        for x, y in points:
            image += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 4.0**2))
        frame = (np.clip(image, 0, 1) * 255).astype(np.uint8)
        file = image_dir / f"frame_{index:03d}.png"
        iio.imwrite(file, frame)
        files.append(str(file))
        points_per_frame.append(points)
    video = sio.Video.from_filename(files)
    labelled = [
        sio.LabeledFrame(video=video, frame_idx=i, instances=[sio.Instance.from_numpy(p, skeleton=skeleton)])
        for i, p in enumerate(points_per_frame)
    ]
    labels = sio.Labels(labeled_frames=labelled, videos=[video], skeletons=[skeleton])
    sio.save_slp(labels, str(path), embed="user")
    return path
