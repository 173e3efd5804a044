"""The one validated config: sources, precedence, and the messages for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from action_recognition.config import Config, load_config, overrides_from_env, overrides_from_pairs
from action_recognition.errors import ConfigError


def test_defaults_plan_the_original_study() -> None:
    cfg = load_config(environ={})
    assert isinstance(cfg, Config)
    assert cfg.plan.class_contains == "dancing"
    assert cfg.plan.dataset == "dance15"


def test_precedence_yaml_env_set_extra(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("plan:\n  per_class: 10\n  seed: 1\n  dataset: from-yaml\nstorage:\n  uri: /tmp/x\n")
    cfg = load_config(
        path,
        environ={"AR__PLAN__SEED": "2", "AR__PLAN__DATASET": "from-env", "UNRELATED": "1"},
        overrides=["plan.dataset=from-set", "plan.annotations=[a.csv, b.csv]"],
        extra={"storage": {"uri": "s3://bucket/p"}},
    )
    assert cfg.plan.per_class == 10
    assert cfg.plan.seed == 2
    assert cfg.plan.dataset == "from-set"
    assert cfg.plan.annotations == ["a.csv", "b.csv"]
    assert cfg.storage.uri == "s3://bucket/p"


def test_out_of_range_names_the_valid_range() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(environ={}, overrides=["plan.per_class=0", "plan.val_ratio=0.7"])
    text = str(err.value)
    assert "plan.per_class = 0: out of range, valid range 1 <= value <= 1000000" in text
    assert "plan.val_ratio = 0.7: out of range, valid range 0.0 <= value <= 0.5" in text


def test_unknown_keys_are_rejected_with_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"plan.per_clas: unknown key; valid keys here: .*per_class"):
        load_config(environ={}, overrides=["plan.per_clas=3"])
    with pytest.raises(ConfigError, match=r"nosuchsection: unknown key; valid keys here: .*plan.*storage"):
        load_config(environ={"AR__NOSUCHSECTION__X": "1"})


def test_the_mlflow_server_is_the_tracking_section_s() -> None:
    """One home: ``tracking.uri``, read by every step that talks to MLflow; the key's old place says where it
    went."""
    cfg = load_config(environ={"AR__TRACKING__URI": "http://mlflow:5000"})
    assert cfg.tracking.uri == "http://mlflow:5000" and "tracking_uri" not in type(cfg.train).model_fields
    with pytest.raises(ConfigError, match=r"train.tracking_uri moved to tracking.uri"):
        load_config(environ={}, overrides=["train.tracking_uri=http://mlflow:5000"])


def test_bad_sources_say_where() -> None:
    with pytest.raises(ConfigError, match="expected key=value"):
        overrides_from_pairs(["plan.per_class"])
    with pytest.raises(ConfigError, match="environment variable AR__PLAN__BAD-KEY"):
        overrides_from_env({"AR__PLAN__BAD-KEY": "1"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/config.yaml", environ={})


def test_yaml_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(path, environ={})


def test_exactly_one_class_selector() -> None:
    with pytest.raises(ConfigError, match="exactly one class selector"):
        load_config(environ={}, overrides=["plan.all_classes=true"])
    cfg = load_config(environ={}, overrides=["plan.all_classes=true", "plan.class_contains=null"])
    assert cfg.plan.all_classes


@pytest.mark.parametrize("name", ["Dance", "../x", "a/b", "", "x" * 65, "-lead", "sp ace"])
def test_dataset_names_are_safe_for_keys(name: str) -> None:
    with pytest.raises(ConfigError, match=r"plan.dataset"):
        load_config(environ={}, extra={"plan": {"dataset": name}})


@pytest.mark.parametrize("uri", ["ftp://host/x", "s3://ab/x", "gs://bucket/x"])
def test_storage_uri_schemes(uri: str) -> None:
    with pytest.raises(ConfigError, match=r"storage\.uri"):
        load_config(environ={}, extra={"storage": {"uri": uri}})


def test_config_dumps_to_json_for_mlflow() -> None:
    dumped = load_config(environ={}).model_dump(mode="json")
    assert dumped["plan"]["per_class"] == 200, "the one default: the CLI, the config and the DAG form agree"
    assert {"storage", "plan", "download", "clip"} <= set(dumped)


def test_untrained_pose_keeps_what_it_finds_unless_told() -> None:
    """Random weights never reach the default threshold: an untrained run with it would find nobody (the
    compose stack's first run did exactly that), so untrained lowers conf unless conf is given."""
    from action_recognition.config import UNTRAINED_CONF, load_config

    assert load_config(environ={}).pose.conf == 0.25
    assert load_config(environ={}, overrides=["pose.untrained=true"]).pose.conf == UNTRAINED_CONF
    assert load_config(environ={"AR__POSE__UNTRAINED": "true"}).pose.conf == UNTRAINED_CONF
    given = load_config(environ={}, overrides=["pose.untrained=true", "pose.conf=0.3"])
    assert given.pose.conf == 0.3


def test_each_family_s_architecture_is_a_config_field() -> None:
    """The trigger form's keypoint_arch and rgb_arch set train.keypoint_arch and train.rgb_arch (validated
    against their family); an explicit train.arch wins for any dataset."""
    from action_recognition.config import TrainConfig

    assert (
        TrainConfig().arch_for("keypoints") == "ddnet" and TrainConfig().arch_for("frames") == "tsn-resnet18"
    )
    chosen = TrainConfig(keypoint_arch="stgcn", rgb_arch="r2plus1d-18")
    assert (chosen.arch_for("keypoints"), chosen.arch_for("frames")) == ("stgcn", "r2plus1d-18")
    assert TrainConfig(arch="lstm", keypoint_arch="stgcn").arch_for("keypoints") == "lstm"
    with pytest.raises(ValueError, match="the choices are ddnet, ddnet-2s, stgcn, lstm"):
        TrainConfig(keypoint_arch="tsn-resnet18")


def test_the_auto_recipe_depends_on_the_family_and_the_size() -> None:
    """recipe=auto (the default): fixed for a small keypoint set, one model selected on val for a large one,
    refit for frames; a recipe that was set is kept. The reason is what the run records."""
    from action_recognition.config import TrainConfig

    auto = TrainConfig(auto_fixed_max_clips=500)
    assert auto.recipe_for("keypoints", 430) == ("fixed", "auto: 430 keypoint train+val clips <= 500")
    assert auto.recipe_for("keypoints", 501)[0] == "early_stop"
    assert auto.recipe_for("frames", 10)[0] == "refit"
    assert TrainConfig(recipe="refit").recipe_for("keypoints", 10) == ("refit", "recipe=refit was set")
    from action_recognition.capacity import trainings_per_model

    runs = [
        trainings_per_model(auto, k, n) for k, n in [("keypoints", 1), ("keypoints", 9999), ("frames", 1)]
    ]
    assert runs == [3, 1, 4]


def test_one_naming_rule_for_models_and_datasets() -> None:
    from action_recognition.layout import dataset_name_of
    from action_recognition.names import model_name, split_model_name

    assert model_name("dance15", "keypoint") == "dance15-keypoint"
    assert split_model_name("dance-15-video") == ("dance-15", "video")
    assert split_model_name("nofamily") == ("", "")
    assert dataset_name_of("s3://b/p/datasets/dance15/keypoints-0123abcd.npz") == "dance15"
    assert dataset_name_of("/tmp/synth6-keypoints.npz") == "synth6"
