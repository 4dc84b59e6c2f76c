r"""Compressed-sensing reconstruction with total variation (CS-TV), batched over slices in torch.

Problem
-------
For every slice ``b`` of a batch we solve

.. math::

    \hat x_b = \arg\min_x \; \tfrac12 \big\| \sqrt{w_b} \odot (F S_b x - y_b) \big\|_2^2
               + \lambda_b \, \mathrm{TV}(x),

where ``x`` is the complex image on the full k-space grid (H × W; crop afterwards), ``F`` the
centred orthonormal 2-D FFT (``ifftshift → fft2(norm="ortho") → fftshift``, the convention of
``fastmri.fft2c`` and of ``sigpy.fft``), ``S_b`` the coil sensitivities (single-coil: ``S = 1``),
``w_b`` the column mask broadcast over rows and coils and ``y_b`` the measured k-space. For a binary
mask and masked ``y`` the data term is the usual :math:`\tfrac12\|M F S x - y\|^2`; a fractional
mask acts as k-space weights exactly as ``weights`` does in sigpy.

TV is defined as in ``sigpy.mri.app.TotalVariationRecon`` (``sigpy.linop.FiniteDifference`` with an
``L1Reg`` prox), so objective values are directly comparable with sigpy's:

.. math::

    \mathrm{TV}(x) = \sum_{i,j} |x_{i,j} - x_{i-1,j}| + |x_{i,j} - x_{i,j-1}|,

*anisotropic* (the two directions are separate L1 terms), *circular* boundary (indices wrap, so the
first row is differenced against the last), and ``|·|`` the complex modulus of each element (the
real and imaginary parts of one difference are not split).

Solver
------
First-order primal-dual algorithm of Chambolle & Pock (2011, "PDHG"), θ = 1, fixed step sizes, all
slices of the batch iterating together; ``λ`` and the step sizes are per-slice tensors. The initial
image is the zero-filled reconstruction :math:`S^H F^H (w \odot y)`. Two splittings are used:

* **Single-coil** (``sens=None``): the data term is the primal function. Its prox is exact and
  diagonal in k-space because ``F`` is unitary,
  :math:`\mathrm{prox}_{\tau f}(v) = F^H\big[(F v + \tau w y) / (1 + \tau w)\big]`,
  so only the gradient is split (``K = ∇``) and data consistency is enforced exactly each
  iteration at the price of one FFT pair. The dual of the TV term is the projection onto
  :math:`\{|p_e| \le \lambda\}` (conjugate of :math:`\lambda\|\cdot\|_1`)::

      p     ← clip_λ(p + σ ∇ x̄)
      x⁺    ← prox_{τf}(x − τ ∇ᵀ p)
      x̄     ← 2 x⁺ − x

  Convergence needs :math:`\tau\sigma\|\nabla\|^2 \le 1`. For circular forward differences in 2-D
  the eigenvalues of :math:`\nabla^T\nabla` are :math:`4\sin^2(\pi k/H) + 4\sin^2(\pi l/W) \le 8`
  (attained for even sizes), so ``‖∇‖² = 8`` exactly and we take :math:`\tau = r/\sqrt8`,
  :math:`\sigma = 1/(r\sqrt8)`.

* **Multi-coil**: the prox of :math:`\tfrac12\|\sqrt w(F S x - y)\|^2` is a full linear solve (``S``
  is not unitary), so the data term is dualised as well (``K = [A; ∇]``, ``A = √w F S``). Its
  conjugate prox is the "y-shift" :math:`q ← (q + \sigma_d(A\bar x - \sqrt w\, y))/(1+\sigma_d)`::

      q     ← (q + σ_d (A x̄ − √w y)) / (1 + σ_d)
      p     ← clip_λ(p + σ_t ∇ x̄)
      x⁺    ← x − τ (Aᴴ q + ∇ᵀ p)
      x̄     ← 2 x⁺ − x

  With block step sizes (diagonal preconditioning, Pock & Chambolle 2011) convergence needs
  :math:`\|\Sigma^{1/2} K \tau^{1/2}\|^2 \le 1`, which holds when
  :math:`\tau(\sigma_d L_A + 8\sigma_t) \le 1` because
  :math:`\|\Sigma^{1/2}K\|^2 = \|\sigma_d A^HA + \sigma_t\nabla^T\nabla\| \le \sigma_d\|A\|^2 + 8\sigma_t`.
  :math:`L_A = \max(w)\,\max_r \sum_c |S_c(r)|^2 \ge \|A\|^2` is computed from the maps (``F`` is
  unitary, the mask and the maps are pointwise multiplications); it is 1 for maps with
  :math:`\sum_c|S_c|^2 \le 1` such as :func:`estimate_sensitivities` returns.

No power iteration is run: both bounds are exact or rigorous upper bounds, whereas a power
iteration costs operator applications and, stopped early, under-estimates the norm, which can
break convergence.

The ratio ``r`` between primal and dual steps does not change *whether* the method converges,
only how fast. The iteration is scale-equivariant when λ scales with the data (``x``, ``y``,
``λ`` and the dual variables all scale together), so a ratio tuned once holds for any intensity
scale; the defaults were chosen on 4x/8x MNI-template brain slices with λ from
:func:`relative_lambda_to_absolute`. Iterations run a fixed count; with ``tol`` the batch stops
once every slice's relative image change :math:`\|x^+ - x\| / \|x^+\|` is below ``tol`` (checked
every few iterations, so a GPU run does not synchronise every step).

Regularisation weight
---------------------
:func:`relative_lambda_to_absolute` maps a relative λ to an absolute one,
:math:`\lambda_b = \lambda_\mathrm{rel} \cdot \max_r |x_{0,b}(r)|` with :math:`x_0` the zero-filled
(coil-combined) image, so one λ works for data of any scale (TV and the data term are both
homogeneous of degree 1 resp. 2 in the intensity; scaling λ with the intensity keeps the minimiser
proportional to the data).

Sensitivities
-------------
:func:`estimate_sensitivities` is the direct "low-resolution, RSS-normalised" estimate: window the
fully sampled centre columns, inverse FFT to low-resolution coil images, divide by their
root-sum-of-squares. ESPIRiT refines this (eigenvector of the calibration matrix, which also
rejects inconsistent data and gives a support mask); the direct estimate is blurred across the
phase-encode direction to the ACS resolution, absorbs the low-resolution image phase into the maps
(so the reconstruction is close to real-valued), and is unreliable in dark regions, where noise
dominates the low-resolution images.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = [
    "cs_tv_reconstruct",
    "estimate_sensitivities",
    "relative_lambda_to_absolute",
    "tv_objective",
]

_SIGMA_D = 1.0
_GRAD_NORM_SQ = 8.0  # ‖∇‖² for 2-D circular forward differences (exact for even sizes).


def _fft2c(x: torch.Tensor) -> torch.Tensor:
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=dims), norm="ortho"), dim=dims)


def _ifft2c(x: torch.Tensor) -> torch.Tensor:
    dims = (-2, -1)
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(x, dim=dims), norm="ortho"), dim=dims)


def _grad(x: torch.Tensor) -> torch.Tensor:
    """Circular backward-looking differences ``x - roll(x, 1)`` along rows and columns, as sigpy."""
    return torch.stack((x - x.roll(1, dims=-2), x - x.roll(1, dims=-1)), dim=-3)


def _grad_adjoint(p: torch.Tensor) -> torch.Tensor:
    rows, cols = p.unbind(dim=-3)
    return rows - rows.roll(-1, dims=-2) + cols - cols.roll(-1, dims=-1)


def _clip_magnitude(p: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Project each complex element onto the disc of radius ``lam`` (prox of (λ‖·‖₁)*)."""
    return p / torch.clamp(p.abs() / lam, min=1.0)


def _prepare(
    y: torch.Tensor, mask: torch.Tensor, lam: float | torch.Tensor, sens: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate shapes; return k-space weights broadcastable to ``y`` and λ shaped ``(B, 1, 1)``."""
    if not y.is_complex():
        raise TypeError(f"y must be complex, got {y.dtype}")
    multicoil = sens is not None
    if y.ndim != (4 if multicoil else 3):
        raise ValueError(
            f"y must be (B, C, H, W) with sens or (B, H, W) without, got shape {tuple(y.shape)}"
        )
    if multicoil and sens.shape != y.shape:
        raise ValueError(f"sens shape {tuple(sens.shape)} differs from y shape {tuple(y.shape)}")
    batch, width = y.shape[0], y.shape[-1]
    if mask.shape != (batch, width):
        raise ValueError(f"mask must be (B, W) = {(batch, width)}, got {tuple(mask.shape)}")
    real_dtype = y.real.dtype
    weights = mask.to(device=y.device, dtype=real_dtype)
    weights = weights.view(batch, *([1] * (y.ndim - 2)), width)
    lam = torch.as_tensor(lam, dtype=real_dtype, device=y.device)
    if lam.ndim == 0:
        lam = lam.expand(batch)
    if lam.shape != (batch,):
        raise ValueError(f"lam must be a float or a (B,) tensor, got shape {tuple(lam.shape)}")
    return weights, lam.view(batch, 1, 1), y


def _forward(x: torch.Tensor, sens: torch.Tensor | None) -> torch.Tensor:
    return _fft2c(x if sens is None else sens * x.unsqueeze(1))


def _adjoint(k: torch.Tensor, sens: torch.Tensor | None) -> torch.Tensor:
    images = _ifft2c(k)
    return images if sens is None else (sens.conj() * images).sum(dim=1)


def _objective_parts(
    kspace_residual: torch.Tensor, grad_x: torch.Tensor, weights: torch.Tensor, lam: torch.Tensor
) -> torch.Tensor:
    data = 0.5 * (weights * kspace_residual.abs().square()).flatten(1).sum(1)
    return data + lam.view(-1) * grad_x.abs().flatten(1).sum(1)


def tv_objective(
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    lam: float | torch.Tensor,
    sens: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Evaluate :math:`\tfrac12\|\sqrt w(FSx - y)\|^2 + \lambda\,\mathrm{TV}(x)` per slice.

    Args:
        x: Complex images, (B, H, W).
        y: Measured k-space, complex (B, H, W) single-coil or (B, C, H, W) multi-coil.
        mask: Column mask or weights, (B, W), bool or float in [0, 1].
        lam: Absolute regularisation weight, a float or a (B,) tensor.
        sens: Coil sensitivities (B, C, H, W), or None for single-coil.

    Returns:
        The objective of each slice, real tensor (B,); the definition is in the module docstring
        and equals sigpy's ``TotalVariationRecon.objective()`` for the same problem.
    """
    weights, lam, y = _prepare(y, mask, lam, sens)
    return _objective_parts(_forward(x, sens) - y, _grad(x), weights, lam)


def cs_tv_reconstruct(
    y: torch.Tensor,
    mask: torch.Tensor,
    lam: float | torch.Tensor,
    iterations: int = 100,
    sens: torch.Tensor | None = None,
    tol: float | None = None,
    return_history: bool = False,
    step_ratio: float | None = None,
    check_every: int = 10,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Reconstruct a batch of slices by CS-TV with the primal-dual algorithm.

    All slices iterate together on ``y``'s device; the algorithm, step sizes and their validity
    are described in the module docstring.

    Args:
        y: Measured (masked) k-space, complex (B, H, W) single-coil or (B, C, H, W) multi-coil.
        mask: Column mask or weights, (B, W), bool or float in [0, 1], broadcast over rows and
            coils.
        lam: Absolute regularisation weight, a float or a (B,) tensor (see
            :func:`relative_lambda_to_absolute`).
        iterations: Maximum number of iterations.
        sens: Coil sensitivities (B, C, H, W); None for single-coil data.
        tol: If given, stop once every slice's relative image change per iteration is below it
            (checked every ``check_every`` iterations).
        return_history: Also return the objective after every iteration.
        step_ratio: Primal/dual step ratio ``r``; None picks the tuned default of the chosen
            splitting. Any positive value converges.
        check_every: Interval, in iterations, of the ``tol`` check and ``callback`` calls.
        callback: Called as ``callback(iteration, x)`` every ``check_every`` iterations.

    Returns:
        The complex images (B, H, W); with ``return_history`` also the objective values, a real
        tensor (n + 1, B) whose row 0 is the zero-filled start and row ``k`` is after iteration
        ``k`` (n iterations run).
    """
    weights, lam, y = _prepare(y, mask, lam, sens)
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if step_ratio is not None and step_ratio <= 0:
        raise ValueError(f"step_ratio must be positive, got {step_ratio}")
    weighted_y = weights * y
    x = _adjoint(weighted_y, sens)
    grad_x = _grad(x)
    p = torch.zeros_like(grad_x)
    history = []
    if sens is None:
        ratio = 4.0 if step_ratio is None else step_ratio
        tau = ratio / _GRAD_NORM_SQ**0.5
        sigma = 1.0 / (ratio * _GRAD_NORM_SQ**0.5)
        kx = _fft2c(x)
    else:
        ratio = 1.0 if step_ratio is None else step_ratio
        sigma_d = _SIGMA_D
        sqrt_w = weights.sqrt()
        shifted_y = sqrt_w * y
        # ‖A‖² ≤ max(w) · max_r Σ_c|S_c(r)|²: F is unitary, the mask and the maps act pointwise.
        norm_a_sq = weights.flatten(1).amax(1) * sens.abs().square().sum(1).flatten(1).amax(1)
        # σ_d = 1 keeps the data dual's prox (q + σ r)/(1 + σ) a plain average; τ then follows
        # from τ(σ_d L_A + 8 σ_t) = 1 with σ_t = σ_d / r².
        sigma = 1.0 / (ratio * _GRAD_NORM_SQ**0.5)
        tau = (1.0 / (sigma_d * norm_a_sq + _GRAD_NORM_SQ * sigma)).view(-1, 1, 1)
        ax = sqrt_w * _forward(x, sens)
        q = torch.zeros_like(ax)
    if return_history:
        residual = kx - y if sens is None else ax - shifted_y
        history.append(_objective_parts(residual, grad_x, weights if sens is None else 1.0, lam))

    x_bar_grad = grad_x
    x_bar_ax = None if sens is None else ax
    for iteration in range(1, iterations + 1):
        p = _clip_magnitude(p + sigma * x_bar_grad, lam.unsqueeze(1))
        if sens is None:
            # Exact prox of the data term in k-space: a weighted average of the current k-space and
            # the measurements, which enforces data consistency every iteration.
            v = _fft2c(x - tau * _grad_adjoint(p))
            kx = (v + tau * weighted_y) / (1.0 + tau * weights)
            x_new = _ifft2c(kx)
        else:
            q = (q + sigma_d * (x_bar_ax - shifted_y)) / (1.0 + sigma_d)
            x_new = x - tau * (_adjoint(sqrt_w * q, sens) + _grad_adjoint(p))
            ax_new = sqrt_w * _forward(x_new, sens)
            # K x̄ = 2 K x⁺ − K x by linearity: one forward operator per iteration, and K x⁺ gives
            # the objective for free.
            x_bar_ax = 2.0 * ax_new - ax
            ax = ax_new
        grad_new = _grad(x_new)
        x_bar_grad = 2.0 * grad_new - grad_x
        grad_x = grad_new
        if return_history:
            residual = kx - y if sens is None else ax - shifted_y
            history.append(_objective_parts(residual, grad_x, weights if sens is None else 1.0, lam))
        converged = False
        if iteration % check_every == 0 or iteration == iterations:
            if callback is not None:
                callback(iteration, x_new)
            if tol is not None:
                change = (x_new - x).flatten(1).norm(dim=1) / x_new.flatten(1).norm(dim=1).clamp_min(
                    torch.finfo(lam.dtype).tiny
                )
                converged = bool((change < tol).all())
        x = x_new
        if converged:
            break
    if return_history:
        return x, torch.stack(history)
    return x


def relative_lambda_to_absolute(
    lam_rel: float | torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    sens: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Scale a relative λ to the data: :math:`\lambda_b = \lambda_\mathrm{rel}\max_r|x_{0,b}(r)|`.

    ``x_0`` is the zero-filled image, :math:`S^H F^H(w\odot y)` (coil-combined with ``sens``). The
    CS-TV minimiser is then proportional to the data, so one ``lam_rel`` serves any scaling.

    Args:
        lam_rel: Relative weight, a float or a (B,) tensor.
        y: Measured k-space, complex (B, H, W) or (B, C, H, W).
        mask: Column mask or weights, (B, W).
        sens: Coil sensitivities (B, C, H, W), or None for single-coil.

    Returns:
        The absolute λ, real tensor (B,).
    """
    weights, _, y = _prepare(y, mask, 0.0, sens)
    peak = _adjoint(weights * y, sens).abs().flatten(1).amax(1)
    return torch.as_tensor(lam_rel, dtype=peak.dtype, device=peak.device) * peak


def estimate_sensitivities(
    y: torch.Tensor, num_low_frequencies: int | torch.Tensor, rel_eps: float = 0.05
) -> torch.Tensor:
    r"""Estimate coil sensitivities from the fully sampled centre columns (ACS).

    The centre ``n`` columns (starting at ``(W - n + 1) // 2``, fastMRI's centre band) are weighted
    by a Hann window without its zero end points, inverse-FFT'd to low-resolution coil images
    ``m_c`` and normalised by their root-sum-of-squares:
    :math:`S_c = m_c / \max(\mathrm{rss}(m), \varepsilon \max \mathrm{rss}(m))`. So
    :math:`\sum_c |S_c|^2 = 1` wherever the low-resolution signal exceeds ``rel_eps`` times its
    maximum, and falls smoothly towards 0 in the background instead of amplifying noise; it never
    exceeds 1, which the solver's step sizes rely on. Limits (see the module docstring): maps are
    blurred across columns to the ACS resolution, carry the low-resolution image phase, and are
    unreliable in dark tissue.

    Args:
        y: Multi-coil k-space, complex (B, C, H, W), containing at least the centre columns.
        num_low_frequencies: Number of fully sampled centre columns, an int or a (B,) tensor.
        rel_eps: Floor of the RSS normaliser, relative to its per-slice maximum.

    Returns:
        Complex sensitivity maps, (B, C, H, W).
    """
    if not y.is_complex() or y.ndim != 4:
        raise ValueError(f"y must be complex (B, C, H, W), got {y.dtype} {tuple(y.shape)}")
    batch, width = y.shape[0], y.shape[-1]
    real_dtype = y.real.dtype
    n = torch.as_tensor(num_low_frequencies, device=y.device).expand(batch).to(real_dtype)
    if bool((n < 1).any()) or bool((n > width).any()):
        raise ValueError(f"num_low_frequencies must lie in [1, {width}], got {num_low_frequencies}")
    start = torch.div(width - n + 1, 2, rounding_mode="floor")
    # Position 1..n inside the band; a Hann window of length n + 2 minus its two zeros keeps every
    # ACS column while tapering the band edges, which suppresses Gibbs ringing in the maps.
    position = torch.arange(width, device=y.device, dtype=real_dtype) - start.unsqueeze(1) + 1
    inside = (position >= 1) & (position <= n.unsqueeze(1))
    window = torch.where(inside, torch.sin(torch.pi * position / (n.unsqueeze(1) + 1)).square(), 0.0)
    images = _ifft2c(y * window.view(batch, 1, 1, width))
    rss = images.abs().square().sum(1, keepdim=True).sqrt()
    floor = rel_eps * rss.flatten(1).amax(1).view(batch, 1, 1, 1)
    return images / torch.maximum(rss, floor)
