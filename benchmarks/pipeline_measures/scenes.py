"""Synthetic onset/apex pairs: a head similarity + a local expression displacement (Gaussian bumps)."""
import numpy as np
import cv2


def bumps(points, centres, amps, sigma):
    """displacement (N,2) at points (N,2): sum_k amp_k * exp(-|p-c_k|^2 / 2 sigma^2)."""
    e = np.zeros_like(points, dtype=np.float64)
    for c, a in zip(centres, amps):
        w = np.exp(-np.sum((points - c) ** 2, axis=1) / (2 * sigma ** 2))
        e += w[:, None] * np.asarray(a, dtype=np.float64)
    return e


def head_matrix(shift=(0, 0), angle_deg=0.0, scale=1.0, centre=(0, 0)):
    c, s = scale * np.cos(np.radians(angle_deg)), scale * np.sin(np.radians(angle_deg))
    r = np.array([[c, -s], [s, c]])
    centre = np.asarray(centre, float)
    t = centre - r @ centre + np.asarray(shift, float)
    return np.hstack([r, t[:, None]])


def make_apex(onset, H, centres, amps, sigma):
    """apex(Phi(q)) = onset(q), Phi(q) = H (q + e(q))."""
    h, w = onset.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    x = np.stack([xs.ravel(), ys.ravel()], 1)
    Hi = np.linalg.inv(np.vstack([H, [0, 0, 1]]))[:2]
    y = x @ Hi[:, :2].T + Hi[:, 2]
    q = y.copy()
    for _ in range(8):
        q = y - bumps(q, centres, amps, sigma)
    mx = q[:, 0].reshape(h, w).astype(np.float32)
    my = q[:, 1].reshape(h, w).astype(np.float32)
    return cv2.remap(onset.astype(np.float32), mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def true_expression_flow(M, size, centres, amps, sigma):
    """expression-only flow in the onset crop: M_lin e(M^-1 p)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    p = np.stack([xs.ravel(), ys.ravel()], 1)
    Mi = np.linalg.inv(np.vstack([np.asarray(M, float), [0, 0, 1]]))[:2]
    q = p @ Mi[:, :2].T + Mi[:, 2]
    e = bumps(q, centres, amps, sigma) @ np.asarray(M, float)[:, :2].T
    return e.reshape(size, size, 2).astype(np.float32)


def face_weight(shape, landmarks, feather):
    """1 inside the face, 0 outside, blurred edge.

    The face: the jaw contour closed over the brows, raised by 0.3 of the face height.
    """
    lm = np.asarray(landmarks, np.float64)
    top = lm[17:27].copy()
    h = lm[8, 1] - lm[17:27, 1].min()
    top[:, 1] -= 0.3 * h
    hull = cv2.convexHull(np.vstack([lm[0:17], top[::-1]]).astype(np.float32)).astype(np.int32)
    m = np.zeros(shape, np.float32)
    cv2.fillConvexPoly(m, hull, 1.0)
    return cv2.GaussianBlur(m, (0, 0), feather)


def make_apex_local(onset, H, centres, amps, sigma, weight):
    """Phi(q) = q + e(q) + w(q) (H q - q): the head moves, the background stays."""
    h, w = onset.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    y = np.stack([xs.ravel(), ys.ravel()], 1)

    def disp(q):
        wq = cv2.remap(weight, q[:, 0].reshape(h, w).astype(np.float32),
                       q[:, 1].reshape(h, w).astype(np.float32), cv2.INTER_LINEAR).ravel()
        hq = q @ H[:, :2].T + H[:, 2]
        return bumps(q, centres, amps, sigma) + wq[:, None] * (hq - q)
    q = y.copy()
    for _ in range(10):
        q = y - disp(q)
    mx = q[:, 0].reshape(h, w).astype(np.float32)
    my = q[:, 1].reshape(h, w).astype(np.float32)
    return cv2.remap(onset.astype(np.float32), mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
