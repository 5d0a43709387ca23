"""The ``hypothesis`` kind: new A-B-C connections from the literature's concept co-occurrence graph.

For a start concept A (name or id), literature-based discovery (``knowledge.discovery``) ranks
concepts C that are not yet linked to A but are bridged by concepts B that co-occur with both.
Each hypothesis carries its bridges with their share of the score, supporting documents for the
A-B and B-C links (when the graph is our corpus), the measure and graph used, and a plain
template sentence. With ``explain_top`` > 0 the active language model also writes a one-sentence
hypothesis for the best results: clearly labelled as generated, and never used for ranking.
"""
from __future__ import annotations

from medassist.knowledge.discovery import MEASURES
from medassist.registry.models import ModelVersion

from . import Kind, register

GRAPHS = ("corpus", "medline-cooccurrence")

ITEM_SCHEMA = {
    "type": "object",
    "required": ["start"],
    "properties": {
        "start": {"type": "string", "pattern": r"\S", "maxLength": 200,
                  "description": "start concept A: a name (e.g. 'Migraine Disorders') or id ('MESH:D008881')"},
        "target_group": {"type": ["string", "null"], "maxLength": 100,
                         "description": "only targets C of this semantic group, e.g. 'Chemicals and Drugs'"},
        "until_year": {"type": ["integer", "null"], "minimum": 1800, "maximum": 2100,
                       "description": "use only literature up to this year (corpus graph)"},
    },
}

PARAMS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "measure": {"enum": list(MEASURES), "default": "adamic_adar",
                    "description": "ranking measure (see docs/evaluation.md for how they compare)"},
        "graph": {"enum": list(GRAPHS), "default": "corpus",
                  "description": "corpus: concepts of the imported/analysed abstracts; medline-cooccurrence: "
                                 "disease-disease co-occurrence over all of MEDLINE"},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
        "explain_top": {"type": "integer", "minimum": 0, "maximum": 10, "default": 0,
                        "description": "write a generated one-sentence hypothesis for the best N results"},
    },
}

RESULT_SCHEMA = {"type": "object", "properties": {
    "start": {"type": "object"}, "hypotheses": {"type": "array"}, "graph": {"type": "object"}}}


def _check(item: dict) -> list[tuple[str, str]]:
    from medassist.knowledge.selectors import concept_resolve, concept_suggestions

    if concept_resolve(text=item["start"]) is None:
        hint = concept_suggestions(text=item["start"])
        return [("start", f"unknown concept {item['start']!r}" + (f"; did you mean: {', '.join(hint)}?" if hint else
                                                                  "; use a MeSH name or id (knowledge_import mesh)"))]
    return []


def _sentence(a: str, c: str, bridges: list[str]) -> str:
    via = ", ".join(bridges[:3])
    return f"{a} may be related to {c}: both co-occur in the literature with {via}, but not (yet) with each other."


def run(batch: list[dict], params: dict, runtime) -> list[dict]:
    from medassist.knowledge import selectors

    results = []
    for item in batch:
        start = selectors.concept_resolve(text=item["start"])
        if start is None:
            raise ValueError(f"unknown concept {item['start']!r}")
        until = item.get("until_year") if params["graph"] == "corpus" else None
        graph = selectors.cooccurrence_graph(source=params["graph"], until_year=until)
        group = (item.get("target_group") or "").strip().lower()
        candidates = graph.discover(start.pk, measure=params["measure"], top_k=params["top_k"] * 5 if group else
                                    params["top_k"], max_bridges=5)
        names = selectors.concepts_by_id(ids={h.target for h in candidates} | {b for h in candidates
                                                                                 for b, _ in h.bridges})
        if group:
            candidates = [h for h in candidates if h.target in names and
                          names[h.target].semantic_group.lower() == group][:params["top_k"]]
        hypotheses = []
        for h in candidates:
            target = names.get(h.target)
            bridges = [{"id": b, "name": names[b].name if b in names else b, "contribution": round(w, 6)}
                       for b, w in h.bridges]
            evidence = []
            if params["graph"] == "corpus":
                for bridge in bridges[:2]:
                    evidence.append({"bridge": bridge["name"],
                                     "a_b": selectors.supporting_documents(a=start.pk, b=bridge["id"], until_year=until),
                                     "b_c": selectors.supporting_documents(a=bridge["id"], b=h.target, until_year=until)})
            target_name = target.name if target else h.target
            hypotheses.append({
                "target": {"id": h.target, "name": target_name,
                           "semantic_group": target.semantic_group if target else ""},
                "score": round(h.score, 6), "linking_terms": h.linking_terms, "bridges": bridges,
                "evidence": evidence, "statement": _sentence(start.name, target_name, [b["name"] for b in bridges]),
            })
        results.append({
            "start": {"id": start.pk, "name": start.name, "semantic_group": start.semantic_group},
            "hypotheses": hypotheses,
            "graph": {"source": params["graph"], "until_year": until, "nodes": len(graph.ids),
                      "edges": graph.n_edges, "measure": params["measure"]},
        })
    if params["explain_top"]:
        _explain(results, params["explain_top"], runtime)
    return results


def _explain(results: list[dict], top: int, runtime) -> None:
    from workers.runtime.engines import GenerationSettings

    generator = runtime.engine(ModelVersion.Role.GENERATOR)
    label = runtime.version_label(ModelVersion.Role.GENERATOR)
    chosen = [h | {"_start": r["start"]["name"]} for r in results for h in r["hypotheses"][:top]]
    settings = GenerationSettings(max_new_tokens=48, stop=["\n"])
    prompts = [generator.chat_prompt(
        f"Concepts that co-occur with both {h['_start']} and {h['target']['name']} in the literature: "
        f"{', '.join(b['name'] for b in h['bridges'][:3])}. Write one sentence stating a testable research "
        f"hypothesis linking {h['_start']} and {h['target']['name']}.") for h in chosen]
    texts = generator.generate(prompts, settings) if prompts else []
    index = 0
    for r in results:
        for h in r["hypotheses"][:top]:
            h["generated_hypothesis"] = {"text": texts[index], "model_version": label, "settings": settings.as_dict(),
                                         "note": "generated text; the ranking above does not depend on it"}
            index += 1


def roles_for(params: dict) -> tuple[str, ...]:
    return (ModelVersion.Role.GENERATOR,) if params.get("explain_top") else ()


KIND = register(Kind(
    name="hypothesis",
    description="Ranked new A-B-C connections for a start concept, from the concept co-occurrence graph.",
    queue="interactive",
    item_schema=ITEM_SCHEMA,
    params_schema=PARAMS_SCHEMA,
    result_schema=RESULT_SCHEMA,
    run=run,
    text_field=None,
    model_roles=(ModelVersion.Role.GENERATOR,),
    roles_for=roles_for,
    check_item=_check,
    normalize_item=lambda raw: {"start": raw} if isinstance(raw, str) else raw,
))
