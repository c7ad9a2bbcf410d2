"""Start-up check that the data's and the metric's class lists equal the head's flat class list
(label i of a dataset is class i of the head; the metric maps class i back to a Waymo type), so
a mismatch fails before training instead of training and evaluating with swapped labels."""
from __future__ import annotations

import importlib.util

import pytest
from mmengine.config import Config
from test_train_support import REPO, TINY_CONFIG



def _tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("tool, key", [
    ("train", "train_dataloader.dataset.class_names"),
    ("train", "val_dataloader.dataset.class_names"),
    ("test", "test_dataloader.dataset.class_names"),
])
def test_cli_fails_at_startup_naming_both_class_lists(tool, key, tmp_path, capsys):
    args = [str(TINY_CONFIG), "--work-dir", str(tmp_path), "--cfg-options", f"{key}=[PEDESTRIAN]"]
    if tool == "test":
        ckpt = tmp_path / "ckpt" / "model.pth"  # never opened: the check comes first
        ckpt.parent.mkdir()
        ckpt.write_bytes(b"")
        args.insert(1, str(ckpt))
    rc = _tool(tool).main(args)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert repr(key) in err and "['PEDESTRIAN']" in err and "['VEHICLE']" in err, err
    assert not list(tmp_path.glob("*.pth")) and not list(tmp_path.glob("*.log"))


def _cfg(**options) -> Config:
    cfg = Config.fromfile(str(TINY_CONFIG))
    cfg.merge_from_dict(options)
    return cfg


def test_metric_class_names_and_three_class_heads_are_checked():
    from detector.engine.runner import ConfigError, check_class_names

    groups = [["VEHICLE"], ["PEDESTRIAN", "CYCLIST"]]
    three = ["VEHICLE", "PEDESTRIAN", "CYCLIST"]
    ok = _cfg(**{"model.head.class_groups": groups, "train_dataloader.dataset.class_names": three,
                 "val_dataloader.dataset.class_names": three,
                 "test_dataloader.dataset.class_names": three, "val_evaluator.class_names": three})
    check_class_names(ok)  # the multi-group head's concatenation matches
    swapped = ["VEHICLE", "CYCLIST", "PEDESTRIAN"]
    ok.merge_from_dict({"val_evaluator.class_names": swapped})
    with pytest.raises(ConfigError, match=r"'val_evaluator.class_names' = \['VEHICLE', 'CYCLIST', "
                                          r"'PEDESTRIAN'\] does not match the model's classes "
                                          r"\['VEHICLE', 'PEDESTRIAN', 'CYCLIST'\]"):
        check_class_names(ok)
    # A dataset that leaves class_names out has the dataset's default, VEHICLE: against a
    # three-class head that is a mismatch too.
    bare = _cfg(**{"model.head.class_groups": groups})
    del bare.train_dataloader.dataset["class_names"]
    with pytest.raises(ConfigError, match=r"train_dataloader.dataset.class_names' = \['VEHICLE'\]"):
        check_class_names(bare)
    # Wrapped datasets are looked through.
    wrapped = _cfg()
    wrapped.train_dataloader.dataset = dict(type="RepeatDataset", times=2, dataset=dict(
        wrapped.train_dataloader.dataset, class_names=["CYCLIST"]))
    with pytest.raises(ConfigError, match=r"train_dataloader.dataset.dataset.class_names"):
        check_class_names(wrapped)
