"""Which text each exported pair carries.

Captions stay captions. Attribute pairs keep their key-value text (`--attribute-text keyvalue`, e.g.
`celeba gender: male; smiling: true; bald: false`) or become one plain sentence (`sentence`) made from
their key/value list by a fixed rule, in the pair's key order:

  * a key reads as words (`5_o_clock_shadow` -> `5 o clock shadow`);
  * value true / yes -> the key alone (`smiling`); false / no -> `not` + the key (`not bald`);
  * any other value -> key then value (`gender male`, `age 35`); an empty value leaves the key out;
  * the phrases are joined with commas after `A face: ` and end with a full stop:
    `A face: gender male, smiling, not bald.`

Nothing is dropped (false values are said, not omitted), so the sentence carries the same facts as the
key-value text without its dataset prefix. A pair whose text comes out empty is skipped and counted.
"""

from __future__ import annotations

TRUE_VALUES = ("true", "yes")
FALSE_VALUES = ("false", "no")


def attribute_sentence(attributes: list[dict]) -> str:
    """`[{key: gender, value: male}, {key: smiling, value: true}]` -> `A face: gender male, smiling.`

    '' when no attribute has a key and a value."""
    phrases = []
    for attribute in attributes:
        key = " ".join(str(attribute["key"]).replace("_", " ").split())
        value = " ".join(str(attribute["value"] or "").split())
        if not key or not value:
            continue
        if value.lower() in TRUE_VALUES:
            phrases.append(key)
        elif value.lower() in FALSE_VALUES:
            phrases.append(f"not {key}")
        else:
            phrases.append(f"{key} {value}")
    return f"A face: {', '.join(phrases)}." if phrases else ""


def pair_text(kind: str, text: str | None, attributes: list[dict] | None, attribute_text: str) -> str:
    """The text exported for one pair (see the module docstring); '' means skip it as `empty text`."""
    text = (text or "").strip()
    if kind != "attributes" or attribute_text == "keyvalue":
        return text
    return attribute_sentence(attributes) if attributes is not None else text
