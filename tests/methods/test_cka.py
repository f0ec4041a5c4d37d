"""CKA: the properties every CKA here must have, references through Gram matrices, memory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, pdist

from methods.arfd import linear_cka, rbf_cka

CKAS = [linear_cka, rbf_cka]


@contextmanager
def largest_saved_tensor() -> Iterator[list[int]]:
    """Record the element count of the largest tensor autograd saves for the backward pass.

    Yields a one-element list holding the running maximum. An n×n Gram matrix (or an
    (n, M, d) difference tensor) inside a differentiable computation would be saved and seen.
    """
    largest = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        largest[0] = max(largest[0], t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield largest


def hsic_cka(k: np.ndarray, l_: np.ndarray) -> float:
    """HSIC(K, L) / sqrt(HSIC(K, K)·HSIC(L, L)) with HSIC = tr(KHLH) / (n − 1)²."""
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n

    def hsic(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.trace(a @ h @ b @ h)) / (n - 1) ** 2

    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def rbf_gram(x: np.ndarray) -> np.ndarray:
    """exp(−‖x_i − x_j‖² / (2σ²)) with σ² the (lower) median of squared pairwise distances."""
    sq = pdist(x, "sqeuclidean")
    sigma_sq = np.sort(sq)[(len(sq) - 1) // 2]
    return np.exp(-cdist(x, x, "sqeuclidean") / (2 * sigma_sq))


def pair(seed: int, n: int = 40, d1: int = 6, d2: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 (n, d1), (n, d2) samples, the second partly a function of the first."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d1, generator=g, dtype=torch.float64)
    y = torch.randn(n, d2, generator=g, dtype=torch.float64)
    y[:, :3] += 2 * x[:, :3] ** 2
    return x, y


def orthogonal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


@pytest.mark.parametrize("cka", CKAS)
def test_self_similarity_is_one(cka) -> None:  # noqa: ANN001
    x, _ = pair(0)
    assert cka(x, x.clone()).item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("cka", CKAS)
def test_invariant_to_orthogonal_maps_and_isotropic_scaling(cka) -> None:  # noqa: ANN001
    x, y = pair(1)
    base = cka(x, y).item()
    assert 0.05 < base < 0.95
    assert cka(x @ orthogonal(6, 2), y).item() == pytest.approx(base, rel=1e-9)
    assert cka(x, y @ orthogonal(9, 3)).item() == pytest.approx(base, rel=1e-9)
    assert cka(x * 37.5, y).item() == pytest.approx(base, rel=1e-9)
    assert cka(x, y * 1e-3).item() == pytest.approx(base, rel=1e-9)


@pytest.mark.parametrize("cka", CKAS)
def test_values_lie_in_the_unit_interval(cka) -> None:  # noqa: ANN001
    for seed in range(5):
        x, y = pair(10 + seed, n=25)
        for b in (y, torch.randn_like(y), x[:, :2] + 0.01 * y[:, :2]):
            value = cka(x, b).item()
            assert 0.0 <= value <= 1.0 + 1e-12


def test_linear_cka_equals_the_gram_matrix_formula() -> None:
    for seed in range(3):
        x, y = pair(20 + seed)
        want = hsic_cka((x @ x.T).numpy(), (y @ y.T).numpy())
        assert linear_cka(x, y).item() == pytest.approx(want, rel=1e-10)


def test_rbf_cka_equals_hsic_with_median_bandwidth() -> None:
    for seed in range(3):
        x, y = pair(30 + seed, n=31)
        want = hsic_cka(rbf_gram(x.numpy()), rbf_gram(y.numpy()))
        assert rbf_cka(x, y).item() == pytest.approx(want, rel=1e-8)


@pytest.mark.parametrize("cka", CKAS)
def test_constant_side_gives_zero_with_finite_gradients(cka) -> None:  # noqa: ANN001
    x = torch.ones(20, 4, requires_grad=True)
    y = torch.randn(20, 3, requires_grad=True)
    value = cka(x, y)
    value.backward()
    assert value.item() == 0.0
    assert x.grad is not None and y.grad is not None
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()


def test_linear_cka_gradient_matches_finite_differences() -> None:
    x, y = pair(40, n=12, d1=3, d2=4)
    assert torch.autograd.gradcheck(linear_cka, (x.requires_grad_(), y.requires_grad_()))


def test_linear_cka_never_builds_an_n_by_n_matrix() -> None:
    n, d = 2048, 16
    x = torch.randn(n, d, requires_grad=True)
    y = torch.randn(n, 2 * d, requires_grad=True)
    with largest_saved_tensor() as largest:
        value = linear_cka(x, y)
    value.backward()
    assert 0 < largest[0] <= n * 2 * d


@pytest.mark.parametrize(("r", "d1"), [(4, 7), (9, 3)])
def test_factored_linear_cka_equals_linear_cka_of_the_product(r: int, d1: int) -> None:
    """CKA(A·V, Y) without forming A·V: same value and same gradients as on the product."""
    from methods.arfd import factored_linear_cka

    g = torch.Generator().manual_seed(r)
    a = torch.rand(50, r, generator=g, dtype=torch.float64).requires_grad_()
    v = (10 * torch.randn(r, d1, generator=g, dtype=torch.float64)).requires_grad_()
    y = torch.randn(50, 6, generator=g, dtype=torch.float64) + 3
    got = factored_linear_cka(a, v, y)
    want = linear_cka(a @ v, y)
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    maps = y.reshape(5, 10, 6).transpose(1, 2)  # 5 images of 10 pixels, rows in order
    assert factored_linear_cka(a, v, maps).item() == pytest.approx(want.item(), rel=1e-12)
    huge = factored_linear_cka(a, 1e30 * v, 1e15 * y)  # products would overflow unscaled
    assert huge.item() == pytest.approx(want.item(), rel=1e-10)
    grads = torch.autograd.grad(got, (a, v))
    want_grads = torch.autograd.grad(want, (a, v))
    for g1, g2 in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-12)
