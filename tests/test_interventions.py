"""The Input Intervention Module on every zoo family: sites, hidden and attention edits, recording, hook hygiene."""

from __future__ import annotations

import pytest
import torch

from vrprobe.data import load_dataset
from vrprobe.errors import UsageError, VrprobeError
from vrprobe.interventions import (
    Add,
    GaussianNoise,
    Knockout,
    LogitNoise,
    Mean,
    Replace,
    Site,
    UniformMix,
    Zero,
    intervene,
    layer_parts,
)
from vrprobe.registry import load_adapter

from numerics import FORWARD, SUM, assert_close


@pytest.fixture(scope="module")
def samples():
    return load_dataset("easy-vqa:test", limit=6, seed=5).samples


@pytest.fixture
def batch(adapter, samples):
    return adapter.encode([s.load_image() for s in samples], [s.question for s in samples])


def logits(adapter, batch, edits=(), record=(), seed=0):
    with torch.no_grad(), intervene(adapter, batch.groups, edits=edits, record=record, seed=seed) as rec:
        out = adapter.forward(batch, use_cache=False).logits[:, -1]
    return out, rec


def hook_count(adapter):
    """(hooks on the model's modules, modules carrying any vrprobe attribute): state must reach the attention function
    as arguments, never as attributes set on modules."""
    mods = list(adapter.model.modules())
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in mods), sum(
        1 for m in mods if any("vrprobe" in name for name in vars(m))
    )


def test_noise_zero_changes_nothing_and_seed_is_bit_identical(adapter, batch):
    base, _ = logits(adapter, batch)
    site = Site("embed", positions="image")
    zero, _ = logits(adapter, batch, [(site, GaussianNoise(0.0, 1.0))])
    assert torch.equal(base, zero)  # exact by construction: x + 0 is x, then the same kernels on the same shapes
    a, _ = logits(
        adapter, batch, [(site, GaussianNoise(3.0, 1.0)), (Site("attn_probs", (1, 2), "all"), LogitNoise(2.0))], seed=7
    )
    b, _ = logits(
        adapter, batch, [(site, GaussianNoise(3.0, 1.0)), (Site("attn_probs", (1, 2), "all"), LogitNoise(2.0))], seed=7
    )
    c, _ = logits(
        adapter, batch, [(site, GaussianNoise(3.0, 1.0)), (Site("attn_probs", (1, 2), "all"), LogitNoise(2.0))], seed=8
    )
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, base)


def test_edits_touch_only_their_positions(adapter, batch):
    layer = 2
    site = Site("resid", (layer,), "question")
    rec_site = Site("resid", (layer,), "all")
    _, clean = logits(adapter, batch, record=[rec_site])
    for op in (
        Zero(),
        Mean(torch.ones(clean[rec_site].shape[-1])),
        Add(torch.full((1,), 5.0)),
        GaussianNoise(3.0, 1.0),
    ):
        _, rec = logits(adapter, batch, [(site, op)], record=[rec_site])
        changed = (rec[rec_site] != clean[rec_site]).any(-1)
        assert torch.equal(changed, batch.groups.question), type(op).__name__
    _, rec = logits(adapter, batch, [(Site("resid", (layer,), (0, -1)), Zero())], record=[rec_site])
    zeroed = (rec[rec_site] == 0).all(-1)
    for row in range(len(batch)):
        pad = int(batch.groups.pad[row])
        assert zeroed[row, pad] and zeroed[row, -1] and zeroed[row].sum() == 2


def test_replace_with_clean_states_everywhere_restores_clean_output(adapter, batch):
    L = adapter.num_layers
    site = Site("resid", tuple(range(L)), "all")
    clean, rec = logits(adapter, batch, record=[site])
    noisy, _ = logits(adapter, batch, [(Site("embed", positions="image"), GaussianNoise(3.0, 5.0))])
    assert not torch.allclose(noisy, clean, atol=1e-3)
    restored, _ = logits(
        adapter,
        batch,
        [(Site("embed", positions="image"), GaussianNoise(3.0, 5.0))]
        + [(Site("resid", (layer,), "all"), Replace(rec[site][layer])) for layer in range(L)],
    )
    assert_close(restored, clean, ulps=SUM, what="every layer restored: clean logits")


def test_attention_edits_keep_rows_distributions(adapter, batch):
    site = Site("attn_probs", (0, 3), "all")
    for op in (LogitNoise(2.0), UniformMix(0.5), Knockout()):
        _, rec = logits(adapter, batch, [(Site("attn_probs", (0, 3), "last"), op)], record=[site])
        probs = rec[site]  # [2, B, H, T, S]
        rows = probs.sum(-1)[..., batch.groups.valid[:, None, :].expand(-1, probs.shape[2], -1)]
        # a sum of S float32 probabilities rounds by up to S·eps
        assert_close(rows, 1.0, scale=1.0, ulps=probs.shape[-1], what=type(op).__name__)
        assert (probs >= 0).all()


def test_uniform_mix_one_is_uniform_over_allowed_keys(adapter, batch):
    site = Site("attn_probs", (1,), "last")
    _, rec = logits(adapter, batch, [(site, UniformMix(1.0))], record=[site])
    last = rec[site]  # [B, H, S]
    for row in range(len(batch)):
        allowed = batch.groups.valid[row]
        expect = torch.zeros_like(last[row, 0])
        expect[allowed] = 1.0 / allowed.sum()
        assert_close(last[row], expect.expand_as(last[row]), scale=1.0, ulps=SUM, what="uniform mix")


def test_knockout_zeroes_attention_to_image_tokens(adapter, batch):
    layers = tuple(range(adapter.num_layers))
    site = Site("attn_probs", layers, "last")
    base, before = logits(adapter, batch, record=[site])
    knocked, after = logits(adapter, batch, [(site, Knockout())], record=[site])
    img = batch.groups.image[None, :, None, :]
    assert (before[site] * img).sum() > 0
    assert (after[site] * img).sum() == 0
    assert not torch.allclose(base, knocked, atol=1e-4)


def test_hooks_removed_after_exception(adapter, batch):
    before = hook_count(adapter)
    with (
        pytest.raises(RuntimeError, match="boom"),
        intervene(
            adapter,
            batch.groups,
            edits=[(Site("mlp", (1,), "image"), Zero()), (Site("attn_probs", (2,), "last"), Knockout())],
            record=[Site("attn", (0,), "all"), Site("embed")],
        ),
    ):
        hooks, attributes = hook_count(adapter)
        assert hooks > before[0] and attributes == 0
        raise RuntimeError("boom")
    assert hook_count(adapter) == before and before[1] == 0


def test_clear_errors(adapter, batch):
    with (
        pytest.raises(UsageError, match="out of range"),
        intervene(adapter, batch.groups, record=[Site("resid", (adapter.num_layers,))]),
    ):
        pass
    with pytest.raises(UsageError, match="unknown component"):
        Site("heads", (0,))
    with pytest.raises(UsageError, match="unknown positions"):
        Site("resid", (0,), "answer")
    with (
        pytest.raises(UsageError, match="not a hidden-state"),
        intervene(adapter, batch.groups, edits=[(Site("resid", (0,)), Knockout())]),
    ):
        pass
    assert set(layer_parts(adapter.decoder_layers[0])) == {"attn", "mlp"}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ((Site("resid", (1,), "image"), Zero), r"site resid@1\[image\]: Zero is a class; pass an instance"),
        ((Site("attn_probs", (2,), "last"), Knockout), r"site attn_probs@2\[last\]: Knockout is a class"),
        ((Site("attn_probs", (2,), "last"), Zero()), r"site attn_probs@2\[last\]: Zero is not an attention"),
        ((Site("mlp", (0,), "all"), UniformMix(0.5)), r"site mlp@0\[all\]: UniformMix is not a hidden-state"),
        ((Site("mlp", (0,), "all"), "noise"), r"site mlp@0\[all\]: str is not a hidden-state"),
        (Zero(), r"an edit is a \(Site, intervention\) pair"),
        (("resid", Zero()), r"an edit is a \(Site, intervention\) pair"),
    ],
)
def test_wrong_edit_is_refused_before_any_hook(adapter, batch, edit, message):
    before = hook_count(adapter)
    with (
        pytest.raises(UsageError, match=message),
        intervene(adapter, batch.groups, edits=[(Site("resid", (0,), "all"), Zero()), edit]),
    ):
        pytest.fail("the block must not run")
    assert hook_count(adapter) == before


@pytest.mark.parametrize(
    "make",
    [
        lambda: GaussianNoise(float("nan")),
        lambda: GaussianNoise(-3.0),
        lambda: GaussianNoise(3.0, sigma=float("inf")),
        lambda: LogitNoise(float("inf")),
        lambda: UniformMix(1.5),
        lambda: Add(delta=0.5),
        lambda: Replace(source=[1.0]),
    ],
)
def test_interventions_check_their_parameters(make):
    with pytest.raises(UsageError):
        make()


def test_recording_is_one_type_and_filled_at_exit(adapter, batch):
    site, attn = Site("resid", (0, 2), "all"), Site("attn_probs", (1,), "last")
    with torch.no_grad(), intervene(adapter, batch.groups, record=[site, attn]) as rec:
        with pytest.raises(VrprobeError, match="once the .* block has exited"):
            rec[site]
        adapter.forward(batch, use_cache=False)
    assert isinstance(rec[site], torch.Tensor) and rec[site].shape[0] == 2
    assert rec.stacked(attn).shape[:2] == (1, len(batch))
    assert set(rec) == {site, attn} and len(rec) == 2
    with pytest.raises(KeyError):
        rec[Site("resid", (3,), "all")]
    with intervene(adapter, batch.groups, record=[site]) as empty:  # no forward ran inside the block
        pass
    with pytest.raises(VrprobeError, match=r"resid@0,2\[all\] holds nothing for layer\(s\) 0, 2"):
        empty[site]


def test_sdpa_split_equals_full_eager_attention(adapter, samples):
    """Explicit probabilities only for the recorded/edited rows (SDPA elsewhere) equal eager attention for every row:
    logits, recorded answer-position attention and an attention edit, with left padding and without."""
    eager = load_adapter(f"zoo:{adapter.family}", attn_implementation="eager")
    last_only, every_row = Site("attn_probs", (0, 3), "last"), Site("attn_probs", (0, 3), "all")
    for chosen in (samples[:1], samples):  # one row: no padding; six questions of different lengths: left padding
        batch = adapter.encode([s.load_image() for s in chosen], [s.question for s in chosen])
        split, rec = logits(adapter, batch, record=[last_only])
        full, rec_full = logits(adapter, batch, record=[every_row])  # every row recorded: all rows explicit
        with torch.no_grad():
            reference = eager.forward(batch, use_cache=False).logits[:, -1]
        assert_close(split, reference, ulps=FORWARD, what="SDPA split vs eager (logits)")
        assert_close(full, reference, ulps=FORWARD, what="all rows explicit vs eager (logits)")
        assert_close(rec[last_only], rec_full[every_row][:, :, :, -1], scale=1.0, ulps=FORWARD, what="attention")
        knock = [(Site("attn_probs", (1, 2), "last"), Knockout())]
        knocked, _ = logits(adapter, batch, edits=knock, record=[last_only])
        knocked_full, _ = logits(adapter, batch, edits=knock, record=[every_row])
        assert_close(knocked, knocked_full, ulps=FORWARD, what="knockout, split vs all rows explicit (logits)")
        assert not torch.allclose(knocked, split, atol=1e-3)
