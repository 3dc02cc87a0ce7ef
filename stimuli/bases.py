"""Bases of a layer's activation space, with scikit-learn's estimator shape.

Each basis decodes linearly: ``A ≈ offset_ + transform(A) @ components_``. That shared form lets
:mod:`stimuli.completeness` project any basis onto a subset of its units the same way.

``explained_variance_ratio_[k]`` is the share of the activations' variance that unit ``k`` alone
reconstructs by least squares: the data (centred) fitted by ``β · c_k w_kᵀ``, its centred code
``c_k`` times its atom ``w_k`` with the best scale ``β``, which is
``(c_kᵀ X w_k)² / (||c_k||² ||w_k||² · ||X||²)``. It lies in [0, 1] by Cauchy–Schwarz, is 0 for a unit
whose code never varies, and for orthonormal bases (neurons, PCA) is the usual ratio (the channel's or
the component's variance over the total). :func:`stimuli.completeness.cumulative_explained_variance`
fits the top k units' contributions together the same way, so the cumulative curve is monotone and
in [0, 1] for every basis; for non-orthogonal atoms (NMF, dictionary, SAE) the units' shares overlap
and need not add up to it. NMF, dictionary and SAE atoms are sorted by this share, largest first, so
every basis lists its units in explained-variance order except neurons, which keep channel order.

The TopK sparse autoencoder (:class:`SAEBasis`) has the same decoding form: its decoder atoms are
``components_`` (unit norm) and its decoder bias is ``offset_``; only its encoder is non-linear.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


def block_rows(n_columns: int) -> int:
    """Rows per block where a statistic of an N x C matrix is summed block by block: about 2 M values
    (16 MiB in float64) per temporary, 256 to 4096 rows, whatever the number of images."""
    return int(np.clip(2 ** 21 // max(n_columns, 1), 256, 4096))


def row_blocks(n: int, rows: int):
    """``(start, stop)`` of consecutive blocks of ``rows`` rows covering ``n``."""
    return ((s, min(n, s + rows)) for s in range(0, n, rows))


def _checked(A: Any) -> np.ndarray:
    """``A`` as an N x C array in its own dtype, its values checked finite block by block (no N x C
    temporary)."""
    A = np.asarray(A)
    if A.ndim != 2:
        raise ValueError(f"activations must be an N x C matrix, got shape {A.shape}")
    if not all(np.isfinite(A[s:e]).all() for s, e in row_blocks(len(A), block_rows(A.shape[1]))):
        raise ValueError("activations contain NaN or infinite values")
    return A


def _as_2d(A: Any) -> np.ndarray:
    return _checked(A).astype(np.float64, copy=False)


def column_mean(A: np.ndarray) -> np.ndarray:
    """Each column's mean in float64, summed block by block (a float32 matrix is never copied whole)."""
    total = np.zeros(A.shape[1])
    for s, e in row_blocks(len(A), block_rows(A.shape[1])):
        total += A[s:e].sum(axis=0, dtype=np.float64)
    return total / max(len(A), 1)


def centred_blocks(A: np.ndarray, mean: np.ndarray):
    """``(start, stop, A[start:stop] − mean)`` in float64 over row blocks, each written into the same
    buffer: a block is valid until the next one is made."""
    rows = block_rows(A.shape[1])
    buf = np.empty((min(rows, len(A)), A.shape[1]))
    for s, e in row_blocks(len(A), rows):
        yield s, e, np.subtract(A[s:e], mean, out=buf[:e - s])


def _block(codes, s: int, e: int) -> np.ndarray:
    """Rows ``s:e`` of an N x K code matrix as a new float64 array (the caller centres it in place), or
    of an object that computes them (:class:`stimuli.scores.Codes`)."""
    if hasattr(codes, "block"):
        return codes.block(s, e)
    return np.array(codes[s:e], dtype=np.float64)


def centred_products(A: np.ndarray, codes, components: np.ndarray, gram: bool = False) -> dict[str, Any]:
    """The centred sums the variance shares are made of, accumulated over row blocks with ``X`` the
    centred activations, ``C`` the centred codes and ``W`` the atoms: ``total = ||X||²``,
    ``fit_k = c_kᵀ X w_k``, ``code_sq_k = ||c_k||²`` and, with ``gram``, ``gram = CᵀC`` (K x K).
    ``codes`` is an N x K array or anything with ``block(start, stop)`` (and ``mean``)."""
    W = np.asarray(components, dtype=np.float64)
    n = len(A)
    mean = column_mean(A)
    if hasattr(codes, "block"):
        code_mean = codes.mean
    else:
        code_mean = np.zeros(W.shape[0])
        for s, e in row_blocks(n, block_rows(W.shape[0])):
            code_mean += _block(codes, s, e).sum(axis=0)
        code_mean /= max(n, 1)
    total, fit, code_sq = 0.0, np.zeros(W.shape[0]), np.zeros(W.shape[0])
    G = np.zeros((W.shape[0], W.shape[0])) if gram else None
    for s, e, X in centred_blocks(A, mean):
        total += float((X * X).sum())
        _add_code_sums(_block(codes, s, e), code_mean, X @ W.T, fit, code_sq, G)
    return {"total": total, "fit": fit, "code_sq": code_sq, "gram": G}


def _add_code_sums(C: np.ndarray, code_mean: np.ndarray, projected: np.ndarray, fit: np.ndarray,
                   code_sq: np.ndarray, gram: np.ndarray | None) -> None:
    """One row block's terms of :func:`centred_products`, added in place (the block's codes are
    freed on return, before the next block's are made)."""
    C -= code_mean
    fit += (C * projected).sum(axis=0)
    code_sq += (C * C).sum(axis=0)
    if gram is not None:
        gram += C.T @ C


def unit_shares(A: np.ndarray, codes, components: np.ndarray) -> np.ndarray:
    """Each unit's share of the variance of ``A`` (N x C) reconstructed by least squares from its own
    contribution, ``(c_kᵀ X w_k)² / (||c_k||² ||w_k||² ||X||²)`` with ``X`` and ``c_k`` centred (module
    docstring); in [0, 1]. Summed over row blocks (:func:`centred_products`)."""
    sums = centred_products(A, codes, components)
    total, fit = sums["total"], sums["fit"]
    if total == 0:
        return np.zeros(np.asarray(components).shape[0])
    scale = sums["code_sq"] * (np.asarray(components, dtype=np.float64) ** 2).sum(axis=1)
    share = np.divide(fit ** 2, scale * total, out=np.zeros_like(fit), where=scale > 0)
    return np.clip(share, 0.0, 1.0)


def column_variance(A: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Each column's (biased) variance in float64, two passes over row blocks."""
    mean = column_mean(A) if mean is None else mean
    sq = np.zeros(A.shape[1])
    for _s, _e, X in centred_blocks(A, mean):
        sq += (X * X).sum(axis=0)
    return sq / max(len(A), 1)


class Basis(TransformerMixin, BaseEstimator):
    """Common state: ``components_`` (K x C), ``offset_`` (C), ``code_mean_`` (K),
    ``explained_variance_`` and ``explained_variance_ratio_`` (K).

    scikit-learn's ``BaseEstimator`` reads the parameters from each subclass's ``__init__`` signature
    (``get_params``, ``set_params``, ``sklearn.clone``), so ``__init__`` only stores its arguments."""

    name = "basis"

    def fit(self, A, y=None) -> "Basis":
        self.fit_transform(A)
        return self

    def fit_transform(self, A, y=None) -> np.ndarray:
        raise NotImplementedError

    def transform(self, A) -> np.ndarray:
        raise NotImplementedError

    def inverse_transform(self, codes) -> np.ndarray:
        return self.offset_ + np.asarray(codes, dtype=np.float64) @ self.components_

    @property
    def n_components_(self) -> int:
        return int(self.components_.shape[0])

    def _finish(self, A: np.ndarray, codes: np.ndarray) -> None:
        self.total_variance_ = float(column_variance(A).sum())
        self.code_mean_ = codes.mean(axis=0)
        self.explained_variance_ratio_ = unit_shares(A, codes, self.components_)
        self.explained_variance_ = self.explained_variance_ratio_ * self.total_variance_

    def _sort_by_variance(self, A: np.ndarray, codes: np.ndarray) -> np.ndarray:
        order = np.argsort(-unit_shares(A, codes, self.components_), kind="stable")
        self.components_ = self.components_[order]
        return order


class NeuronBasis(Basis):
    """The identity: each channel is a unit and its code is its own activation."""

    name = "neuron"

    def __init__(self, n_components: int | None = None, random_state: int | None = None) -> None:
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, A, y=None) -> "NeuronBasis":
        """The channels' means and variances, summed over row blocks: no copy of ``A``."""
        A = _checked(A)
        c = A.shape[1]
        if self.n_components not in (None, c):
            raise ValueError(f"the neuron basis has one unit per channel ({c}), not {self.n_components}")
        mean = column_mean(A)
        var = column_variance(A, mean)
        self.components_ = np.eye(c)
        self.offset_ = np.zeros(c)
        self.code_mean_ = mean
        self.total_variance_ = float(var.sum())
        # a channel's least-squares share (module docstring) is its variance over the total
        self.explained_variance_ratio_ = var / self.total_variance_ if self.total_variance_ > 0 else np.zeros(c)
        self.explained_variance_ = self.explained_variance_ratio_ * self.total_variance_
        return self

    def fit_transform(self, A, y=None) -> np.ndarray:
        return self.fit(A).transform(A)

    def transform(self, A) -> np.ndarray:
        return _checked(A).astype(np.float64, copy=True)


class PCABasis(Basis):
    """Principal components of the centred activations, in explained-variance order."""

    name = "pca"

    def __init__(self, n_components: int | None = None, random_state: int | None = 0) -> None:
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, A, y=None) -> "PCABasis":
        """Components from the eigendecomposition of the C x C covariance, summed over row blocks in
        float64 (no N x C copy of the activations); signs as scikit-learn's PCA sets them
        (``svd_flip``: each component's largest coordinate positive). Layers wider than 4096 channels
        keep scikit-learn's randomized PCA on a float64 copy: a full C x C eigendecomposition costs C³."""
        from scipy.linalg import eigh
        from sklearn.utils.extmath import svd_flip

        A = _checked(A)
        n, c = A.shape
        k = min(A.shape) if self.n_components is None else self.n_components
        if k > min(A.shape):
            raise ValueError(f"PCA can have at most {min(A.shape)} components here, not {k}")
        if c > 4096:
            return self._fit_randomized(A.astype(np.float64, copy=False), k)
        mean = column_mean(A)
        cov = np.zeros((c, c))
        for _s, _e, X in centred_blocks(A, mean):
            cov += X.T @ X
        cov /= n
        values, vectors = eigh(cov, subset_by_index=[c - k, c - 1])
        components = vectors[:, ::-1].T
        _, components = svd_flip(None, components, u_based_decision=False)
        self.components_ = np.ascontiguousarray(components)
        self.offset_ = mean
        self.code_mean_ = np.zeros(k)
        self.total_variance_ = float(np.trace(cov))
        self.explained_variance_ = np.clip(values[::-1], 0.0, None)
        self.explained_variance_ratio_ = self.explained_variance_ / self.total_variance_ \
            if self.total_variance_ > 0 else np.zeros(k)
        return self

    def _fit_randomized(self, A: np.ndarray, k: int) -> "PCABasis":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=k, svd_solver="randomized", random_state=self.random_state)
        codes = pca.fit_transform(A)
        self.components_ = pca.components_.astype(np.float64)
        self.offset_ = pca.mean_.astype(np.float64)
        self._finish(A, codes)
        # sklearn's own ratio, identical up to rounding, keeps the textbook definition exact
        self.explained_variance_ = pca.explained_variance_ * (A.shape[0] - 1) / A.shape[0]
        self.explained_variance_ratio_ = self.explained_variance_ / self.total_variance_
        return self

    def fit_transform(self, A, y=None) -> np.ndarray:
        return self.fit(A).transform(A)

    def transform(self, A) -> np.ndarray:
        return (_as_2d(A) - self.offset_) @ self.components_.T


class NMFBasis(Basis):
    """Non-negative matrix factorisation of non-negative (post-ReLU) activations, as in CRAFT.

    ``A ≈ codes @ components_`` with both factors non-negative; sparsity through ``alpha_W`` /
    ``alpha_H`` and ``l1_ratio`` (scikit-learn's regularisation parameters).
    """

    name = "nmf"

    def __init__(self, n_components: int | None = None, init: str = "nndsvda", max_iter: int = 400,
                 tol: float = 1e-4, alpha_W: float = 0.0, alpha_H: float | str = "same",
                 l1_ratio: float = 0.0, random_state: int | None = 0) -> None:
        self.n_components = n_components
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.alpha_W = alpha_W
        self.alpha_H = alpha_H
        self.l1_ratio = l1_ratio
        self.random_state = random_state

    def _check(self, A) -> np.ndarray:
        A = _as_2d(A)
        if (A < 0).any():
            raise ValueError("NMF needs non-negative activations (use activation='post_relu'); "
                             f"found {int((A < 0).sum())} negative values")
        return A

    def fit_transform(self, A, y=None) -> np.ndarray:
        import warnings

        from sklearn.decomposition import NMF
        from sklearn.exceptions import ConvergenceWarning

        A = self._check(A)
        k = A.shape[1] if self.n_components is None else self.n_components
        self._nmf = NMF(n_components=k, init=self.init, max_iter=self.max_iter, tol=self.tol,
                        alpha_W=self.alpha_W, alpha_H=self.alpha_H, l1_ratio=self.l1_ratio,
                        random_state=self.random_state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            codes = self._nmf.fit_transform(A)
        self.components_ = self._nmf.components_.astype(np.float64)
        order = self._sort_by_variance(A, codes)
        codes = codes[:, order]
        self._nmf.components_ = self._nmf.components_[order]
        self.offset_ = np.zeros(A.shape[1])
        self.reconstruction_err_ = float(self._nmf.reconstruction_err_)
        self._finish(A, codes)
        return codes

    def transform(self, A) -> np.ndarray:
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        A = self._check(A)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return self._nmf.transform(A)


class DictionaryBasis(Basis):
    """Sparse dictionary learning (scikit-learn's MiniBatchDictionaryLearning).

    The data are divided by ``scale_`` (the mean row norm) before fitting, so ``alpha`` — the weight
    of the L1 penalty on the codes — means the same thing for every layer. ``positive_code`` keeps
    codes non-negative, which makes the most/least activating images of an atom meaningful.
    """

    name = "dictionary"

    def __init__(self, n_components: int | None = None, alpha: float = 0.1, max_iter: int = 50,
                 batch_size: int = 256, positive_code: bool = True, positive_dict: bool = False,
                 transform_algorithm: str = "lasso_cd", random_state: int | None = 0) -> None:
        self.n_components = n_components
        self.alpha = alpha
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.positive_code = positive_code
        self.positive_dict = positive_dict
        self.transform_algorithm = transform_algorithm
        self.random_state = random_state

    def fit_transform(self, A, y=None) -> np.ndarray:
        import warnings

        from sklearn.decomposition import MiniBatchDictionaryLearning
        from sklearn.exceptions import ConvergenceWarning

        A = _as_2d(A)
        k = A.shape[1] if self.n_components is None else self.n_components
        norms = np.linalg.norm(A, axis=1)
        self.scale_ = float(norms.mean()) if norms.mean() > 0 else 1.0
        self._dl = MiniBatchDictionaryLearning(
            n_components=k, alpha=self.alpha, max_iter=self.max_iter, batch_size=self.batch_size,
            fit_algorithm="cd", positive_code=self.positive_code, positive_dict=self.positive_dict,
            transform_algorithm=self.transform_algorithm, transform_alpha=self.alpha,
            random_state=self.random_state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._dl.fit(A / self.scale_)
            codes = self._dl.transform(A / self.scale_) * self.scale_
        self.components_ = self._dl.components_.astype(np.float64)
        order = self._sort_by_variance(A, codes)
        codes = codes[:, order]
        self._dl.components_ = self._dl.components_[order]
        self.offset_ = np.zeros(A.shape[1])
        self._finish(A, codes)
        return codes

    def transform(self, A) -> np.ndarray:
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        A = _as_2d(A)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return self._dl.transform(A / self.scale_) * self.scale_


class SAEBasis(Basis):
    """A TopK sparse autoencoder (Gao et al., 2024, "Scaling and evaluating sparse autoencoders").

    ``codes = TopK(ReLU((a - b_dec) @ W_enc.T + b_enc))`` keeps each image's ``k`` largest
    pre-activations; ``a ≈ b_dec + codes @ D`` with unit-norm decoder atoms ``D`` (``components_``),
    so a code is the length of its atom in the reconstruction. TopK sets the sparsity directly, with
    no L1 penalty shrinking the codes.

    Trained with Adam on the mean squared error, on CUDA when present (bfloat16 autocast for the
    matrix products) and deterministically on the CPU for a given ``random_state``. As in the paper:
    the encoder starts as the decoder's transpose, the decoder's rows are kept at unit norm (the
    gradient's radial part removed before each step), the learning rate decays linearly over the last
    fifth of the steps, and an auxiliary TopK loss on the latents that did not fire during the previous
    epoch (``aux_k`` of them, default ``2 k``, weight ``aux_coef``) revives dead latents. ``b_dec``
    starts at the coordinate-wise median of the data. The data are divided by ``scale_`` (root mean
    squared norm of the centred rows) before training, so ``lr`` means the same thing for every
    layer; codes and ``offset_`` are returned in the data's own units. Atoms are sorted by explained
    variance like NMF's. ``loss_curve_`` holds each epoch's mean loss, ``n_dead_`` the latents that
    never fire on the training data.
    """

    name = "sae"

    def __init__(self, n_components: int | None = None, k: int = 8, epochs: int = 100, lr: float = 3e-3,
                 batch_size: int = 256, aux_k: int | None = None, aux_coef: float = 1.0 / 32,
                 device: str = "auto", random_state: int | None = 0) -> None:
        self.n_components = n_components
        self.k = k
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.aux_k = aux_k
        self.aux_coef = aux_coef
        self.device = device
        self.random_state = random_state

    def _device(self):
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def fit_transform(self, A, y=None) -> np.ndarray:
        import torch

        A = _as_2d(A)
        K = A.shape[1] if self.n_components is None else int(self.n_components)
        if K < 1 or self.k < 1 or self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("the sae basis needs n_components, k, epochs, batch_size >= 1 and lr > 0")
        self.k_ = min(int(self.k), K)
        device = self._device()
        if device.type == "cpu" and K * A.shape[1] <= 1 << 16:
            # thousands of steps on small matrices: intra-op threads only add synchronisation, and one
            # thread sums in the same order on every machine
            previous = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                codes = self._fit(A, K, device)
            finally:
                torch.set_num_threads(previous)
        else:
            codes = self._fit(A, K, device)
        return codes

    def _fit(self, A: np.ndarray, K: int, device) -> np.ndarray:
        import torch

        n, c = A.shape
        rms = float(np.sqrt(((A - A.mean(axis=0)) ** 2).sum(axis=1).mean()))
        self.scale_ = rms if rms > 0 else 1.0
        seed = 0 if self.random_state is None else int(self.random_state)
        gen = torch.Generator().manual_seed(seed)
        X = torch.as_tensor(A / self.scale_, dtype=torch.float32).to(device)
        D = torch.randn(K, c, generator=gen, dtype=torch.float32)
        D = (D / D.norm(dim=1, keepdim=True).clamp_min(1e-12)).to(device)
        W_enc = torch.nn.Parameter(D.clone())
        b_enc = torch.nn.Parameter(torch.zeros(K, device=device))
        W_dec = torch.nn.Parameter(D.clone())
        # the paper starts b_dec at the geometric median; the coordinate-wise median is as robust to the
        # atoms' sparse non-negative bumps (starting at the mean, which absorbs them, trapped some seeds
        # of a planted test in a poor optimum)
        b_dec = torch.nn.Parameter(torch.as_tensor(np.median(A, axis=0) / self.scale_, dtype=torch.float32,
                                                   device=device))
        params = [W_enc, b_enc, W_dec, b_dec]
        opt = torch.optim.Adam(params, lr=self.lr)
        bs = min(int(self.batch_size), n)
        steps_per_epoch = -(-n // bs)
        total = steps_per_epoch * int(self.epochs)
        # linear decay over the last fifth, as the paper's schedule ends
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, max(0.0, (total - s) / max(1, total // 5))))
        aux_k = min(K, int(self.aux_k) if self.aux_k is not None else 2 * self.k_)
        fired = torch.zeros(K, device=device)
        dead = torch.zeros(K, dtype=torch.bool, device=device)
        n_dead = 0
        autocast = device.type == "cuda"
        losses = []
        for _ in range(int(self.epochs)):
            order = torch.randperm(n, generator=gen).to(device)
            epoch_loss = torch.zeros((), device=device)
            for b in range(0, n, bs):
                x = X[order[b:b + bs]]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    lin = (x - b_dec) @ W_enc.T + b_enc
                    pre = torch.relu(lin)
                    vals, idx = pre.topk(self.k_, dim=1)
                    z = torch.zeros_like(pre).scatter_(1, idx, vals)
                    rec = b_dec + z @ W_dec
                err = x - rec.float()
                loss = (err ** 2).sum(1).mean()
                fired += (z > 0).sum(0).detach()
                if n_dead and aux_k > 0 and self.aux_coef > 0:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                        # pre-activations before the ReLU, so a latent that never fires still learns
                        dv, di = lin.masked_fill(~dead, float("-inf")).topk(min(aux_k, n_dead), dim=1)
                        e_hat = torch.zeros_like(lin).scatter_(1, di, dv) @ W_dec
                    aux = ((err.detach() - e_hat.float()) ** 2).sum(1).mean()
                    loss = loss + self.aux_coef * aux
                opt.zero_grad(set_to_none=True)
                loss.backward()
                with torch.no_grad():
                    # keep atoms on the unit sphere: drop the gradient along each atom, then renormalise
                    g = W_dec.grad
                    g -= (g * W_dec).sum(1, keepdim=True) * W_dec
                opt.step()
                sched.step()
                with torch.no_grad():
                    W_dec /= W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
                epoch_loss += loss.detach() * len(x)
            losses.append(epoch_loss)
            # dead latents: none of the epoch's images fired them (one host sync per epoch, not per step)
            dead = fired == 0
            n_dead = int(dead.sum())
            fired.zero_()
        self.loss_curve_ = [float(v) / n for v in torch.stack(losses).cpu()]
        self._W_enc = W_enc.detach().float().cpu().numpy().astype(np.float64)
        self._b_enc = b_enc.detach().float().cpu().numpy().astype(np.float64)
        self._b_dec = b_dec.detach().float().cpu().numpy().astype(np.float64)
        self.components_ = W_dec.detach().float().cpu().numpy().astype(np.float64)
        self.offset_ = self._b_dec * self.scale_
        codes = self.transform(A)
        order = self._sort_by_variance(A, codes)
        self._W_enc, self._b_enc = self._W_enc[order], self._b_enc[order]
        codes = codes[:, order]
        self.n_dead_ = int((codes.max(axis=0) <= 0).sum())
        self._finish(A, codes)
        return codes

    def encode(self, X):
        """Codes of a torch tensor or array of rows, in the data's units (pure; no fitting)."""
        import torch

        if isinstance(X, torch.Tensor):
            dt, dev = X.dtype, X.device
            W = torch.as_tensor(self._W_enc, dtype=torch.float32, device=dev)
            be = torch.as_tensor(self._b_enc, dtype=torch.float32, device=dev)
            bd = torch.as_tensor(self._b_dec, dtype=torch.float32, device=dev)
            pre = torch.relu((X.float() / self.scale_ - bd) @ W.T + be)
            vals, idx = pre.topk(self.k_, dim=1)
            return (torch.zeros_like(pre).scatter_(1, idx, vals) * self.scale_).to(dt)
        X = _as_2d(X)
        pre = np.maximum((X / self.scale_ - self._b_dec) @ self._W_enc.T + self._b_enc, 0.0)
        keep = np.argpartition(-pre, self.k_ - 1, axis=1)[:, :self.k_] if self.k_ < pre.shape[1] \
            else np.broadcast_to(np.arange(pre.shape[1]), pre.shape)
        codes = np.zeros_like(pre)
        rows = np.arange(len(pre))[:, None]
        codes[rows, keep] = pre[rows, keep]
        return codes * self.scale_

    def transform(self, A) -> np.ndarray:
        return self.encode(_as_2d(A))


BASIS_CLASSES: dict[str, type[Basis]] = {
    "neuron": NeuronBasis, "pca": PCABasis, "nmf": NMFBasis, "dictionary": DictionaryBasis, "sae": SAEBasis,
}


def make_basis(name: str, **params: Any) -> Basis:
    """A basis by name (``neuron``, ``pca``, ``nmf``, ``dictionary``, ``sae``) with its parameters."""
    try:
        cls = BASIS_CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown basis {name!r}; choose from {', '.join(BASIS_CLASSES)}") from None
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for basis {name!r}: {exc}") from None
