"""The fast path equals the reference step: loss, log P1 - log P2, every LoRA gradient of both adapters."""

import dataclasses

import pytest
import torch

from cot_transplant.config import VARIANTS
from cot_transplant.train import steps
from cot_transplant.train.adapters import lora_dropout_sites
from cot_transplant.train.batches import collate
from cot_transplant.train.steps import fast, reference
from cot_transplant.train.steps.fast.plan import attention_chunks, pack_arguer, plan_chooser
from cot_transplant.transplant.arch import decoder_body
from step_helpers import _batch, _session, _vary_lengths, assert_fast_equals_reference, assert_same_forward
from train_helpers import tiny_cfg


def test_every_variant_is_proven_for_the_fast_path_or_takes_another_step():
    assert set(steps.FAST_VARIANTS) | {"text-only", "adversarial"} == set(VARIANTS)


@pytest.mark.parametrize("variant", steps.FAST_VARIANTS)
def test_fast_path_equals_reference_for_every_variant(tiny_rows, variant):
    session = _session(tiny_rows, f"variant={variant}")
    assert steps.choose(session.model, session.settings).path == steps.FAST
    assert_fast_equals_reference(session, _batch(session, 2))


def test_forward_check_catches_a_one_position_rope_shift(tiny_rows, monkeypatch):
    """A planted bug: every transplanted key rotated at the position one later than its own."""
    session = _session(tiny_rows)
    batch = _batch(session, 2)
    with torch.no_grad():
        ref = reference.forward(session.model, batch, session.settings)
        assert_same_forward(ref, fast.forward(session.model, batch, session.settings))
        real_plan = fast.step.plan_chooser
        monkeypatch.setattr(fast.step, "plan_chooser",
                            lambda b: dataclasses.replace(real_plan(b), extra_cols=real_plan(b).extra_cols + 1))
        shifted = fast.forward(session.model, batch, session.settings)
    with pytest.raises(AssertionError, match="log P1"):
        assert_same_forward(ref, shifted)


@pytest.mark.parametrize("planted", ["no earlier keys in the last layer", "last layer's keys one position late"])
def test_forward_check_catches_a_wrong_last_layer(tiny_rows, monkeypatch, planted):
    """The chooser's last layer runs its final query alone; planted bugs in what that query reads must show."""
    import cot_transplant.train.steps.fast.layers as layers

    session = _session(tiny_rows)
    batch = _batch(session, 2)
    real_tail = layers._tail_kv

    def wrong_tail(layer, hidden, cos, sin, rotate_half):
        if planted.startswith("no earlier"):  # the earlier tokens' own keys left out (values zero, keys far off)
            k, v = real_tail(layer, hidden, cos, sin, rotate_half)
            return k * 0 - 1e4, v * 0
        return real_tail(layer, hidden, torch.roll(cos, 1, dims=1), torch.roll(sin, 1, dims=1), rotate_half)

    with torch.no_grad():
        ref = reference.forward(session.model, batch, session.settings)
        monkeypatch.setattr(layers, "_tail_kv", wrong_tail)
        wrong = fast.forward(session.model, batch, session.settings)
    with pytest.raises(AssertionError, match="log P1|loss"):
        assert_same_forward(ref, wrong)


def test_fast_path_skips_the_work_nothing_reads(tiny_rows, monkeypatch):
    """The arguer's last layer stops at its K/V projections; the chooser's last layer runs one query."""
    from cot_transplant.transplant.arch import decoder_layers

    session = _session(tiny_rows)
    batch = _batch(session, 2)
    _, layer_list = decoder_layers(session.model)
    seen: dict[str, list] = {}
    hooks = [module.register_forward_hook(lambda m, a, o, name=name: seen.setdefault(name, []).append(a[0].shape))
             for name, module in (("last mlp", layer_list[-1].mlp), ("last q", layer_list[-1].self_attn.q_proj),
                                  ("last k", layer_list[-1].self_attn.k_proj), ("norm", decoder_body(
                                      session.model).norm), ("first mlp", layer_list[0].mlp))]
    try:
        with torch.no_grad():
            fast.forward(session.model, batch, session.settings)
    finally:
        for h in hooks:
            h.remove()
    plan = plan_chooser(batch)
    rows, kept = plan.ids.shape
    assert seen["first mlp"] == [pack_arguer(batch).ids.shape + (seen["first mlp"][0][-1],),
                                 torch.Size([rows, kept, seen["first mlp"][0][-1]])]
    assert [s[1] for s in seen["last mlp"]] == [1]  # the chooser's final query only; the arguer's not at all
    assert [s[1] for s in seen["last q"]] == [1]
    assert [s[1] for s in seen["norm"]] == [1]
    assert sorted(s[1] for s in seen["last k"]) == [1, kept - 1, pack_arguer(batch).ids.shape[1]]


@pytest.mark.parametrize("family", ["tiny-llama", "tiny-qwen2"])
def test_fast_path_equals_reference(tiny_rows, family):
    session = _session(tiny_rows, f"model.name={family}")
    assert_fast_equals_reference(session, _batch(session))


@pytest.mark.parametrize("overrides", [
    ("model.gradient_checkpointing=true",),
    ("transplant.fraction=0.5",),
    ("variant=swapped-kv", "transplant.shift=false"),
    ("variant=shared",),
    ("model.residual_dtype=float64", "model.name=tiny-qwen2"),
])
def test_fast_path_equals_reference_in_other_settings(tiny_rows, overrides):
    session = _session(tiny_rows, *overrides)
    assert_fast_equals_reference(session, _batch(session, 2))


@pytest.mark.parametrize("chunk, gap, overrides", [
    (0, 0, ()),  # the model's own attention, one call over the whole pattern
    (4, 0, ()),  # blocks of 4 queries, every unseen key range skipped
    (4, 0, ("model.gradient_checkpointing=true",)),  # recompute in backward goes through the blocks too
    (5, 3, ("model.name=tiny-qwen2",)),
])
def test_fast_path_blockwise_attention_equals_reference(tiny_rows, chunk, gap, overrides):
    session = _session(tiny_rows, f"train.fast_path_block={chunk}", f"train.fast_path_gap={gap}", *overrides)
    assert (session.settings.fast_path_block, session.settings.fast_path_gap) == (chunk, gap)
    batch = _batch(session)
    if chunk:  # the blocks really split rows and skip key ranges
        chunks = attention_chunks(pack_arguer(batch).allowed, chunk, gap)
        assert len({c.row for c in chunks}) == batch.chooser_ids.shape[0] < len(chunks)
        assert any(len(c.keys) > 1 for c in chunks)
    assert_fast_equals_reference(session, batch)


def test_fast_path_with_sdpa_attention(tiny_rows):
    session = _session(tiny_rows)
    session.model.get_base_model().config._attn_implementation = "sdpa"
    assert_fast_equals_reference(session, _batch(session))


@pytest.mark.parametrize("overrides, path, reason", [
    ((), steps.FAST, "exact fast path"),
    (("train.fast_path=off",), steps.REFERENCE, "train.fast_path=off"),
    (("transplant.site=k",), steps.REFERENCE, "transplant.site=k"),
    (("transplant.layers=[1]",), steps.REFERENCE, "transplant.layers"),
    (("variant=text-only",), steps.REFERENCE, "text-only"),
    (("variant=adversarial",), steps.ADVERSARIAL, "adversarial"),
])
def test_the_selector_picks_a_step_and_says_why(tiny_rows, capsys, overrides, path, reason):
    session = _session(tiny_rows, *overrides)
    choice = session.step  # chosen once, at set-up
    assert choice == steps.choose(session.model, session.settings)
    steps.announce(choice)
    assert (choice.path, reason in choice.reason) == (path, True)
    err = capsys.readouterr().err
    assert err.count("cot-transplant: note: step") == 1 and reason in err


def test_a_variant_off_the_allow_list_takes_the_reference(tiny_rows, monkeypatch):
    session = _session(tiny_rows)
    monkeypatch.setattr(steps.choice, "FAST_VARIANTS", ("frozen-arguer",))
    choice = steps.choose(session.model, session.settings)
    assert choice.path == steps.REFERENCE and "not proven" in choice.reason


def test_the_selected_step_runs(tiny_rows, monkeypatch):
    session = _session(tiny_rows)
    calls = []
    monkeypatch.setattr(fast, "train_forward_backward", lambda *a, **k: calls.append("fast") or (None,) * 3)
    monkeypatch.setattr(reference, "train_forward_backward", lambda *a, **k: calls.append("reference") or (None,) * 3)
    batch = _batch(session, 2)
    off = dataclasses.replace(session.settings, fast_path="off")
    steps.forward_backward(session.model, batch, session.settings, session.step, 1.0)
    steps.forward_backward(session.model, batch, off, steps.choose(session.model, off), 1.0)
    assert calls == ["fast", "reference"]


def test_a_batch_beyond_the_sliding_window_takes_the_reference(tiny_rows, monkeypatch):
    """The one fallback rule: on the fast path, a sequence longer than the model's sliding window."""
    session = _session(tiny_rows)
    batch = _batch(session, 2)
    longest = max(batch.arguer_ids.shape[1], batch.chooser_ids.shape[1])
    assert steps.path_for(session.step, batch) == steps.FAST and session.step.window is None
    monkeypatch.setattr(session.model.get_base_model().config, "sliding_window", longest - 1, raising=False)
    windowed = steps.choose(session.model, session.settings)
    assert (windowed.path, windowed.window) == (steps.FAST, longest - 1)
    assert steps.path_for(windowed, batch) == steps.REFERENCE
    calls = []
    monkeypatch.setattr(reference, "train_forward_backward", lambda *a, **k: calls.append("reference") or (None,) * 3)
    steps.forward_backward(session.model, batch, session.settings, windowed, 1.0)
    assert calls == ["reference"]


def test_config_switch(tiny_rows):
    from cot_transplant.errors import UserError

    assert tiny_cfg().train.fast_path == "auto"
    assert tiny_cfg("train.fast_path=off").train.fast_path == "off"  # YAML reads a bare off as false
    with pytest.raises(UserError, match="train.fast_path"):
        tiny_cfg("train.fast_path=fast")


def test_plans_skip_the_candidates_and_share_the_prefix(tiny_rows):
    session = _session(tiny_rows)
    batch = _batch(session)
    pack, plan = pack_arguer(batch), plan_chooser(batch)
    for b in range(batch.chooser_ids.shape[0]):
        (s1, e1), (s2, e2) = batch.chooser_spans[b]
        real = int(batch.chooser_mask[b].sum())
        assert int(plan.mask[b].sum()) == real - (e1 - s1) - (e2 - s2)
        # The packed arguer row: one prefix and both candidates, shorter than the two prompts together.
        lengths = [int(batch.arguer_mask[2 * b + j].sum()) for j in (0, 1)]
        assert int(pack.mask[b].sum()) < sum(lengths)
        (p1, q1), (p2, q2) = pack.spans[b]
        assert q1 - p1 == e1 - s1 and q2 - p2 == e2 - s2
        # Candidate 2 never sees candidate 1.
        assert not pack.allowed[b, p2:q2, p1:q1].any()
    # Padding makes no row empty.
    assert pack.allowed.any(-1).all() and plan.allowed.any(-1).all()


def test_fast_path_with_hidden_argument_tails(tiny_rows):
    """Truncation's `hide_tail` leaves holes in the chooser mask; the kept tokens skip them as the reference does."""
    from cot_transplant.train.evaluate import hide_tails

    session = _session(tiny_rows)
    ex = sorted(session.examples["train"], key=lambda e: e.n_tokens)[:2]
    batch = collate(ex, session.tokenizer.pad_token_id, 0.5)
    hide_tails(batch.chooser_mask, collate(ex, session.tokenizer.pad_token_id, 1.0).chooser_spans, 0.5)
    settings = session.settings
    with torch.no_grad():
        ref, fast_fwd = reference.forward(session.model, batch, settings), fast.forward(session.model, batch, settings)
    assert_same_forward(ref, fast_fwd)


def test_bucketing_and_fast_path_leave_a_run_unchanged(tiny_rows, tmp_path):
    """One run with the fast path and length buckets, one with neither: the same adapters and eval figures."""
    from cot_transplant.runs import rundir
    from cot_transplant.train.loop import train

    tiny_rows["transform"] = _vary_lengths
    runs = {}
    for name, flags in (("fast", ()), ("ref", ("train.fast_path=off", "train.bucket_by_length=false"))):
        train(tiny_cfg(f"run.dir={tmp_path}", f"run.name={name}", "train.max_samples=4", "eval.splits=[test]",
                       *flags))
        runs[name] = [x for x in rundir.read_metrics(tmp_path / name) if x.get("split") == "test"]
    assert len(runs["fast"]) == len(runs["ref"]) >= 2
    for a, b in zip(runs["fast"], runs["ref"]):
        assert a["test/loss"] == pytest.approx(b["test/loss"], rel=1e-5)
        assert a["test/f_c"] == b["test/f_c"]


def test_uniform_dropout_keeps_with_probability_1_minus_p_and_rescales():
    torch.manual_seed(0)
    drop = fast.UniformDropout(0.25)
    x = torch.ones(200_000, requires_grad=True)
    y = drop(x)
    kept = y != 0
    # Binomial(200k, 0.75): sd ~ 0.001; 0.005 is five of them.
    assert abs(kept.float().mean().item() - 0.75) < 0.005
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 4 / 3))
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # d(x * mask / (1 - p)) / dx = mask / (1 - p) = y at x = 1
    drop.eval()
    assert drop(x) is x
    assert fast.UniformDropout(0.0)(x) is x


def test_threshold_is_p_on_the_32_bit_grid():
    assert fast.threshold(0.25) == 2 ** 30  # draws 0 .. 2^30 - 1 drop: exactly a quarter of 2^32
    assert fast.threshold(0.5) == 2 ** 31
    assert fast.threshold(0.0) == 0  # nothing is below 0: every element kept
    assert fast.threshold(0.05) == 214748365  # 0.05 * 2^32 = 214748364.8, rounded
    assert abs(fast.threshold(0.05) / 2 ** 32 - 0.05) <= 2 ** -33


def test_keep_masks_follow_torch_seed_and_keep_1_minus_p():
    torch.manual_seed(5)
    a = fast.keep_mask(torch.Size([3, 50_001]), 0.3, torch.device("cpu"))  # odd count: a half draw is unused
    b = fast.keep_mask(torch.Size([3, 50_001]), 0.3, torch.device("cpu"))
    torch.manual_seed(5)
    again = fast.keep_mask(torch.Size([3, 50_001]), 0.3, torch.device("cpu"))
    assert a.shape == (3, 50_001) and a.dtype == torch.bool
    assert torch.equal(a, again) and not torch.equal(a, b)  # torch's generator state decides the draws
    # Binomial(150k, 0.7): sd ~ 0.0012; 0.006 is five of them. Rows and columns both near 0.7 (no stripes).
    assert abs(a.float().mean().item() - 0.7) < 0.006
    assert (a.float().mean(1) - 0.7).abs().max() < 0.01
    assert abs(a[:, ::2].float().mean().item() - 0.7) < 0.01 and abs(a[:, 1::2].float().mean().item() - 0.7) < 0.01
    assert bool(fast.keep_mask(torch.Size([1000]), 0.0, torch.device("cpu")).all())


def test_fast_path_swaps_lora_dropout_only_for_its_step(tiny_rows):
    session = _session(tiny_rows, "lora.dropout=0.3")
    model = session.model

    def dropouts():
        return [d for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict)
                for d in m.lora_dropout.values()]

    before = dropouts()
    assert before and all(type(d) is torch.nn.Dropout for d in before)
    with fast.uniform_lora_dropout(model):
        inside = dropouts()
        assert all(isinstance(d, fast.UniformDropout) and d.p == 0.3 and d.training for d in inside)
        model.eval()  # a mode switch inside the block is kept on the way out
    after = dropouts()
    assert all(a is b for a, b in zip(after, before)) and not any(d.training for d in after)
    model.train()
    batch = _batch(session, 2)
    settings = session.settings
    # Training draws masks (two steps differ); evaluation draws none (the same as with dropout 0).
    torch.manual_seed(1)
    first = fast.train_forward_backward(model, batch, settings, 1.0)[0]
    second = fast.train_forward_backward(model, batch, settings, 1.0)[0]
    assert not torch.equal(first, second)
    assert all(a is b for a, b in zip(dropouts(), before))
    model.eval()
    with torch.no_grad():
        evaluated = fast.forward(model, batch, settings)[0]
        for d in dropouts():
            d.p = 0.0
        undropped = fast.forward(model, batch, settings)[0]
    torch.testing.assert_close(evaluated, undropped, rtol=0, atol=0)


def test_lora_dropout_sites_are_remembered_until_the_adapters_change(tiny_rows):
    from peft import LoraConfig

    model = _session(tiny_rows, "lora.dropout=0.3").model
    sites = lora_dropout_sites(model)
    walked = [(d, n) for m in model.modules() if isinstance(d := getattr(m, "lora_dropout", None), torch.nn.ModuleDict)
              for n in d]
    assert [(id(d), n) for d, n in sites] == [(id(d), n) for d, n in walked] and sites
    assert lora_dropout_sites(model) is sites  # the same model and adapters: no new walk
    model.add_adapter("extra", LoraConfig(r=2, target_modules=["q_proj"], lora_dropout=0.1))
    grown = lora_dropout_sites(model)
    assert grown is not sites and {n for _, n in grown} == {n for _, n in sites} | {"extra"}
    with fast.uniform_lora_dropout(model):  # the new adapter's dropouts are swapped too
        assert all(isinstance(d[n], fast.UniformDropout) for d, n in grown if n == "extra")


def test_fast_path_dropout_masks_survive_gradient_checkpointing(tiny_rows):
    """A checkpointed layer recomputes its forward in backward: it must draw the same masks from the same modules."""
    grads = {}
    for flag in ("false", "true"):
        session = _session(tiny_rows, "lora.dropout=0.3", f"model.gradient_checkpointing={flag}")
        session.model.train()
        session.model.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        fast.train_forward_backward(session.model, _batch(session, 2), session.settings, 1.0)
        grads[flag] = {n: p.grad.clone() for n, p in session.model.named_parameters() if p.grad is not None}
    assert grads["true"].keys() == grads["false"].keys() and grads["true"]
    for n, g in grads["false"].items():
        torch.testing.assert_close(grads["true"][n], g, rtol=1e-4, atol=1e-6 * g.abs().max().item(), msg=n)
