"""`harness models`: list model recipes and their variants."""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="list model recipes and their declared variants",
                              description="List the model recipes in models/ with source, inputs, formats "
                                          "and the compressed variants each declares (opt-in with --variants).")
    p.set_defaults(func=cmd_models)


def cmd_models(args) -> int:
    from harness.prepare.recipes import with_int8_alternatives
    from harness.schema.recipes import list_recipe_names, load_recipe

    for name in list_recipe_names():
        r = with_int8_alternatives(load_recipe(name))
        variants = ", ".join(f"{v.name} ({v.compressor})" for v in r.variants if not v.alternative_of) or "none"
        alternatives = [v.name for v in r.variants if v.alternative_of]
        if alternatives:
            variants += f"; int8 alternatives: {', '.join(alternatives)}"
        source = r.source.path or f"{r.source.builder} (zoo)"
        inputs = ", ".join(f"{i.name}{list(i.shape)} {i.dtype}".strip() for i in r.inputs) or "from the file"
        print(f"{r.name:<20} {r.source.format or 'auto':<12} {source}\n{'':<20} inputs {inputs}  "
              f"formats {','.join(r.formats)}\n{'':<20} variants: {variants}")
    return 0
