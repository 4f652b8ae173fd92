"""`harness models`: list model recipes and their variants."""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("models", help="list model recipes and their declared variants",
                              description="List the model recipes in models/ with framework, input, formats "
                                          "and the compressed variants each declares (opt-in with --variants).")
    p.set_defaults(func=cmd_models)


def cmd_models(args) -> int:
    from ..recipes import list_recipe_names, load_recipe

    for name in list_recipe_names():
        r = load_recipe(name)
        variants = ", ".join(f"{v.name} ({v.compressor})" for v in r.variants) or "none"
        print(f"{r.name:<20} {r.framework:<6} input {r.input.name}{list(r.input.shape)} {r.input.dtype}  "
              f"formats {','.join(r.formats)}\n{'':<20} variants: {variants}")
    return 0
