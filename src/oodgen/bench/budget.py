"""The paper's training budget beside ours: recipe x budget x score, one table.

Every ``oodgen run`` of MNIST or Fashion-MNIST under a results folder (``metrics.json`` with
``method: oodgen``) is placed by its recipe (:data:`RECIPES`, read from the run's variant), its
profile (the budget: ``quick``, ``full``, ``paper``) and its seed, and reported with two scores: the
recommended rule and the paper's p(n+1).  Beside them: the paper's Table 1 cell and what the
authors' own notebook logged for the same cell (:data:`AUTHORS_LOGGED`).  The paper's cell is a
checkpoint its authors kept while printing that test set's AUROC every epoch; ours are the end of
training, with nothing selected on a test set.

Written to ``tables/budget.{md,json}`` by :func:`write_budget_table` (``oodgen bench --tables-only``).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..config import resolve_score
from ..selection import RECIPES as SELECTION_RECIPES
from ..summary import fewer_seeds, mean_std, results_by_score
from ..utils import atomic_write_bytes, atomic_write_json

SETTINGS = ("mnist", "fmnist")
BUDGETS = ("quick", "full", "paper")
#: A recipe is the set of variant options a run must have (its other options are free): the selection
#: protocol's two (oodgen.selection.RECIPES) and the paper's text.
RECIPES = {
    **SELECTION_RECIPES,
    "ours+cosine": {**SELECTION_RECIPES["ours"], "head": "cosine"},     # selection round 6's winner
    "paper options": {"sample_z": True, "beta": "paper", "nullspace": "uniform", "type2_radius": "surface",
                      "clip_type1": "clip"},
}
#: The authors' notebooks' own logs for the cells of Table 1 (authors-code notes, sections 7 and 11): for
#: F-MNIST -> MNIST the last AUROC printed by each logged training run (from 76.4 to 98.8; 98.7 is the
#: checkpoint the paper reports); for MNIST the final logged numbers of the saved model.
AUTHORS_LOGGED = {
    ("fmnist", "mnist"): {"low": 76.4, "high": 98.8, "note": "last AUROC of each logged run, fmnist_0_9 notebook"},
    ("fmnist", "notmnist"): {"low": 99.6, "high": 99.6, "note": "the saved model's final log"},
    ("mnist", "fmnist"): {"low": 99.99, "high": 99.99, "note": "the saved model's final log"},
    ("mnist", "notmnist"): {"low": 99.995, "high": 99.995, "note": "the saved model's final log"},
}


def recipe_of(variant: dict) -> str | None:
    """The recipe whose options ``variant`` has (None: none of them, or an extra outlier pool, which no
    recipe has)."""
    if variant.get("extra_outliers", "none") != "none":
        return None
    variant = {"head": "linear", **variant}          # runs written before --head: the paper's linear layer
    for name, options in RECIPES.items():
        if all(variant.get(k) == v for k, v in options.items()):
            return name
    return None


def _regen(m: dict) -> int:
    """Epochs between the run's outlier-pool regenerations (1 in runs written before the option)."""
    return int(((m.get("config") or {}).get("profile_settings") or {}).get("regen_every", 1))


def _runs(root: Path) -> dict[tuple, dict]:
    """(setting, recipe, budget, pool interval, seed) -> metrics, one run per key: the bench's own folders
    (``<setting>/oodgen/seed<k>``) first, then any other folder in path order."""
    paths = sorted(root.glob("**/metrics.json"), key=lambda p: (p.parent.parent.name != "oodgen", str(p)))
    found: dict[tuple, dict] = {}
    for path in paths:
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(m, dict) or m.get("method") != "oodgen" or m.get("id") not in SETTINGS:
            continue
        recipe = recipe_of(m.get("variant") or {})
        if recipe is None or m.get("profile") not in BUDGETS:
            continue
        key = (m["id"], recipe, m["profile"], _regen(m), int(m["seed"]))
        found.setdefault(key, {**m, "recipe": recipe, "path": str(path.parent.relative_to(root))})
    return found


def _health(h: dict) -> str:
    """One run's CVAE in a few characters: active latent dimensions and reconstruction / class mean."""
    if "active_dims" not in h:
        return "?"
    return (f"{h['active_dims']}/{h['latent_dim']} {h['recon_ratio']:.2f}x"
            + (" collapsed" if h.get("collapsed") else ""))


def _stat(values: list[float]) -> dict | None:
    return mean_std(values) if values else None


def _row(group: list[dict], setting: str, sets: list[str], scores) -> dict:
    """One (recipe, budget, pool interval) row: both scores' AUROC per OOD set over the group's seeds."""
    cells = {}
    for score in scores:
        rule = resolve_score(score, setting)
        cells[score] = {n: _stat([results_by_score(m)[rule][n]["auroc"] for m in group
                                  if n in results_by_score(m).get(rule, {})]) for n in sets}
    return {"recipe": group[0]["recipe"], "budget": group[0]["profile"], "regen_every": _regen(group[0]),
            "seeds": [m["seed"] for m in group], "runs": [m["path"] for m in group],
            "hparams": sorted({(m.get("config") or {}).get("hparams", "paper") for m in group}),
            "accuracy": _stat([m["accuracy"] for m in group]),
            "cvae_health": [_health(m.get("cvae_health") or {}) for m in group], "auroc": cells}


def budget_table(root, paper_table1: dict) -> dict:
    """The table as a dict: per setting, its OOD sets and one row per (recipe, budget)."""
    root = Path(root)
    runs = _runs(root)
    doc = {"title": "The paper's budget beside ours: recipe x budget x score (AUROC %, mean +- std over seeds)",
           "scores": {"recommended": "the recommended rule", "paper": "p(n+1), the paper's score"},
           "selection_note": ("the paper's cell is a checkpoint kept while its test AUROC was printed every epoch; "
                              "ours are the end of training, with no test set used for any choice"),
           "settings": {}}
    for setting in SETTINGS:
        keys = [k for k in runs if k[0] == setting]
        if not keys:
            continue
        ptab = paper_table1["results"].get(setting, {})
        sets = list(ptab) + sorted({n for k in keys for n in runs[k]["ood"]} - set(ptab))
        rows = [_row([runs[k] for k in sorted(keys) if k[1:4] == (recipe, budget, regen)], setting, sets, doc["scores"])
                for recipe in RECIPES for budget in BUDGETS
                for regen in sorted({k[3] for k in keys if k[1:3] == (recipe, budget)})]
        doc["settings"][setting] = {
            "ood_sets": sets, "rows": rows,
            "paper": {n: ptab.get(n, {}).get("auroc", {}).get("oodgen") for n in sets},
            "authors_logged": {n: AUTHORS_LOGGED.get((setting, n)) for n in sets}}
    return doc


def _cell(stat: dict | None) -> str:
    if stat is None:
        return ""
    return f"{stat['mean']:.2f}" + (f" ± {stat['std']:.2f}" if stat["std"] is not None else "")


def _rec_cell(stat: dict | None, n_seeds: int) -> str:
    """The recommended rule's cell: "–" where no run of the row records it (runs written before the rule),
    "(n = k)" where only some do."""
    if stat is None:
        return "–"
    return _cell(stat) + fewer_seeds(stat["n"], n_seeds)


def budget_rows_markdown(doc: dict) -> str:
    """The per-setting tables of :func:`budget_markdown` (the block ``oodgen publish`` puts in the docs)."""
    lines = []
    for setting, s in doc["settings"].items():
        sets = s["ood_sets"]
        lines += [f"**{setting}** (the recommended rule / p(n+1))", "",
                  "| recipe | budget | pools every | seeds | accuracy | CVAE (active, recon.) | " + " | ".join(sets) + " |",
                  "|---" * (6 + len(sets)) + "|"]
        for r in s["rows"]:
            cells = [f"{_rec_cell(r['auroc']['recommended'][n], len(r['seeds']))} / {_cell(r['auroc']['paper'][n])}"
                     if r["auroc"]["paper"][n] else "" for n in sets]
            lines.append(f"| {r['recipe']} | {r['budget']} | {r['regen_every']} | {', '.join(map(str, r['seeds']))} | "
                         f"{_cell(r['accuracy'])} | {'; '.join(r['cvae_health'])} | " + " | ".join(cells) + " |")
        paper = [f"{s['paper'][n]:.1f}" if s["paper"][n] is not None else "" for n in sets]
        lines.append("| paper, Table 1 (p(n+1)) | - | - | - | - | - | " + " | ".join(paper) + " |")
        logged = []
        for n in sets:
            a = s["authors_logged"][n]
            logged.append("" if a is None else (f"{a['low']:g}" if a["low"] == a["high"] else f"{a['low']:g}-{a['high']:g}"))
        lines += ["| authors' logs (p(n+1)) | - | - | - | - | - | " + " | ".join(logged) + " |", ""]
    return "\n".join(lines)


def budget_markdown(doc: dict) -> str:
    head = [f"# {doc['title']}", "",
            "Each cell: the recommended rule / p(n+1). Recipes: `ours` = `--beta wide --clip-type1 half`; "
            "`authors` = the authors' code's options (`--encoder-act relu --kl-warmup 0 --z mean --beta authors --nullspace rref --type2-radius shell "
            "--clip-type1 clip --sphere-radius authors`, with `--hparams authors` in the paper budget); `paper options` "
            "= the paper's text. Budgets: the profiles `quick`, `full`, `paper` (docs/options.md).",
            "", f"Note: {doc['selection_note']}.", "", ""]
    return "\n".join(head) + budget_rows_markdown(doc)


def write_budget_table(root, folder, paper_table1: dict) -> dict:
    """Build the table from every run under ``root`` and write ``folder/budget.{md,json}``."""
    doc = budget_table(root, paper_table1)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "budget.json", doc)
    atomic_write_bytes(folder / "budget.md", budget_markdown(doc).encode())
    return doc
