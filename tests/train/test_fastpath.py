"""The fast path equals the reference step: loss, log P1 - log P2, every LoRA gradient of both adapters."""

import dataclasses

import pytest
import torch

from cot_transplant.config import VARIANTS
from cot_transplant.train import fastpath, select, step
from cot_transplant.train.adapters import adapter_params, lora_dropout_sites, trainable
from cot_transplant.train.batches import collate
from cot_transplant.train.fastpath.plan import attention_chunks, pack_arguer, plan_chooser
from cot_transplant.train.setup import setup
from train_helpers import tiny_cfg


def _vary_lengths(rows):
    """Questions and arguments of clearly different lengths, so one batch holds a lot of padding."""
    out = []
    for i, r in enumerate(rows):
        k = i % 3
        out.append(dataclasses.replace(
            r, question=r.question + " Count carefully." * 4 * k,
            correct_argument=r.correct_argument + " Check: ok." * 3 * k,
            incorrect_argument=r.incorrect_argument + " Check: fine." * (3 - k)))
    return out


def _session(tiny_rows, *overrides):
    tiny_rows["transform"] = _vary_lengths
    session = setup(tiny_cfg(*overrides))
    # Nonzero LoRA B in both adapters (different draws), so each adapter changes what the other sees.
    torch.manual_seed(3)
    for name in ("arguer", "chooser", "shared"):
        for n, p in adapter_params(session.model, name):
            if "lora_B" in n:
                p.data.normal_(0, 0.05)
    return session


def _batch(session, n=3):
    ex = sorted(session.examples["train"], key=lambda e: e.n_tokens)
    rows = [ex[0], ex[-1], ex[len(ex) // 2]][:n]
    assert len({e.n_tokens for e in rows}) == len(rows)
    batch = collate(rows, session.tokenizer.pad_token_id, session.cfg.transplant.fraction)
    assert (batch.chooser_mask == 0).any() and (batch.arguer_mask == 0).any()
    return batch


def _run(fn, session, batch, settings):
    session.model.zero_grad(set_to_none=True)
    loss, p1, p2 = fn(session.model, batch, settings, 0.5)
    grads = {n: p.grad.clone() for n, p in session.model.named_parameters() if p.grad is not None}
    return loss, p1, p2, grads


def assert_same_forward(ref, fast, what=""):
    """Loss, log P1, log P2 and log P1 - log P2 at a tight tolerance.

    The tiny models' probabilities are ~2e-5, so a loose absolute tolerance on P1/P2 passes almost
    anything; their logs are O(10) and log P1 - log P2 is O(1): a wrong key rotation shows there.
    """
    loss_r, p1_r, p2_r = ref[:3]
    loss_f, p1_f, p2_f = fast[:3]
    torch.testing.assert_close(loss_f, loss_r, rtol=1e-5, atol=1e-5, msg=f"{what} loss")
    for a, b, name in ((p1_r, p1_f, "log P1"), (p2_r, p2_f, "log P2")):
        torch.testing.assert_close(b.log(), a.log(), rtol=1e-5, atol=1e-5, msg=f"{what} {name}")
    torch.testing.assert_close(p1_f.log() - p2_f.log(), p1_r.log() - p2_r.log(), rtol=1e-4, atol=1e-5,
                               msg=f"{what} log P1 - log P2")


def assert_fast_equals_reference(session, batch, settings=None):
    settings = settings or session.settings
    ref = _run(step.train_forward_backward, session, batch, settings)
    fast = _run(fastpath.train_forward_backward, session, batch, settings)
    assert_same_forward(ref, fast, "train")
    assert ref[3].keys() == fast[3].keys()
    names = list(ref[3])
    assert all(any(f".{a}." in n for n in names) for a in trainable(session.cfg.variant))
    for n in names:
        assert ref[3][n].abs().max() > 0, n
        torch.testing.assert_close(fast[3][n], ref[3][n], rtol=1e-4, atol=1e-5 * ref[3][n].abs().max().item(),
                                   msg=n)
    # The eval forward too, without gradients.
    with torch.no_grad():
        ref_fwd = step.forward(session.model, batch, settings)
        fast_fwd = fastpath.forward(session.model, batch, settings)
    assert_same_forward(ref_fwd, fast_fwd, "eval")
    for k, t in ref_fwd[3].kv.tensors.items():
        torch.testing.assert_close(fast_fwd[3].kv.tensors[k], t, rtol=1e-4, atol=1e-6)


def test_every_variant_is_proven_for_the_fast_path_or_takes_another_step():
    assert set(select.FAST_VARIANTS) | {"text-only", "adversarial"} == set(VARIANTS)


@pytest.mark.parametrize("variant", select.FAST_VARIANTS)
def test_fast_path_equals_reference_for_every_variant(tiny_rows, variant):
    session = _session(tiny_rows, f"variant={variant}")
    assert select.choose(session.model, session.settings).path == select.FAST
    assert_fast_equals_reference(session, _batch(session, 2))


def test_forward_check_catches_a_one_position_rope_shift(tiny_rows, monkeypatch):
    """A planted bug: every transplanted key rotated at the position one later than its own."""
    session = _session(tiny_rows)
    batch = _batch(session, 2)
    with torch.no_grad():
        ref = step.forward(session.model, batch, session.settings)
        assert_same_forward(ref, fastpath.forward(session.model, batch, session.settings))
        real_plan = fastpath.step.plan_chooser
        monkeypatch.setattr(fastpath.step, "plan_chooser",
                            lambda b: dataclasses.replace(real_plan(b), extra_cols=real_plan(b).extra_cols + 1))
        shifted = fastpath.forward(session.model, batch, session.settings)
    with pytest.raises(AssertionError, match="log P1"):
        assert_same_forward(ref, shifted)


@pytest.mark.parametrize("planted", ["no earlier keys in the last layer", "last layer's keys one position late"])
def test_forward_check_catches_a_wrong_last_layer(tiny_rows, monkeypatch, planted):
    """The chooser's last layer runs its final query alone; planted bugs in what that query reads must show."""
    import cot_transplant.train.fastpath.layers as layers

    session = _session(tiny_rows)
    batch = _batch(session, 2)
    real_tail = layers._tail_kv

    def wrong_tail(layer, hidden, cos, sin, rotate_half):
        if planted.startswith("no earlier"):  # the earlier tokens' own keys left out (values zero, keys far off)
            k, v = real_tail(layer, hidden, cos, sin, rotate_half)
            return k * 0 - 1e4, v * 0
        return real_tail(layer, hidden, torch.roll(cos, 1, dims=1), torch.roll(sin, 1, dims=1), rotate_half)

    with torch.no_grad():
        ref = step.forward(session.model, batch, session.settings)
        monkeypatch.setattr(layers, "_tail_kv", wrong_tail)
        wrong = fastpath.forward(session.model, batch, session.settings)
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
                                  ("last k", layer_list[-1].self_attn.k_proj), ("norm", fastpath.layers.body(
                                      session.model).norm), ("first mlp", layer_list[0].mlp))]
    try:
        with torch.no_grad():
            fastpath.forward(session.model, batch, session.settings)
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
    assert (session.settings.fast_block, session.settings.fast_gap) == (chunk, gap)
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
    ((), select.FAST, "exact fast path"),
    (("train.fast_path=off",), select.REFERENCE, "train.fast_path=off"),
    (("transplant.site=k",), select.REFERENCE, "transplant.site=k"),
    (("transplant.layers=[1]",), select.REFERENCE, "transplant.layers"),
    (("variant=text-only",), select.REFERENCE, "text-only"),
    (("variant=adversarial",), select.ADVERSARIAL, "adversarial"),
])
def test_the_selector_picks_a_step_and_says_why(tiny_rows, capsys, overrides, path, reason):
    session = _session(tiny_rows, *overrides)
    choice = select.announce(session.model, session.settings)
    assert (choice.path, reason in choice.reason) == (path, True)
    err = capsys.readouterr().err
    assert err.count("cot-transplant: note: step") == 1 and reason in err


def test_a_variant_off_the_allow_list_takes_the_reference(tiny_rows, monkeypatch):
    session = _session(tiny_rows)
    monkeypatch.setattr(select, "FAST_VARIANTS", ("frozen-arguer",))
    choice = select.choose(session.model, session.settings)
    assert choice.path == select.REFERENCE and "not proven" in choice.reason


def test_the_selected_step_runs(tiny_rows, monkeypatch):
    session = _session(tiny_rows)
    calls = []
    monkeypatch.setattr(fastpath, "train_forward_backward", lambda *a, **k: calls.append("fast") or (None,) * 3)
    monkeypatch.setattr(step, "train_forward_backward", lambda *a, **k: calls.append("reference") or (None,) * 3)
    batch = _batch(session, 2)
    select.forward_backward(session.model, batch, session.settings, 1.0)
    select.forward_backward(session.model, batch, dataclasses.replace(session.settings, fast_path="off"), 1.0)
    assert calls == ["fast", "reference"]


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
    from cot_transplant.analysis.truncation import hide_tails

    session = _session(tiny_rows)
    ex = sorted(session.examples["train"], key=lambda e: e.n_tokens)[:2]
    batch = collate(ex, session.tokenizer.pad_token_id, 0.5)
    hide_tails(batch.chooser_mask, collate(ex, session.tokenizer.pad_token_id, 1.0).chooser_spans, 0.5)
    settings = session.settings
    with torch.no_grad():
        ref, fast = step.forward(session.model, batch, settings), fastpath.forward(session.model, batch, settings)
    assert_same_forward(ref, fast)


def test_bucketing_and_fast_path_leave_a_run_unchanged(tiny_rows, tmp_path):
    """One run with the fast path and length buckets, one with neither: the same adapters and eval figures."""
    from cot_transplant.train import rundir
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
    drop = fastpath.UniformDropout(0.25)
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
    assert fastpath.UniformDropout(0.0)(x) is x


def test_threshold_is_p_on_the_32_bit_grid():
    assert fastpath.threshold(0.25) == 2 ** 30  # draws 0 .. 2^30 - 1 drop: exactly a quarter of 2^32
    assert fastpath.threshold(0.5) == 2 ** 31
    assert fastpath.threshold(0.0) == 0  # nothing is below 0: every element kept
    assert fastpath.threshold(0.05) == 214748365  # 0.05 * 2^32 = 214748364.8, rounded
    assert abs(fastpath.threshold(0.05) / 2 ** 32 - 0.05) <= 2 ** -33


def test_keep_masks_follow_torch_seed_and_keep_1_minus_p():
    torch.manual_seed(5)
    a = fastpath.keep_mask(torch.Size([3, 50_001]), 0.3, torch.device("cpu"))  # odd count: a half draw is unused
    b = fastpath.keep_mask(torch.Size([3, 50_001]), 0.3, torch.device("cpu"))
    torch.manual_seed(5)
    again = fastpath.keep_mask(torch.Size([3, 50_001]), 0.3, torch.device("cpu"))
    assert a.shape == (3, 50_001) and a.dtype == torch.bool
    assert torch.equal(a, again) and not torch.equal(a, b)  # torch's generator state decides the draws
    # Binomial(150k, 0.7): sd ~ 0.0012; 0.006 is five of them. Rows and columns both near 0.7 (no stripes).
    assert abs(a.float().mean().item() - 0.7) < 0.006
    assert (a.float().mean(1) - 0.7).abs().max() < 0.01
    assert abs(a[:, ::2].float().mean().item() - 0.7) < 0.01 and abs(a[:, 1::2].float().mean().item() - 0.7) < 0.01
    assert bool(fastpath.keep_mask(torch.Size([1000]), 0.0, torch.device("cpu")).all())


def test_fast_path_swaps_lora_dropout_only_for_its_step(tiny_rows):
    session = _session(tiny_rows, "lora.dropout=0.3")
    model = session.model

    def dropouts():
        return [d for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict)
                for d in m.lora_dropout.values()]

    before = dropouts()
    assert before and all(type(d) is torch.nn.Dropout for d in before)
    with fastpath.uniform_lora_dropout(model):
        inside = dropouts()
        assert all(isinstance(d, fastpath.UniformDropout) and d.p == 0.3 and d.training for d in inside)
        model.eval()  # a mode switch inside the block is kept on the way out
    after = dropouts()
    assert all(a is b for a, b in zip(after, before)) and not any(d.training for d in after)
    model.train()
    batch = _batch(session, 2)
    settings = session.settings
    # Training draws masks (two steps differ); evaluation draws none (the same as with dropout 0).
    torch.manual_seed(1)
    first = fastpath.train_forward_backward(model, batch, settings, 1.0)[0]
    second = fastpath.train_forward_backward(model, batch, settings, 1.0)[0]
    assert not torch.equal(first, second)
    assert all(a is b for a, b in zip(dropouts(), before))
    model.eval()
    with torch.no_grad():
        evaluated = fastpath.forward(model, batch, settings)[0]
        for d in dropouts():
            d.p = 0.0
        undropped = fastpath.forward(model, batch, settings)[0]
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
    with fastpath.uniform_lora_dropout(model):  # the new adapter's dropouts are swapped too
        assert all(isinstance(d[n], fastpath.UniformDropout) for d, n in grown if n == "extra")


def test_fast_path_dropout_masks_survive_gradient_checkpointing(tiny_rows):
    """A checkpointed layer recomputes its forward in backward: it must draw the same masks from the same modules."""
    grads = {}
    for flag in ("false", "true"):
        session = _session(tiny_rows, "lora.dropout=0.3", f"model.gradient_checkpointing={flag}")
        session.model.train()
        session.model.zero_grad(set_to_none=True)
        torch.manual_seed(5)
        fastpath.train_forward_backward(session.model, _batch(session, 2), session.settings, 1.0)
        grads[flag] = {n: p.grad.clone() for n, p in session.model.named_parameters() if p.grad is not None}
    assert grads["true"].keys() == grads["false"].keys() and grads["true"]
    for n, g in grads["false"].items():
        torch.testing.assert_close(grads["true"][n], g, rtol=1e-4, atol=1e-6 * g.abs().max().item(), msg=n)
