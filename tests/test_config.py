"""Config layering and errors for unknown keys, as train.py uses them."""
from __future__ import annotations

import pytest

from clipfit.errors import ConfigValueError
from clipfit.training.config import ConfigKeyError, get_cfg, merge_from_file, merge_from_list
from clipfit.training.cli import build_parser, setup_cfg


def test_project_keys_and_dassl_defaults():
    cfg = get_cfg()
    assert cfg.OPTIM.NAME == "adam" and cfg.OPTIM.WARMUP_CONS_LR == 1e-5  # Dassl's defaults
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "all" and cfg.MODEL.BACKBONE.PATH == ""
    assert cfg.TRAINER.CLIPFIT.BETA == 8.0 and cfg.TRAINER.COOP.N_CTX == 16


def test_unknown_opt_names_closest_key():
    cfg = get_cfg()
    with pytest.raises(ConfigKeyError, match=r"DATASET\.NUM_SHOT .*Did you mean DATASET\.NUM_SHOTS\?"):
        merge_from_list(cfg, ["DATASET.NUM_SHOT", "16"])
    with pytest.raises(ValueError, match="KEY VALUE pairs"):
        merge_from_list(cfg, ["DATASET.NUM_SHOTS"])


def test_an_integer_for_a_float_key_is_that_float_and_other_types_are_a_clear_error(tmp_path):
    cfg = get_cfg()
    merge_from_list(cfg, ["TRAINER.CLIPFIT.BETA", "16", "OPTIM.MAX_EPOCH", "3"])  # yacs alone refuses BETA 16
    assert cfg.TRAINER.CLIPFIT.BETA == 16.0 and isinstance(cfg.TRAINER.CLIPFIT.BETA, float)
    with pytest.raises(ConfigValueError, match=r"TRAINER\.CLIPFIT\.BETA in command-line opts is abc \(type str\), "
                                               r"but the key takes values of type float \(default 16\.0\)"):
        merge_from_list(cfg, ["TRAINER.CLIPFIT.BETA", "abc"])
    f = tmp_path / "epochs.yaml"
    f.write_text("OPTIM:\n  MAX_EPOCH: 2.5\n")
    with pytest.raises(ConfigValueError, match=r"OPTIM\.MAX_EPOCH in .*epochs\.yaml is 2\.5 \(type float\)"):
        merge_from_file(cfg, str(f))


def test_unknown_file_key_names_file_and_closest_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("OPTIM:\n  MAX_EPOCHS: 3\n")
    with pytest.raises(ConfigKeyError) as e:
        merge_from_file(get_cfg(), str(f))
    assert "OPTIM.MAX_EPOCHS" in str(e.value) and "bad.yaml" in str(e.value)
    assert "OPTIM.MAX_EPOCH?" in str(e.value)


def test_layering_order(tmp_path):
    d = tmp_path / "d.yaml"
    d.write_text("DATASET:\n  NAME: A\nOPTIM:\n  MAX_EPOCH: 3\n")
    t = tmp_path / "t.yaml"
    t.write_text("OPTIM:\n  MAX_EPOCH: 5\n  LR: 0.1\n")
    args = build_parser().parse_args([
        "--dataset-config-file", str(d), "--config-file", str(t), "--trainer", "X", "--seed", "0",
        "OPTIM.LR", "0.5"])
    cfg = setup_cfg(args)
    assert cfg.DATASET.NAME == "A" and cfg.OPTIM.MAX_EPOCH == 5  # trainer config after dataset
    assert cfg.OPTIM.LR == 0.5 and cfg.TRAINER.NAME == "X" and cfg.SEED == 0  # opts last


def test_missing_config_file_is_named():
    args = build_parser().parse_args(["--config-file", "nope/missing.yaml"])
    with pytest.raises(FileNotFoundError, match="nope/missing.yaml"):
        setup_cfg(args)


def test_kgcoop_config_with_ctx_init_true_runs_unchanged(tmp_path):
    """KgCoOp's own configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml says ``CTX_INIT: True``,
    which its code reads as "a photo of a"; the log says so."""
    ours = open("configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml").read()
    theirs = tmp_path / "vit_b16_ep100_ctxv1.yaml"
    theirs.write_text(ours.replace('CTX_INIT: "a photo of a"', "CTX_INIT: True"))
    assert "CTX_INIT: True" in theirs.read_text()
    notes = []
    cfg = setup_cfg(build_parser().parse_args(["--trainer", "KgCoOp", "--config-file", str(theirs)]), notes)
    assert cfg.TRAINER.COOP.CTX_INIT == "a photo of a"
    assert f"TRAINER.COOP.CTX_INIT True (in {theirs}) read as 'a photo of a', as KgCoOp's code reads it" in notes
    notes = []
    cfg = setup_cfg(build_parser().parse_args(
        ["--trainer", "KgCoOp", "--config-file", str(theirs), "TRAINER.COOP.CTX_INIT", "False"]), notes)
    assert cfg.TRAINER.COOP.CTX_INIT == "" and "TRAINER.COOP.CTX_INIT False (in command-line opts) read as ''" in " ".join(notes)
    cfg = setup_cfg(build_parser().parse_args(["TRAINER.COOP.CTX_INIT", "a_photo_of"]))
    assert cfg.TRAINER.COOP.CTX_INIT == "a_photo_of"  # a phrase stays a phrase
    notes = []  # ProGrad's code reads True as its dataset prompt: "template" here
    cfg = setup_cfg(build_parser().parse_args(["--trainer", "ProGrad", "--config-file", str(theirs)]), notes)
    assert cfg.TRAINER.COOP.CTX_INIT == "template"
    assert f"TRAINER.COOP.CTX_INIT True (in {theirs}) read as 'template', as ProGrad's code reads it" in notes


def test_every_trainer_key_is_an_option_field_with_its_default():
    """TRAINER.<NODE>: the fields of the method's option classes (clipfit.methods.options) and the
    trainer's own keys (PREC, ...), nothing else; the defaults are the fields' and read back."""
    from yacs.config import CfgNode

    from clipfit.methods.options import NODE_OPTIONS, config_fields, default_of
    from clipfit.training.config import TRAINER_NODE_KEYS, project_keys

    trainer = project_keys().TRAINER
    nodes = [name for name, value in trainer.items() if isinstance(value, CfgNode)]
    assert sorted(nodes) == sorted(NODE_OPTIONS)
    for node in nodes:
        fields = {k: f for cls in NODE_OPTIONS[node] for k, f in config_fields(cls).items()}
        own = set(TRAINER_NODE_KEYS.get(node, {}))
        assert set(trainer[node]) == set(fields) | own and not set(fields) & own, node
        for k, f in fields.items():
            default = default_of(f)
            assert trainer[node][k] == (list(default) if isinstance(default, tuple) else default), f"{node}.{k}"
        for cls in NODE_OPTIONS[node]:
            assert cls.from_cfg(trainer[node]) == cls(), cls.__name__  # keyword construction, same types


def test_method_constructors_take_their_defaults_from_the_options():
    """No second home: a constructor parameter named like an option field has the field's default."""
    import inspect

    from clipfit.methods import options
    from clipfit.methods.clip_adapter import CLIPAdapterModel, ResidualAdapter
    from clipfit.methods.cocoop import CoCoOpModel, CoCoOpPromptLearner
    from clipfit.methods.coop import KgCoOpModel
    from clipfit.methods.maple import MaPLeModel, MaPLePromptLearner
    from clipfit.methods.prograd import ProGradModel

    pairs = [(CLIPAdapterModel, options.CLIPAdapterSettings), (ResidualAdapter, options.CLIPAdapterSettings),
             (CoCoOpModel, options.CoCoOpSettings), (CoCoOpPromptLearner, options.CoCoOpSettings),
             (KgCoOpModel, options.KgCoOpSettings), (MaPLeModel, options.MaPLeSettings),
             (MaPLePromptLearner, options.MaPLeSettings), (ProGradModel, options.ProGradSettings)]
    for constructor, cls in pairs:
        params = inspect.signature(constructor).parameters
        named = [f for f in options.config_fields(cls).values() if f.name in params]
        assert named, constructor.__name__
        for f in named:
            assert params[f.name].default == options.default_of(f), f"{constructor.__name__}({f.name})"
