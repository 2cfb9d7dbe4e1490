"""Packaged recipes by name: --config aerial-cpu, the old data/ paths, bad names, --help."""

import pytest
import yaml

from detect.config import DetectConfig
from detect.config.recipes import RECIPES, recipe_path


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_is_a_valid_config_inside_the_package(name):
    path = recipe_path(name)
    assert path.is_file() and path.parent.name == "recipes" and path.parent.parent.name == "detect"
    assert recipe_path(name.replace("-", "_")) == path
    cfg = DetectConfig.from_dict(yaml.safe_load(path.read_text()))
    assert cfg.model.backbone in ("resnet18", "efficientnet_lite0")


def test_a_path_stays_a_path_and_the_old_data_path_says_where_the_recipe_went(tmp_path, capsys):
    mine = tmp_path / "mine.yaml"
    mine.write_text("train: {epochs: 2}\n")
    assert recipe_path(mine) == mine and capsys.readouterr().err == ""
    assert recipe_path("data/aerial_cpu.yaml") == recipe_path("aerial-cpu")
    assert "using the packaged recipe aerial-cpu" in capsys.readouterr().err
    assert recipe_path("data/aerial_cpu.yaml", note=False) == recipe_path("aerial-cpu")
    assert capsys.readouterr().err == ""


def test_a_bad_name_is_refused_with_the_names_and_a_suggestion():
    with pytest.raises(FileNotFoundError, match=r"not a recipe name \(aerial-cpu, aerial-pretrained-cpu\); "
                                                r"did you mean aerial-cpu\?"):
        recipe_path("aerial-cpuu")
    with pytest.raises(FileNotFoundError, match="nothing.yaml: no such file"):
        recipe_path("nothing.yaml")


def test_the_cli_lists_the_recipes_and_refuses_a_bad_one_before_anything_loads(capsys):
    from detect.cli.main import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in RECIPES)
    assert main(["train", "--train-ann", "data/sample/annotations.json", "--train-images", "data/sample/images",
                 "--config", "aerial-cpuu", "--out", "never_written"]) == 2
    assert "did you mean aerial-cpu?" in capsys.readouterr().err
    from pathlib import Path

    assert not Path("never_written").exists()
