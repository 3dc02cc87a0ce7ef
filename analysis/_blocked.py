"""Sparse factorization of the random-effects system A = Λ'Z'WZΛ + I for large crossed designs.

The ordering is chosen once per model from the design, as lme4's CHOLMOD ordering is: the
columns of the largest random term (most levels × columns, e.g. participants) come first. That
term's diagonal block D is block diagonal (one p₁ × p₁ block per level), so it eliminates with
no fill at all; what is left is the Schur complement S = E − C'C over the remaining terms
(e.g. units), C = L₁⁻¹B, which is small and, in a crossed design, dense. The factor is

    P A P' = L L',   L = [[L₁, 0], [C', L₂]],   L₁ = blockchol(D),  L₂ = chol(S)

with L₁ and C sparse (C has B's fixed pattern) and L₂ a dense q₂ × q₂ Cholesky done by LAPACK.
This is the blocked Cholesky of MixedModels.jl (Bates et al.), and the elimination tree a
supernodal CHOLMOD builds for this pattern; measured against the sparse LDL' of ``qdldl`` on the
same systems it is several times faster (bench/README.md). Nothing of size q × q is ever formed:
the largest objects are B's pattern (one entry per distinct level pair) and S (q₂ × q₂).

The same factor yields the entries of A⁻¹ that the Laplace gradient needs (on A's pattern
only), by the block form of the inverse with Q = C S⁻¹ evaluated on C's pattern:
A⁻¹₂₂ = S⁻¹, A⁻¹₁₂ = −L₁'⁻¹Q, A⁻¹₁₁ = L₁'⁻¹(I + QC')L₁⁻¹ (diagonal blocks).

Both C'C and Q are sums over the pairs of entries that share a row of C. Each unordered pair is
visited once, in row order, and only the lower triangles of S and S⁻¹ are written or read
(LAPACK's potrf and potri need no more): half the products of a general sparse product, and the
gathers stay within a row of C, which is what the time goes on at a million rows.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp

# Pairs of entries in one row of C above which their index arrays (24 bytes a pair) are not
# built: C'C falls back to scipy's sparse product, and the selected inverse is not attempted.
MAX_PAIRS = 100_000_000
# The Schur complement over the terms after the largest is held dense: 16,000² is 2 GB.
MAX_SCHUR_Q = 16_000


class BlockedPattern:
    """Everything about the blocked factorization that depends only on the design."""

    def __init__(self, rs):
        blocks = rs.blocks
        sizes = [b.p * b.n_levels for b in blocks]
        k1 = int(np.argmax(sizes))
        offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        b1 = blocks[k1]
        self.k1 = k1
        self.p1 = p1 = b1.p
        self.n1 = n1 = b1.n_levels
        self.q1 = q1 = p1 * n1
        self.q = q = rs.q
        self.q2 = q2 = q - q1
        if q2 > MAX_SCHUR_Q:
            raise ValueError(
                f"the random terms other than {b1.group!r} hold {q2} effects; the sparse "
                f"factorization keeps their Schur complement dense and supports at most "
                f"{MAX_SCHUR_Q} (put the term with most levels in one block, e.g. "
                f"(1 + x | {b1.group}) rather than two terms on it)"
            )
        off1 = offs[k1]
        # permuted position of every original column: the first term's columns, then the rest
        self.order = np.concatenate(
            [np.arange(off1, off1 + q1), np.arange(0, off1), np.arange(off1 + q1, q)]
        ).astype(np.int64)
        self.slots1 = np.flatnonzero(rs.slot_block == k1)
        self.slots2 = np.flatnonzero(rs.slot_block != k1)
        self.m2 = m2 = len(self.slots2)
        self.level = b1.codes.astype(np.int64)
        c2 = rs.cols[:, self.slots2].astype(np.int64)
        self.cols2 = np.where(c2 < off1, c2, c2 - q1)
        n = rs.design.n
        lv = self.level
        # D's blocks: flat index level·p₁² + a·p₁ + b for every row and slot pair
        a_idx, b_idx = np.meshgrid(np.arange(p1), np.arange(p1), indexing="ij")
        self._a1, self._b1 = a_idx.ravel(), b_idx.ravel()
        self.dflat = (lv[:, None] * (p1 * p1) + (self._a1 * p1 + self._b1)[None, :]).ravel()
        # E (dense q₂ × q₂) by scatter-add
        c_idx, d_idx = np.meshgrid(np.arange(m2), np.arange(m2), indexing="ij")
        self._c2, self._d2 = c_idx.ravel(), d_idx.ravel()
        self.eflat = (self.cols2[:, self._c2] * q2 + self.cols2[:, self._d2]).ravel()
        # the same entries in S's lower triangle, where the selected inverse reads S⁻¹
        hi = np.maximum(self.cols2[:, self._c2], self.cols2[:, self._d2])
        lo = np.minimum(self.cols2[:, self._c2], self.cols2[:, self._d2])
        self.eflat_lower = (hi * q2 + lo).ravel()
        # B's pattern: one row-set per (level, column of the rest) pair that occurs
        keys = lv[:, None] * max(q2, 1) + self.cols2
        uniq, inv = np.unique(keys.ravel(), return_inverse=True)
        inv = inv.reshape(n, m2)
        ulev = uniq // max(q2, 1)
        ucol = uniq % max(q2, 1)
        r = np.bincount(ulev, minlength=n1).astype(np.int64)
        ls = np.concatenate([[0], np.cumsum(r)[:-1]])
        pos = np.arange(len(uniq)) - ls[ulev]
        eidx = (p1 * ls[ulev])[:, None] + np.arange(p1)[None, :] * r[ulev][:, None] + pos[:, None]
        self.nnz = nnz = p1 * len(uniq)
        indices = np.empty(nnz, np.int64)
        e_level = np.empty(nnz, np.int64)
        e_a = np.empty(nnz, np.int64)
        for a in range(p1):
            indices[eidx[:, a]] = ucol
            e_level[eidx[:, a]] = ulev
            e_a[eidx[:, a]] = a
        self.indices = indices.astype(np.int32)
        row_len = np.repeat(r, p1)
        self.indptr = np.concatenate([[0], np.cumsum(row_len)]).astype(np.int64)
        self.e_level, self.e_a, self.e_r = e_level, e_a, r[e_level]
        # row i, slot a of the first term, slot c of the rest → entry of B
        self.bmap = eidx[inv][:, :, :].transpose(0, 2, 1).reshape(n, p1 * m2) if m2 else None
        # C' as CSR with the same fixed pattern: C'C is then a CSR × CSR product, with no
        # conversion between formats at each factorization
        tr = sp.csr_matrix((np.arange(1, nnz + 1, dtype=float), self.indices, self.indptr),
                           shape=(q1, q2)).T.tocsr()
        tr.sort_indices()
        self.t_perm = tr.data.astype(np.int64) - 1
        self.t_indices, self.t_indptr = tr.indices, tr.indptr
        self.pairs_count = int(np.sum(self.e_r))
        # flat index of every entry's diagonal element in S
        self.diag_flat = self.indices.astype(np.intp) * (q2 + 1)
        self._pairs = None

    # -- cost model for choosing dense or blocked ------------------------------------------
    def cost(self) -> float:
        """Rough work per factorization in dense-flop units (sparse products count ~10×)."""
        return self.q2**3 / 3 + 10.0 * self.pairs_count + 20.0 * self.nnz

    # -- applying one p₁ × p₁ matrix per level to the rows of a pattern ----------------------
    def level_apply(self, M: np.ndarray, data: np.ndarray) -> np.ndarray:
        """out[(ℓ, a), k] = Σ_b M[ℓ, a, b] data[(ℓ, b), k] on B's pattern."""
        if self.p1 == 1:
            return M[self.e_level, 0, 0] * data
        out = np.zeros_like(data)
        base = np.arange(self.nnz) - self.e_a * self.e_r
        for b in range(self.p1):
            out += M[self.e_level, self.e_a, b] * data[base + b * self.e_r]
        return out

    def pairs(self):
        """The unordered pairs e₁ < e₂ of entries in one row of C, row by row, with the flat
        index of (col e₂, col e₁) in S's lower triangle; built on first use, None when there
        are more than MAX_PAIRS (a row of C holds its columns in increasing order, so col e₂ is
        the larger)."""
        if self._pairs is None:
            count = (self.pairs_count - self.nnz) // 2
            if count > MAX_PAIRS:
                return None
            # rows grouped by length: each group's pairs are one broadcast of its row starts
            # against the upper triangle of a length × length pattern
            lengths = np.diff(self.indptr)
            e1s, e2s = [], []
            for length in np.unique(lengths[lengths > 1]):
                starts = self.indptr[:-1][lengths == length].astype(np.intp)
                a, b = np.triu_indices(int(length), 1)
                e1s.append((starts[:, None] + a).ravel())
                e2s.append((starts[:, None] + b).ravel())
            e1 = np.concatenate(e1s) if e1s else np.zeros(0, np.intp)
            e2 = np.concatenate(e2s) if e2s else np.zeros(0, np.intp)
            cols = self.indices.astype(np.intp)
            flat = cols[e2] * self.q2 + cols[e1]
            self._pairs = (e1, e2, flat)
        return self._pairs

    def gram_lower(self, cdata: np.ndarray) -> np.ndarray | None:
        """C'C from C's values, lower triangle and diagonal only (the upper is left zero)."""
        pairs = self.pairs()
        if pairs is None:
            return None
        e1, e2, flat = pairs
        q2 = self.q2
        # (np.bincount of no pairs at all, as in a nested design, would give integers)
        out = np.bincount(flat, weights=cdata[e1] * cdata[e2], minlength=q2 * q2).astype(
            float, copy=False)
        out[:: q2 + 1] += np.bincount(self.indices, weights=cdata * cdata, minlength=q2)
        return out.reshape(q2, q2)

    def times_inverse(self, cdata: np.ndarray, Si: np.ndarray) -> np.ndarray:
        """Q = C S⁻¹ on C's pattern from the lower triangle of S⁻¹:
        Q[e₂] = Σ over e₁ in e₂'s row of C[e₁] S⁻¹[col e₁, col e₂]."""
        pairs = self.pairs()
        if pairs is None:
            raise MemoryError(f"{self.pairs_count} entry pairs: selected inverse too large")
        e1, e2, flat = pairs
        flat_si = Si.ravel()
        s = flat_si[flat]
        Q = cdata * flat_si[self.diag_flat]
        if len(e1):
            Q += np.bincount(e2, weights=cdata[e1] * s, minlength=self.nnz)
            Q += np.bincount(e1, weights=cdata[e2] * s, minlength=self.nnz)
        return Q


class BlockedFactor:
    """P A P' = L L' in the blocked form above; solves, log-determinant and selected inverse."""

    def __init__(self, pat: BlockedPattern, zl: np.ndarray, w: np.ndarray | None):
        self.pat = pat
        p1, n1, q2 = pat.p1, pat.n1, pat.q2
        z1 = zl[:, pat.slots1]
        z2 = zl[:, pat.slots2]
        wz1 = z1 if w is None else z1 * w[:, None]
        D = np.bincount(
            pat.dflat, weights=(wz1[:, pat._a1] * z1[:, pat._b1]).ravel(), minlength=n1 * p1 * p1
        ).reshape(n1, p1, p1)
        D[:, np.arange(p1), np.arange(p1)] += 1.0
        if p1 == 1:
            d = np.sqrt(D[:, 0, 0])
            self.L1inv = (1.0 / d)[:, None, None]
            self.logdet1 = 2 * np.log(d).sum()
        else:
            L1 = np.linalg.cholesky(D)
            self.L1inv = np.linalg.inv(L1)
            self.logdet1 = 2 * np.log(np.diagonal(L1, axis1=1, axis2=2)).sum()
        if q2:
            wz2 = z2 if w is None else z2 * w[:, None]
            bvals = (wz1[:, :, None] * z2[:, None, :]).reshape(len(zl), -1)
            Bdata = np.bincount(pat.bmap.ravel(), weights=bvals.ravel(), minlength=pat.nnz)
            cdata = pat.level_apply(self.L1inv, Bdata)
            self.C = sp.csr_matrix((cdata, pat.indices, pat.indptr), shape=(pat.q1, q2))
            E = np.bincount(
                pat.eflat, weights=(wz2[:, pat._c2] * z2[:, pat._d2]).ravel(), minlength=q2 * q2
            ).reshape(q2, q2)
            # only S's lower triangle is formed: potrf reads no more
            gram = pat.gram_lower(cdata)
            if gram is None:
                Ct = sp.csr_matrix((cdata[pat.t_perm], pat.t_indices, pat.t_indptr),
                                   shape=(q2, pat.q1))
                gram = (Ct @ self.C).toarray()
            E -= gram
            E[np.diag_indices_from(E)] += 1.0
            self.L2 = la.cholesky(E, lower=True, check_finite=False)
            self.logdet2 = 2 * np.log(np.diag(self.L2)).sum()
        else:
            self.C = sp.csr_matrix((pat.q1, 0))
            self.L2 = np.zeros((0, 0))
            self.logdet2 = 0.0

    def logdet(self) -> float:
        """log |A| = log |L|²."""
        return float(self.logdet1 + self.logdet2)

    def _l1(self, x, transpose=False):
        p1, n1 = self.pat.p1, self.pat.n1
        M = np.swapaxes(self.L1inv, 1, 2) if transpose else self.L1inv
        if p1 == 1:
            return x * (M[:, 0, 0] if x.ndim == 1 else M[:, 0, 0][:, None])
        xs = x.reshape(n1, p1, -1)
        return np.einsum("lab,lbk->lak", M, xs).reshape(x.shape)

    def solve(self, b: np.ndarray) -> np.ndarray:
        """L⁻¹ P b (b in the original column order; the result stays in the factor's order)."""
        pat = self.pat
        bp = np.asarray(b)[pat.order]
        x1 = self._l1(bp[: pat.q1])
        if not pat.q2:
            return x1
        rhs = bp[pat.q1 :] - self.C.T @ x1
        x2 = la.solve_triangular(self.L2, rhs, lower=True, check_finite=False)
        return np.concatenate([x1, x2])

    def solve_t(self, x: np.ndarray) -> np.ndarray:
        """P' L'⁻¹ x: back to the original column order."""
        pat = self.pat
        x = np.asarray(x)
        x1, x2 = x[: pat.q1], x[pat.q1 :]
        if pat.q2:
            y2 = la.solve_triangular(self.L2, x2, lower=True, trans=1, check_finite=False)
            y1 = self._l1(x1 - self.C @ y2, transpose=True)
            y = np.concatenate([y1, y2])
        else:
            y = self._l1(x1, transpose=True)
        out = np.empty_like(y)
        out[pat.order] = y
        return out

    def row_inverse(self, rs) -> np.ndarray:
        """R[i, c, a] = A⁻¹[col_c(i), col_a(i)] for every row i and slot pair: the entries of A⁻¹
        on A's pattern, from the blocked inverse (no q × q matrix)."""
        pat = self.pat
        p1, n1, q2 = pat.p1, pat.n1, pat.q2
        n, m = rs.cols.shape
        R = np.empty((n, m, m))
        s1, s2 = pat.slots1, pat.slots2
        M = np.zeros((n1, p1, p1))
        if q2:
            Si, _ = la.lapack.dpotri(self.L2, lower=1)  # lower triangle of S⁻¹
            cdata = self.C.data
            Q = pat.times_inverse(cdata, Si)
            # M_ℓ = (C S⁻¹ C')_ℓℓ = Σ_k Q[(ℓ, a), k] C[(ℓ, b), k], over C's pattern only
            base = np.arange(pat.nnz) - pat.e_a * pat.e_r
            key = pat.e_level * (p1 * p1) + pat.e_a * p1
            for b in range(p1):
                M += np.bincount(
                    key + b, weights=Q * cdata[base + b * pat.e_r], minlength=n1 * p1 * p1
                ).reshape(n1, p1, p1)
            P12 = -pat.level_apply(np.swapaxes(self.L1inv, 1, 2), Q)
            ent = P12[pat.bmap].reshape(n, p1, pat.m2)
            for a in range(p1):
                for c in range(pat.m2):
                    R[:, s1[a], s2[c]] = ent[:, a, c]
                    R[:, s2[c], s1[a]] = ent[:, a, c]
            S22 = Si.ravel()[pat.eflat_lower].reshape(n, pat.m2, pat.m2)
            for c in range(pat.m2):
                for d in range(pat.m2):
                    R[:, s2[c], s2[d]] = S22[:, c, d]
        M[:, np.arange(p1), np.arange(p1)] += 1.0
        A11 = np.einsum("lba,lbc,lcd->lad", self.L1inv, M, self.L1inv)
        lv = pat.level
        for a in range(p1):
            for b in range(p1):
                R[:, s1[a], s1[b]] = A11[lv, a, b]
        return R
