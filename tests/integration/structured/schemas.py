"""JSON schemas for the structured-output tests: one (name, schema) pair per case.

Every schema uses only keywords that xgrammar 0.2.9's JSON-schema converter turns into grammar
(cpp/json_schema_converter.cc): type (also as a list), properties, required,
additionalProperties false, propertyNames, minProperties / maxProperties, items, prefixItems,
minItems / maxItems, enum, const, anyOf, oneOf with disjoint branches, allOf with one branch,
$defs / $ref, string minLength / maxLength / pattern / format, integer and number minimum /
maximum / exclusiveMinimum / exclusiveMaximum, integer multipleOf, boolean, null, and annotations
(title, description). Keywords it ignores (uniqueItems, contains, not, if/then/else, multipleOf on
numbers) are left out, so that every output it allows must validate.

Every output is bounded: strings have maxLength, a pattern with bounded repetition, a format or an
enum; arrays have maxItems; objects list their properties with additionalProperties false; all
but a few numbers have ranges. A random-weight model samples nearly uniformly among the allowed
tokens, so an unbounded string or array would wander until max_new_tokens.
"""

_NAME = {"type": "string", "minLength": 1, "maxLength": 12}
_SHORT = {"type": "string", "maxLength": 6}
_PERCENT = {"type": "integer", "minimum": 0, "maximum": 100}
_UNIT = {"type": "number", "minimum": 0, "maximum": 1}


def _obj(properties, required=None, **extra):
    """An object with additionalProperties false; required defaults to every property."""
    out = {"type": "object", "properties": properties,
           "required": list(properties) if required is None else required,
           "additionalProperties": False}
    out.update(extra)
    return out


def _arr(items, lo=0, hi=3):
    return {"type": "array", "items": items, "minItems": lo, "maxItems": hi}


SCHEMAS = [
    # Scalars at the top level.
    ("integer_inclusive_range", {"type": "integer", "minimum": -5, "maximum": 5}),
    ("integer_exclusive_range", {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10}),
    ("integer_wide_range", {"type": "integer", "minimum": 1000, "maximum": 99999}),
    ("integer_negative_range", {"type": "integer", "minimum": -1000, "maximum": -1}),
    ("integer_minimum_only", {"type": "integer", "minimum": 0}),
    ("integer_unbounded", {"type": "integer"}),
    ("integer_multiple_of", {"type": "integer", "minimum": 0, "maximum": 100, "multipleOf": 5}),
    ("number_inclusive_range", {"type": "number", "minimum": -1.5, "maximum": 2.5}),
    ("number_exclusive_range", {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}),
    ("number_mixed_bounds", {"type": "number", "minimum": 10, "exclusiveMaximum": 20.5}),
    ("number_unbounded", {"type": "number"}),
    ("boolean", {"type": "boolean"}),
    ("null", {"type": "null"}),
    ("string_length_range", {"type": "string", "minLength": 3, "maxLength": 6}),
    ("string_empty_only", {"type": "string", "maxLength": 0}),
    ("string_pattern_code", {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"}),
    ("string_pattern_hex_color", {"type": "string", "pattern": "^#[0-9a-f]{6}$"}),
    ("string_pattern_email", {"type": "string", "pattern": "^[a-z]{1,8}@[a-z]{1,8}\\.(com|org|net)$"}),
    ("string_pattern_date", {"type": "string",
                             "pattern": "^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"}),
    ("string_format_uuid", {"type": "string", "format": "uuid"}),
    ("string_enum", {"enum": ["red", "green", "blue"]}),
    ("mixed_enum", {"enum": [1, "two", None, True, 3.5, [1, 2], {"k": "v"}]}),
    ("const_string", {"const": "fixed value"}),
    ("const_object", {"const": {"a": 1, "b": [True, None], "c": "x"}}),
    ("type_list_string_or_null", {"type": ["string", "null"], "maxLength": 5}),

    # Arrays.
    ("array_int_2_to_5", _arr({"type": "integer", "minimum": 0, "maximum": 9}, 2, 5)),
    ("array_exactly_3_enum", _arr({"enum": ["a", "b", "c"]}, 3, 3)),
    ("array_single_bool", _arr({"type": "boolean"}, 1, 1)),
    ("array_at_most_one_null", _arr({"type": "null"}, 0, 1)),
    ("array_matrix", _arr(_arr({"type": "integer", "minimum": -9, "maximum": 9}, 1, 3), 1, 3)),
    ("array_3_deep", _arr(_arr(_arr({"type": "boolean"}, 0, 2), 0, 2), 1, 2)),
    ("array_tuple", {"type": "array", "prefixItems": [_SHORT, _PERCENT, {"type": "boolean"}],
                     "items": False, "minItems": 3}),
    ("array_of_objects", _arr(_obj({"id": _PERCENT, "ok": {"type": "boolean"}}), 1, 3)),
    ("array_of_numbers", _arr({"type": "number", "exclusiveMinimum": -1, "exclusiveMaximum": 1}, 0, 4)),

    # Objects.
    ("object_empty", _obj({})),
    ("object_flat_person", _obj({"name": _NAME, "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                 "email": {"type": "string", "pattern": "^[a-z]{1,6}@[a-z]{1,6}\\.com$"}},
                                required=["name", "age"])),
    ("object_all_optional", _obj({"a": _PERCENT, "b": _SHORT, "c": {"type": "boolean"}}, required=[])),
    ("object_required_subset", _obj({"id": _PERCENT, "note": _SHORT, "flag": {"type": "boolean"},
                                     "score": _UNIT}, required=["id", "score"])),
    ("object_min_max_properties", _obj({"a": _PERCENT, "b": _PERCENT, "c": _PERCENT, "d": _PERCENT},
                                       required=[], minProperties=1, maxProperties=2)),
    ("object_map_property_names", {"type": "object", "propertyNames": {"pattern": "^[a-z]{1,6}$"},
                                   "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 99},
                                   "maxProperties": 3}),
    ("object_all_types", _obj({"s": _SHORT, "i": _PERCENT, "n": _UNIT, "b": {"type": "boolean"},
                               "z": {"type": "null"}, "e": {"enum": ["x", "y"]}, "c": {"const": 7},
                               "a": _arr({"type": "boolean"}, 0, 2)})),
    ("object_nested_two", _obj({"user": _obj({"id": _PERCENT, "name": _NAME}),
                                "tags": _arr({"type": "string", "maxLength": 5}, 0, 3)})),
    ("object_nested_four", _obj({"a": _obj({"b": _obj({"c": _obj({"d": {"type": "boolean"}})})})})),
    ("object_annotations", {"title": "Annotated", "description": "annotations are ignored",
                            **_obj({"x": {"title": "X", "description": "an x", **_PERCENT}})}),
    ("object_nullable_field", _obj({"value": {"anyOf": [{"type": "null"}, _PERCENT]},
                                    "label": {"type": ["string", "null"], "maxLength": 4}})),

    # Combinators and references.
    ("anyof_scalar", {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 9}, {"type": "string", "maxLength": 3}]}),
    ("anyof_objects", {"anyOf": [_obj({"kind": {"const": "circle"}, "r": _UNIT}),
                                 _obj({"kind": {"const": "rect"}, "w": _UNIT, "h": _UNIT})]}),
    ("oneof_disjoint_types", {"oneOf": [{"type": "integer", "minimum": 0, "maximum": 9},
                                        {"type": "string", "maxLength": 3}, {"type": "null"}]}),
    ("allof_single", {"allOf": [_obj({"k": _SHORT})]}),
    ("ref_point_line", {"$defs": {"point": _obj({"x": _PERCENT, "y": _PERCENT})},
                        **_obj({"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}})}),
    ("ref_in_array_items", {"$defs": {"item": _obj({"sku": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{3}$"},
                                                    "qty": {"type": "integer", "minimum": 1, "maximum": 50}})},
                            **_obj({"items": _arr({"$ref": "#/$defs/item"}, 1, 3)})}),
    ("ref_chain", {"$defs": {"level": {"enum": ["low", "mid", "high"]},
                             "setting": _obj({"name": _SHORT, "level": {"$ref": "#/$defs/level"}})},
                   **_arr({"$ref": "#/$defs/setting"}, 1, 2)}),

    # Shapes that programs ask a small model for.
    ("tool_call", _obj({"name": {"const": "get_weather"},
                        "arguments": _obj({"location": {"type": "string", "maxLength": 20},
                                           "unit": {"enum": ["celsius", "fahrenheit"]},
                                           "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                                          required=["location"])})),
    ("classification", _obj({"label": {"enum": ["positive", "negative", "neutral"]}, "confidence": _UNIT})),
    ("extraction", _obj({"entities": _arr(_obj({"text": {"type": "string", "maxLength": 10},
                                                 "type": {"enum": ["PER", "ORG", "LOC"]}}), 0, 4)})),
    ("form", _obj({"first": _NAME, "last": _NAME,
                   "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                   "phone": {"type": "string", "pattern": "^\\+?[0-9]{7,12}$"},
                   "newsletter": {"type": "boolean"}}, required=["first", "last", "zip"])),
    ("event", _obj({"title": {"type": "string", "maxLength": 16},
                    "date": {"type": "string", "format": "date"},
                    "attendees": _arr({"type": "string", "maxLength": 8}, 0, 3),
                    "online": {"type": "boolean"}})),
    ("inventory", _obj({"warehouse": {"enum": ["north", "south"]},
                        "stock": _arr(_obj({"sku": {"type": "string", "pattern": "^[A-Z]{3}[0-9]{2}$"},
                                            "count": {"type": "integer", "minimum": 0, "maximum": 1000},
                                            "price": {"type": "number", "minimum": 0, "maximum": 500}}), 1, 3)})),
]

assert len({name for name, _ in SCHEMAS}) == len(SCHEMAS), "duplicate schema names"

# Numbers without an upper bound: a near-uniform random model ends their digits with odds of
# (tokens that may follow) / (digit tokens) per token, fine for the 2k test vocabulary (23 digit
# tokens), often a run to max_new_tokens for GPT-2's (994): tested on small vocabularies only.
UNBOUNDED_NUMBERS = {"integer_minimum_only", "integer_unbounded", "number_unbounded"}


# ~20 fields, compact (any_whitespace false): the benchmark's constrained case, whose outputs are
# long enough for the token counts it measures. Strings are long, so that outputs rarely end
# before the benchmark's max_new_tokens.
def bench_schema(string_length=48):
    s = {"type": "string", "minLength": string_length, "maxLength": string_length}
    fields = {}
    for i in range(20):
        kind = i % 5
        fields[f"field_{i:02d}"] = (
            s if kind in (0, 3) else
            {"type": "integer", "minimum": 0, "maximum": 1000000} if kind == 1 else
            {"enum": ["alpha", "beta", "gamma", "delta"]} if kind == 2 else
            {"type": "boolean"})
    return _obj(fields)
