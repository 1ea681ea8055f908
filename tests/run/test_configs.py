"""The configs a user composes: every option Hydra offers is a real choice, each data option and recipe gets every
key it needs, and the keys several files share are written once (conf/base_*.yaml), so each file holds only what
makes it different."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from conftest import CONF, compose_config
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from difflab.data import ImageDataModule
from difflab.run.resolvers import register_resolvers

ENTRY_CONFIGS = ("train", "sample", "eval", "export")
DATAMODULE_ARGUMENTS = set(inspect.signature(ImageDataModule.__init__).parameters) - {"self"}
register_resolvers()  # ${project_root:} in paths.data_dir, which data.root reads


def offered(group: str) -> list[str]:
    """The options Hydra lists for a group: what --help shows and a mistyped option's error suggests."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return GlobalHydra.instance().config_loader().get_group_options(group)


def config_folders() -> list[str]:
    """The top-level groups Hydra finds under conf/ (--help lists each that holds a config)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return GlobalHydra.instance().config_loader().list_groups("")


def chosen_groups(entry: str) -> set[str]:
    """The top-level groups an entry config's defaults list chooses from."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=entry, return_hydra_config=True)
    return {group.split("/")[0] for group in cfg.hydra.runtime.choices}


def written(path: Path) -> set[tuple[str, str]]:
    """The settings a config file writes itself, as (dotted key, value as JSON): its body, not its defaults list."""
    body = OmegaConf.to_container(OmegaConf.load(path))
    body.pop("defaults", None)
    settings: set[tuple[str, str]] = set()

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            settings.add((prefix, json.dumps(node)))

    walk(body, "")
    return settings


def extended(path: Path) -> list[Path]:
    """The config files `path` extends, through its defaults list and theirs (group choices are not files it
    extends: a recipe that picks data=cifar10 still sets what it wants of it)."""
    entries = OmegaConf.to_container(OmegaConf.load(path)).get("defaults", [])
    parents = []
    for entry in entries:
        if not isinstance(entry, str) or entry == "_self_":
            continue
        name = entry.split("@")[0]
        parent = CONF / f"{name[1:]}.yaml" if name.startswith("/") else path.parent / f"{name}.yaml"
        parents += [parent, *extended(parent)]
    return parents


def option_file(group: str, name: str) -> Path:
    return CONF / group / f"{name}.yaml"


def test_every_config_folder_is_a_group_an_entry_point_chooses():
    """A folder of shared keys would show in --help as a group to pick from; the bases live beside the entry
    configs instead, where no listing offers them."""
    chosen = set().union(*(chosen_groups(entry) for entry in ENTRY_CONFIGS))
    assert set(config_folders()) <= chosen, set(config_folders()) - chosen


@pytest.mark.parametrize("name", offered("data"))
def test_every_data_option_offered_is_a_dataset_with_every_key(name: str, tmp_path: Path):
    cfg = compose_config("train", [f"data={name}"], tmp_path)
    assert cfg.data.dataset == name  # a real dataset, not the base of the others
    assert set(cfg.data) - {"_target_"} == DATAMODULE_ARGUMENTS
    # Only a folder's root is the user's to give.
    assert set(OmegaConf.missing_keys(cfg.data)) <= {"data.root"}
    # The shared keys came through from conf/base_data.yaml.
    assert cfg.data.batch_size == 64 and isinstance(cfg.data.num_workers, int) and cfg.data.seed == cfg.seed
    assert cfg.data.condition is None and (cfg.data.sr_factor, cfg.data.sr_noise) == (4, 0.0)
    assert (cfg.data.text_encoder, cfg.data.max_tokens, cfg.data.captions) == ("all-MiniLM-L6-v2", 16, None)


@pytest.mark.parametrize("name", offered("experiment"))
def test_every_recipe_offered_names_itself_and_gets_every_data_key(name: str, tmp_path: Path):
    cfg = compose_config("train", [f"experiment={name}"], tmp_path)
    assert name in cfg.tags  # a recipe, not a base of recipes
    assert set(cfg.data) - {"_target_"} == DATAMODULE_ARGUMENTS and not OmegaConf.missing_keys(cfg.data)
    assert cfg.data.text_encoder == "all-MiniLM-L6-v2" and cfg.data.seed == cfg.seed


def test_keys_every_data_option_shares_are_written_once():
    everywhere = set.intersection(*(written(option_file("data", name)) for name in offered("data")))
    assert not everywhere, f"written in every conf/data option: {sorted(everywhere)}"


@pytest.mark.parametrize(
    "recipes",
    [
        ("cifar10_ddpm", "celeba64_ddpm"),  # the DDPM recipe, on faces
        ("cifar10_sr3", "celeba64_sr3"),  # SR3, on faces
        ("cifar10_ddpm", "cifar10_sr3"),  # the DDPM optimisation, another task
        ("digits_text_cpu", "mnist_sr_cpu"),  # the small CPU net, other tasks
    ],
    ids="+".join,
)
def test_sibling_recipes_write_only_their_differences(recipes: tuple[str, str]):
    first, second = (written(option_file("experiment", name)) for name in recipes)
    assert not first & second, f"{recipes} both write {sorted(first & second)}"


@pytest.mark.parametrize(
    "path",
    [option_file("data", n) for n in offered("data")]
    + [option_file("experiment", n) for n in offered("experiment")],
    ids=lambda path: f"{path.parent.name}/{path.stem}",
)
def test_a_config_restates_nothing_it_extends(path: Path):
    inherited = set().union(*(written(parent) for parent in extended(path)))
    assert not written(path) & inherited, f"{path.name} restates {sorted(written(path) & inherited)}"


def test_the_run_folder_hydra_claims_before_the_job_is_under_the_project_folder(tmp_path, monkeypatch):
    """Preflight claims hydra.run.dir before Hydra sets its runtime config: started from another folder, that
    folder must still resolve under the project, not the current folder (before: an empty <cwd>/outputs/train/
    <date>/<time>/.hydra was left there beside the real run)."""
    from hydra.core.hydra_config import HydraConfig

    monkeypatch.delenv("DIFFLAB_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        HydraConfig.instance(), "cfg", None
    )  # as in Hydra's on_run_start (another test may set it)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    assert not HydraConfig.initialized()
    run_dir = Path(str(cfg.hydra.run.dir))
    assert run_dir.is_relative_to(CONF.parent / "outputs" / "train"), run_dir
