"""The dataset's side of the estimate: the longest batch that can really occur.

A training step's activations and logits grow with the tokens of its batch. Padded batches are
``batch x`` their longest row, cut at the cut-off; so the peak is set by the longest row of the
data, not by the cut-off, when every row is shorter. In padding-free mode (TRL ``padding_free``)
a batch holds the sum of its rows' lengths, largest for the ``batch`` longest rows. With packing,
rows are packed up to the cut-off, so every batch is full unless the whole dataset is smaller.

Input: the token statistics the studio computes (``studio.datasets.stats.DatasetStats`` or its
dict, image tokens included). Pure Python: no torch, no tokenizer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TokenLengths:
    """Row lengths in tokens, as far as the statistics tell: the longest row, and a histogram
    (``edges`` has one entry more than ``counts``; bin i holds lengths in [edges[i], edges[i+1]),
    the last bin also the maximum)."""

    rows: int
    max_tokens: int
    mean_tokens: float = 0.0
    edges: tuple[int, ...] = ()
    counts: tuple[int, ...] = ()
    stats_cutoff: int = 0  # the cut-off the statistics counted rows_over_cutoff at
    rows_over_stats_cutoff: int = 0
    images: int = 0

    @classmethod
    def from_stats(cls, stats: Any) -> "TokenLengths":
        """From a ``DatasetStats`` or its ``to_dict()``."""
        d = stats if isinstance(stats, dict) else stats.to_dict()
        missing = [k for k in ("rows", "max_tokens") if k not in d]
        if missing:
            raise ValueError(f"token statistics lack {', '.join(missing)}: compute the dataset's statistics first")
        if int(d["rows"]) < 1:
            raise ValueError("the dataset's token statistics count no rows")
        hist = d.get("histogram") or {}
        return cls(rows=int(d["rows"]), max_tokens=int(d["max_tokens"]), mean_tokens=float(d.get("mean_tokens") or 0),
                   edges=tuple(int(e) for e in hist.get("edges", ())), counts=tuple(int(c) for c in hist.get("counts", ())),
                   stats_cutoff=int(d.get("cutoff_len") or 0), rows_over_stats_cutoff=int(d.get("rows_over_cutoff") or 0),
                   images=int(d.get("images") or 0))

    # -- rows cut ----------------------------------------------------------------------------------

    def rows_over(self, cutoff: int) -> tuple[int, bool]:
        """(rows longer than ``cutoff``, exact?). Exact at the cut-off the statistics were computed
        for; otherwise counted from the histogram, the bin that straddles the cut-off shared in
        proportion to its width."""
        if self.max_tokens <= cutoff:
            return 0, True
        if cutoff == self.stats_cutoff:
            return self.rows_over_stats_cutoff, True
        if not self.counts:
            return (1 if self.max_tokens > cutoff else 0), False
        over = 0.0
        for i, count in enumerate(self.counts):
            lo, hi = self.edges[i], self.edges[i + 1]
            if lo > cutoff:
                over += count
            elif hi > cutoff + 1:
                over += count * (hi - cutoff - 1) / (hi - lo)
        return max(1, round(over)), False

    # -- the longest batch -------------------------------------------------------------------------

    def longest_rows(self, n: int, cutoff: int) -> list[int]:
        """Upper bounds of the ``n`` longest rows' lengths (each cut at ``cutoff``), longest first:
        every row of a histogram bin counted at the bin's upper edge (the top bin holds the maximum).
        Fewer than ``n`` when the dataset has fewer rows."""
        if not self.counts:
            return [min(cutoff, self.max_tokens)] * min(n, self.rows)
        out: list[int] = []
        for i in reversed(range(len(self.counts))):
            bound = min(cutoff, self.max_tokens, self.edges[i + 1] - 1)
            out += [bound] * min(self.counts[i], n - len(out))
            if len(out) >= n:
                break
        return out

    def batch_tokens(self, batch: int, cutoff: int, padding_free: bool, packing: bool) -> tuple[int, int]:
        """(rows, tokens per row) of the largest batch: padded -> ``batch x min(cutoff, longest)``;
        padding-free -> one row of the summed longest lengths; packing -> full rows of ``cutoff``
        tokens, unless the whole dataset holds fewer tokens."""
        if packing:
            total = round(self.mean_tokens * self.rows) if self.mean_tokens else self.rows * self.max_tokens
            return 1, max(1, min(batch * cutoff, total))
        if padding_free:
            return 1, max(1, sum(self.longest_rows(batch, cutoff)))
        return min(batch, self.rows), max(1, min(cutoff, self.max_tokens))


def stored_statistics(db: Any, dataset_id: int) -> dict[str, Any]:
    """The newest token statistics the studio computed for a dataset (the result of its latest
    successful ``datasets.stats`` job). LookupError, saying what to do, when there are none."""
    from sqlalchemy import select

    from storage.models import Job, JobStatus
    from studio.datasets.service import get_dataset

    get_dataset(db, dataset_id)  # a wrong id fails here, with the datasets service's message
    with db.session() as s:
        jobs = s.scalars(select(Job).where(Job.kind == "datasets.stats", Job.status == JobStatus.SUCCEEDED)
                         .order_by(Job.id.desc())).all()
        for job in jobs:
            if int((job.payload or {}).get("dataset_id", -1)) == dataset_id and job.result:
                return dict(job.result)
    raise LookupError(f"dataset #{dataset_id} has no token statistics yet: open it in the Datasets tab and "
                      "compute its token lengths with the model you will train (or estimate without --dataset)")
