"""The TopK sparse autoencoder's training loop (Gao et al., 2024), apart from the estimator that holds its
result (:class:`stimuli.bases.sae.SAEBasis`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TrainedSAE:
    """The trained weights in the scaled data's units (float64 NumPy) and each epoch's mean loss."""

    W_enc: np.ndarray
    b_enc: np.ndarray
    W_dec: np.ndarray
    b_dec: np.ndarray
    loss_curve: list[float]


def train_topk_sae(A: np.ndarray, scale: float, K: int, k: int, epochs: int, lr: float, batch_size: int,
                   aux_k_param: int | None, aux_coef: float, device, random_state: int | None) -> TrainedSAE:
    """Adam on the mean squared error of ``A / scale`` (N x C) reconstructed from ``K`` latents of which
    each image keeps its ``k`` largest: encoder started as the decoder's transpose, decoder rows kept at
    unit norm (the gradient's radial part removed before each step), the learning rate decayed linearly
    over the last fifth of the steps, and an auxiliary TopK loss on the latents that did not fire during
    the previous epoch (``aux_k_param`` of them, default ``2 k``, weight ``aux_coef``). bfloat16 autocast
    on CUDA; deterministic on the CPU for a given ``random_state``."""
    import torch

    n, c = A.shape
    seed = 0 if random_state is None else int(random_state)
    gen = torch.Generator().manual_seed(seed)
    X = torch.as_tensor(A / scale, dtype=torch.float32).to(device)
    D = torch.randn(K, c, generator=gen, dtype=torch.float32)
    D = (D / D.norm(dim=1, keepdim=True).clamp_min(1e-12)).to(device)
    W_enc = torch.nn.Parameter(D.clone())
    b_enc = torch.nn.Parameter(torch.zeros(K, device=device))
    W_dec = torch.nn.Parameter(D.clone())
    # the paper starts b_dec at the geometric median; the coordinate-wise median is as robust to the
    # atoms' sparse non-negative bumps (starting at the mean, which absorbs them, trapped some seeds
    # of a planted test in a poor optimum)
    b_dec = torch.nn.Parameter(torch.as_tensor(np.median(A, axis=0) / scale, dtype=torch.float32,
                                               device=device))
    params = [W_enc, b_enc, W_dec, b_dec]
    opt = torch.optim.Adam(params, lr=lr)
    bs = min(int(batch_size), n)
    steps_per_epoch = -(-n // bs)
    total = steps_per_epoch * int(epochs)
    # linear decay over the last fifth, as the paper's schedule ends
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, max(0.0, (total - s) / max(1, total // 5))))
    aux_k = min(K, int(aux_k_param) if aux_k_param is not None else 2 * k)
    fired = torch.zeros(K, device=device)
    dead = torch.zeros(K, dtype=torch.bool, device=device)
    n_dead = 0
    autocast = device.type == "cuda"
    losses = []
    for _ in range(int(epochs)):
        order = torch.randperm(n, generator=gen).to(device)
        epoch_loss = torch.zeros((), device=device)
        for b in range(0, n, bs):
            x = X[order[b:b + bs]]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                lin = (x - b_dec) @ W_enc.T + b_enc
                pre = torch.relu(lin)
                vals, idx = pre.topk(k, dim=1)
                z = torch.zeros_like(pre).scatter_(1, idx, vals)
                rec = b_dec + z @ W_dec
            err = x - rec.float()
            loss = (err ** 2).sum(1).mean()
            fired += (z > 0).sum(0).detach()
            if n_dead and aux_k > 0 and aux_coef > 0:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    # pre-activations before the ReLU, so a latent that never fires still learns
                    dv, di = lin.masked_fill(~dead, float("-inf")).topk(min(aux_k, n_dead), dim=1)
                    e_hat = torch.zeros_like(lin).scatter_(1, di, dv) @ W_dec
                aux = ((err.detach() - e_hat.float()) ** 2).sum(1).mean()
                loss = loss + aux_coef * aux
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
    return TrainedSAE(
        W_enc=W_enc.detach().float().cpu().numpy().astype(np.float64),
        b_enc=b_enc.detach().float().cpu().numpy().astype(np.float64),
        W_dec=W_dec.detach().float().cpu().numpy().astype(np.float64),
        b_dec=b_dec.detach().float().cpu().numpy().astype(np.float64),
        loss_curve=[float(v) / n for v in torch.stack(losses).cpu()])
