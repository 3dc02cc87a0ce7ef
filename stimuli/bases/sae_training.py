"""The sparse autoencoders' training loop, apart from the estimators that hold its result
(:mod:`stimuli.bases.sae` and its variants). What differs between the autoencoders — how latents are
selected, what the decoder is, an extra penalty, a constraint kept after each step — lives on a
:class:`Variant`; the loop (Adam, the schedule, dead-latent revival) is shared."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TrainedSAE:
    """The trained weights in the scaled data's units (float64 NumPy), each epoch's mean loss, and what
    the variant learned beside them (``extra``: a threshold, per-latent thresholds)."""

    W_enc: np.ndarray
    b_enc: np.ndarray
    W_dec: np.ndarray
    b_dec: np.ndarray
    loss_curve: list[float]
    extra: dict = field(default_factory=dict)


class Variant:
    """TopK (Gao et al., 2024): each image keeps its ``k`` largest ReLU pre-activations; unit-norm
    decoder atoms; a decoder bias started at the data's median."""

    unit_norm_decoder = True
    decoder_bias = True

    def __init__(self, k: int) -> None:
        self.k = k

    def setup(self, X, D, gen, device) -> list:
        """Extra trainable tensors (after the encoder and decoder are made), given the scaled data ``X``
        and the random unit atoms ``D`` the encoder starts from."""
        return []

    def initial_atoms(self, D):
        """The atoms the encoder starts as the transpose of."""
        return D

    def decoder(self, W_dec):
        return W_dec

    def codes(self, lin):
        """Training codes from the encoder's pre-activations ``lin`` (B x K)."""
        import torch

        pre = torch.relu(lin)
        vals, idx = pre.topk(self.k, dim=1)
        return torch.zeros_like(pre).scatter_(1, idx, vals)

    def penalty(self, lin, z):
        return None

    def project(self) -> None:
        """A constraint restored after each optimiser step."""

    def finish(self, X, encode, bs: int) -> dict:
        """What the variant learned beside the weights, read after training (``encode(x)`` gives the
        training pre-activations of rows ``x``)."""
        return {}


def train_sae(
    A: np.ndarray,
    scale: float,
    K: int,
    epochs: int,
    lr: float,
    batch_size: int,
    aux_k: int,
    aux_coef: float,
    device,
    random_state: int | None,
    variant: Variant,
) -> TrainedSAE:
    """Adam on the mean squared error of ``A / scale`` (N x C) reconstructed from ``K`` latents chosen
    by ``variant``: encoder started as the decoder's transpose, decoder rows kept at unit norm where the
    variant asks (the gradient's radial part removed before each step), the learning rate decayed
    linearly over the last fifth of the steps, and an auxiliary TopK loss on the latents that did not
    fire during the previous epoch (``aux_k`` of them, weight ``aux_coef``; Gao et al.). bfloat16
    autocast on CUDA; deterministic on the CPU for a given ``random_state``."""
    import torch

    n, c = A.shape
    seed = 0 if random_state is None else int(random_state)
    gen = torch.Generator().manual_seed(seed)
    X = torch.as_tensor(A / scale, dtype=torch.float32).to(device)
    D = torch.randn(K, c, generator=gen, dtype=torch.float32)
    D = (D / D.norm(dim=1, keepdim=True).clamp_min(1e-12)).to(device)
    extra = variant.setup(X, D, gen, device)
    D = variant.initial_atoms(D)
    W_enc = torch.nn.Parameter(D / D.norm(dim=1, keepdim=True).clamp_min(1e-12))
    b_enc = torch.nn.Parameter(torch.zeros(K, device=device))
    W_dec = torch.nn.Parameter(D.clone())
    # the paper starts b_dec at the geometric median; the coordinate-wise median is as robust to the
    # atoms' sparse non-negative bumps (starting at the mean, which absorbs them, trapped some seeds
    # of a planted test in a poor optimum)
    median = np.median(A, axis=0) / scale if variant.decoder_bias else np.zeros(c)
    b_dec = torch.nn.Parameter(
        torch.as_tensor(median, dtype=torch.float32, device=device), requires_grad=variant.decoder_bias
    )
    params = [
        W_enc,
        b_enc,
        *([W_dec] if variant.unit_norm_decoder else []),
        *([b_dec] if variant.decoder_bias else []),
        *extra,
    ]
    opt = torch.optim.Adam(params, lr=lr)
    bs = min(int(batch_size), n)
    steps_per_epoch = -(-n // bs)
    total = steps_per_epoch * int(epochs)
    # linear decay over the last fifth, as the paper's schedule ends
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, max(0.0, (total - s) / max(1, total // 5))))
    aux_k = min(K, int(aux_k))
    fired = torch.zeros(K, device=device)
    dead = torch.zeros(K, dtype=torch.bool, device=device)
    n_dead = 0
    autocast = device.type == "cuda"
    losses = []
    for _ in range(int(epochs)):
        order = torch.randperm(n, generator=gen).to(device)
        epoch_loss = torch.zeros((), device=device)
        for b in range(0, n, bs):
            x = X[order[b : b + bs]]
            dec = variant.decoder(W_dec)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                lin = (x - b_dec) @ W_enc.T + b_enc
                z = variant.codes(lin)
                rec = b_dec + z @ dec
            err = x - rec.float()
            loss = (err**2).sum(1).mean()
            extra_loss = variant.penalty(lin, z)
            if extra_loss is not None:
                loss = loss + extra_loss
            fired += (z > 0).sum(0).detach()
            if n_dead and aux_k > 0 and aux_coef > 0:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    # pre-activations before the ReLU, so a latent that never fires still learns
                    dv, di = lin.masked_fill(~dead, float("-inf")).topk(min(aux_k, n_dead), dim=1)
                    e_hat = torch.zeros_like(lin).scatter_(1, di, dv) @ dec
                aux = ((err.detach() - e_hat.float()) ** 2).sum(1).mean()
                loss = loss + aux_coef * aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if variant.unit_norm_decoder:
                with torch.no_grad():
                    # keep atoms on the unit sphere: drop the gradient along each atom, then renormalise
                    g = W_dec.grad
                    g -= (g * W_dec).sum(1, keepdim=True) * W_dec
            opt.step()
            sched.step()
            with torch.no_grad():
                if variant.unit_norm_decoder:
                    W_dec /= W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
                variant.project()
            epoch_loss += loss.detach() * len(x)
        losses.append(epoch_loss)
        # dead latents: none of the epoch's images fired them (one host sync per epoch, not per step)
        dead = fired == 0
        n_dead = int(dead.sum())
        fired.zero_()
    with torch.no_grad():
        learned = variant.finish(X, lambda x: (x - b_dec) @ W_enc.T + b_enc, bs)
        dec = variant.decoder(W_dec)

    def as64(t):
        return t.detach().float().cpu().numpy().astype(np.float64)

    return TrainedSAE(
        W_enc=as64(W_enc),
        b_enc=as64(b_enc),
        W_dec=as64(dec),
        b_dec=as64(b_dec),
        loss_curve=[float(v) / n for v in torch.stack(losses).cpu()],
        extra=learned,
    )


def train_topk_sae(
    A: np.ndarray,
    scale: float,
    K: int,
    k: int,
    epochs: int,
    lr: float,
    batch_size: int,
    aux_k_param: int | None,
    aux_coef: float,
    device,
    random_state: int | None,
) -> TrainedSAE:
    """The TopK autoencoder (:class:`Variant`), ``aux_k`` defaulting to ``2 k`` as in Gao et al."""
    aux_k = int(aux_k_param) if aux_k_param is not None else 2 * k
    return train_sae(A, scale, K, epochs, lr, batch_size, aux_k, aux_coef, device, random_state, Variant(k))
