"""The content keys of the recipe ``belle2_pid_resample``'s templates, pinned to values recorded from the code.

A template file is named by its key (:meth:`calibflow.kde.plan.KdePlan.template_key`: the spec, tree, aliases,
the inputs' identities and ``calibflow.kde.template.VERSION``): a change that alters a key makes every user's
templates, and the closures made from them, rebuild on their next ``calibflow kde``. Such a change must be
deliberate (a ``VERSION`` bump, or a new result-changing spec option, noted in docs/kde.md) and then update the
values below. A move of code between modules must leave them unchanged. The recipe's inputs are toys, whose
identity is their spec (not a path), so the keys are the same in every checkout and result folder. Changes of
record: issue 19 moved the keys from ``calibflow/kde/pipeline.py`` to ``calibflow/kde/plan.py`` and added the
config's ``name`` (not in the keys): unchanged.
"""

from __future__ import annotations

from pathlib import Path

from calibflow.kde.plan import KdePlan

RECIPE = Path(__file__).resolve().parents[1] / "task_configs" / "kde" / "belle2_pid_resample.yaml"

RECORDED = {
    "kaon_data": "f8e896a147d3d53f",
    "kaon_mc": "5c0b96bb935591bd",
    "pion_data": "f0125f3f3591d162",
    "pion_mc": "9776ac4af40c5d66",
}


def test_recipe_template_keys_are_pinned(tmp_path: Path) -> None:
    plan = KdePlan.create(RECIPE, tmp_path)
    assert {n: plan.template_key(n) for n in plan.config.templates} == RECORDED
    paths = plan.template_paths("kaon_data")
    work = tmp_path / "belle2_pid_resample" / "work"  # published from there as kde/... (docs/kde.md)
    assert paths.h5 == str(work / "kde" / f"kaon_data-{RECORDED['kaon_data']}.h5")
    assert paths.latest == str(work / "kde" / "kaon_data.h5")
    assert plan.closure_keys("kaon") == {"data": RECORDED["kaon_data"], "simulation": RECORDED["kaon_mc"]}


def test_keys_depend_on_the_spec_and_inputs_only(tmp_path: Path) -> None:
    """The config's name, description, closures and the result folder do not enter a template's key; the
    spec and the toy's spec do."""
    text = RECIPE.read_text()
    moved = tmp_path / "elsewhere.yaml"
    moved.write_text(text.replace("name: belle2_pid_resample", "name: other").replace("seed: 0", "seed: 3"))
    plan = KdePlan.create(moved, tmp_path / "results")
    assert {n: plan.template_key(n) for n in plan.config.templates} == RECORDED
    moved.write_text(text.replace("bins: 200, bandwidth: 0.01}   # fixed", "bins: 100, bandwidth: 0.01}   # fixed"))
    changed = KdePlan.create(moved, tmp_path)
    assert changed.template_key("kaon_data") != RECORDED["kaon_data"]
    assert changed.template_key("kaon_mc") != RECORDED["kaon_mc"]  # merged from the kaon spec
    assert changed.template_key("pion_data") == RECORDED["pion_data"]
    moved.write_text(text.replace("candidates: 200000", "candidates: 100000"))
    assert KdePlan.create(moved, tmp_path).template_key("kaon_data") != RECORDED["kaon_data"]
