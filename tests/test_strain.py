"""Optical strain: closed-form answers for affine flows and the exact difference scheme."""
import numpy as np
import pytest

from fr_mer.pipeline.flow import optical_strain

H, W = 17, 23


def affine_flow(a, b, c, d, tx=0.0, ty=0.0):
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    return a * x + b * y + tx, c * x + d * y + ty


@pytest.mark.parametrize("a,b,c,d", [
    (0.1, 0.0, 0.0, 0.0),
    (0.0, 0.0, 0.0, -0.2),
    (0.03, 0.2, -0.05, 0.07),
    (-0.4, 1.5, 0.9, 0.25),
])
def test_affine_flow_gives_the_closed_form_everywhere(a, b, c, d):
    u, v = affine_flow(a, b, c, d, tx=3.0, ty=-1.0)
    strain = optical_strain(u, v)
    expected = np.sqrt(a**2 + d**2 + 0.5 * (b + c) ** 2)
    assert strain.shape == (H, W) and strain.dtype == np.float32
    # every pixel, the first row and column (replicated derivatives) included
    np.testing.assert_allclose(strain, expected, rtol=1e-5, atol=1e-6)


def test_translation_and_rotation_have_no_strain():
    np.testing.assert_array_equal(optical_strain(*affine_flow(0, 0, 0, 0, tx=2.5, ty=-0.7)), 0)
    # a small rotation: du/dy = -dv/dx, no normal strain: shear terms cancel
    theta = 0.01
    u, v = affine_flow(0, -theta, theta, 0)
    np.testing.assert_allclose(optical_strain(u, v), 0, atol=1e-7)


def test_third_party_formula_would_differ():
    # the wrong form sqrt(u_x^2 + u_y^2) ignores v and counts the shear of u alone
    a, b, c, d = 0.1, 0.2, -0.2, 0.0
    u, v = affine_flow(a, b, c, d)
    right = optical_strain(u, v)
    wrong = np.sqrt(a**2 + b**2)
    np.testing.assert_allclose(right, 0.1, rtol=1e-5)
    assert abs(wrong - 0.1) > 0.1


def test_backward_differences_with_replicated_first_row_and_column():
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=(2, 6, 7))

    def dx(f):  # independent loop version of the spec's scheme
        out = np.empty_like(f)
        for j in range(f.shape[1]):
            k = max(j, 1)
            out[:, j] = f[:, k] - f[:, k - 1]
        return out

    def dy(f):
        return dx(f.T).T

    expected = np.sqrt(dx(u) ** 2 + dy(v) ** 2 + 0.5 * (dy(u) + dx(v)) ** 2)
    np.testing.assert_allclose(optical_strain(u, v), expected, rtol=1e-5, atol=1e-6)


def test_quadratic_flow_uses_the_backward_step():
    # u = x^2: backward difference x^2 - (x-1)^2 = 2x - 1 (a central one would be 2x)
    _, x = np.mgrid[0:4, 0:9].astype(np.float64)
    strain = optical_strain(x**2, np.zeros_like(x))
    np.testing.assert_allclose(strain[:, 1:], np.abs(2 * x[:, 1:] - 1), rtol=1e-6)
    np.testing.assert_allclose(strain[:, 0], strain[:, 1])


def test_shape_validation():
    with pytest.raises(ValueError, match="same shape"):
        optical_strain(np.zeros((4, 5)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="same shape"):
        optical_strain(np.zeros((4, 5, 2)), np.zeros((4, 5, 2)))
