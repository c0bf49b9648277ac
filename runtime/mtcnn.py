"""MTCNN's three stages on a batch of frames, every stage's box crops cut in one step.

facenet-pytorch's detect_face cuts each candidate box out and resamples it in its own
`interpolate(mode="area")` call: a few hundred calls a frame, a fifth of detection's time on a
CPU and more the more frames a batch holds. Here a box's area-resampled crop comes from one
integral image of the batch: every output pixel is the mean of its bin (the bins adaptive
average pooling uses), read from the integral's four corners for all boxes of a stage at once.
The pixels are whole numbers, so the integral is exact in int32. The nets, pyramid, thresholds,
NMS and box regression are detect_face's own (its helpers are reused), so the faces are the
same: tests/test_mtcnn.py checks boxes and scores against detect_face on real photos.
"""

from __future__ import annotations

import numpy as np
import torch
from facenet_pytorch.models.utils.detect_face import (
    batched_nms,
    batched_nms_numpy,
    bbreg,
    generateBoundingBox,
    imresample,
    pad,
    rerec,
)

NET_BATCH = 512  # boxes per R-net / O-net call (detect_face's own bound, memory on a GPU)


def detect(frames: np.ndarray, minsize: int, nets, thresholds, factor: float,
           device: torch.device) -> list[np.ndarray]:
    """Per frame of an N x H x W x 3 uint8 stack, its faces as rows [x0, y0, x1, y1, score] in
    the frames' pixels (what detect_face returns as boxes)."""
    pnet, rnet, onet = nets
    n, h, w, _ = frames.shape
    planar = np.ascontiguousarray(frames.transpose(0, 3, 1, 2))
    boxes, inds = _proposals(torch.from_numpy(planar).to(device, torch.float32), minsize, pnet,
                             thresholds[0], factor)
    boxes, inds = boxes.cpu(), inds.cpu()
    if len(boxes):
        sums = _integral(planar)
        boxes, inds = _stage(sums, boxes, inds, rnet, 24, thresholds[1], w, h, device)
        if len(boxes):
            boxes, inds = _stage(sums, boxes, inds, onet, 48, thresholds[2], w, h, device)
            pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], inds, 0.7, "Min")
            boxes, inds = boxes[pick], inds[pick]
    boxes, inds = boxes.numpy(), inds.numpy()
    return [boxes[inds == i] for i in range(n)]


def _proposals(batch: torch.Tensor, minsize: int, pnet, threshold: float, factor: float):
    """Stage 1, as detect_face: P-net over the scale pyramid, NMS per scale then per image,
    boxes regressed and squared."""
    h, w = batch.shape[2:]
    scale, side, scales = 12.0 / minsize, min(h, w) * 12.0 / minsize, []
    while side >= 12:
        scales.append(scale)
        scale, side = scale * factor, side * factor
    found, where = [], []
    for s in scales:
        level = imresample(batch, (int(h * s + 1), int(w * s + 1)))
        reg, probs = pnet(((level - 127.5) * 0.0078125).contiguous(memory_format=torch.channels_last))
        b, i = generateBoundingBox(reg, probs[:, 1], s, threshold)
        pick = batched_nms(b[:, :4], b[:, 4], i, 0.5)
        found.append(b[pick])
        where.append(i[pick])
    boxes = torch.cat(found) if found else torch.zeros(0, 9)
    inds = torch.cat(where) if where else torch.zeros(0, dtype=torch.long)
    pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
    boxes, inds = boxes[pick], inds[pick]
    regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    boxes = torch.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                         boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh,
                         boxes[:, 4]], dim=1)
    return rerec(boxes), inds


def _stage(sums: torch.Tensor, boxes: torch.Tensor, inds: torch.Tensor, net, size: int,
           threshold: float, w: int, h: int, device: torch.device):
    """Stage 2 (R-net, 24 px) or 3 (O-net, 48 px): score every box's crop, keep those over the
    threshold, regress them (stage 2 also: NMS per image and squared, as detect_face)."""
    y, ey, x, ex = (torch.from_numpy(v).long() for v in pad(boxes, w, h))
    cut = (ey > y - 1) & (ex > x - 1)  # detect_face skips an empty crop: so do we, box and all
    boxes, inds = boxes[cut], inds[cut]
    if not len(boxes):
        return boxes[:, :5], inds
    crops = (_crops(sums, inds, y[cut] - 1, ey[cut], x[cut] - 1, ex[cut], size) - 127.5) * 0.0078125
    crops = crops.contiguous(memory_format=torch.channels_last)  # as the nets (faster on a CPU)
    outs = [net(crops[i:i + NET_BATCH].to(device)) for i in range(0, len(crops), NET_BATCH)]
    reg, score = (torch.cat([o[0] for o in outs]).cpu(),
                  torch.cat([o[-1] for o in outs])[:, 1].cpu())
    keep = score > threshold
    boxes = torch.cat((boxes[keep, :4], score[keep, None]), dim=1)
    inds, reg = inds[keep], reg[keep]
    if size == 48:
        return bbreg(boxes, reg), inds
    pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
    return rerec(bbreg(boxes[pick], reg[pick])), inds[pick]


def _integral(planar: np.ndarray) -> torch.Tensor:
    """The integral image of an N x 3 x H x W uint8 batch: N x 3 x (H+1) x (W+1) int32 (whole
    pixels: a 4-million-pixel frame's sums stay under 2^31); S[r, c] sums rows < r, columns < c.
    numpy's cumsum: several times torch's on a CPU."""
    n, c, h, w = planar.shape
    sums = np.zeros((n, c, h + 1, w + 1), dtype=np.int32)
    np.cumsum(planar, axis=2, dtype=np.int32, out=sums[:, :, 1:, 1:])
    np.cumsum(sums[:, :, 1:, 1:], axis=3, out=sums[:, :, 1:, 1:])
    return torch.from_numpy(sums)


def _crops(sums: torch.Tensor, inds: torch.Tensor, y0, y1, x0, x1, size: int) -> torch.Tensor:
    """Rows y0..y1 and columns x0..x1 (ends excluded) of each box's image, area-resampled to
    K x 3 x size x size (adaptive average pooling's bins: floor(i*n/size) to ceil((i+1)*n/size))."""
    i = torch.arange(size)
    (r0, r1), (c0, c1) = _edges(y0, y1, i, size), _edges(x0, x1, i, size)
    n = inds[:, None, None]

    def corner(r, c):  # K x size x size x 3 (the indexed dims first, then the channels)
        return sums[n, :, r[:, :, None], c[:, None, :]]

    total = corner(r1, c1) - corner(r0, c1) - corner(r1, c0) + corner(r0, c0)
    area = (r1 - r0)[:, :, None] * (c1 - c0)[:, None, :]
    return (total.float() / area[..., None]).permute(0, 3, 1, 2)


def _edges(a: torch.Tensor, b: torch.Tensor, i: torch.Tensor, size: int):
    """Each box's bin starts and ends along one axis: K x size each."""
    n = (b - a)[:, None]
    return (a[:, None] + torch.div(i * n, size, rounding_mode="floor"),
            a[:, None] - torch.div(-(i + 1) * n, size, rounding_mode="floor"))
