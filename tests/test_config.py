"""The config tree: defaults, YAML, dotted overrides, strict keys and types."""

import pytest

from cot_transplant.config import Config, load_config
from cot_transplant.errors import UserError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_match_the_original_optimizer():
    cfg = Config()
    assert (cfg.train.optim.lr, cfg.train.optim.eps, cfg.train.optim.weight_decay) == (3e-4, 1e-16, 0.0)
    assert (cfg.train.batch_size, cfg.train.accumulate_to, cfg.eval.every) == (2, 128, 128)


def test_file_then_overrides(tmp_path):
    path = write(tmp_path, "variant: text-only\ntrain:\n  optim:\n    lr: 1e-4\n")
    cfg = load_config(path, ["train.batch_size=4", "train.accumulate_to=8", "transplant.layers=[0,1]"])
    assert cfg.variant == "text-only"
    assert cfg.train.optim.lr == 1e-4  # YAML 1.1 reads 1e-4 as text; it must still be a float
    assert cfg.train.batch_size == 4 and cfg.transplant.layers == [0, 1]


def test_cli_beats_file(tmp_path):
    cfg = load_config(write(tmp_path, "seed: 3\n"), ["seed=5"])
    assert cfg.seed == 5


@pytest.mark.parametrize("text, overrides, message", [
    ("trian:\n  epochs: 1\n", [], "unknown config key 'trian' (did you mean 'train'?)"),
    ("", ["train.optim.lrr=1"], "unknown config key 'train.optim.lrr' (did you mean 'train.optim.lr'"[:40]),
    ("train:\n  batch_size: two\n", [], "config key 'train.batch_size': expected int, got 'two'"),
    ("variant: jiont\n", [], "config key 'variant'"),
    ("data:\n  mask: 3\n", [], "config key 'data.mask': expected bool"),
    ("- a\n- b\n", [], "expected a mapping"),
    ("", ["novalue"], "expected key=value"),
])
def test_bad_configs_name_the_key(tmp_path, text, overrides, message):
    with pytest.raises(UserError) as err:
        load_config(write(tmp_path, text), overrides)
    assert message in str(err.value)


def test_missing_and_directory(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="is a directory"):
        load_config(tmp_path)


def test_int_accepted_for_float_not_bool_for_int():
    assert load_config(None, ["train.epochs=2"]).train.epochs == 2.0
    with pytest.raises(UserError, match="expected int"):
        load_config(None, ["seed=true"])


def test_a_removed_key_is_refused_with_why_but_dropped_from_a_saved_run_config(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("eval:\n  n_boot: 1000\n")
    for args in ((path, []), (None, ["eval.n_boot=50"])):
        with pytest.raises(UserError, match=r"^config key 'eval.n_boot' was removed: .*Wilson"):
            load_config(*args)
    # A run directory written when the key existed still reads back (its config.yaml holds every key of its day).
    import yaml

    from cot_transplant.config import save_config, to_dict
    from cot_transplant.runs.rundir import FORMAT_VERSION, read_run_config

    save_config(Config(), tmp_path / "config.yaml")
    values = yaml.safe_load((tmp_path / "config.yaml").read_text())
    values["eval"]["n_boot"] = 2000
    values["_provenance"] = {"format_version": FORMAT_VERSION}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(values))
    assert to_dict(read_run_config(tmp_path)[0]) == to_dict(Config())
