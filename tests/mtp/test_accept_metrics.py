"""The acceptance arithmetic against independent numpy computations (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ckpt_audit.mtp.metrics import AcceptSums, max_argmax, row_stats
from ckpt_audit.mtp.results import temp_key


def _np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_row_stats_match_numpy() -> None:
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(50, 37)) * 3, rng.normal(size=(50, 37)) * 2
    agree, ent_p, ent_q, betas = row_stats(torch.tensor(p), torch.tensor(q), [1.0, 0.5, 0.0])
    for t, beta in zip([1.0, 0.5], betas[:2], strict=True):
        expect = np.minimum(_np_softmax(p / t), _np_softmax(q / t)).sum(-1)
        np.testing.assert_allclose(beta.numpy(), expect, rtol=1e-5)
    np.testing.assert_array_equal(betas[2].numpy(), (p.argmax(-1) == q.argmax(-1)).astype(float))
    np.testing.assert_array_equal(agree.numpy(), (p.argmax(-1) == q.argmax(-1)).astype(float))
    sp = _np_softmax(p)
    np.testing.assert_allclose(ent_p.numpy(), -(sp * np.log(sp)).sum(-1), rtol=1e-5)
    sq = _np_softmax(q)
    np.testing.assert_allclose(ent_q.numpy(), -(sq * np.log(sq)).sum(-1), rtol=1e-5)


def _batch(lengths: list[int], L: int, V: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (len(lengths), L), generator=g)
    p = torch.randn(len(lengths), L, V, generator=g)
    return ids, p, torch.tensor(lengths)


def test_p_equals_q_gives_acceptance_one() -> None:
    """Drafts identical to the verifier at the paired position: every figure is 1."""
    ids, p, lengths = _batch([9, 6, 3], 9, 11, 0)
    drafts = [torch.roll(p, -k, dims=1) for k in (1, 2)]  # draft at i = verifier at i+k
    acc = AcceptSums(2, [1.0, 0.7], torch.device("cpu"))
    acc.add(p, drafts, ids, lengths)
    fig = acc.figures()
    depths, etps, etps_s = (fig.depths, fig.expected_tokens_per_step,
                            fig.expected_tokens_per_step_sampled)
    for d in depths:
        assert d.greedy_acceptance == 1.0
        assert d.cumulative_acceptance == 1.0
        for v in d.sampled_acceptance.values():
            assert v == pytest.approx(1.0, abs=1e-6)
    assert etps == 3.0
    assert etps_s[temp_key(0.7)] == pytest.approx(3.0, abs=1e-5)


def test_alignment_and_pair_counts() -> None:
    """Depth k: T-k pairs per sequence, label accuracy over T-k-1; pads never counted."""
    V = 13
    lengths = [8, 5, 2]
    L = 8
    ids = torch.zeros(3, L, dtype=torch.long)
    g = torch.Generator().manual_seed(3)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(0, V, (n,), generator=g)
    # verifier puts its argmax on the true next token; depth-1 draft at i on t_{i+2}
    p = torch.full((3, L, V), -5.0)
    q = torch.full((3, L, V), -5.0)
    for b, n in enumerate(lengths):
        for i in range(n - 1):
            p[b, i, ids[b, i + 1]] = 5.0
        for i in range(n - 2):
            q[b, i, ids[b, i + 2]] = 5.0
    acc = AcceptSums(1, [1.0], torch.device("cpu"))
    acc.add(p, [q], ids, torch.tensor(lengths))
    (d,) = acc.figures().depths
    assert d.pairs == sum(n - 1 for n in lengths)
    assert d.label_pairs == sum(n - 2 for n in lengths)
    assert d.label_accuracy == 1.0
    # pairs at i <= T-3 agree by construction; the last pair (i = T-2) pairs the draft with
    # the verifier at T-1, whose argmax (position T-1 predicts a token not in the probe) is
    # the uniform row's first index unless the draft happens to match it.
    last_agree = sum(int(q[b, n - 2].argmax() == p[b, n - 1].argmax()) for b, n in
                     enumerate(lengths))
    expect = (sum(n - 2 for n in lengths) + last_agree) / d.pairs
    assert d.greedy_acceptance == pytest.approx(expect)


def test_misaligned_drafts_score_low() -> None:
    """The same drafts paired one position off (with the verifier at i, not i+1) fail."""
    ids, p, lengths = _batch([30] * 4, 30, 50, 7)
    acc = AcceptSums(1, [1.0], torch.device("cpu"))
    acc.add(p, [p.clone()], ids, lengths)  # draft at i equals verifier at i: wrong alignment
    (d,) = acc.figures().depths
    assert d.greedy_acceptance < 0.2


def test_batches_sum_exactly() -> None:
    """Two batches accumulated = one batch of both (sums and counts, not mean of means)."""
    ids, p, lengths = _batch([7, 4, 6, 2, 7], 7, 9, 11)
    q = torch.randn_like(p)
    one = AcceptSums(1, [1.0], torch.device("cpu"))
    one.add(p, [q], ids, lengths)
    two = AcceptSums(1, [1.0], torch.device("cpu"))
    two.add(p[:2], [q[:2]], ids[:2], lengths[:2])
    two.add(p[2:], [q[2:]], ids[2:], lengths[2:])
    torch.testing.assert_close(one.tensor, two.tensor)


@pytest.mark.parametrize("v", [300, 4096, 5000, 129_280])
def test_max_argmax_is_torch_max_exactly(v: int) -> None:
    """The two-stage argmax of long rows: same values and first indices as torch, ties, a tail
    past the last 128-element block, and NaN rows (NaN counts as the maximum) included."""
    g = torch.Generator().manual_seed(v)
    x = torch.randn(6, 5, v, generator=g).round()  # many ties at the maximum
    x[0, 0, :] = 0.0  # all tied: index 0
    x[0, 1, -1] = 100.0  # the maximum in the tail
    x[0, 2, v // 2] = float("nan")
    x[0, 3, -1] = float("nan")  # NaN in the tail only
    x[0, 3, 3] = 100.0
    x[0, 4, [5, v - 1]] = float("nan")  # two NaNs: the first
    got_v, got_i = max_argmax(x)
    want_v, want_i = x.max(-1)
    assert torch.equal(got_i, want_i)
    torch.testing.assert_close(got_v, want_v, equal_nan=True, rtol=0, atol=0)


def test_row_stats_match_numpy_on_a_long_vocabulary() -> None:
    rng = np.random.default_rng(1)
    p, q = rng.normal(size=(7, 5000)) * 4, rng.normal(size=(7, 5000)) * 4
    q[:, 17] += 12  # peaked drafts: a low entropy
    agree, ent_p, ent_q, (beta,) = row_stats(torch.tensor(p), torch.tensor(q), [0.6])
    np.testing.assert_array_equal(agree.numpy(), p.argmax(-1) == q.argmax(-1))
    for logits, ent in ((p, ent_p), (q, ent_q)):
        s = _np_softmax(logits)
        np.testing.assert_allclose(ent.numpy(), -(s * np.log(s)).sum(-1), rtol=1e-5)
    expect = np.minimum(_np_softmax(p / 0.6), _np_softmax(q / 0.6)).sum(-1)
    np.testing.assert_allclose(beta.numpy(), expect, rtol=1e-5, atol=1e-7)
