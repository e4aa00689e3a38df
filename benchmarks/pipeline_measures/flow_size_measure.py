"""Effect of the flow size (side of the aligned crop the TV-L1 flow is computed on): accuracy and time.

(1) time of tvl1_flow on the aligned astronaut face at each size (one thread,
    as in a joblib worker; CPU seconds, median of 7 runs);
(2) end-point error of a 0.5 px horizontal shift of the aligned crop at each size
    (interior, 10% border dropped);
(3) a micro-expression at native resolution: the astronaut frame upscaled 3x
    (1536 px, inter-ocular 130 px, like a CASME II face), a smile + brow raise
    of 1 px at that resolution (Gaussian bumps, sigma 0.2 inter-ocular), sensor
    noise sigma 2 grey levels on both frames, 3 seeds; aligned at each size, flow,
    then compared with the true expression flow: EPE in crop pixels over the face,
    and the relative error of the 28x28 (u, v) input the model sees
    (||F28(flow) - F28(truth)|| / ||F28(truth)||, F28 = INTER_AREA resize).
"""
import time

import numpy as np
import cv2
from skimage import data
from scenes import make_apex, true_expression_flow, face_weight, head_matrix
from fr_mer.pipeline.align import FaceAligner, eye_centres
from fr_mer.pipeline.flow import tvl1_flow

cv2.setNumThreads(1)
SIZES = (64, 128, 170, 256, 360)
al = FaceAligner()
small = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
print("| size | inter-ocular (px) | flow CPU time (s) | EPE 0.5 px shift (px) "
      "| micro-expression: true mean motion (px) | EPE (px) | relative error of the 28x28 input |")
print("|---:|---:|---:|---:|---:|---:|---:|")
# native-resolution scene
big = cv2.resize(small, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC).astype(np.float32)
L = al.landmarks(big.astype(np.uint8))
le, re_ = eye_centres(L)
iod = float(np.linalg.norm(re_ - le))
W = face_weight(big.shape, L, 0.1 * iod)
cs = [L[48], L[54], L[19], L[24]]
amps = [np.array([-0.7, -0.7]), np.array([0.7, -0.7]), np.array([0, -1.0]), np.array([0, -1.0])]
sig = 0.2 * iod
apex_clean = make_apex(big, head_matrix(), cs, amps, sig)
pairs = []
for seed in range(3):
    rng = np.random.default_rng(seed)
    on = np.clip(big + rng.normal(0, 2, big.shape), 0, 255).astype(np.uint8)
    ap = np.clip(apex_clean + rng.normal(0, 2, big.shape), 0, 255).astype(np.uint8)
    pairs.append((on, ap))
ref = al.landmarks(pairs[0][0])  # one matrix for all seeds and sizes: only the size changes
for size in SIZES:
    M = al.transform(ref, size)
    # (1) time, (2) shift
    crop = al.warp(small, al.transform(al.landmarks(small), size), size).astype(np.float32)
    shifted = cv2.warpAffine(crop, np.float32([[1, 0, 0.5], [0, 1, 0]]),
                             (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    times = []
    for _ in range(7):  # CPU seconds: robust to the other users of a shared machine
        t0 = time.process_time()
        f = tvl1_flow(crop, shifted)
        times.append(time.process_time() - t0)
    m = size // 10
    shift_epe = np.linalg.norm(f[m:-m, m:-m] - [0.5, 0.0], axis=2).mean()
    # (3) micro-expression
    truth = true_expression_flow(M, size, cs, amps, sig)
    face = al.warp(W, M, size) > 0.9
    region = np.linalg.norm(truth, axis=2) > 0.1 * np.linalg.norm(truth, axis=2).max()
    t28 = cv2.resize(truth, (28, 28), interpolation=cv2.INTER_AREA)
    epes, rels = [], []
    for on, ap in pairs:
        f = tvl1_flow(al.warp(on, M, size), al.warp(ap, M, size))
        epes.append(np.linalg.norm(f - truth, axis=2)[face].mean())
        f28 = cv2.resize(f, (28, 28), interpolation=cv2.INTER_AREA)
        rels.append(np.linalg.norm(f28 - t28) / np.linalg.norm(t28))
    true_motion = np.linalg.norm(truth, axis=2)[region].mean()
    print(f"| {size} | {0.36 * size:.0f} | {np.median(times):.3f} | {shift_epe:.3f} | {true_motion:.2f} "
          f"| {np.mean(epes):.3f} | {np.mean(rels):.2f} |")
