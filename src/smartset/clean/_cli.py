"""``smartset clean``: ``plan`` (detect -> a reviewable plan and a table of the most
suspicious labels; ``--multi-label``: missing and extra tags, per class), ``apply`` a plan (or ``--only`` some of its actions) into label
events, marks and a new version, ``undo`` an application; ``rounds`` runs predict -> plan ->
apply as a policy; ``imbalance`` and ``reduce`` report. Mounted lazily by the main CLI.

The older spellings keep working: ``smartset clean`` alone plans, ``clean --apply PLAN``
and ``clean --undo RUN`` are read as ``clean apply`` and ``clean undo`` with a note
(:class:`_CleanGroup`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from smartset._cli_common import (JsonOption, SmartsetGroup, Table, UsageError, WorkspaceOption,
                                  deprecated, err, handle_errors, open_workspace, out, print_json,
                                  show_progress)


class _CleanGroup(SmartsetGroup):
    """``clean``'s verbs, and the flag spellings of before them read as verbs."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ctx.help_option_names):
            args = self._legacy(list(args))
        return super().parse_args(ctx, args)

    @staticmethod
    def _legacy(args: list[str]) -> list[str]:
        for flag, verb, what in (("--apply", "apply", "PLAN"), ("--undo", "undo", "RUN")):
            for i, token in enumerate(args):
                name, eq, value = token.partition("=")
                if name != flag:
                    continue
                if not eq:
                    if i + 1 >= len(args):
                        raise UsageError(f"{flag} needs a value: {what}.")
                    value = args[i + 1]
                rest = args[:i] + args[i + (1 if eq else 2):]
                deprecated(f"smartset clean {flag} {what}", f"smartset clean {verb} {what}")
                return [verb, *rest, "--", value]
        return ["plan", *args]  # 'smartset clean' alone: the plan


clean_app = typer.Typer(
    cls=_CleanGroup,
    rich_markup_mode=None,
    help="Cleaning: find wrong labels, ambiguous images, classes to merge and duplicates, as "
         "a reviewable plan (clean plan; 'smartset clean' alone does the same; --multi-label: "
         "missing and extra tags); apply it "
         "(clean apply PLAN) into a new version; undo (clean undo RUN); clean rounds: "
         "predict, plan and apply the label actions, twice. Reports: clean imbalance, clean "
         "reduce.",
)

FeaturesOption = Literal["auto", "oof", "backbone", "audit", "none"]


@clean_app.command("plan")
@handle_errors
def plan_command(
    version: Annotated[Optional[str], typer.Option(
        help="Version to clean (default: the live catalog).")] = None,
    run: Annotated[Optional[int], typer.Option(
        help="Predictions run (default: the newest out-of-fold run).")] = None,
    features: Annotated[FeaturesOption, typer.Option(
        help="auto (on photos a pretrained backbone's embeddings: those the run stored, "
             "else --backbone's; on digits the run's out-of-fold features; else the audit's "
             "pixel embeddings), oof, backbone, audit or none.")] = "auto",
    backbone: Annotated[Optional[str], typer.Option(
        help="The pretrained backbone for --features auto/backbone on photos (default "
             "efficientnet_lite0).")] = None,
    k: Annotated[int, typer.Option(min=1, help="Neighbours of the kNN evidence.")] = 20,
    min_relabel_posterior: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Propose a relabel only when the suggested class's posterior "
                               "is at least this; below it, exclude.")] = 0.6,
    relabel_against_neighbours: Annotated[bool, typer.Option(
        "--relabel-against-neighbours", help="Propose a relabel even when the sample's "
                                             "neighbours side with its given label (default: "
                                             "exclude it then).")] = False,
    atypical_z: Annotated[float, typer.Option(
        min=0.1, help="Images at least this robust z-score further from their class's "
                      "centre than its members are typically: proposed for exclusion "
                      "(on a pretrained backbone's embeddings only).")] = 3.5,
    no_atypical: Annotated[bool, typer.Option(
        "--no-atypical", help="Skip images far from their class.")] = False,
    top: Annotated[int, typer.Option(
        min=0, help="List the N most suspicious labeled samples (the whole ranking, flagged "
                    "or not, one 0-1 score), with their files; also in --json as "
                    "'ranking'.")] = 20,
    no_ambiguous: Annotated[bool, typer.Option("--no-ambiguous", help="Skip ambiguous images.")] = False,
    no_merge: Annotated[bool, typer.Option("--no-merge", help="Skip classes to merge.")] = False,
    no_duplicates: Annotated[bool, typer.Option("--no-duplicates", help="Skip the audit's duplicates.")] = False,
    multi_label: Annotated[bool, typer.Option(
        "--multi-label", help="Multi-label data (the version's tags): train a multi-label "
                              "model per fold (sigmoid per class), find missing and extra "
                              "tags by per-class confident learning on its out-of-fold "
                              "probabilities, and plan add_tag / remove_tag items.")] = False,
    model: Annotated[str, typer.Option(
        help="--multi-label: network of the fold models (see 'smartset models').")] = "lenet",
    folds: Annotated[int, typer.Option(min=2, help="--multi-label: folds.")] = 5,
    epochs: Annotated[int, typer.Option(min=1, help="--multi-label: epochs per fold.")] = 8,
    batch_size: Annotated[int, typer.Option(min=1, help="--multi-label: batch size.")] = 32,
    lr: Annotated[float, typer.Option(min=0.0, help="--multi-label: learning rate (Adam).")] = 1e-3,
    size: Annotated[Optional[int], typer.Option(
        help="--multi-label: resize images to SIZE x SIZE (needed when their sizes "
             "differ).")] = None,
    seed: Annotated[int, typer.Option(help="--multi-label: seed of the folds and training.")] = 0,
    filter_by: Annotated[Literal["prune_by_noise_rate", "confident_joint"], typer.Option(
        help="--multi-label: prune_by_noise_rate (more found) or confident_joint (fewer, "
             "surer).")] = "prune_by_noise_rate",
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Find suspicious labels and write a cleaning plan (nothing changes until 'apply');
    with --multi-label, missing and extra tags."""
    if multi_label:
        if run is not None or features != "auto" or backbone is not None:
            raise UsageError("--multi-label trains its own fold models on the tags: leave out "
                             "--run, --features and --backbone.")
        return _tag_plan(workspace, version, as_json=as_json, top=top, model=model,
                         folds=folds, epochs=epochs, batch_size=batch_size, lr=lr, size=size,
                         seed=seed, filter_by=filter_by)
    from smartset.clean.plan import make_plan
    from smartset.clean.ranking import atypical_list, ranking
    from smartset.clean.trust import warning_lines

    ws = open_workspace(workspace)
    plan = make_plan(ws, version=version, run=run, features=features, k=k,
                     ambiguous=not no_ambiguous, merge=not no_merge,
                     duplicates=not no_duplicates, min_relabel_posterior=min_relabel_posterior,
                     neighbours_must_agree=not relabel_against_neighbours,
                     atypical=not no_atypical, atypical_z=atypical_z, backbone=backbone,
                     progress=show_progress(as_json))
    ranked = ranking(ws, run=plan["run_id"], top=top)
    far = atypical_list(ws, run=plan["run_id"], top=top)
    if as_json:
        print_json({**plan, "ranking": ranked, "atypical": far})
        return
    _print_plan(plan, ranked, far)
    for line in warning_lines(plan.get("trust")):
        err.print(line, style="bold yellow")


@clean_app.command("apply")
@handle_errors
def apply_command(
    plan: Annotated[Path, typer.Argument(help="The plan file ('clean plan' prints its path).")],
    only: Annotated[Optional[str], typer.Option(
        help="Comma-separated action ids, e.g. a0001,a0002 (default: all).")] = None,
    name: Annotated[Optional[str], typer.Option(
        help="Also freeze the result as a new version of this name (default: the events "
             "only).")] = None,
    old_version: Annotated[Optional[str], typer.Option(
        "--version", hidden=True, help="Deprecated: --name.")] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Apply a plan (all its actions, or --only some) as label events and marks."""
    from smartset.clean.plan import apply_plan

    if old_version is not None:
        deprecated("smartset clean apply --version NAME", "smartset clean apply --name NAME")
        if name is not None and name != old_version:
            raise typer.BadParameter("give --name only (--version is its old spelling).")
        name = old_version
    ws = open_workspace(workspace)
    ids = [s.strip() for s in only.split(",") if s.strip()] if only else None
    result = apply_plan(ws, plan, only=ids, version=name)
    if as_json:
        print_json(result)
        return
    out.print(f"Applied {len(result['applied'])} action(s), skipped {len(result['skipped'])}"
              f" (run {result['run_id']}; undo with 'smartset clean undo "
              f"{result['run_id']}').", markup=False)
    for action_id, why in result["skipped"].items():
        out.print(f"  skipped {action_id}: {why}", markup=False)
    if result["version"]:
        out.print(f"New version {result['version']!r}: {result['n_samples']} samples.",
                  markup=False)


@clean_app.command("undo")
@handle_errors
def undo_command(
    run: Annotated[int, typer.Argument(help="The 'clean apply' run to revert.")],
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revert every label event and mark of a 'clean apply' run."""
    from smartset.clean.plan import undo_apply

    result = undo_apply(open_workspace(workspace), run)
    if as_json:
        print_json(result)
        return
    tags = (f" and {len(result['tag_events'])} tag event(s)" if result.get("tag_events")
            else "")
    out.print(f"Reverted {len(result['label_events'])} label event(s), "
              f"{len(result['marks'])} mark(s){tags} of run {run}.")


def _file(entry: dict) -> str:
    """The file of a ranking entry: its relpath, and for a sample ingested from a NumPy
    archive also the archive and row it came from."""
    if entry.get("row") is None:
        return entry["relpath"]
    return f"{entry['relpath']} ({Path(entry['array']).name} row {entry['row']})"


def _trust_summary(trust: dict | None) -> str:
    if not trust:
        return ""
    from smartset.clean.trust import THRESHOLDS, short_reason

    parts = []
    for name, row in trust["classes"].items():
        agreement = "-" if row["agreement"] is None else f"{row['agreement']:.0%}"
        verdict = (row["verdict"] if row["verdict"] == "trusted" else
                   f"WEAK: {short_reason(row, trust.get('thresholds', THRESHOLDS))}")
        parts.append(f"'{name}' recall {row['recall']:.0%}, agreement {agreement} "
                     f"({verdict})" if row["recall"] is not None else
                     f"'{name}' (no samples)")
    return (f"Trust (out-of-fold model vs kNN on {trust['second_view']['description']}): "
            + "; ".join(parts) + ".")


def _print_plan(plan: dict, ranked: list[dict], far: list[dict]) -> None:
    params = plan["params"]
    counts: dict[str, int] = {}
    for action in plan["actions"]:
        counts[action["action"]] = counts.get(action["action"], 0) + 1
    used = params.get("features_used") or {}
    out.print(f"Checked {params['n_samples']} labeled samples with the predictions of run "
              f"{params['predictions_run']} and {params['feature_source']}; an estimated "
              f"{params['n_estimated_wrong']} wrong label(s), "
              f"{params.get('n_atypical', 0)} image(s) far from their class.")
    if used.get("note"):
        out.print(f"Features: {used['description']}, because {used['note']}.")
    summary = _trust_summary(plan.get("trust"))
    if summary:
        out.print(summary)
    by_id = {a["id"]: a for a in plan["actions"]}
    if ranked:
        table = Table(title=f"Most suspicious labels, top {len(ranked)} (every labeled "
                            f"sample ranked by one score, flagged or not)")
        for column in ("#", "file", "label", "score", "detector", "suggested (plan)"):
            table.add_column(column, overflow="fold")
        table.add_column("evidence", overflow="fold", min_width=18)
        for entry in ranked:
            action = by_id.get(entry["action_id"]) if entry["action_id"] else None
            shown = entry["suggested"] or ""
            if action is not None:
                shown += (f" ({action['id']} relabel)" if action["action"] == "relabel" else
                          f" ({action['id']} {action['action']})")
            table.add_row(str(entry["rank"]), _file(entry), entry["label"] or "",
                          f"{entry['score']:.3f}", entry["detector"], shown,
                          "" if action is None else _evidence_in_short(action))
        out.print(table)
        out.print("Score: 1 - the posterior of the given label (model and neighbours, noise "
                  "corrected), 0-1 for every sample; detector '-': not flagged. The full "
                  "ranking is the review app's 'suspicious' queue.")
    if far:
        table = Table(title=f"Far from their class ({len(far)}; a separate list, ranked by "
                            f"robust z-score, not on the 0-1 scale)")
        for column in ("file", "label", "z", "similarity (typical)", "score"):
            table.add_column(column, overflow="fold")
        for entry in far:
            table.add_row(entry["relpath"], entry["label"] or "", f"{entry['z']:.1f}",
                          f"{entry['similarity']:.2f} ({entry['typical']:.2f})",
                          f"{entry['score']:.3f}")
        out.print(table)
    for a in plan["actions"]:
        if a["action"] == "merge_classes":
            out.print(f"{a['id']} merge '{a['value']['from']}' into '{a['value']['into']}': "
                      f"{a['reason']}")
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "no actions"
    out.print(f"Plan: {summary}. Written to {plan['path']}\n"
              f"Review it, then: smartset clean apply {plan['path']} [--only a0001,...] "
              f"[--name NEW_NAME]", markup=False)


def _tag_plan(workspace, version, *, as_json: bool, top: int, **options) -> None:
    """``smartset clean --multi-label``: the plan of missing and extra tags, and its report."""
    from smartset.clean.multilabel import make_tag_plan

    ws = open_workspace(workspace)
    plan = make_tag_plan(ws, version, progress=show_progress(as_json), **options)
    if as_json:
        print_json(plan)
        return
    params, report = plan["params"], plan["params"]["report"]
    out.print(f"Checked the tags of {params['n_samples']} images with out-of-fold "
              f"{params['model']} ({params['folds']} folds, {options['epochs']} epochs, seed "
              f"{options['seed']}; mAP against the given tags {params['oof_map']:.3f}): "
              f"{report['missing']} tag(s) look missing, {report['extra']} extra.",
              markup=False)
    table = Table(title="Per class: tags that look missing or extra (AP: how well the "
                        "out-of-fold model ranks the class against the given tags)")
    for column in ("class", "tagged", "AP", "missing", "extra", "most confident"):
        table.add_column(column, justify="left" if column in ("class", "most confident")
                         else "right", overflow="fold")
    for name, row in report["classes"].items():
        shown = ", ".join(f"{'+' if t['action'] == 'add_tag' else '-'} "
                          f"{t['file']} {t['score']:.2f}" for t in row["top"][:3])
        table.add_row(name, str(row["tagged"]), "-" if row["ap"] is None else f"{row['ap']:.2f}",
                      str(row["missing"]), str(row["extra"]), shown)
    out.print(table)
    if plan["actions"] and top:
        table = Table(title=f"Most confident items, top {min(top, len(plan['actions']))} of "
                            f"{len(plan['actions'])}")
        for column in ("item", "file", "tags", "proposed", "score"):
            table.add_column(column, overflow="fold")
        for action in plan["actions"][:top]:
            ev = action["evidence"]
            sign = "+" if action["action"] == "add_tag" else "-"
            table.add_row(action["id"], ev["file"], ", ".join(ev["tags"]),
                          f"{sign} {action['value']}", f"{action['score']:.2f}")
        out.print(table)
    for name, why in report.get("weak", {}).items():
        err.print(f"WEAK: class '{name}': {why}; check its items by eye, do not apply them "
                  f"wholesale (more epochs or images make the model surer).", style="bold yellow",
                  markup=False)
    out.print(f"Score: the model's out-of-fold probability of the tag (+, missing) or of its "
              f"absence (-, extra). Written to {plan['path']}\n"
              f"Review it (smartset review, queue 'tags'), or apply it: smartset clean apply "
              f"{plan['path']} [--only a0001,...] [--name NEW_NAME]", markup=False)


def _evidence_in_short(action: dict) -> str:
    """One line for the table: what speaks for the action (the plan file has the reason)."""
    ev = action["evidence"]
    if action["detector"] == "ambiguity":
        first, second = ev["classes"]
        return f"split '{first}'/'{second}', top-2 margin {ev.get('top2_margin', 0.0):.2f}"
    if action["detector"] == "atypical":
        return (f"similarity to class {ev['class_similarity']:.2f} (typical "
                f"{ev['class_similarity_typical']:.2f}), model {ev['model_p_label']:.0%} "
                f"'{ev['label']}'")
    parts = [f"model {ev['model_p_suggested']:.0%} '{ev['suggested']}'"]
    if "knn_p_suggested" in ev:
        parts.append(f"neighbours {ev['knn_p_suggested']:.0%}")
    parts.append(f"{1 + sum(bool(v) for v in ev['flags'].values())} detector(s)")
    return ", ".join(parts)


@clean_app.command("rounds")
@handle_errors
def rounds_command(
    version: Annotated[Optional[str], typer.Option(
        help="Version to start from (default: the live catalog).")] = None,
    rounds: Annotated[int, typer.Option(
        "--rounds", min=1, help="At most this many rounds (stops when one proposes nothing).")] = 2,
    name: Annotated[str, typer.Option(
        help="Name of the final version; earlier rounds make NAME-round1, ...")] = "cleaned",
    augment: Annotated[str, typer.Option(
        help="Online augmentation of the fold models (a policy name or file; 'none').")] = "translation-rotation",
    model: Annotated[str, typer.Option(help="Network of the fold models (see 'smartset models').")] = "small_cnn",
    epochs: Annotated[int, typer.Option(min=1)] = 8,
    folds: Annotated[int, typer.Option(min=2)] = 5,
    size: Annotated[Optional[int], typer.Option(
        help="Resize images to SIZE x SIZE (needed when their sizes differ).")] = None,
    mode: Annotated[Optional[str], typer.Option(help="L (gray) or RGB.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the folds and training (round r: seed + r - 1).")] = 0,
    min_relabel_posterior: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Relabel only when the suggested class's posterior is at least "
                               "this; below it, exclude.")] = 0.6,
    min_apply_posterior: Annotated[Optional[float], typer.Option(
        min=0.0, max=1.0, help="Apply a relabel only when both views name the new class and "
                               "its posterior is at least this (default 0.9).")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Apply even where the plan says the model is weak for a class the "
                        "actions touch (the evidence bar still holds).")] = False,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Clean in rounds as an explicit policy: predict --oof (fold models trained with
    augmentation) -> plan -> apply the relabels whose evidence clears the bar (the model and
    an independent view both name the new class, posterior >= 0.9, at least 2% of the class
    estimated wrong) as a new version; again on that version. A round that touches a class
    where the model is weak is refused unless --force. Samples a person reviewed are kept
    as they are; excludes, merges, duplicates and ambiguous images stay proposals."""
    from smartset.clean.rounds import clean_rounds

    ws = open_workspace(workspace)

    def report(record: dict) -> None:
        if as_json:
            return
        applied = ", ".join(f"{n} {kind}" for kind, n in sorted(record["applied"].items()))
        out.print(f"round {record['round']}: out-of-fold accuracy {record['oof_accuracy']:.4f} "
                  f"(run {record['predict_run']}); applied {applied or 'nothing'} from "
                  f"{record['plan']}"
                  + (f" ({record['kept_as_reviewed']} reviewed sample(s) kept)"
                     if record["kept_as_reviewed"] else "")
                  + (f"; {sum(record['held_back'].values())} below the evidence bar left "
                     f"for a person" if record["held_back"] else "")
                  + (f"; FORCED past weak class(es) {', '.join(record['weak_classes'])}"
                     if record["forced"] else "")
                  + f" -> version {record['version']!r} "
                  f"({record['n_samples']} samples; undo: smartset clean undo "
                  f"{record['apply_run']})")

    result = clean_rounds(ws, version, rounds=rounds, name=name,
                          augment=None if augment.lower() == "none" else augment,
                          model=model, epochs=epochs, folds=folds, size=size, mode=mode,
                          seed=seed, min_relabel_posterior=min_relabel_posterior,
                          min_apply_posterior=min_apply_posterior, force=force,
                          progress=show_progress(as_json), on_round=report)
    if as_json:
        print_json(result)
        return
    out.print(f"Final version {result['version']!r} after {len(result['rounds'])} round(s). "
              f"Look at what it changed (smartset review, queue "
              f"'suspicious'). Each round's plan also lists merges, duplicates and ambiguous "
              f"images for a person to decide.")


@clean_app.command("imbalance")
@handle_errors
def imbalance(
    version: Annotated[Optional[str], typer.Option(help="Version (default: the live catalog).")] = None,
    oversample: Annotated[Optional[str], typer.Option(
        help="Also write a version with the minority classes oversampled by this augmentation "
             "policy (e.g. rotation-elastic).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Name of the oversampled version.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the augmentation.")] = 0,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Class counts, imbalance ratio, and the remedies: class weights, oversampling copies,
    ENN undersampling (with the audit's embeddings)."""
    from smartset.clean.imbalance import workspace_imbalance

    report = workspace_imbalance(open_workspace(workspace), version,
                                 oversample_policy=oversample, name=name, seed=seed)
    classes = report["classes"]
    if as_json:
        print_json(report)
        return
    table = Table(title=f"Classes (imbalance ratio {report['imbalance_ratio']})")
    for column in ("class", "count", "share", "weight", "copies to add", "ENN flags"):
        table.add_column(column, justify="right" if column != "class" else "left")
    for c in classes:
        table.add_row(c, str(report["counts"][c]), f"{report['shares'][c]:.3f}",
                      f"{report['class_weights'][c]:.3f}",
                      str(report["oversample_new_copies"][c]),
                      str(report.get("enn_undersample", {}).get(c, "-")))
    out.print(table)
    if report["minority"]:
        out.print(f"Minority classes: {', '.join(report['minority'])}.")
    if report.get("enn_note"):
        out.print(f"ENN flags: none, {report['enn_note']}.")
    if "oversampled" in report:
        out.print(f"Version {report['oversampled']['version']!r}: "
                  f"{report['oversampled']['n_samples']} samples.")


@clean_app.command("reduce")
@handle_errors
def reduce(
    version: Annotated[Optional[str], typer.Option(help="Version (default: the live catalog).")] = None,
    test_fraction: Annotated[float, typer.Option(
        help="Share held out to measure accuracy when there is no test/val split.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the random subsets and split.")] = 0,
    save_version: Annotated[Optional[str], typer.Option(
        help="Also freeze the FCNN selection (plus the held-out samples) as this version.")] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Prototype selection (CNN, FCNN) on the audit's embeddings: held-out 1-NN accuracy
    against subset size, so you see what a 10x smaller set costs."""
    from smartset.clean.reduction import workspace_reduction

    result = workspace_reduction(open_workspace(workspace), version,
                                 test_fraction=test_fraction, seed=seed,
                                 save_version=save_version)
    if not result["version"]:
        result.pop("version")
    if as_json:
        print_json(result)
        return
    table = Table(title=f"Held-out 1-NN accuracy vs subset size ({result['n_train']} train, "
                        f"{result['n_test']} held out)")
    for column in ("method", "n", "fraction", "accuracy"):
        table.add_column(column, justify="right" if column != "method" else "left")
    for row in result["curve"]:
        table.add_row(row["method"], str(row["n"]), f"{row['fraction']:.3f}",
                      f"{row['accuracy']:.4f}")
    out.print(table)
